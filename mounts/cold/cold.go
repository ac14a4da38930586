package cold

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/ids"
)

// Driver names, as accepted by Select.
const (
	DriverAuto    = "auto"
	DriverMountS3 = "mount-s3"
	DriverS3FS    = "s3fs"
	DriverLocal   = "local"
)

// Driver makes one mountpoint show one user's cold files.
type Driver interface {
	// Name is the driver's configuration name ("mount-s3", "s3fs", "local").
	Name() string
	// Mount makes req.Mountpoint show the user's cold files and returns once
	// it answers, or, for a FUSE driver whose mounts have answered before,
	// once the mount is in place (the kernel holds requests on it until the
	// daemon answers; see "Answered later"). The caller owns req.Mountpoint
	// exclusively until it calls Unmount on the result.
	Mount(ctx context.Context, req Request) (Mount, error)
}

// Mount is one live mount made by a Driver.
type Mount interface {
	// Unmount removes the mount (every layer on the mountpoint) and stops
	// whatever serves it. It is safe to call more than once.
	Unmount(ctx context.Context) error
}

// Request describes one user's mount.
type Request struct {
	// UserID selects the prefix users/UserID/cold/ and names the daemon
	// (logs, systemd unit, credential file). Required.
	UserID ids.UserID
	// Prefix, when set, is the S3 prefix to serve instead of UserID's (the
	// shared mount serves "users/"). It ends in "/".
	Prefix string
	// Mountpoint is an existing directory below a shared mount (see the
	// package comment). Required.
	Mountpoint string
	// StageDir is an existing, empty directory on a private mount, where FUSE
	// daemons mount before the mount is moved onto Mountpoint. Required by
	// the FUSE drivers.
	StageDir string
	// CacheDir is a root-only directory for the FUSE client's data cache.
	// Used by the FUSE drivers; no data cache when empty.
	CacheDir string
	// SecretDir is a root-only directory, invisible to sandboxes, where a
	// driver may write a credential file for the duration of a start. Needed
	// by s3fs with static credentials.
	SecretDir string
	// UID and GID own every file as the sandbox sees it.
	UID, GID uint32
	// OnRemount, when set, is called after each successful remount.
	OnRemount func()
	// Private says the mountpoint is below a private mount on purpose (the
	// shared mount: its remounts reach sandboxes through the manager's
	// rebinds, not through propagation), so its start does not warn.
	Private bool
	// WaitAnswer makes the start wait for the daemon's first answer even
	// once the driver's mounts have answered before (a spare's start,
	// which is on no create's path: see "Spare daemons").
	WaitAnswer bool
}

// S3Config says where cold files live in S3 and how to reach it.
type S3Config struct {
	// Bucket holds users/USER/cold/ prefixes. Empty means the storage backend
	// is a local directory (driver "local").
	Bucket string
	// Region signs requests (sigv4); "us-east-1" when empty.
	Region string
	// Endpoint is the S3 endpoint URL (for example http://127.0.0.1:7070);
	// AWS's endpoint for Region when empty.
	Endpoint string
	// ForcePathStyle sends requests to ENDPOINT/BUCKET/KEY instead of
	// BUCKET.ENDPOINT/KEY (S3-compatible servers need this).
	ForcePathStyle bool
	// AccessKey and SecretKey are static credentials. When empty the FUSE
	// client uses the host's role (EC2 instance profile).
	AccessKey, SecretKey string
}

func (c S3Config) validate() error {
	if c.Bucket == "" {
		return fmt.Errorf("cold: S3 bucket is required: %w", errdefs.ErrInvalidArgument)
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return fmt.Errorf("cold: S3 access key and secret key must be set together: %w", errdefs.ErrInvalidArgument)
	}
	if c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "http://") && !strings.HasPrefix(c.Endpoint, "https://") {
		return fmt.Errorf("cold: S3 endpoint %q must be an http:// or https:// URL: %w", c.Endpoint, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Prefix is the S3 key prefix of a user's cold files: "users/USER/cold/".
func Prefix(userID ids.UserID) string { return userID.KeyPrefix("cold") }

// prefix is the S3 prefix req serves.
func (req Request) prefix() string {
	if req.Prefix != "" {
		return req.Prefix
	}
	return Prefix(req.UserID)
}

// userPath joins base with the user's directory and then elems, and refuses
// any result that is not strictly below base/users/USER (for elems) or equal
// to it. elems are fixed names chosen by this package, never input.
func userPath(base string, userID ids.UserID, elems ...string) (string, error) {
	if !filepath.IsAbs(base) {
		return "", fmt.Errorf("cold: base directory %q is not absolute: %w", base, errdefs.ErrInvalidArgument)
	}
	userDir := filepath.Join(base, "users", userID.String())
	p := filepath.Join(append([]string{userDir}, elems...)...)
	if p != userDir && !strings.HasPrefix(p, userDir+string(filepath.Separator)) {
		return "", fmt.Errorf("cold: path %q escapes %q: %w", p, userDir, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// ttlSeconds renders a cache TTL as whole seconds, rounding up, at least 1.
func ttlSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
