package ctl

import (
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
)

func fsStatCommand() *cli.Command {
	return &cli.Command{
		Name:      "stat",
		Usage:     "describe a file (a symlink itself, not its target)",
		UsageText: "matrx fs stat [flags] ID PATH",
		Description: `Examples:
   matrx fs stat sbx-0123456789ab /home/agent/report.pdf
   matrx fs stat sbx-0123456789ab /etc/shadow --user root --json`,
		Flags: []cli.Flag{userFlag(), jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a sandbox id and a path"); err != nil {
				return err
			}
			info, err := newClient(c).StatFile(c.Context, c.Args().Get(0), c.Args().Get(1), c.String("user"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, info)
			}
			return printFiles(c.App.Writer, []apitype.FileInfo{*info}, "")
		},
	}
}
