package ctl

import "github.com/urfave/cli/v2"

func accessCommand() *cli.Command {
	return &cli.Command{
		Name:        "access",
		Usage:       "SSH keys of sandboxes: grant and revoke",
		Subcommands: []*cli.Command{accessGrantCommand(), accessRevokeCommand()},
	}
}
