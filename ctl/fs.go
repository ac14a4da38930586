package ctl

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
)

// fsCommand groups the file commands that work on one sandbox path
// (matrx cp moves bytes in and out).
func fsCommand() *cli.Command {
	return &cli.Command{
		Name:  "fs",
		Usage: "look at and change a sandbox's files (as agent, or --user root)",
		Subcommands: []*cli.Command{
			fsLsCommand(),
			fsStatCommand(),
			fsMkdirCommand(),
			fsMvCommand(),
			fsRmCommand(),
		},
	}
}

// userFlag is --user, shared by the file commands.
func userFlag() cli.Flag {
	return &cli.StringFlag{Name: "user", Value: "agent", Usage: "agent or root: who the operation runs as inside the sandbox"}
}

// printFiles prints entries as ls -l does: mode, owner, size, mtime, name.
func printFiles(w io.Writer, entries []apitype.FileInfo, relTo string) error {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, e := range entries {
		name := e.Path
		if relTo != "" {
			name = relName(relTo, e.Path)
		}
		if e.SymlinkTarget != nil {
			name += " -> " + *e.SymlinkTarget
		}
		mt := e.Mtime
		if len(mt) > 19 {
			mt = mt[:10] + " " + mt[11:19]
		}
		fmt.Fprintf(tw, "%s\t%s\t%d:%d\t%d\t%s\t%s\n", typeLetter(e.Type), e.Mode, e.UID, e.GID, e.Size, mt, name)
	}
	return tw.Flush()
}

func typeLetter(t string) string {
	switch t {
	case "dir":
		return "d"
	case "symlink":
		return "l"
	case "file":
		return "-"
	}
	return "?"
}

// relName is p below dir, or p itself.
func relName(dir, p string) string {
	if len(p) > len(dir) && p[:len(dir)] == dir {
		r := p[len(dir):]
		if r[0] == '/' {
			r = r[1:]
		}
		if r != "" {
			return r
		}
	}
	return p
}
