package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/hostconfig"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/metrics"
	"github.com/matrx-dev/matrx/mounts"
	"github.com/matrx-dev/matrx/mounts/cold"
	"github.com/matrx-dev/matrx/mounts/disk"
	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/urfave/cli/v2"
)

// StorageConfig selects where users' files live. With no bucket the
// embedded "local" driver keeps them under <state>/storage; with a bucket,
// S3 (credentials from the standard AWS chain: the instance role in
// production).
type StorageConfig struct {
	Bucket     string
	Region     string
	Endpoint   string
	PathStyle  bool
	ColdDriver string // auto | mount-s3 | s3fs | local
	// ColdShared serves every user's cold storage from one FUSE daemon
	// (cold.WithSharedMount): a new user's first sandbox skips a daemon
	// start, at the price of one daemon's fate and throughput shared by
	// all users (docs/security.md). Needs a bucket and a FUSE driver.
	ColdShared bool
	// ColdSpares is how many FUSE daemons are kept started ahead for new
	// users' first sandboxes (cold.WithSpares): 0 means the default (as
	// many as the warm pools hold, at most coldSparesMax; none without a
	// warm pool), -1 none (the flag's 0). Only with a bucket and per-user
	// FUSE mounts (not --cold-shared).
	ColdSpares         int
	CheckpointInterval time.Duration
	Excludes           []string // nil: hotsync defaults
	// DiskPool is how many freshly formatted default-size disk images are
	// kept ready (saves mkfs on create): 0 means DefaultDiskPool, a
	// negative value none.
	DiskPool int
	// MaxNames caps the files, directories and symlinks one sandbox's hot
	// tier syncs (0: hotsync.DefaultMaxNames, 200,000); disks get as many
	// inodes.
	MaxNames int
	// TrashRetention keeps deleted and overwritten hot files under
	// users/<user>/trash/ this long (0: no trash). The flag defaults to 7
	// days.
	TrashRetention time.Duration
	// DiskOvercommit and DiskReserveMB admit a create only if every
	// sandbox disk on the host could grow to its size (times the ratio)
	// within the state filesystem's free space less the reserve (0:
	// mounts' defaults, 1.0 and 1024 MiB).
	DiskOvercommit float64
	DiskReserveMB  int64
}

// DefaultTrashRetention is the --hot-trash-retention default.
const DefaultTrashRetention = 7 * 24 * time.Hour

// DefaultDiskPool is StorageConfig.DiskPool's default: enough for a burst
// of two creates; the pool refills in the background (~10 ms per image).
const DefaultDiskPool = 2

// UserNSConfig selects user namespaces for sandboxes.
type UserNSConfig struct {
	Mode string // auto | on | off
	Base uint32
}

// userns resolves the mode against what the host supports.
func (u UserNSConfig) resolve(log *slog.Logger) (runtime.UserNS, error) {
	if u.Mode == "off" {
		log.Warn("user namespaces are off: container root is host root (confined by capabilities, seccomp and namespaces)")
		return runtime.UserNS{}, nil
	}
	ok, why := runtime.DetectUserNS()
	if !ok {
		if u.Mode == "on" {
			return runtime.UserNS{}, fmt.Errorf("user namespaces requested but unsupported: %s: %w", why, errdefs.ErrFailedPrecondition)
		}
		log.Warn("user namespaces unsupported on this host; sandboxes run without them", "reason", why)
		return runtime.UserNS{}, nil
	}
	ns, err := runtime.NewUserNS(u.Base)
	if err != nil {
		return runtime.UserNS{}, err
	}
	log.Info("user namespaces on: sandbox ids 0-65535 map to host ids", "first_host_id", ns.Base, "count", ns.Size)
	return ns, nil
}

func storageFlags() []cli.Flag {
	return append(hostconfig.S3Flags("bucket holding users/<user>/{hot,cold}/ (empty: local storage under the state dir)"), []cli.Flag{
		&cli.StringFlag{Name: "userns", Value: "auto", EnvVars: []string{"MATRX_USERNS"}, Usage: "run sandboxes in user namespaces: auto (when supported), on, off"},
		&cli.Uint64Flag{Name: "userns-base", Value: runtime.DefaultUserNSBase, EnvVars: []string{"MATRX_USERNS_BASE"}, Usage: "first host uid/gid of the 65536 ids sandboxes map to"},
		&cli.StringFlag{Name: "cold-driver", Value: "auto", EnvVars: []string{"MATRX_COLD_DRIVER"}, Usage: "auto, mount-s3, s3fs or local"},
		&cli.BoolFlag{Name: "cold-shared", EnvVars: []string{"MATRX_COLD_SHARED"}, Usage: "one FUSE daemon for every user's cold storage (binds per user) instead of one per user: faster first sandboxes, shared fate and throughput (needs a bucket)"},
		&cli.IntFlag{Name: "cold-spares", Value: -1, EnvVars: []string{"MATRX_COLD_SPARES"}, Usage: "FUSE daemons kept started ahead for new users' first sandboxes, each becoming one user's (-1: as many as the warm pools hold, at most 64, none without a pool; 0: none; needs a bucket, not with --cold-shared)"},
		&cli.DurationFlag{Name: "checkpoint-interval", Value: 5 * time.Minute, EnvVars: []string{"MATRX_CHECKPOINT_INTERVAL"}, Usage: "how often running sandboxes' hot files are synced up (0: never; failed final syncs are retried this often, or every 5m)"},
		&cli.StringFlag{Name: "hot-excludes", EnvVars: []string{"MATRX_HOT_EXCLUDES"}, Usage: "comma-separated patterns never synced (default, the old system's: *.tmp,.DS_Store,__pycache__/)"},
		&cli.IntFlag{Name: "hot-max-names", Value: hotsync.DefaultMaxNames, EnvVars: []string{"MATRX_HOT_MAX_NAMES"}, Usage: "files, directories and symlinks one sandbox's hot tier syncs (hard links count); over it nothing is deleted and the record says so; disks get as many inodes"},
		&cli.DurationFlag{Name: "hot-trash-retention", Value: DefaultTrashRetention, EnvVars: []string{"MATRX_HOT_TRASH_RETENTION"}, Usage: "keep deleted and overwritten hot files under users/<user>/trash/ this long, for `matrx storage restore` (0: no trash)"},
		&cli.Float64Flag{Name: "disk-overcommit", Value: mounts.DefaultDiskOvercommit, EnvVars: []string{"MATRX_DISK_OVERCOMMIT"}, Usage: "how many times the state filesystem's free space the sandbox disks may claim together (1: a create is refused with 507 unless every disk could fill up)"},
		&cli.Int64Flag{Name: "disk-reserve-mb", Value: mounts.DefaultDiskReserve >> 20, EnvVars: []string{"MATRX_DISK_RESERVE_MB"}, Usage: "free space of the state filesystem no sandbox disk may claim (the registry, manifests, logs)"},
		&cli.IntFlag{Name: "disk-pool", Value: DefaultDiskPool, EnvVars: []string{"MATRX_DISK_POOL"}, Usage: "freshly formatted default-size disk images kept ready (0: none)"},
	}...)
}

func storageConfigFrom(c *cli.Context) StorageConfig {
	s3 := hostconfig.S3FromFlags(c)
	sc := StorageConfig{
		Bucket: s3.Bucket, Region: s3.Region, Endpoint: s3.Endpoint, PathStyle: s3.PathStyle,
		ColdDriver: strings.ToLower(c.String("cold-driver")), ColdShared: c.Bool("cold-shared"), CheckpointInterval: c.Duration("checkpoint-interval"),
		DiskPool: c.Int("disk-pool"), MaxNames: c.Int("hot-max-names"), TrashRetention: c.Duration("hot-trash-retention"),
		DiskOvercommit: c.Float64("disk-overcommit"), DiskReserveMB: c.Int64("disk-reserve-mb"),
	}
	if sc.DiskPool == 0 {
		sc.DiskPool = -1 // the flag says none; the field's zero means the default
	}
	switch n := c.Int("cold-spares"); n {
	case -1:
		sc.ColdSpares = 0 // the field's zero is the flag's -1: the default
	case 0:
		sc.ColdSpares = -1
	default:
		sc.ColdSpares = n // below -1 or above the bound, Validate refuses it by its value
	}
	if c.IsSet("hot-excludes") {
		// Set but empty means "exclude nothing", hence non-nil.
		sc.Excludes = append([]string{}, splitList(c.String("hot-excludes"))...)
	}
	return sc
}

// Validate checks the storage settings before anything starts.
func (s StorageConfig) Validate() error {
	if s.Bucket != "" {
		if err := objstore.ValidateBucketName(s.Bucket); err != nil {
			return err
		}
	}
	switch s.ColdDriver {
	case "", "auto", "mount-s3", "s3fs", "local":
	default:
		return fmt.Errorf("cold driver %q: want auto, mount-s3, s3fs or local: %w", s.ColdDriver, errdefs.ErrInvalidArgument)
	}
	if s.ColdShared && (s.Bucket == "" || s.ColdDriver == "local") {
		return fmt.Errorf("cold shared mount needs a bucket and a FUSE cold driver (mount-s3 or s3fs), not local storage: %w", errdefs.ErrInvalidArgument)
	}
	if s.ColdSpares < -1 || s.ColdSpares > coldSparesMax {
		return fmt.Errorf("cold spares %d: want -1 (default), 0 (none) to %d: %w", s.ColdSpares, coldSparesMax, errdefs.ErrInvalidArgument)
	}
	if s.ColdSpares > 0 && (s.Bucket == "" || s.ColdDriver == "local" || s.ColdShared) {
		return fmt.Errorf("cold spares need a bucket and per-user FUSE cold mounts (not local storage, not --cold-shared): %w", errdefs.ErrInvalidArgument)
	}
	if s.CheckpointInterval != 0 && s.CheckpointInterval < time.Second {
		return fmt.Errorf("checkpoint interval %v is too short (min 1s): %w", s.CheckpointInterval, errdefs.ErrInvalidArgument)
	}
	if s.DiskPool > 16 {
		return fmt.Errorf("disk pool of %d images: at most 16: %w", s.DiskPool, errdefs.ErrInvalidArgument)
	}
	if s.MaxNames < 0 || s.MaxNames > 0 && s.MaxNames < 1000 {
		return fmt.Errorf("hot max names %d: at least 1000: %w", s.MaxNames, errdefs.ErrInvalidArgument)
	}
	if s.TrashRetention < 0 || s.TrashRetention > 0 && s.TrashRetention < time.Hour {
		return fmt.Errorf("hot trash retention %v: 0 (off) or at least 1h: %w", s.TrashRetention, errdefs.ErrInvalidArgument)
	}
	if s.DiskOvercommit < 0 || s.DiskOvercommit > 100 {
		return fmt.Errorf("disk overcommit %g: want 0 (default) to 100: %w", s.DiskOvercommit, errdefs.ErrInvalidArgument)
	}
	if s.DiskReserveMB < 0 {
		return fmt.Errorf("disk reserve %d MiB: must not be negative: %w", s.DiskReserveMB, errdefs.ErrInvalidArgument)
	}
	return nil
}

// bucketCheckTimeout is how long startup (and each later probe) waits for
// the bucket to answer: a definite answer (missing, forbidden, wrong
// region) fails startup; silence starts the daemon degraded
// (s3_unreachable) instead of blocking it.
const bucketCheckTimeout = 2 * time.Second

// openedStorage is openStorage's result.
type openedStorage struct {
	storage *mounts.Storage
	close   func()
	// probe checks the bucket answers (nil with local storage); unreachable
	// is its error at startup, when the bucket did not answer in time.
	probe       func(context.Context) error
	unreachable error
}

// openStorage builds the object store, checks the bucket (failing fast with
// distinct errors for a missing, forbidden or wrong-region bucket; an
// endpoint that does not answer within 2 s is reported, not fatal), picks
// the cold driver, and returns the host-side storage.
func openStorage(ctx context.Context, cfg Config, ns runtime.UserNS, mx *metrics.Metrics, log *slog.Logger) (*openedStorage, error) {
	uid, gid := int(ns.HostID(runtime.AgentUID)), int(ns.HostID(runtime.AgentGID))
	sc := cfg.Storage
	var store mounts.ObjectStore
	out := &openedStorage{}
	closeFn := func() {}
	localDir := filepath.Join(cfg.StateDir, "storage")
	if sc.Bucket == "" {
		l, err := objstore.NewLocal(localDir)
		if err != nil {
			return nil, fmt.Errorf("local storage: %w", err)
		}
		closeFn = func() { l.Close() }
		store = l
		log.Info("storage: local driver (no bucket configured)", "dir", localDir)
	} else {
		s3, err := objstore.NewS3(ctx, objstore.S3Config{Bucket: sc.Bucket, Region: sc.Region, Endpoint: sc.Endpoint, PathStyle: sc.PathStyle},
			objstore.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("s3 storage: %w", err)
		}
		out.probe = func(ctx context.Context) error {
			cctx, cancel := context.WithTimeout(ctx, bucketCheckTimeout)
			defer cancel()
			err := s3.Check(cctx)
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("s3 endpoint gave no answer within %v: %w", bucketCheckTimeout, errdefs.ErrUnavailable)
			}
			return err
		}
		if err := out.probe(ctx); err != nil {
			if !errdefs.IsUnavailable(err) {
				return nil, fmt.Errorf("bucket %q: %w", sc.Bucket, err)
			}
			out.unreachable = fmt.Errorf("bucket %q: %w", sc.Bucket, err)
			log.Warn("storage: the bucket does not answer; starting degraded (creates are refused until it does)", "bucket", sc.Bucket, "error", err)
		}
		store = s3
		log.Info("storage: s3", "bucket", sc.Bucket, "region", sc.Region, "endpoint", sc.Endpoint)
	}
	drv, err := cold.Select(cold.SelectConfig{
		Mode: sc.ColdDriver,
		S3: cold.S3Config{Bucket: sc.Bucket, Region: sc.Region, Endpoint: sc.Endpoint, ForcePathStyle: sc.PathStyle,
			AccessKey: sc.accessKey(), SecretKey: sc.secretKey()},
		LocalStorageDir: localDir, Logger: log,
	}, coldOptions(systemdIsPID1(), log)...)
	if err != nil {
		closeFn()
		return nil, err
	}
	copts := []cold.ManagerOption{
		cold.WithOwner(uint32(uid), uint32(gid)),
		cold.WithRemountHook(func(ids.UserID) { mx.IncFUSERemount(drv.Name()) }),
	}
	if sc.ColdShared {
		copts = append(copts, cold.WithSharedMount())
	}
	if n := coldSpares(cfg, drv); n > 0 {
		copts = append(copts, cold.WithSpares(n))
	}
	cm, err := cold.NewManager(ctx, cold.ManagerConfig{Dir: filepath.Join(cfg.StateDir, "cold"), Driver: drv, Logger: log}, copts...)
	if err != nil {
		closeFn()
		return nil, err
	}
	mx.SetColdSpares(cm.SpareStats)
	{
		// Cold spares nobody took and a shared cold mount no sandbox uses
		// end with the daemon (mounts that sandboxes use outlive it).
		prev := closeFn
		closeFn = func() {
			if err := cm.CloseIdle(context.Background()); err != nil {
				log.Warn("storage: unmount the idle cold spares or shared mount", "error", err)
			}
			prev()
		}
	}
	var pool *disk.Pool
	if n := sc.DiskPool; n >= 0 && cfg.Limits.DefaultDiskMB > 0 {
		if n == 0 {
			n = DefaultDiskPool
		}
		// Next to the hot dirs (same filesystem: images are taken by link).
		maxNames := sc.MaxNames
		if maxNames == 0 {
			maxNames = hotsync.DefaultMaxNames
		}
		size := cfg.Limits.DefaultDiskMB << 20
		pool, err = disk.NewPool(filepath.Join(cfg.StateDir, "disk-pool"), size, uid, gid, disk.Inodes(size, maxNames), n, log)
		if err != nil {
			closeFn()
			return nil, err
		}
		prev := closeFn
		closeFn = func() { pool.Close(); prev() }
	}
	st, err := mounts.NewStorage(mounts.StorageConfig{
		Dir: filepath.Join(cfg.StateDir, "hot"), Store: store, Cold: cm, DiskPool: pool,
		UID: uid, GID: gid, Excludes: sc.Excludes, MaxNames: sc.MaxNames, TrashRetention: sc.TrashRetention,
		DiskOvercommit: sc.DiskOvercommit, DiskReserve: sc.DiskReserveMB << 20, Logger: log,
		HostBytesPerSandbox: cfg.Limits.ProcessOutputBound(),
	})
	if err != nil {
		closeFn()
		return nil, err
	}
	out.storage, out.close = st, closeFn
	return out, nil
}

// coldSparesMax bounds --cold-spares (cold.WithSpares' own bound).
const coldSparesMax = 64

// coldSpares resolves StorageConfig.ColdSpares against the driver the
// host got and the warm pools.
func coldSpares(cfg Config, drv cold.Driver) int {
	sc := cfg.Storage
	if sc.ColdSpares < 0 || sc.ColdShared || drv.Name() == cold.DriverLocal {
		return 0
	}
	if sc.ColdSpares > 0 {
		return sc.ColdSpares
	}
	pooled := 0
	for _, p := range cfg.Pools {
		pooled += p.Size
	}
	// One per pooled sandbox: each claim may be a new user's, and an idle
	// s3fs costs ~2.5 MiB of private memory (its libraries are shared),
	// half of what the pooled sandbox it pairs with holds.
	return min(coldSparesMax, pooled)
}

// accessKey and secretKey pass static credentials from the environment
// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, part of the standard chain) on
// to the FUSE client, which cannot read the SDK's chain itself. Without
// them it uses the instance role.
func (s StorageConfig) accessKey() string { return os.Getenv("AWS_ACCESS_KEY_ID") }
func (s StorageConfig) secretKey() string { return os.Getenv("AWS_SECRET_ACCESS_KEY") }

// systemdIsPID1 is sd_booted(3): systemd creates /run/systemd/system.
func systemdIsPID1() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// coldOptions decides how FUSE daemons are started. Where systemd is PID 1
// each one runs in its own transient scope unit, so that stopping or
// restarting matrxd.service (KillMode=process) never takes a running
// sandbox's cold files with it, and systemd accounts for it separately.
// Elsewhere they stay plain child processes in their own process group,
// which already outlive a matrxd crash or restart.
func coldOptions(systemd bool, log *slog.Logger) []cold.Option {
	if !systemd {
		log.Info("cold mounts run as child processes (systemd is not PID 1)")
		return nil
	}
	log.Info("cold mounts run in transient systemd scopes")
	return []cold.Option{cold.WithCommandWrapper(scopeWrapper)}
}

// scopeWrapper prefixes a FUSE daemon's argv with systemd-run --scope,
// which execs the daemon in place (the supervisor watches that pid).
func scopeWrapper(userID ids.UserID, argv []string) []string {
	var b [4]byte
	rand.Read(b[:])
	unit := fmt.Sprintf("matrx-cold-%s-%x", userID, b)
	return append([]string{"systemd-run", "--scope", "--collect", "--quiet",
		"--unit=" + unit, "--description=matrx cold storage of " + userID.String(), "--"}, argv...)
}
