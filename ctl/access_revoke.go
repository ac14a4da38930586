package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func accessRevokeCommand() *cli.Command {
	return &cli.Command{
		Name:      "revoke",
		Usage:     "revoke a sandbox's SSH keys (and end the sessions they opened)",
		UsageText: "matrx access revoke ID [--fingerprint SHA256:...]",
		Description: `Revokes every SSH key of the sandbox, or only the one with --fingerprint.
Sessions the keys opened end within seconds.

Examples:
   matrx access revoke sbx-0123456789ab
   matrx access revoke sbx-0123456789ab --fingerprint SHA256:2vF0…`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "fingerprint", Usage: "revoke only the key with this SHA256 fingerprint"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "one sandbox id"); err != nil {
				return err
			}
			r, err := newClient(c).RevokeAccess(c.Context, c.Args().First(), c.String("fingerprint"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, r)
			}
			fmt.Fprintf(c.App.Writer, "%s: %d key(s) revoked\n", r.SandboxID, r.Revoked)
			return nil
		},
	}
}
