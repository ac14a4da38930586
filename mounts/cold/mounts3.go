package cold

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"

	"github.com/containerd/errdefs"
)

// FUSEConfig holds what a FUSE driver (MountS3, S3FS) needs.
type FUSEConfig struct {
	// S3 locates the bucket. Bucket is required.
	S3 S3Config
	// Logger receives lifecycle events with user_id and driver attributes.
	// Required.
	Logger *slog.Logger
}

func (c FUSEConfig) validate() error {
	if c.Logger == nil {
		return fmt.Errorf("cold: logger is required: %w", errdefs.ErrInvalidArgument)
	}
	return c.S3.validate()
}

// MountS3 serves cold files with AWS mountpoint-s3 (the "mount-s3" binary).
//
// The command line follows mountpoint-s3's clap definitions
// (awslabs/mountpoint-s3, mountpoint-s3/src/cli.rs) and doc/CONFIGURATION.md:
//   - BUCKET DIRECTORY are positional; --prefix must end in "/".
//   - --uid/--gid accept 1 and above only (value_parser range 1..), so they
//     are left out for root, which is the default owner anyway.
//   - --allow-other conflicts with --allow-root; as root no fuse.conf
//     user_allow_other is needed.
//   - --allow-delete and --allow-overwrite are opt-in booleans (default:
//     no deletes, no overwrites).
//   - --cache DIR enables the data cache in a subdirectory Mountpoint creates
//     and empties at mount and exit; a cache directory cannot be shared
//     between Mountpoint processes, hence one per user.
//   - --metadata-ttl takes SECONDS|indefinite|minimal (seconds here).
//   - --endpoint-url overrides endpoint detection; --force-path-style turns
//     off virtual-hosted addressing; --region sets the signing region.
//   - -f/--foreground keeps the process in the foreground; it then logs to
//     stdout (doc/LOGGING.md), which the supervisor captures.
//
// Credentials come from the default AWS chain (instance profile); static keys
// from S3Config are passed as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the
// daemon's environment, which only root can read (/proc/PID/environ).
type MountS3 struct {
	s3     S3Config
	log    *slog.Logger
	o      options
	proven atomic.Bool // one of its mounts answered (fuseDriver.proven)
}

// NewMountS3 returns the mount-s3 driver.
func NewMountS3(cfg FUSEConfig, opts ...Option) (*MountS3, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	if o.binary == "" {
		o.binary = "mount-s3"
	}
	return &MountS3{s3: cfg.S3, log: cfg.Logger, o: o}, nil
}

// Name returns "mount-s3".
func (d *MountS3) Name() string { return DriverMountS3 }

// Mount starts and supervises a mount-s3 daemon for req; see FUSEMount.
func (d *MountS3) Mount(ctx context.Context, req Request) (Mount, error) {
	return startFUSE(ctx, fuseDriver{name: DriverMountS3, build: d.command, log: d.log, o: d.o, proven: &d.proven}, req)
}

// command builds the daemon invocation that mounts on mountpoint (the stage
// directory).
func (d *MountS3) command(req Request, mountpoint string) (*Command, error) {
	args, err := d.args(req, mountpoint)
	if err != nil {
		return nil, err
	}
	cmd := &Command{Path: d.o.binary, Args: args}
	if d.s3.AccessKey != "" {
		cmd.Env = []string{"AWS_ACCESS_KEY_ID=" + d.s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + d.s3.SecretKey}
	}
	return cmd, nil
}

func (d *MountS3) args(req Request, mountpoint string) ([]string, error) {
	prefix := req.prefix()
	args := []string{d.s3.Bucket, mountpoint, "--prefix", prefix, "--allow-other"}
	if req.UID != 0 {
		args = append(args, "--uid", strconv.FormatUint(uint64(req.UID), 10))
	}
	if req.GID != 0 {
		args = append(args, "--gid", strconv.FormatUint(uint64(req.GID), 10))
	}
	args = append(args, "--allow-delete", "--allow-overwrite")
	if req.CacheDir != "" {
		args = append(args, "--cache", req.CacheDir)
	}
	args = append(args, "--metadata-ttl", strconv.FormatInt(ttlSeconds(d.o.metadataTTL), 10))
	if d.s3.Endpoint != "" {
		args = append(args, "--endpoint-url", d.s3.Endpoint)
	}
	if d.s3.ForcePathStyle {
		args = append(args, "--force-path-style")
	}
	if d.s3.Region != "" {
		args = append(args, "--region", d.s3.Region)
	}
	return append(args, "--foreground"), nil
}
