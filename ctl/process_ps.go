package ctl

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func psCommand() *cli.Command {
	return &cli.Command{
		Name:      "ps",
		Usage:     "list a sandbox's background processes (running and recently ended)",
		UsageText: "matrx ps [--json] ID",
		Description: `Ended processes stay listed for the daemon's retention period
(--process-retention, 10 min) or until 100 newer ones ended.

Example:
   matrx ps sbx-0123456789ab`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "one sandbox id"); err != nil {
				return err
			}
			id := c.Args().First()
			l, err := newClient(c).Processes(c.Context, id)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, l)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROCESS ID\tTAG\tSTATUS\tPID\tTTY\tSTARTED\tCOMMAND")
			for _, p := range l.Processes {
				status := p.Status
				if p.ExitCode != nil {
					status = fmt.Sprintf("exited (%d)", *p.ExitCode)
					if p.TimedOut {
						status += " timed out"
					}
				}
				tty := "-"
				if p.PTY != nil {
					tty = fmt.Sprintf("%dx%d", p.PTY.Cols, p.PTY.Rows)
				}
				cmd := p.Command
				if len(cmd) > 60 {
					cmd = cmd[:57] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.ProcessID, p.Tag, status, p.Pid, tty, ago(p.StartedAt), cmd)
			}
			return tw.Flush()
		},
	}
}
