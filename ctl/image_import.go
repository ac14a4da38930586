package ctl

import (
	"context"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func imageImportCommand() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "import an OCI image archive",
		UsageText: "matrx image import FILE [--json]",
		Description: `Streams an OCI (or docker save) archive to the daemon and prints the names
it holds.

Example:
   matrx image import build/images/sandbox.tar`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "one archive file"); err != nil {
				return err
			}
			f, err := os.Open(c.Args().First())
			if err != nil {
				return err
			}
			defer f.Close()
			// An import of a large image can take minutes; no client-side deadline.
			res, err := newClient(c).ImportImage(context.WithoutCancel(c.Context), f)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, res)
			}
			for _, n := range res.Images {
				fmt.Fprintln(c.App.Writer, n)
			}
			return nil
		},
	}
}
