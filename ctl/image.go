package ctl

import (
	"github.com/urfave/cli/v2"
)

func imageCommand() *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "manage the images sandboxes start from",
		Subcommands: []*cli.Command{
			imageImportCommand(),
			imagePullCommand(),
			imageLsCommand(),
			imageRmCommand(),
			imagePruneCommand(),
		},
	}
}
