// Package hostconfig is what matrxd and the tools that look at its host
// (`matrx doctor`) must agree on, kept in one place so that they cannot
// drift: the defaults of a matrx host (the API socket, containerd's socket
// and namespace, the state dir, the socket group, the default sandbox
// image) and the S3 flags both take (names, environment twins, and the
// rule that an endpoint implies path-style addressing).
//
// The API socket's default lives in api/apitype, which the Go client
// links without this package's flags library; Socket is that constant.
package hostconfig

import (
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
)

// Defaults of a matrx host.
const (
	Socket              = apitype.DefaultSocket
	SocketGroup         = "matrx"
	ContainerdAddress   = "/run/containerd/containerd.sock"
	ContainerdNamespace = "matrx"
	StateDir            = "/var/lib/matrx"
	Image               = "localhost/matrx/sandbox:latest"
	S3Region            = "us-east-1"
)

// S3 is where the users' files are kept: an empty Bucket means local
// storage under the state dir.
type S3 struct {
	Bucket    string
	Region    string
	Endpoint  string
	PathStyle bool
}

// S3Flags are the --s3-* flags, each with its MATRX_S3_* twin; bucketUsage
// says what the bucket is for in the command that takes them.
func S3Flags(bucketUsage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "s3-bucket", EnvVars: []string{"MATRX_S3_BUCKET"}, Usage: bucketUsage},
		&cli.StringFlag{Name: "s3-region", Value: S3Region, EnvVars: []string{"MATRX_S3_REGION"}},
		&cli.StringFlag{Name: "s3-endpoint", EnvVars: []string{"MATRX_S3_ENDPOINT"}, Usage: "S3-compatible endpoint URL (implies path-style addressing)"},
		&cli.BoolFlag{Name: "s3-path-style", EnvVars: []string{"MATRX_S3_PATH_STYLE"}, Usage: "path-style addressing (default on when --s3-endpoint is set)"},
	}
}

// S3FromFlags reads the flags S3Flags made: path-style addressing is on
// when an endpoint is set, unless --s3-path-style says otherwise.
func S3FromFlags(c *cli.Context) S3 {
	return S3{
		Bucket: c.String("s3-bucket"), Region: c.String("s3-region"), Endpoint: c.String("s3-endpoint"),
		PathStyle: c.Bool("s3-path-style") || (c.String("s3-endpoint") != "" && !c.IsSet("s3-path-style")),
	}
}
