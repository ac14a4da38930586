package ctl

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
)

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a background process's output (stdout to stdout, stderr to stderr)",
		UsageText: "matrx logs [-f] [--offset N] ID PROCESS",
		Description: `Output is kept on the host whether or not anyone reads it (up to the
daemon's --process-output-limit; older bytes are dropped first, and logs
says how many). --offset N starts at byte N of the output.

Examples:
   matrx logs sbx-0123456789ab web
   matrx logs -f sbx-0123456789ab p-3f9c2a1b7d4e`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing until the process ends; its exit code passes through"},
			&cli.Int64Flag{Name: "offset", Usage: "byte offset in the output to start from"},
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a sandbox id and a process id or tag"); err != nil {
				return err
			}
			if c.Int64("offset") < 0 {
				return fmt.Errorf("--offset must be >= 0: %w", errdefs.ErrInvalidArgument)
			}
			return printOutput(c.Context, newClient(c), c.Args().Get(0), c.Args().Get(1), c.Int64("offset"), c.Bool("follow"), c.App.Writer, c.App.ErrWriter)
		},
	}
}
