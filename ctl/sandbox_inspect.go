package ctl

import (
	"github.com/urfave/cli/v2"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show one sandbox as JSON",
		UsageText: "matrx inspect ID",
		Description: `Prints the sandbox's record (also of stopped sandboxes: records are kept).

Example:
   matrx inspect sbx-0123456789ab`,
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "one sandbox id"); err != nil {
				return err
			}
			s, err := newClient(c).Get(c.Context, c.Args().First())
			if err != nil {
				return err
			}
			return printJSON(c.App.Writer, s)
		},
	}
}
