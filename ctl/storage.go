package ctl

import (
	"github.com/urfave/cli/v2"
)

func storageCommand() *cli.Command {
	return &cli.Command{
		Name:  "storage",
		Usage: "a user's stored files (hot and cold tiers in the bucket)",
		Subcommands: []*cli.Command{
			storageStatsCommand(),
			storageCleanCommand(),
			storageRestoreCommand(),
		},
	}
}
