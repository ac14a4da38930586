package ctl

import (
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
)

func fsMkdirCommand() *cli.Command {
	return &cli.Command{
		Name:      "mkdir",
		Usage:     "make a directory",
		UsageText: "matrx fs mkdir [flags] ID PATH",
		Description: `Examples:
   matrx fs mkdir sbx-0123456789ab /home/agent/project
   matrx fs mkdir sbx-0123456789ab /home/agent/a/b/c -p --mode 0700`,
		Flags: []cli.Flag{
			userFlag(),
			&cli.BoolFlag{Name: "parents", Aliases: []string{"p"}, Usage: "make missing parents; an existing directory is no error"},
			&cli.StringFlag{Name: "mode", Usage: "octal permission bits (default 0755)"},
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a sandbox id and a path"); err != nil {
				return err
			}
			_, err := newClient(c).Mkdir(c.Context, c.Args().Get(0), c.String("user"),
				apitype.MkdirRequest{Path: c.Args().Get(1), Parents: c.Bool("parents"), Mode: c.String("mode")})
			return err
		},
	}
}
