package ctl

import (
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
)

func fsMvCommand() *cli.Command {
	return &cli.Command{
		Name:      "mv",
		Usage:     "rename a file or directory (across mounts: copy, then remove)",
		UsageText: "matrx fs mv [flags] ID FROM TO",
		Description: `TO is the new path itself (not a directory to move into). An existing TO
is an error unless --force.

Examples:
   matrx fs mv sbx-0123456789ab /tmp/out.csv /home/agent/out.csv
   matrx fs mv sbx-0123456789ab /home/agent/a /home/agent/b --force`,
		Flags: []cli.Flag{
			userFlag(),
			&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "replace TO if it exists (a file, or an empty directory)"},
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 3, "a sandbox id and two paths"); err != nil {
				return err
			}
			_, err := newClient(c).MoveFile(c.Context, c.Args().Get(0), c.String("user"),
				apitype.MoveRequest{From: c.Args().Get(1), To: c.Args().Get(2), Overwrite: c.Bool("force")})
			return err
		},
	}
}
