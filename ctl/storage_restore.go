package ctl

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
)

func storageRestoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "bring a user's deleted or overwritten hot file (or directory) back from the trash (refused while the user has active sandboxes)",
		UsageText: "matrx storage restore USER PATH [--at TIME] [--json]",
		Description: `PATH is relative to the home (/home/agent). Without --at, the last version
trashed comes back; with --at (RFC 3339, e.g. 2026-12-01T09:30:00Z), the version
that was current then. Whatever the hot tier holds at PATH now is trashed first.

Example:
   matrx storage restore alice proj/notes.md --at 2026-12-01T09:30:00Z`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Usage: "restore the version current at this time (RFC 3339)"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a user id and a path"); err != nil {
				return err
			}
			var at time.Time
			if v := c.String("at"); v != "" {
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					return fmt.Errorf("--at %q: want RFC 3339, e.g. 2026-12-01T09:30:00Z: %w", v, errdefs.ErrInvalidArgument)
				}
				at = t
			}
			res, err := newClient(c).RestoreStorage(c.Context, c.Args().Get(0), c.Args().Get(1), at)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, res)
			}
			for _, p := range res.Restored {
				fmt.Fprintf(c.App.Writer, "restored %s\n", p)
			}
			return nil
		},
	}
}
