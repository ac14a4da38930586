package ctl

import (
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
)

func fsLsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list a directory (symlinks shown, never followed)",
		UsageText: "matrx fs ls [flags] ID PATH",
		Description: `Lists PATH in the sandbox: type, mode, owner (as the sandbox sees it),
size, modification time and name. Large directories come a page at a time
from the daemon; ls follows the pages up to --limit entries.

Examples:
   matrx fs ls sbx-0123456789ab /home/agent
   matrx fs ls sbx-0123456789ab /tmp --depth 2 --json
   matrx fs ls sbx-0123456789ab /root --user root`,
		Flags: []cli.Flag{
			userFlag(),
			&cli.IntFlag{Name: "depth", Value: 1, Usage: "levels below PATH to list"},
			&cli.IntFlag{Name: "limit", Value: 10000, Usage: "entries to list at most"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a sandbox id and a path"); err != nil {
				return err
			}
			id, p := c.Args().Get(0), c.Args().Get(1)
			cl := newClient(c)
			out := apitype.FileList{Entries: []apitype.FileInfo{}}
			cursor := ""
			for {
				page := min(c.Int("limit")-len(out.Entries), 10000)
				if page <= 0 {
					out.Truncated = true
					break
				}
				l, err := cl.ListFiles(c.Context, id, p, client.ListFilesOptions{User: c.String("user"), Depth: c.Int("depth"), Limit: page, Cursor: cursor})
				if err != nil {
					return err
				}
				out.Entries = append(out.Entries, l.Entries...)
				if !l.Truncated {
					break
				}
				cursor, out.Cursor, out.Truncated = l.Cursor, l.Cursor, true
			}
			if !out.Truncated {
				out.Cursor = ""
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			if err := printFiles(c.App.Writer, out.Entries, p); err != nil {
				return err
			}
			if out.Truncated {
				c.App.ErrWriter.Write([]byte("matrx: more entries than --limit; raise it to see them all\n"))
			}
			return nil
		},
	}
}
