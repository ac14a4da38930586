package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/version"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "show client, daemon and containerd versions",
		UsageText: "matrx version [--json]",
		Description: `Example:
   matrx version`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 0, "no positional arguments"); err != nil {
				return err
			}
			v, err := newClient(c).Version(c.Context)
			if err != nil {
				return err
			}
			out := map[string]string{"client": version.Version, "daemon": v.Version, "containerd": v.Containerd}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			fmt.Fprintf(c.App.Writer, "client:     %s\ndaemon:     %s\ncontainerd: %s\n", out["client"], out["daemon"], out["containerd"])
			return nil
		},
	}
}
