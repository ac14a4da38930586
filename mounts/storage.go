package mounts

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/errclass"
	"github.com/matrx-dev/matrx/fault"
	"github.com/matrx-dev/matrx/ids"
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
	// MaxNames caps the files, directories and symlinks of one sandbox's
	// hot tier (0: hotsync.DefaultMaxNames); disks get as many inodes.
	MaxNames int
	// TrashRetention is how long deleted and overwritten hot objects are
	// kept under users/<user>/trash/ (0: no trash).
	TrashRetention time.Duration
	// DiskOvercommit is how many times the state filesystem's free space
	// (less DiskReserve) the disks of all sandboxes on the host may claim
	// together (0: DefaultDiskOvercommit).
	DiskOvercommit float64
	// DiskReserve is the free space kept for the daemon's own files
	// (registry, manifests) that no disk may claim (0: DefaultDiskReserve).
	DiskReserve int64
	// HostBytesPerSandbox is what each sandbox may also write to the state
	// filesystem outside its disk image (its background processes' retained
	// output): admission counts it for every sandbox, on top of its disk.
	HostBytesPerSandbox int64
	Logger              *slog.Logger
}

// Defaults of StorageConfig.
const (
	// DefaultDiskOvercommit 1: the disks handed out can never claim more
	// than the host has, whatever the sandboxes write. Operators who know
	// their sandboxes write little of their quota raise it.
	DefaultDiskOvercommit = 1.0
	// DefaultDiskReserve keeps 1 GiB for bbolt, manifests and logs.
	DefaultDiskReserve = 1 << 30
)

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
	dir        string
	store      ObjectStore
	cold       *cold.Manager
	pool       *disk.Pool
	uid, gid   int
	excludes   []string
	maxNames   int
	retention  time.Duration
	overcommit float64
	reserve    int64
	perSandbox int64 // host bytes each sandbox may use beyond its disk
	log        *slog.Logger

	mu       sync.Mutex
	syncers  map[string]*hotsync.Syncer
	coldHeld map[string]ids.UserID // sandbox id -> user id, for each cold reference held
	// admit makes one disk admission decision at a time; reserved holds
	// what each admitted disk still being made (PrepareHot under way)
	// counts, by sandbox id, in place of its directory and image, so that
	// formatting and mounting a disk need not hold admit.
	admit    sync.Mutex
	reserved map[string]int64
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
	if cfg.MaxNames <= 0 {
		cfg.MaxNames = hotsync.DefaultMaxNames
	}
	if cfg.DiskOvercommit <= 0 {
		cfg.DiskOvercommit = DefaultDiskOvercommit
	}
	if cfg.DiskReserve <= 0 {
		cfg.DiskReserve = DefaultDiskReserve
	}
	return &Storage{
		dir: cfg.Dir, store: cfg.Store, cold: cfg.Cold, pool: cfg.DiskPool, uid: cfg.UID, gid: cfg.GID,
		excludes: cfg.Excludes, maxNames: cfg.MaxNames, retention: cfg.TrashRetention,
		overcommit: cfg.DiskOvercommit, reserve: cfg.DiskReserve, perSandbox: max(cfg.HostBytesPerSandbox, 0), log: cfg.Logger,
		syncers: map[string]*hotsync.Syncer{}, coldHeld: map[string]ids.UserID{},
	}, nil
}

// Files of a sandbox's hot dir besides home/ and manifest.json.
const (
	ownerFile    = "user"     // the owning user id
	pooledFile   = "pooled"   // instead of ownerFile: a warm-pool sandbox's, no user yet (ClaimHot)
	sentinelFile = "sentinel" // the token written on home (hotsync.WriteSentinel)
	diskFile     = "disk"     // present when home is a disk image
	removingFile = "removing" // RemoveHot has begun: nothing may sync or mount here again
	imageFile    = "home.img"
)

// removedPrefix names a hot dir removeHot moved aside to delete it (no
// sandbox id starts with a dot).
const removedPrefix = ".removed-"

// EnsureCold makes sure users/<user>/cold/ exists in the bucket (a .keep
// marker when it is empty, as the old system made for both tiers). The
// hot prefix gets its marker from SyncDown, whose listing of it says
// whether it is empty: a create lists it once, not twice.
func (s *Storage) EnsureCold(ctx context.Context, userID ids.UserID) error {
	if err := objstore.EnsurePrefix(ctx, s.store, userID.KeyPrefix("cold")); err != nil {
		return fmt.Errorf("ensure cold prefix of %q: %w", userID, err)
	}
	return nil
}

// sandboxDir is the sandbox's hot directory, refusing any id that is not
// a single plain path element (".", "..", separators, NUL, empty).
func (s *Storage) sandboxDir(sandboxID string) (string, error) {
	if sandboxID == "" || sandboxID == "." || sandboxID == ".." || strings.ContainsAny(sandboxID, "/\x00") || len(sandboxID) > 255 {
		return "", fmt.Errorf("sandbox id %q cannot name a directory: %w", sandboxID, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(s.dir, sandboxID), nil
}

// PrepareHot creates the sandbox's empty hot directory and records its
// owner (none for a warm-pool sandbox: userID "", see ClaimHot), and returns the directory to bind at /home/agent. With diskBytes
// > 0 the directory is a loop-mounted ext4 image of that size (the
// sandbox's disk quota). Fill it with SyncDown.
func (s *Storage) PrepareHot(sandboxID string, userID ids.UserID, diskBytes int64) (_ string, err error) {
	d, err := s.sandboxDir(sandboxID)
	if err != nil {
		return "", err
	}
	if diskBytes > 0 {
		release, err := s.reserveDisk(sandboxID, diskBytes)
		if err != nil {
			return "", err
		}
		// Released once the image exists and is mounted (or never will
		// be): until then the reservation stands for it, after that the
		// image itself.
		defer release()
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
	owner, content := ownerFile, []byte(userID)
	if userID == "" {
		owner, content = pooledFile, nil
	}
	if err := os.WriteFile(filepath.Join(d, owner), content, 0o600); err != nil {
		return "", fmt.Errorf("record hot dir owner: %w", err)
	}
	if diskBytes > 0 {
		if err := os.WriteFile(filepath.Join(d, diskFile), nil, 0o600); err != nil {
			return "", fmt.Errorf("record hot dir disk: %w", err)
		}
		img := filepath.Join(d, imageFile)
		var err error
		if s.pool.Take(img, diskBytes) {
			err = disk.Attach(img, home)
		} else {
			err = disk.Make(img, home, diskBytes, s.uid, s.gid, disk.Inodes(diskBytes, s.maxNames))
		}
		if err != nil {
			return "", fmt.Errorf("sandbox disk: %w", err)
		}
		rollback.Push("unmount disk", func(context.Context) error { return disk.Unmount(home) })
	}
	// The sentinel: what proves, at every later sync, that the directory
	// walked is this home (see hotsync: a sync never deletes what it
	// cannot see).
	token := rand.Text()
	if err := hotsync.WriteSentinel(home, token); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(d, sentinelFile), []byte(token), 0o600); err != nil {
		return "", fmt.Errorf("record hot dir sentinel: %w", err)
	}
	return home, nil
}

// ClaimHot gives the hot directory of a warm-pool sandbox (prepared with no
// user) its owner, before its first SyncDown. A directory that already has
// an owner is refused: a hot directory is only ever one user's.
func (s *Storage) ClaimHot(sandboxID string, userID ids.UserID) error {
	d, err := s.sandboxDir(sandboxID)
	if err != nil {
		return err
	}
	if userID == "" {
		return fmt.Errorf("claim of hot dir %s needs a user: %w", sandboxID, errdefs.ErrInvalidArgument)
	}
	if !fileExists(filepath.Join(d, pooledFile)) || fileExists(filepath.Join(d, ownerFile)) {
		return fmt.Errorf("hot dir of %s is not an unclaimed pool dir: %w", sandboxID, errdefs.ErrFailedPrecondition)
	}
	if err := writeFileSync(filepath.Join(d, ownerFile), []byte(userID)); err != nil {
		return fmt.Errorf("record hot dir owner: %w", err)
	}
	if err := os.Remove(filepath.Join(d, pooledFile)); err != nil {
		return fmt.Errorf("hot dir of %s: %w", sandboxID, err)
	}
	return nil
}

// writeFileSync writes a new 0600 file and flushes it: an owner record
// must be on disk before anything of the user's is.
func writeFileSync(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (s *Storage) syncer(sandboxID string, userID ids.UserID) (*hotsync.Syncer, error) {
	if userID == "" {
		return nil, fmt.Errorf("hot dir of %s has no user to sync for: %w", sandboxID, errdefs.ErrFailedPrecondition)
	}
	s.mu.Lock()
	sy, ok := s.syncers[sandboxID]
	s.mu.Unlock()
	if ok {
		return sy, nil
	}
	d, err := s.sandboxDir(sandboxID)
	if err != nil {
		return nil, err
	}
	unlock, err := lockDir(d)
	if err != nil {
		return nil, fmt.Errorf("hot dir of %s: %v: %w", sandboxID, err, errdefs.ErrNotFound)
	}
	defer unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if sy, ok := s.syncers[sandboxID]; ok {
		return sy, nil
	}
	if _, err := os.Lstat(d); err != nil {
		// Removed while this waited for the lock.
		return nil, fmt.Errorf("hot dir of %s: %w", sandboxID, errdefs.ErrNotFound)
	}
	if fileExists(filepath.Join(d, removingFile)) {
		// Never mount the image again, or sync, once its removal began.
		return nil, fmt.Errorf("hot dir of %s is being removed: %w", sandboxID, errdefs.ErrFailedPrecondition)
	}
	home := filepath.Join(d, "home")
	img := filepath.Join(d, imageFile)
	hasDisk := fileExists(filepath.Join(d, diskFile)) || fileExists(img)
	// After a host reboot a disk image is no longer mounted: mount it
	// again before anything reads the directory, or an empty mountpoint
	// would look like "the agent deleted everything".
	if fileExists(img) && !disk.IsMounted(home) {
		if err := disk.Mount(img, home); err != nil {
			return nil, err
		}
	}
	token, err := os.ReadFile(filepath.Join(d, sentinelFile))
	if errors.Is(err, fs.ErrNotExist) && fileExists(img) && disk.IsMounted(home) {
		// A hot dir made before sentinels existed: its image, mounted
		// here, is provably its home. Seal it now. (One without an image
		// cannot be proven, and syncs without deletions.)
		t := rand.Text()
		if err = hotsync.WriteSentinel(home, t); err == nil {
			err = os.WriteFile(filepath.Join(d, sentinelFile), []byte(t), 0o600)
			token = []byte(t)
		}
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("hot dir sentinel of %s: %w", sandboxID, err)
	}
	cfg := hotsync.Config{
		Store: s.store, Prefix: userID.KeyPrefix("hot"), Dir: home, DirIsMount: hasDisk,
		ManifestPath: filepath.Join(d, "manifest.json"), SandboxID: sandboxID, Sentinel: string(token),
		MaxNames: s.maxNames, Excludes: s.excludes, UID: s.uid, GID: s.gid,
		Logger: s.log.With("sandbox_id", sandboxID, "user_id", userID),
	}
	if s.retention > 0 {
		cfg.TrashPrefix = userID.KeyPrefix("trash")
	}
	sy, err = hotsync.New(cfg)
	if err != nil {
		return nil, err
	}
	s.syncers[sandboxID] = sy
	return sy, nil
}

// SyncDown fills the hot directory from the bucket, and marks the user's
// hot prefix (.keep) when its listing found it empty (see EnsureCold).
func (s *Storage) SyncDown(ctx context.Context, sandboxID string, userID ids.UserID) (hotsync.Result, error) {
	sy, err := s.syncer(sandboxID, userID)
	if err != nil {
		return hotsync.Result{}, err
	}
	res, err := sy.Down(ctx)
	if err == nil && res.PrefixEmpty {
		err = objstore.MarkPrefix(ctx, s.store, userID.KeyPrefix("hot"))
	}
	return res, err
}

// SyncUp uploads what changed in the hot directory since the last sync
// (a checkpoint, or the final sync once the sandbox has stopped).
func (s *Storage) SyncUp(ctx context.Context, sandboxID string, userID ids.UserID) (hotsync.Result, error) {
	sy, err := s.syncer(sandboxID, userID)
	if err != nil {
		return hotsync.Result{}, err
	}
	return sy.Up(ctx)
}

// FinishHot runs the final sync-up and, only if it completed, removes the
// hot directory, under the syncer's lock: no checkpoint runs between the
// two or after them. On failure (or held deletions, or over the names
// cap) the directory stays for a later retry.
func (s *Storage) FinishHot(ctx context.Context, sandboxID string, userID ids.UserID) (hotsync.Result, error) {
	if d, err := s.sandboxDir(sandboxID); err == nil && fileExists(filepath.Join(d, removingFile)) {
		// A removal that began (after a complete final sync, or of a dir
		// whose data was safe) and was cut short: finish it.
		return hotsync.Result{}, s.removeHot(sandboxID)
	}
	sy, err := s.syncer(sandboxID, userID)
	if err != nil {
		return hotsync.Result{}, err
	}
	return sy.Finish(ctx, func() error {
		fault.At(ctx, "synced")
		return s.removeHot(sandboxID)
	})
}

// RemoveHot deletes a hot directory without syncing. Only for directories
// whose data is already safe (a create that failed before the agent ran).
// It waits for a sync in progress and leaves no syncer behind.
func (s *Storage) RemoveHot(ctx context.Context, sandboxID string) error {
	s.mu.Lock()
	sy := s.syncers[sandboxID]
	s.mu.Unlock()
	if sy == nil {
		return s.removeHot(sandboxID)
	}
	return sy.Close(ctx, func() error { return s.removeHot(sandboxID) })
}

func (s *Storage) removeHot(sandboxID string) error {
	d, err := s.sandboxDir(sandboxID)
	if err != nil {
		return err
	}
	// Under the dir's lock, so that no syncer() (of this Storage or
	// another on the same state dir) checks for the tombstone before it is
	// written and then mounts the image back while it is being removed.
	unlock, err := lockDir(d)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // already gone
	}
	if err != nil {
		return fmt.Errorf("lock hot dir of %s: %w", sandboxID, err)
	}
	defer unlock()
	// First the tombstone: from here on no syncer is made for this dir
	// and its image is never mounted again, by this process or the next.
	s.mu.Lock()
	delete(s.syncers, sandboxID)
	err = os.WriteFile(filepath.Join(d, removingFile), nil, 0o600)
	s.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil // already gone
	}
	if err != nil {
		return fmt.Errorf("mark hot dir of %s for removal: %w", sandboxID, err)
	}
	// Unmount first: RemoveAll must never walk into a mounted image.
	home := filepath.Join(d, "home")
	if err := disk.Unmount(home); err != nil {
		return err
	}
	if disk.IsMounted(home) {
		return fmt.Errorf("hot home of %s is still mounted: %w", sandboxID, errdefs.ErrFailedPrecondition)
	}
	// Out of the way in one step, then removed: a RemoveAll of d itself
	// that is cut short (a crash, or a file another writer adds) could
	// have deleted the tombstone or the owner record and left a dir no
	// retry finishes. What a cut-short removal leaves is removedPrefix
	// trash, which Pending sweeps.
	trash := filepath.Join(s.dir, removedPrefix+sandboxID+"-"+rand.Text()[:8])
	if err := os.Rename(d, trash); err != nil {
		return fmt.Errorf("move hot dir of %s out of the way: %w", sandboxID, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		s.log.Warn("removed hot dir not deleted; the next start sweeps it", "sandbox_id", sandboxID, "dir", trash, "error", err)
	}
	return nil
}

// sweepRemoved deletes what cut-short removals left (removeHot's trash).
// Nothing can be mounted there (removeHot checked before the rename, and
// only a sandbox's own dir is ever mounted), but a mount would make
// RemoveAll walk into it, so each home is unmounted first all the same.
func (s *Storage) sweepRemoved(name string) {
	trash := filepath.Join(s.dir, name)
	if home := filepath.Join(trash, "home"); disk.IsMounted(home) {
		if err := disk.Unmount(home); err != nil || disk.IsMounted(home) {
			s.log.Warn("removed hot dir still has a mount; leaving it", "dir", trash, "error", err)
			return
		}
	}
	if err := os.RemoveAll(trash); err != nil {
		s.log.Warn("removed hot dir not deleted", "dir", trash, "error", err)
	}
}

// lockDir takes an exclusive flock(2) on a sandbox's hot dir, released by
// the returned func. It orders syncer()'s "no tombstone, so mount the image
// if it is not" against removeHot's "tombstone, unmount, remove"; lock
// order: the dir's lock, then s.mu.
func lockDir(d string) (func(), error) {
	f, err := os.Open(d)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
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

// PendingHot is a hot directory found on disk. UserID is empty for the
// directory of a warm-pool sandbox that was never claimed (it holds no
// one's files).
type PendingHot struct {
	SandboxID string
	UserID    ids.UserID
}

// Pending lists the hot directories on the host, oldest first by name,
// and deletes what cut-short removals left (removedPrefix).
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
		if strings.HasPrefix(e.Name(), removedPrefix) {
			s.sweepRemoved(e.Name())
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name(), ownerFile))
		if errors.Is(err, fs.ErrNotExist) && fileExists(filepath.Join(s.dir, e.Name(), pooledFile)) {
			out = append(out, PendingHot{SandboxID: e.Name()}) // a pool dir: nobody's files
			continue
		}
		if err != nil {
			s.log.Warn("hot dir without owner record; leaving it alone", "dir", filepath.Join(s.dir, e.Name()))
			continue
		}
		user, err := ids.ParseUserID(strings.TrimSpace(string(b)))
		if err != nil {
			s.log.Warn("hot dir with an invalid owner record; leaving it alone", "dir", filepath.Join(s.dir, e.Name()), "error", err)
			continue
		}
		out = append(out, PendingHot{SandboxID: e.Name(), UserID: user})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SandboxID < out[j].SandboxID })
	return out, nil
}

// AcquireCold mounts (or shares) the user's cold storage for one sandbox
// and returns the host path to bind at /data/cold. A sandbox holds at most
// one reference: acquiring again returns the same path.
func (s *Storage) AcquireCold(ctx context.Context, userID ids.UserID, sandboxID string) (string, error) {
	s.mu.Lock()
	held, ok := s.coldHeld[sandboxID]
	s.mu.Unlock()
	if ok {
		if held != userID {
			return "", fmt.Errorf("sandbox %s holds the cold mount of %q, not %q: %w", sandboxID, held, userID, errdefs.ErrInvalidArgument)
		}
		return s.cold.Mountpoint(userID)
	}
	p, err := s.cold.Acquire(ctx, userID)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.coldHeld[sandboxID] = userID
	s.mu.Unlock()
	return p, nil
}

// ColdSlot makes the empty slot a sandbox binds at /data/cold (see package
// cold, "Slots"), for AcquireColdSlot to fill at a pool claim or beside a
// create's container start.
func (s *Storage) ColdSlot(sandboxID string) (string, error) {
	return s.cold.MakeSlot(sandboxID)
}

// AcquireColdSlot is AcquireCold for a sandbox that bound its slot: the
// user's cold storage is mounted (or shared) and bound into the slot,
// which propagates into the running sandbox. Again (after a daemon
// restart) it binds only what is not bound.
func (s *Storage) AcquireColdSlot(ctx context.Context, userID ids.UserID, sandboxID string) error {
	if _, err := s.AcquireCold(ctx, userID, sandboxID); err != nil {
		return err
	}
	if s.cold.SlotBound(sandboxID) {
		return nil
	}
	if err := s.cold.BindSlot(userID, sandboxID); err != nil {
		return errors.Join(err, s.ReleaseCold(context.WithoutCancel(ctx), userID, sandboxID))
	}
	return nil
}

// SweepColdSlots removes the slots of sandboxes keep does not know (a
// crash between a pooled sandbox's end and its slot's removal).
func (s *Storage) SweepColdSlots(keep func(sandboxID string) bool) ([]string, error) {
	slots, err := s.cold.Slots()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, id := range slots {
		if keep(id) {
			continue
		}
		if err := s.cold.RemoveSlot(id); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, id)
	}
	return removed, errors.Join(errs...)
}

// ReleaseCold drops the sandbox's reference to its user's cold mount, if
// it holds one: a sandbox whose acquire failed (at recovery, say) releases
// nothing, so it can never take another sandbox's mount away. The
// sandbox's slot, if it has one, goes first (its container is gone).
func (s *Storage) ReleaseCold(ctx context.Context, userID ids.UserID, sandboxID string) error {
	if err := s.cold.RemoveSlot(sandboxID); err != nil {
		return err
	}
	s.mu.Lock()
	held, ok := s.coldHeld[sandboxID]
	if ok && held == userID {
		delete(s.coldHeld, sandboxID)
	}
	s.mu.Unlock()
	if !ok || held != userID {
		return nil
	}
	return s.cold.Release(ctx, userID)
}

// SweepCold unmounts cold mounts that no reference holds (left by a
// previous daemon) and returns their users.
func (s *Storage) SweepCold(ctx context.Context) ([]ids.UserID, error) {
	return s.cold.SweepStale(ctx)
}

// TierStats is the size of one user's tiers.
type TierStats struct {
	Hot, Cold objstore.Usage
}

// Stats counts a user's objects and bytes per tier.
func (s *Storage) Stats(ctx context.Context, userID ids.UserID) (TierStats, error) {
	hot, err := objstore.Stats(ctx, s.store, userID.KeyPrefix("hot"))
	if err != nil {
		return TierStats{}, err
	}
	cld, err := objstore.Stats(ctx, s.store, userID.KeyPrefix("cold"))
	if err != nil {
		return TierStats{}, err
	}
	return TierStats{Hot: hot, Cold: cld}, nil
}

// Clean deletes every object of one tier of one user. It is an explicit
// admin action, never triggered by the lifecycle; the caller must make
// sure the user has no live sandbox.
func (s *Storage) Clean(ctx context.Context, userID ids.UserID, tier string) (int64, error) {
	if tier != "hot" && tier != "cold" && tier != "trash" {
		return 0, fmt.Errorf("tier %q: want hot, cold or trash: %w", tier, errdefs.ErrInvalidArgument)
	}
	return objstore.DeletePrefix(ctx, s.store, userID.KeyPrefix(tier))
}

// reserveDisk admits a disk of size bytes for a sandbox (admitDisk) and
// holds its place until release.
func (s *Storage) reserveDisk(sandboxID string, size int64) (release func(), err error) {
	s.admit.Lock()
	defer s.admit.Unlock()
	if _, ok := s.reserved[sandboxID]; ok {
		return nil, fmt.Errorf("hot dir of %s already exists: %w", sandboxID, errdefs.ErrAlreadyExists)
	}
	if err := s.admitDisk(size); err != nil {
		return nil, err
	}
	if s.reserved == nil {
		s.reserved = map[string]int64{}
	}
	s.reserved[sandboxID] = size + s.perSandbox
	return func() {
		s.admit.Lock()
		delete(s.reserved, sandboxID)
		s.admit.Unlock()
	}, nil
}

// admitDisk refuses a new disk of size bytes unless it fits: what every
// sandbox disk on the host may still grow by (its size less what it
// already holds), plus size, must not exceed the state filesystem's free
// space less the reserve, times the overcommit ratio. A sandbox writing
// its whole quota then never fills the filesystem the registry, the
// manifests and every other tenant's disk live on. Every sandbox (the new
// one included) also counts HostBytesPerSandbox, the most its background
// processes' retained output may take on the same filesystem. A sandbox
// whose disk is still being made counts its reservation instead of what
// its directory shows so far. Callers hold s.admit.
func (s *Storage) admitDisk(size int64) error {
	total, free, ok := fsFree(s.dir)
	if !ok {
		return nil
	}
	var growth int64
	ents, _ := os.ReadDir(s.dir)
	for _, held := range s.reserved {
		growth += held
	}
	for _, e := range ents {
		if _, ok := s.reserved[e.Name()]; ok {
			continue
		}
		if apparent, allocated, ok := fileSpace(filepath.Join(s.dir, e.Name(), imageFile)); ok && apparent > allocated {
			growth += apparent - allocated
		}
		if e.IsDir() {
			growth += s.perSandbox // its process output, at most
		}
	}
	size += s.perSandbox
	room := float64(free-s.reserve) * s.overcommit
	if float64(growth+size) <= room {
		return nil
	}
	gib := func(b float64) string { return fmt.Sprintf("%.1f GiB", b/(1<<30)) }
	return fmt.Errorf("a %s disk does not fit this host: the sandbox disks here may still grow by %s, the state filesystem (%s) has %s free, %s of it kept for the daemon, overcommit %g: %w",
		gib(float64(size)), gib(float64(growth)), gib(float64(total)), gib(float64(free)), gib(float64(s.reserve)), s.overcommit, errclass.ErrInsufficientStorage)
}
