package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/doctor"
	"github.com/matrx-dev/matrx/hostconfig"
)

// doctorCommand checks the host without the daemon. Its flags mirror
// matrxd's, with the same MATRX_* twins, so that it checks what matrxd
// would use.
func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:      "doctor",
		Usage:     "check that this host can run matrxd (no daemon needed); exits non-zero if a check fails",
		UsageText: "matrx doctor [--json] [matrxd's flags]",
		Description: `Checks containerd, runc, cgroups, overlayfs, loop devices, FUSE and the S3
driver, CNI plugins, user namespaces, the bucket (with --s3-bucket), free
disk, the socket and the default image, each PASS/WARN/FAIL with a fix.

Examples:
   matrx doctor
   matrx doctor --json --s3-bucket my-bucket`,
		Flags: append([]cli.Flag{
			jsonFlag(),
			&cli.StringFlag{Name: "containerd-address", Value: hostconfig.ContainerdAddress, EnvVars: []string{"MATRX_CONTAINERD_ADDRESS"}},
			&cli.StringFlag{Name: "containerd-namespace", Value: hostconfig.ContainerdNamespace, EnvVars: []string{"MATRX_CONTAINERD_NAMESPACE"}},
			&cli.StringFlag{Name: "state-dir", Value: hostconfig.StateDir, EnvVars: []string{"MATRX_STATE_DIR"}},
			&cli.StringFlag{Name: "socket", Usage: "matrxd API socket (default: the global --socket)"},
			&cli.StringFlag{Name: "socket-group", Value: hostconfig.SocketGroup, EnvVars: []string{"MATRX_SOCKET_GROUP"}},
			&cli.StringFlag{Name: "oci-runtime", Value: "runc", EnvVars: []string{"MATRX_OCI_RUNTIME"}, Usage: "matrxd's OCI runtime: runc or crun"},
			&cli.StringFlag{Name: "image", Value: hostconfig.Image, EnvVars: []string{"MATRX_IMAGE", "MATRX_SANDBOX_IMAGE"}, Usage: "default sandbox image"},
		}, hostconfig.S3Flags("bucket to check (empty: local storage)")...),
		Action: doctorCmd,
	}
}

func doctorCmd(c *cli.Context) error {
	socket := c.String("socket")
	if socket == "" && len(c.Lineage()) > 1 {
		socket = c.Lineage()[1].String("socket")
	}
	cfg := doctor.Config{
		ContainerdAddress:   c.String("containerd-address"),
		ContainerdNamespace: c.String("containerd-namespace"),
		StateDir:            c.String("state-dir"),
		Socket:              socket,
		SocketGroup:         c.String("socket-group"),
		Image:               c.String("image"),
		OCIRuntime:          c.String("oci-runtime"),
		S3:                  hostconfig.S3FromFlags(c),
	}
	rep := doctor.Run(c.Context, cfg)
	var err error
	if c.Bool("json") {
		err = printJSON(c.App.Writer, rep)
	} else {
		err = rep.WriteTable(c.App.Writer)
	}
	if err != nil {
		return err
	}
	if !rep.OK {
		return cli.Exit(fmt.Sprintf("matrx doctor: %d check(s) failed", rep.Count(doctor.Fail)), 1)
	}
	return nil
}
