package ctl

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
)

func createCommand() *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "create a sandbox and print its id",
		UsageText: "matrx create --user USER [flags]",
		Description: `Creates a sandbox for USER and waits until it is ready. Omitted limits take
the daemon's defaults (2 CPUs, 4096 MiB, 20 GiB disk, 2 h TTL unless configured).

Examples:
   matrx create --user alice
   matrx create --user alice --cpu 1 --memory 1024 --env FOO=bar --network none
   matrx create --user alice --image registry.example:5000/team/sandbox:1.4`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "user", Required: true, Usage: "user id owning the sandbox"},
			&cli.StringFlag{Name: "image", Usage: "image reference, e.g. registry.example:5000/team/app:1 (default: the daemon's); pulled first when missing"},
			&cli.StringFlag{Name: "pull", Usage: "if_not_present (default), always or never"},
			&cli.Float64Flag{Name: "cpu", Usage: "CPUs"},
			&cli.Int64Flag{Name: "memory", Usage: "memory limit in MiB"},
			&cli.Int64Flag{Name: "pids", Usage: "process limit"},
			&cli.Int64Flag{Name: "disk", Usage: "home disk quota in MiB"},
			&cli.StringFlag{Name: "network", Usage: "default (internet minus blocked ranges) or none (loopback only)"},
			&cli.StringSliceFlag{Name: "allow", Usage: "CIDR the sandbox may reach; switches to deny-by-default (repeatable)"},
			&cli.Int64Flag{Name: "ttl", Usage: "lifetime in seconds"},
			&cli.StringSliceFlag{Name: "env", Usage: "K=V (repeatable)"},
			&cli.StringSliceFlag{Name: "label", Usage: "K=V (repeatable)"},
			&cli.StringFlag{Name: "idempotency-key", Usage: "a retried create with the same key returns the first sandbox"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 0, "no positional arguments"); err != nil {
				return err
			}
			o := createOptions{user: c.String("user"), key: c.String("idempotency-key"), json: c.Bool("json")}
			var err error
			o.cfg.Env, err = keyValues(c.StringSlice("env"), "env")
			if err != nil {
				return err
			}
			o.cfg.Labels, err = keyValues(c.StringSlice("label"), "label")
			if err != nil {
				return err
			}
			o.cfg.Image, o.cfg.Pull, o.cfg.CPU, o.cfg.MemoryMB = c.String("image"), c.String("pull"), c.Float64("cpu"), c.Int64("memory")
			o.cfg.Pids, o.cfg.DiskMB, o.cfg.TTLSeconds = c.Int64("pids"), c.Int64("disk"), c.Int64("ttl")
			if c.IsSet("network") || c.IsSet("allow") {
				o.cfg.Network = &apitype.NetworkConfig{Mode: c.String("network"), Allow: c.StringSlice("allow")}
			}
			return runCreate(c.Context, newClient(c), o, c.App.Writer)
		},
	}
}

type createOptions struct {
	user string
	cfg  apitype.SandboxConfig
	key  string
	json bool
}

func runCreate(ctx context.Context, cl *client.Client, o createOptions, w io.Writer) error {
	var opts []client.CreateOption
	if o.key != "" {
		opts = append(opts, client.WithIdempotencyKey(o.key))
	}
	s, err := cl.Create(ctx, o.user, &o.cfg, opts...)
	if err != nil {
		return err
	}
	if o.json {
		return printJSON(w, s)
	}
	_, err = fmt.Fprintln(w, s.SandboxID)
	return err
}
