package mounts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/mounts/cold"
	"github.com/matrx-dev/matrx/mounts/disk"
	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/undo"
)

// ObjectStore is what Storage needs from the bucket (objstore.S3, or
// objstore.Local when no bucket is configured).
type ObjectStore interface {
	objstore.Store
}

// StorageConfig holds Storage's required dependencies.
type StorageConfig struct {
	// Dir holds per-sandbox hot directories: Dir/<sandbox id>/{home,
	// manifest.json, user}. The sandbox sees only home.
	Dir string
	// Store is the user data's home: users/<user>/{hot,cold}/.
	Store ObjectStore
	// Cold mounts users/<user>/cold/ on the host.
	Cold *cold.Manager
	// DiskPool, optional, hands out formatted images of the default disk
	// size (made for UID:GID).
	DiskPool *disk.Pool
	// UID and GID own hot files (the sandbox's agent user).
	UID, GID int
	// Excludes are never synced (nil: hotsync.DefaultExcludes).
	Excludes []string
	Logger   *slog.Logger
}

// Storage prepares and saves one sandbox's storage on the host:
//
//   - hot: a per-sandbox directory filled from users/<user>/hot/ before
//     the sandbox is ready, checkpointed while it runs and synced back when
//     it stops. The directory is removed only after a sync-up that
//     succeeded: hot data never leaves the host before it is in the bucket.
//     A directory left by a failed sync or a crash is found by Pending and
//     retried on the next daemon start.
//   - cold: the user's refcounted FUSE (or local bind) mount, shared by the
//     user's concurrent sandboxes.
type Storage struct {
	dir      string
	store    ObjectStore
	cold     *cold.Manager
	pool     *disk.Pool
	uid, gid int
	excludes []string
	log      *slog.Logger

	mu      sync.Mutex
	syncers map[string]*hotsync.Syncer
}

// NewStorage checks cfg and creates the hot root (mode 0700: manifests and
// owner files are not for sandboxes).
func NewStorage(cfg StorageConfig) (*Storage, error) {
	if cfg.Dir == "" || cfg.Store == nil || cfg.Cold == nil {
		return nil, fmt.Errorf("storage needs a hot dir, an object store and a cold manager: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create hot root: %w", err)
	}
	return &Storage{
		dir: cfg.Dir, store: cfg.Store, cold: cfg.Cold, pool: cfg.DiskPool, uid: cfg.UID, gid: cfg.GID,
		excludes: cfg.Excludes, log: cfg.Logger, syncers: map[string]*hotsync.Syncer{},
	}, nil
}

// Prefix is a user's key prefix for a tier ("hot" or "cold").
func Prefix(userID, tier string) string { return "users/" + userID + "/" + tier + "/" }

// EnsureUser makes sure users/<user>/hot/ and cold/ exist in the bucket.
func (s *Storage) EnsureUser(ctx context.Context, userID string) error {
	if _, err := UserPath(s.dir, userID); err != nil {
		return err
	}
	for _, tier := range []string{"hot", "cold"} {
		if err := objstore.EnsurePrefix(ctx, s.store, Prefix(userID, tier)); err != nil {
			return fmt.Errorf("ensure %s prefix of %q: %w", tier, userID, err)
		}
	}
	return nil
}

func (s *Storage) sandboxDir(sandboxID string) (string, error) {
	return UserPath(s.dir, sandboxID) // same single-element rule as user ids
}

// PrepareHot creates the sandbox's empty hot directory and records its
// owner, and returns the directory to bind at /home/agent. With diskBytes
// > 0 the directory is a loop-mounted ext4 image of that size (the
// sandbox's disk quota). Fill it with SyncDown.
func (s *Storage) PrepareHot(sandboxID, userID string, diskBytes int64) (_ string, err error) {
	d, err := s.sandboxDir(sandboxID)
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(d, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("hot dir of %s already exists: %w", sandboxID, errdefs.ErrAlreadyExists)
		}
		return "", fmt.Errorf("create hot dir: %w", err)
	}
	var rollback undo.Stack
	rollback.Push("remove hot dir", func(context.Context) error { return os.RemoveAll(d) })
	defer func() {
		if err != nil {
			rollback.Run(context.Background(), s.log)
		}
	}()
	home := filepath.Join(d, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		return "", fmt.Errorf("create hot home: %w", err)
	}
	if err := os.Chown(home, s.uid, s.gid); err != nil {
		return "", fmt.Errorf("chown hot home: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d, "user"), []byte(userID), 0o600); err != nil {
		return "", fmt.Errorf("record hot dir owner: %w", err)
	}
	if diskBytes > 0 {
		img := filepath.Join(d, "home.img")
		var err error
		if s.pool.Take(img, diskBytes) {
			err = disk.Attach(img, home)
		} else {
			err = disk.Make(img, home, diskBytes, s.uid, s.gid)
		}
		if err != nil {
			return "", fmt.Errorf("sandbox disk: %w", err)
		}
	}
	return home, nil
}

func (s *Storage) syncer(sandboxID, userID string) (*hotsync.Syncer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sy, ok := s.syncers[sandboxID]; ok {
		return sy, nil
	}
	d, err := s.sandboxDir(sandboxID)
	if err != nil {
		return nil, err
	}
	// After a host reboot a disk image is no longer mounted: mount it
	// again before anything reads the directory, or an empty mountpoint
	// would look like "the agent deleted everything".
	img := filepath.Join(d, "home.img")
	hasDisk := fileExists(img)
	if hasDisk && !disk.IsMounted(filepath.Join(d, "home")) {
		if err := disk.Mount(img, filepath.Join(d, "home")); err != nil {
			return nil, err
		}
	}
	sy, err := hotsync.New(hotsync.Config{
		Store: s.store, Prefix: Prefix(userID, "hot"), Dir: filepath.Join(d, "home"), DirIsMount: hasDisk,
		ManifestPath: filepath.Join(d, "manifest.json"), SandboxID: sandboxID,
		Excludes: s.excludes, UID: s.uid, GID: s.gid, Logger: s.log.With("sandbox_id", sandboxID, "user_id", userID),
	})
	if err != nil {
		return nil, err
	}
	s.syncers[sandboxID] = sy
	return sy, nil
}

// SyncDown fills the hot directory from the bucket.
func (s *Storage) SyncDown(ctx context.Context, sandboxID, userID string) (hotsync.Result, error) {
	sy, err := s.syncer(sandboxID, userID)
	if err != nil {
		return hotsync.Result{}, err
	}
	return sy.Down(ctx)
}

// SyncUp uploads what changed in the hot directory since the last sync
// (a checkpoint, or the final sync once the sandbox has stopped).
func (s *Storage) SyncUp(ctx context.Context, sandboxID, userID string) (hotsync.Result, error) {
	sy, err := s.syncer(sandboxID, userID)
	if err != nil {
		return hotsync.Result{}, err
	}
	return sy.Up(ctx)
}

// FinishHot runs the final sync-up and, only if it succeeded, removes the
// hot directory. On failure the directory stays for a later retry.
func (s *Storage) FinishHot(ctx context.Context, sandboxID, userID string) (hotsync.Result, error) {
	res, err := s.SyncUp(ctx, sandboxID, userID)
	if err != nil {
		return res, err
	}
	return res, s.RemoveHot(sandboxID)
}

// RemoveHot deletes a hot directory without syncing. Only for directories
// whose data is already safe (a create that failed before the agent ran, or
// after FinishHot's sync).
func (s *Storage) RemoveHot(sandboxID string) error {
	s.mu.Lock()
	delete(s.syncers, sandboxID)
	s.mu.Unlock()
	d, err := s.sandboxDir(sandboxID)
	if err != nil {
		return err
	}
	// Unmount first: RemoveAll must never walk into a mounted image.
	if err := disk.Unmount(filepath.Join(d, "home")); err != nil {
		return err
	}
	if disk.IsMounted(filepath.Join(d, "home")) {
		return fmt.Errorf("hot home of %s is still mounted: %w", sandboxID, errdefs.ErrFailedPrecondition)
	}
	if err := os.RemoveAll(d); err != nil {
		return fmt.Errorf("remove hot dir of %s: %w", sandboxID, err)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// HasHot reports whether a sandbox's hot directory is still on the host.
func (s *Storage) HasHot(sandboxID string) bool {
	d, err := s.sandboxDir(sandboxID)
	if err != nil {
		return false
	}
	_, err = os.Stat(d)
	return err == nil
}

// PendingHot is a hot directory found on disk.
type PendingHot struct {
	SandboxID, UserID string
}

// Pending lists the hot directories on the host, oldest first by name.
func (s *Storage) Pending() ([]PendingHot, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list hot dirs: %w", err)
	}
	var out []PendingHot
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name(), "user"))
		if err != nil {
			s.log.Warn("hot dir without owner record; leaving it alone", "dir", filepath.Join(s.dir, e.Name()))
			continue
		}
		out = append(out, PendingHot{SandboxID: e.Name(), UserID: strings.TrimSpace(string(b))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SandboxID < out[j].SandboxID })
	return out, nil
}

// AcquireCold mounts (or shares) the user's cold storage and returns the
// host path to bind at /data/cold.
func (s *Storage) AcquireCold(ctx context.Context, userID string) (string, error) {
	return s.cold.Acquire(ctx, userID)
}

// ReleaseCold drops one reference to the user's cold mount.
func (s *Storage) ReleaseCold(ctx context.Context, userID string) error {
	return s.cold.Release(ctx, userID)
}

// TierStats is the size of one user's tiers.
type TierStats struct {
	Hot, Cold objstore.Usage
}

// Stats counts a user's objects and bytes per tier.
func (s *Storage) Stats(ctx context.Context, userID string) (TierStats, error) {
	if _, err := UserPath(s.dir, userID); err != nil {
		return TierStats{}, err
	}
	hot, err := objstore.Stats(ctx, s.store, Prefix(userID, "hot"))
	if err != nil {
		return TierStats{}, err
	}
	cld, err := objstore.Stats(ctx, s.store, Prefix(userID, "cold"))
	if err != nil {
		return TierStats{}, err
	}
	return TierStats{Hot: hot, Cold: cld}, nil
}

// Clean deletes every object of one tier of one user. It is an explicit
// admin action, never triggered by the lifecycle; the caller must make
// sure the user has no live sandbox.
func (s *Storage) Clean(ctx context.Context, userID, tier string) (int64, error) {
	if _, err := UserPath(s.dir, userID); err != nil {
		return 0, err
	}
	if tier != "hot" && tier != "cold" {
		return 0, fmt.Errorf("tier %q: want hot or cold: %w", tier, errdefs.ErrInvalidArgument)
	}
	return objstore.DeletePrefix(ctx, s.store, Prefix(userID, tier))
}
