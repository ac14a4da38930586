package ctl

import (
	"context"
	"errors"
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
		UsageText: "matrx ls [--user USER] [--all] [--json] | matrx ls --pooled",
		Description: `Lists live sandboxes (or, with --all, stopped, failed and expired ones too),
following the API's pages to the end. --pooled lists the sandboxes waiting in
the warm pools instead (matrxd --warm-pool).

Examples:
   matrx ls
   matrx ls --user alice --all --json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "user", Usage: "only this user's sandboxes"},
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include stopped sandboxes"},
			&cli.BoolFlag{Name: "pooled", Usage: "the warm pools' sandboxes instead (no user yet)"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 0, "no positional arguments (use --user USER)"); err != nil {
				return err
			}
			o := listOptions{user: c.String("user"), all: c.Bool("all"), pooled: c.Bool("pooled"), json: c.Bool("json")}
			if o.pooled && (o.user != "" || o.all) {
				return usageError(c, errors.New("--pooled lists sandboxes that have no user and never stopped: it goes with neither --user nor --all"), false)
			}
			return runList(c.Context, newClient(c), o, c.App.Writer)
		},
	}
}

type listOptions struct {
	user              string
	all, pooled, json bool
}

func runList(ctx context.Context, cl *client.Client, o listOptions, w io.Writer) error {
	list := func() (*apitype.SandboxList, error) { return cl.List(ctx, o.user, o.all) }
	if o.pooled {
		list = func() (*apitype.SandboxList, error) { return cl.ListPage(ctx, client.ListOptions{Pooled: true}) }
	}
	l, err := list()
	if err != nil {
		return err
	}
	if o.json {
		return printJSON(w, l)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SANDBOX ID\tUSER\tSTATUS\tIMAGE\tCREATED\tEXPIRES")
	for _, s := range l.Sandboxes {
		user, expires := s.UserID, s.ExpiresAt.Local().Format(time.DateTime)
		if s.Status == "pooled" {
			user, expires = "-", "-" // nobody's yet; its TTL starts at the claim
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.SandboxID, user, statusText(s), s.Image, ago(s.CreatedAt), expires)
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
