package cold

import (
	"os/exec"
	"time"

	"github.com/matrx-dev/matrx/ids"
)

// Option tunes a FUSE driver (MountS3, S3FS) or Select.
type Option func(*options)

type options struct {
	binary        string
	metadataTTL   time.Duration
	startTimeout  time.Duration
	stopTimeout   time.Duration
	probeInterval time.Duration
	probeTimeout  time.Duration
	backoffMin    time.Duration
	backoffMax    time.Duration
	wrap          func(userID ids.UserID, argv []string) []string
	lookPath      func(string) (string, error)

	// isMounted decides whether a mountinfo entry is the FUSE daemon's
	// mount. Tests replace it to let a fake daemon mount a tmpfs.
	isMounted func(fstype string) bool
}

func defaultOptions() options {
	return options{
		metadataTTL:   60 * time.Second,
		startTimeout:  30 * time.Second,
		stopTimeout:   5 * time.Second,
		probeInterval: 5 * time.Second,
		probeTimeout:  10 * time.Second,
		backoffMin:    500 * time.Millisecond,
		backoffMax:    30 * time.Second,
		lookPath:      exec.LookPath,
		isMounted:     isFUSE,
	}
}

func buildOptions(opts []Option) options {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// isFUSE accepts the mountinfo fstypes of FUSE mounts: "fuse" (mount-s3),
// "fuse.SUBTYPE" (s3fs shows "fuse.s3fs") and "fuseblk".
func isFUSE(fstype string) bool {
	return fstype == "fuse" || fstype == "fuseblk" || len(fstype) > 5 && fstype[:5] == "fuse."
}

// WithBinary runs this executable instead of "mount-s3" or "s3fs" from PATH.
func WithBinary(path string) Option { return func(o *options) { o.binary = path } }

// WithMetadataTTL sets how long the FUSE client trusts cached metadata
// (default 60s, as the old system's --metadata-ttl 60). Objects written to S3
// by others show up in listings and stats after at most this long.
func WithMetadataTTL(d time.Duration) Option { return func(o *options) { o.metadataTTL = d } }

// WithStartTimeout bounds the wait for a started daemon's mount to appear and
// answer (default 30s).
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }

// WithStopTimeout is how long a daemon gets between SIGTERM and SIGKILL
// (default 5s).
func WithStopTimeout(d time.Duration) Option { return func(o *options) { o.stopTimeout = d } }

// WithProbeInterval sets how often the supervisor stats the mountpoint
// (default 5s); a probe that takes longer than timeout (default 10s) is
// logged, not treated as a dead mount (S3 may just be slow).
func WithProbeInterval(interval, timeout time.Duration) Option {
	return func(o *options) { o.probeInterval, o.probeTimeout = interval, timeout }
}

// WithBackoff sets the delay between failed remounts: min, doubling up to max
// (defaults 500ms and 30s).
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = min, max }
}

// WithCommandWrapper rewrites each daemon's argv before it is started, for
// example to prefix "systemd-run --scope --collect --quiet --unit=NAME --" on
// hosts where systemd is PID 1. The wrapper must exec the daemon in place
// (systemd-run --scope does), because the supervisor watches the pid it
// started.
func WithCommandWrapper(wrap func(userID ids.UserID, argv []string) []string) Option {
	return func(o *options) { o.wrap = wrap }
}

// WithLookPath replaces exec.LookPath in Select (tests).
func WithLookPath(lookPath func(string) (string, error)) Option {
	return func(o *options) { o.lookPath = lookPath }
}
