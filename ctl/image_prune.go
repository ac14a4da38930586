package ctl

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func imagePruneCommand() *cli.Command {
	return &cli.Command{
		Name:      "prune",
		Usage:     "delete every image no sandbox uses (the default image and --pin-image ones stay)",
		UsageText: "matrx image prune [--json]",
		Description: `Deletes the images no sandbox that is not stopped uses, except the daemon's
default image and the ones matrxd pins (--pin-image), and says what it kept
and why.

Example:
   matrx image prune`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 0, "no positional arguments"); err != nil {
				return err
			}
			res, err := newClient(c).PruneImages(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, res)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IMAGE\tRESULT")
			for _, d := range res.Deleted {
				fmt.Fprintf(tw, "%s\tdeleted\n", d)
			}
			for _, k := range res.Kept {
				fmt.Fprintf(tw, "%s\tkept: %s\n", k.Image, k.Reason)
			}
			return tw.Flush()
		},
	}
}
