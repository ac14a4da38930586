package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func healthCommand() *cli.Command {
	return &cli.Command{
		Name:      "health",
		Usage:     "show daemon health",
		UsageText: "matrx health [--json]",
		Description: `Example:
   matrx health`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 0, "no positional arguments"); err != nil {
				return err
			}
			h, err := newClient(c).Health(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, h)
			}
			fmt.Fprintf(c.App.Writer, "status: %s\nactive sandboxes: %d\nuptime: %.0fs\n", h.Status, h.ActiveSandboxes, h.UptimeSeconds)
			if h.Detail != "" {
				fmt.Fprintf(c.App.Writer, "degraded: %s\n", h.Detail)
			}
			return nil
		},
	}
}
