package ctl

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/client"
)

func rmCommand() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "stop and remove sandboxes (their hot files are synced up first; records are kept)",
		UsageText: "matrx rm ID... [--force]",
		Description: `Stops each sandbox: SIGTERM and the daemon's shutdown timeout, then SIGKILL
(--force: SIGKILL at once). Hot files are synced to the bucket before the
sandbox's storage is released.

Examples:
   matrx rm sbx-0123456789ab
   matrx rm sbx-0123456789ab --force`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "SIGKILL at once instead of a graceful stop"}},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return fmt.Errorf("rm needs at least one sandbox id (see 'matrx rm --help'): %w", errdefs.ErrInvalidArgument)
			}
			return runRemove(c.Context, newClient(c), c.Args().Slice(), c.Bool("force"), c.App.Writer, c.App.ErrWriter)
		},
	}
}

func runRemove(ctx context.Context, cl *client.Client, ids []string, force bool, w, errw io.Writer) error {
	failed := 0
	for _, id := range ids {
		if err := cl.Delete(ctx, id, !force); err != nil {
			fmt.Fprintf(errw, "matrx: rm %s: %v\n", id, err)
			failed++
			continue
		}
		fmt.Fprintln(w, id)
	}
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("matrx: rm: %d of %d sandbox(es) not removed", failed, len(ids)), 1)
	}
	return nil
}
