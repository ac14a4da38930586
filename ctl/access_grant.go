package ctl

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
)

func accessGrantCommand() *cli.Command {
	return &cli.Command{
		Name:      "grant",
		Usage:     "grant an SSH key for a sandbox (the original service's POST /sandboxes/{id}/access)",
		UsageText: "matrx access grant ID [--root] [--ttl DURATION] [--public-key FILE]",
		Description: `Prints the answer as JSON: without --public-key it holds a one-time private
key (save it with mode 0600), the gateway's known_hosts line and the ssh
commands to use. 'matrx ssh' does all of it for you.

Examples:
   matrx access grant sbx-0123456789ab
   matrx access grant sbx-0123456789ab --root --ttl 10m --public-key ~/.ssh/id_ed25519.pub`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "root", Usage: "the key logs in as root instead of agent"},
			&cli.DurationFlag{Name: "ttl", Value: time.Hour, Usage: "how long the key works, up to 24h"},
			&cli.StringFlag{Name: "public-key", Usage: "an OpenSSH public key file to grant instead of making a key pair"},
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "one sandbox id"); err != nil {
				return err
			}
			secs := int64(c.Duration("ttl") / time.Second)
			req := apitype.AccessRequest{User: "agent", TTLSeconds: &secs}
			if c.Bool("root") {
				req.User = "root"
			}
			if f := c.String("public-key"); f != "" {
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("--public-key: %v: %w", err, errdefs.ErrInvalidArgument)
				}
				req.PublicKey = strings.TrimSpace(string(b))
			}
			a, err := newClient(c).GrantAccess(c.Context, c.Args().First(), req)
			if err != nil {
				return err
			}
			return printJSON(c.App.Writer, a)
		},
	}
}
