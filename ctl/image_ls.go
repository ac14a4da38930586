package ctl

import (
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func imageLsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list images",
		UsageText: "matrx image ls [--json]",
		Description: `Example:
   matrx image ls`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 0, "no positional arguments"); err != nil {
				return err
			}
			l, err := newClient(c).Images(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, l)
			}
			sort.Slice(l.Images, func(i, j int) bool { return l.Images[i].Name < l.Images[j].Name })
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE")
			for _, i := range l.Images {
				d := i.Digest
				if len(d) > 19 {
					d = d[:19]
				}
				fmt.Fprintf(tw, "%s\t%s\t%.1f MiB\n", i.Name, d, float64(i.Size)/(1<<20))
			}
			return tw.Flush()
		},
	}
}
