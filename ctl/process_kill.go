package ctl

import (
	"github.com/urfave/cli/v2"
)

func killCommand() *cli.Command {
	return &cli.Command{
		Name:      "kill",
		Usage:     "send a signal to a background process's whole tree",
		UsageText: "matrx kill [-s SIGNAL] ID PROCESS",
		Description: `Example:
   matrx kill -s INT sbx-0123456789ab web`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "signal", Aliases: []string{"s"}, Value: "TERM", Usage: "INT, TERM, KILL, HUP, QUIT, USR1 or USR2"},
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a sandbox id and a process id or tag"); err != nil {
				return err
			}
			return newClient(c).SignalProcess(c.Context, c.Args().Get(0), c.Args().Get(1), c.String("signal"))
		},
	}
}
