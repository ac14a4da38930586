package ctl

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"
)

func ttlCommand() *cli.Command {
	return &cli.Command{
		Name:      "ttl",
		Usage:     "make a running sandbox expire DURATION from now",
		UsageText: "matrx ttl ID DURATION [--json]",
		Description: `Extends (or shortens) a ready or running sandbox's lifetime: it now expires
DURATION from now (whole seconds, or a duration such as 90s, 30m or 2h). Its
whole lifetime, from creation, may not exceed the daemon's --max-ttl.

Examples:
   matrx ttl sbx-0123456789ab 30m
   matrx ttl sbx-0123456789ab 3600`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a sandbox id and a duration"); err != nil {
				return err
			}
			secs, err := parseSeconds(c.Args().Get(1))
			if err != nil {
				return fmt.Errorf("DURATION %w", err)
			}
			s, err := newClient(c).SetTTL(c.Context, c.Args().First(), time.Duration(secs)*time.Second)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, s)
			}
			fmt.Fprintf(c.App.Writer, "%s expires at %s (ttl %ds)\n", s.SandboxID, s.ExpiresAt.Format(time.RFC3339), s.TTLSeconds)
			return nil
		},
	}
}
