package ctl

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
)

func storageCleanCommand() *cli.Command {
	return &cli.Command{
		Name:      "clean",
		Usage:     "delete every object of one tier of a user (admin; refused while the user has active sandboxes)",
		UsageText: "matrx storage clean USER --tier hot|cold --yes [--json]",
		Description: `Example:
   matrx storage clean alice --tier hot --yes`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tier", Required: true, Usage: "hot or cold"},
			&cli.BoolFlag{Name: "yes", Usage: "confirm the deletion"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "one user id"); err != nil {
				return err
			}
			user, tier := c.Args().First(), c.String("tier")
			if !c.Bool("yes") {
				return fmt.Errorf("this deletes every %s object of %s; pass --yes to confirm: %w", tier, user, errdefs.ErrInvalidArgument)
			}
			res, err := newClient(c).CleanStorage(c.Context, user, tier)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, res)
			}
			fmt.Fprintf(c.App.Writer, "deleted %d %s objects of %s\n", res.Deleted, res.Tier, res.UserID)
			return nil
		},
	}
}
