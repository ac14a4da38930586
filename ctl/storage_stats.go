package ctl

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func storageStatsCommand() *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "objects and bytes per tier",
		UsageText: "matrx storage stats USER [--json]",
		Description: `Example:
   matrx storage stats alice`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "one user id"); err != nil {
				return err
			}
			st, err := newClient(c).StorageStats(c.Context, c.Args().First())
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, st)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIER\tOBJECTS\tBYTES")
			fmt.Fprintf(tw, "hot\t%d\t%d\n", st.Hot.Objects, st.Hot.Bytes)
			fmt.Fprintf(tw, "cold\t%d\t%d\n", st.Cold.Objects, st.Cold.Bytes)
			return tw.Flush()
		},
	}
}
