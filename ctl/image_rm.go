package ctl

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
)

func imageRmCommand() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "delete images (refused while a sandbox that is not stopped uses one)",
		UsageText: "matrx image rm NAME... [--json]",
		Description: `Deletes each image and prints the name it was stored under. An image a live
sandbox uses is refused (409); stop those sandboxes first.

Example:
   matrx image rm registry.example:5000/team/sandbox:1.3`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return fmt.Errorf("image rm needs at least one image name (see 'matrx image rm --help'): %w", errdefs.ErrInvalidArgument)
			}
			return runImageRm(c.Context, newClient(c), c.Args().Slice(), c.Bool("json"), c.App.Writer, c.App.ErrWriter)
		},
	}
}

func runImageRm(ctx context.Context, cl *client.Client, names []string, asJSON bool, w, errw io.Writer) error {
	failed := 0
	all := apitype.ImageDeleteResponse{Deleted: []string{}}
	for _, n := range names {
		res, err := cl.DeleteImage(ctx, n)
		if err != nil {
			fmt.Fprintf(errw, "matrx: image rm %s: %v\n", n, err)
			failed++
			continue
		}
		all.Deleted = append(all.Deleted, res.Deleted...)
		if !asJSON {
			for _, d := range res.Deleted {
				fmt.Fprintln(w, d)
			}
		}
	}
	if asJSON {
		if err := printJSON(w, all); err != nil {
			return err
		}
	}
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("matrx: image rm: %d of %d image(s) not deleted", failed, len(names)), 1)
	}
	return nil
}
