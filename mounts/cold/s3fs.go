package cold

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
)

// S3FS serves cold files with s3fs-fuse (Debian's s3fs, 1.90 here), the
// alternative for hosts without mount-s3. The command line, checked against
// versitygw (the tests run it for real), is
//
//	s3fs BUCKET:/users/USER/cold MOUNTPOINT -f -o OPTIONS
//
// where OPTIONS is a comma-separated list of:
//   - url=ENDPOINT: https://s3.REGION.amazonaws.com when only a region is
//     configured, s3fs's default (https://s3.amazonaws.com) when neither is;
//     use_path_request_style with ForcePathStyle.
//   - allow_other, uid=UID, gid=GID, umask=0022, mp_umask=0022: objects
//     without mode metadata and the mount root show as 0755, owned by the
//     sandbox user.
//   - passwd_file=FILE with static credentials: "ACCESS:SECRET" in a 0600
//     file in Request.SecretDir, removed as soon as the mount answers (s3fs
//     reads it once at start); iam_role=auto (instance profile) otherwise.
//   - endpoint=REGION (when set) and sigv4: sign with SigV4 only.
//   - stat_cache_expire=SECONDS, the counterpart of mount-s3's
//     --metadata-ttl. s3fs does not cache negative lookups by default, so a
//     key put into S3 after the mount is visible at once; listings are never
//     cached.
//   - use_cache=DIR,del_cache with a cache dir: downloaded data is kept in
//     the user's cache dir, emptied at start and exit.
//   - ensure_diskfree=2048: s3fs refuses to stage data that would leave
//     less than 2 GiB free on the host's disk.
//   - instance_name=USER, which s3fs adds to its log lines, and
//     logfile=/dev/stderr: with -f s3fs logs to stdout, which it buffers
//     when it is a pipe, so a killed daemon's last lines would be lost; its
//     log file is flushed after each line.
//
// s3fsDiskFreeMB is the free space s3fs leaves on the host's disk.
const s3fsDiskFreeMB = 2048

// -f keeps s3fs in the foreground. When s3fs
// cannot reach the bucket or the credentials are wrong it exits (status 0,
// "invalid credentials" or similar on stderr) before or right after
// mounting; the start then fails with that output in the error.
type S3FS struct {
	s3     S3Config
	log    *slog.Logger
	o      options
	proven atomic.Bool // one of its mounts answered (fuseDriver.proven)
}

// NewS3FS returns the s3fs driver.
func NewS3FS(cfg FUSEConfig, opts ...Option) (*S3FS, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if strings.Contains(cfg.S3.Endpoint, ",") || strings.Contains(cfg.S3.Region, ",") {
		return nil, fmt.Errorf("cold: s3fs options cannot contain ',': %w", errdefs.ErrInvalidArgument)
	}
	o := buildOptions(opts)
	if o.binary == "" {
		o.binary = "s3fs"
	}
	return &S3FS{s3: cfg.S3, log: cfg.Logger, o: o}, nil
}

// Name returns "s3fs".
func (d *S3FS) Name() string { return DriverS3FS }

// Mount starts and supervises an s3fs daemon for req; see FUSEMount.
func (d *S3FS) Mount(ctx context.Context, req Request) (Mount, error) {
	return startFUSE(ctx, fuseDriver{name: DriverS3FS, build: d.command, log: d.log, o: d.o, proven: &d.proven}, req)
}

// command writes the passwd file (static credentials only) and builds the
// invocation that mounts on mountpoint (the stage directory).
func (d *S3FS) command(req Request, mountpoint string) (*Command, error) {
	passwd := ""
	if d.s3.AccessKey != "" {
		var err error
		if passwd, err = writePasswdFile(req.SecretDir, req.UserID, d.s3.AccessKey, d.s3.SecretKey); err != nil {
			return nil, err
		}
	}
	args, err := d.args(req, mountpoint, passwd)
	if err != nil {
		if passwd != "" {
			_ = os.Remove(passwd)
		}
		return nil, err
	}
	cmd := &Command{Path: d.o.binary, Args: args}
	if passwd != "" {
		cmd.Secrets = []string{passwd}
	}
	return cmd, nil
}

func (d *S3FS) args(req Request, mountpoint, passwdFile string) ([]string, error) {
	prefix := req.prefix()
	for _, p := range []string{req.CacheDir, passwdFile} {
		if strings.Contains(p, ",") {
			return nil, fmt.Errorf("cold: s3fs option path %q contains ',': %w", p, errdefs.ErrInvalidArgument)
		}
	}
	var o []string
	switch {
	case d.s3.Endpoint != "":
		o = append(o, "url="+d.s3.Endpoint)
	case d.s3.Region != "":
		o = append(o, "url=https://s3."+d.s3.Region+".amazonaws.com")
	}
	if d.s3.ForcePathStyle {
		o = append(o, "use_path_request_style")
	}
	o = append(o,
		"allow_other",
		"uid="+strconv.FormatUint(uint64(req.UID), 10),
		"gid="+strconv.FormatUint(uint64(req.GID), 10),
		"umask=0022",
		"mp_umask=0022",
	)
	if passwdFile != "" {
		o = append(o, "passwd_file="+passwdFile)
	} else {
		o = append(o, "iam_role=auto")
	}
	if d.s3.Region != "" {
		o = append(o, "endpoint="+d.s3.Region)
	}
	o = append(o, "sigv4", "stat_cache_expire="+strconv.FormatInt(ttlSeconds(d.o.metadataTTL), 10))
	if req.CacheDir != "" {
		o = append(o, "use_cache="+req.CacheDir, "del_cache")
	}
	// s3fs stages every write (and, with use_cache, every read) in files on
	// the host: keep it from filling the host's disk for a sandbox writing
	// a huge file through /data/cold (mount-s3 keeps 5% free by default).
	o = append(o, "ensure_diskfree="+strconv.Itoa(s3fsDiskFreeMB))
	o = append(o, "instance_name="+req.UserID.String(), "logfile=/dev/stderr")
	// BUCKET:/PATH takes the prefix without its trailing slash.
	source := d.s3.Bucket + ":/" + strings.TrimSuffix(prefix, "/")
	return []string{source, mountpoint, "-f", "-o", strings.Join(o, ",")}, nil
}

// writePasswdFile writes "ACCESS:SECRET" to a new 0600 file in dir, which must
// be an existing root-only directory.
func writePasswdFile(dir string, userID ids.UserID, accessKey, secretKey string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("cold: s3fs with static credentials needs a secret dir: %w", errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("cold: secret dir: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	if !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("cold: secret dir %s must be a directory with mode 0700: %w", dir, errdefs.ErrFailedPrecondition)
	}
	f, err := os.CreateTemp(dir, "s3fs-"+userID.String()+"-*.passwd") // mode 0600
	if err != nil {
		return "", fmt.Errorf("cold: create passwd file: %w: %w", err, errdefs.ErrUnavailable)
	}
	name := f.Name()
	_, werr := f.WriteString(accessKey + ":" + secretKey + "\n")
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(name)
		return "", fmt.Errorf("cold: write passwd file: %w: %w", err, errdefs.ErrUnavailable)
	}
	return name, nil
}
