package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func apiCommand() *cli.Command {
	return &cli.Command{
		Name:      "api",
		Usage:     "say where the API's OpenAPI document is, or print it",
		UsageText: "matrx api [--print [--format yaml|json]]",
		Description: `matrxd serves its OpenAPI 3.1 document (the API contract, enforced by the
tests) at GET /openapi.json and GET /openapi.yaml on its socket; the source
is api/openapi.yaml in the repository and docs/api.md has curl examples.

Examples:
   matrx api
   matrx api --print --format json > matrx-openapi.json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "print", Usage: "print the document the daemon serves"},
			&cli.StringFlag{Name: "format", Value: "yaml", Usage: "yaml or json"},
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 0, "no positional arguments"); err != nil {
				return err
			}
			sock := c.String("socket")
			if !c.Bool("print") {
				fmt.Fprintf(c.App.Writer, `matrxd's API document (OpenAPI 3.1):
  curl --unix-socket %s http://x/openapi.yaml
  curl --unix-socket %s http://x/openapi.json
  matrx api --print [--format json]
Source: api/openapi.yaml in the matrx repository; guide with curl examples: docs/api.md.
`, sock, sock)
				return nil
			}
			b, err := newClient(c).OpenAPI(c.Context, c.String("format"))
			if err != nil {
				return err
			}
			_, err = c.App.Writer.Write(b)
			return err
		},
	}
}
