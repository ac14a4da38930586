package ctl

import (
	"github.com/urfave/cli/v2"
)

func fsRmCommand() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "remove a file, a symlink (never its target) or an empty directory",
		UsageText: "matrx fs rm [flags] ID PATH",
		Description: `Examples:
   matrx fs rm sbx-0123456789ab /home/agent/old.log
   matrx fs rm sbx-0123456789ab /tmp/build -r`,
		Flags: []cli.Flag{
			userFlag(),
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Usage: "remove a directory and everything below it"},
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a sandbox id and a path"); err != nil {
				return err
			}
			return newClient(c).RemoveFile(c.Context, c.Args().Get(0), c.Args().Get(1), c.String("user"), c.Bool("recursive"))
		},
	}
}
