package ctl

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
)

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Aliases:   []string{"list"},
		Usage:     "list sandboxes, newest first",
		UsageText: "matrx ls [--user USER] [--all] [--json]",
		Description: `Lists live sandboxes (or, with --all, stopped, failed and expired ones too),
following the API's pages to the end.

Examples:
   matrx ls
   matrx ls --user alice --all --json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "user", Usage: "only this user's sandboxes"},
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include stopped sandboxes"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 0, "no positional arguments (use --user USER)"); err != nil {
				return err
			}
			return runList(c.Context, newClient(c), listOptions{user: c.String("user"), all: c.Bool("all"), json: c.Bool("json")}, c.App.Writer)
		},
	}
}

type listOptions struct {
	user      string
	all, json bool
}

func runList(ctx context.Context, cl *client.Client, o listOptions, w io.Writer) error {
	l, err := cl.List(ctx, o.user, o.all)
	if err != nil {
		return err
	}
	if o.json {
		return printJSON(w, l)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SANDBOX ID\tUSER\tSTATUS\tIMAGE\tCREATED\tEXPIRES")
	for _, s := range l.Sandboxes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.SandboxID, s.UserID, statusText(s), s.Image,
			ago(s.CreatedAt), s.ExpiresAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

// statusText is the STATUS column: the status, and a word when the last
// hot sync failed: for a stopped sandbox its files are still only on the
// host (the daemon keeps retrying).
func statusText(s apitype.Sandbox) string {
	out := s.Status
	switch {
	case !s.HotSyncPending:
	case s.Status == "running" || s.Status == "ready":
		out += " (last checkpoint failed)"
	default:
		out += " (hot files not in S3 yet)"
	}
	if s.HotSyncOverLimit != "" {
		out += " (too many hot files to sync all: see inspect)"
	}
	if s.HotSyncRejectedCount > 0 {
		out += fmt.Sprintf(" (%d hot files cannot be stored: see inspect)", s.HotSyncRejectedCount)
	}
	return out
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	return d.String() + " ago"
}
