package hotsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sync/errgroup"

	"github.com/matrx-dev/matrx/mounts/objstore"
)

// Store is what the syncer needs from an object store; objstore.S3 and
// objstore.Local implement it.
type Store interface {
	List(ctx context.Context, prefix string) iter.Seq2[objstore.ObjectInfo, error]
	Head(ctx context.Context, key string) (objstore.ObjectInfo, error)
	Download(ctx context.Context, key string, size int64, w io.WriterAt) (objstore.ObjectInfo, error)
	Put(ctx context.Context, key string, body io.Reader, size int64, cond objstore.Cond, meta objstore.Metadata) (objstore.ObjectInfo, error)
	Copy(ctx context.Context, src, dst, srcIfMatch string) (objstore.ObjectInfo, error)
	Delete(ctx context.Context, key string, ifMatch string) error
}

// Defaults.
const (
	DefaultUID = 1000
	DefaultGID = 1000
	// DefaultConcurrency files in flight: small files are latency-bound
	// (one request each), so many at once. Measured with hotbench -rtt 20ms
	// (EC2 to S3): 2,000 small files down in 1.6 s at 32, 1.0 s at 64,
	// 0.8 s at 128. Not 128: at ~20 ms a request that is ~6,400 requests/s
	// on one user's prefix, over S3's documented 3,500 PUT / 5,500 GET per
	// second per prefix (it answers 503 SlowDown); 64 stays under both.
	DefaultConcurrency = 64
	// LargeInFlight bounds files of objstore.DefaultPartSize or more in
	// flight: each moves in up to objstore.DefaultConcurrency ranges with a
	// 1 MiB buffer each, and a few of them already fill the bandwidth.
	LargeInFlight = 4
	// DefaultMaxNames bounds the files, directories and symlinks (every
	// hard link's name counts) one sandbox's hot tier syncs: 200,000 is
	// twenty times a large monorepo checkout with its .git and a
	// virtualenv, and keeps a pass to about 100 MiB of daemon memory and
	// a manifest of about 40 MiB. Sandbox disks are formatted with as
	// many inodes (mounts/disk).
	DefaultMaxNames = 200_000
	// MassDeletionMin: a walk that finds nothing while the manifest holds
	// at least this many entries holds its deletions back for one pass.
	MassDeletionMin = 100
)

// Config is what a Syncer needs.
type Config struct {
	// Store holds the objects.
	Store Store
	// Prefix is the user's hot prefix, "users/USER/hot/" (must end with "/").
	Prefix string
	// Dir is the host directory bind-mounted as /home/agent.
	Dir string
	// DirIsMount says Dir is a mount point (a sandbox disk image). Down
	// and Up then refuse to run when nothing is mounted there: an empty
	// mount point would read as "the agent deleted every file" and Up
	// would delete the user's objects.
	DirIsMount bool
	// ManifestPath is the manifest file; it must be outside Dir, in a
	// directory that exists. The syncer never creates that directory: a
	// sync that ends after it was removed (the sandbox's hot dir, by
	// another writer) fails instead of bringing it back.
	ManifestPath string
	// Sentinel is the token WriteSentinel put on Dir when the sandbox's
	// home was made. Up propagates deletions only when the directory it
	// walks carries it (and, with DirIsMount, is a mount point): an empty
	// mount point, a removed image or another filesystem in its place
	// deletes nothing. Empty: Dir cannot be verified, Up never deletes.
	Sentinel string
	// MaxNames bounds the names synced (DefaultMaxNames).
	MaxNames int
	// TrashPrefix, when set ("users/USER/trash/"), is where every object
	// Up deletes or overwrites is first copied (see TrashKey). Empty: no
	// trash.
	TrashPrefix string
	// SandboxID names conflict copies (NAME.conflict-SANDBOXID).
	SandboxID string
	// Excludes are patterns never synced; nil means DefaultExcludes, an
	// empty non-nil slice excludes nothing.
	Excludes []string
	// Concurrency bounds files transferred in parallel (DefaultConcurrency).
	Concurrency int
	// UID and GID own what Down writes; 0 means 1000 (the sandbox's agent
	// user). With KeepOwner, files keep the daemon's owner.
	UID, GID  int
	KeepOwner bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Rejection is a file or key that could not be synced, and why.
type Rejection struct {
	Path   string // relative to Dir (Up) or the key (Down)
	Reason string
}

// Result reports one Down or Up. Paths are relative to Dir, slash-separated,
// sorted.
type Result struct {
	Downloaded []string // Down: files written
	Uploaded   []string // Up: files uploaded under their own name
	Deleted    []string // Up: objects deleted because their file is gone
	// Skipped: excluded by pattern, or the reserved top-level .keep.
	Skipped []string
	// Conflicts: the object changed since the last sync; for an upload ours
	// is saved as NAME.conflict-SANDBOXID and theirs kept; for a delete
	// theirs is kept.
	Conflicts []string
	// Rejected: invalid names, symlinks, special files.
	Rejected []Rejection
	// Unchanged counts files that needed no transfer.
	Unchanged int
	// Dirs counts directory markers written (modes and mtimes of
	// directories, empty ones included).
	Dirs int
	// Bytes transferred.
	Bytes int64
	// Held says why Up sent no deletions ("" when it sent those due);
	// they are applied by a later pass that can verify Dir.
	Held string
	// OverLimit is set when Dir holds more names than MaxNames: only the
	// first MaxNames (in walk order) were synced, and nothing was deleted.
	OverLimit *Limit
	// PrefixEmpty (Down) says the listing found no object at all under
	// the prefix, not even the .keep marker: the caller may write the
	// marker without listing the prefix again.
	PrefixEmpty bool
}

// Limit describes a tree over the names cap.
type Limit struct {
	Names    int  // names counted before the walk stopped
	AtLeast  bool // the walk stopped at Names: there are at least that many
	MaxNames int
}

func (l *Limit) String() string {
	more := ""
	if l.AtLeast {
		more = "more than "
	}
	return fmt.Sprintf("%s%d files, directories and symlinks (limit %d): only the first %d are synced, deletions wait until it is under the limit",
		more, l.MaxNames, l.MaxNames, l.MaxNames)
}

// HeldError is Up's error when deletions were held back (Result.Held) or
// the tree is over the names cap: the sync is not complete, and the
// directory must stay on the host. It matches errdefs.ErrFailedPrecondition.
type HeldError struct{ Reason string }

func (e *HeldError) Error() string { return "hotsync up: not complete: " + e.Reason }

// Is makes errdefs.IsFailedPrecondition recognise it.
func (e *HeldError) Is(target error) bool { return target == errdefs.ErrFailedPrecondition }

// ErrClosed is returned by Down and Up after Finish removed the directory.
var ErrClosed = fmt.Errorf("hotsync: the sandbox's hot directory was removed after its final sync: %w", errdefs.ErrFailedPrecondition)

// Syncer syncs one sandbox's hot storage. Down and Up are serialized: a
// checkpoint and the final sync never overlap.
type Syncer struct {
	store       Store
	prefix      string
	dir         string
	manifest    string
	sandboxID   string
	dirIsMount  bool
	exclude     excluder
	concurrency int
	uid, gid    int
	keepOwner   bool
	logger      *slog.Logger
	large       chan struct{} // LargeInFlight slots
	sentinel    string
	maxNames    int
	trash       string

	// lock serializes Down, Up and Finish (a 1-slot channel, so that a
	// wait for it honours the caller's context); closed is set by Finish,
	// under lock.
	lock   chan struct{}
	closed bool
}

// New validates cfg and returns a Syncer. Errors wrap
// errdefs.ErrInvalidArgument.
func New(cfg Config) (*Syncer, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("hotsync: "+format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	if cfg.Store == nil {
		return nil, invalid("no store")
	}
	if !strings.HasSuffix(cfg.Prefix, "/") || strings.HasPrefix(cfg.Prefix, "/") {
		return nil, invalid("prefix %q must be relative and end with \"/\"", cfg.Prefix)
	}
	if err := objstore.ValidateKey(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("hotsync: prefix: %w", err)
	}
	if cfg.SandboxID == "" || strings.ContainsAny(cfg.SandboxID, "/\x00") {
		return nil, invalid("sandbox id %q cannot name conflict copies", cfg.SandboxID)
	}
	if cfg.Dir == "" || cfg.ManifestPath == "" {
		return nil, invalid("Dir and ManifestPath are required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, invalid("dir %q: %v", cfg.Dir, err)
	}
	man, err := filepath.Abs(cfg.ManifestPath)
	if err != nil {
		return nil, invalid("manifest path %q: %v", cfg.ManifestPath, err)
	}
	if rel, err := filepath.Rel(dir, man); err == nil && filepath.IsLocal(rel) || man == dir {
		return nil, invalid("manifest %s must be outside Dir %s (the sandbox must not edit it)", man, dir)
	}
	excludes := cfg.Excludes
	if excludes == nil {
		excludes = DefaultExcludes
	}
	ex, err := newExcluder(excludes)
	if err != nil {
		return nil, fmt.Errorf("hotsync: %w", err)
	}
	s := &Syncer{
		store:       cfg.Store,
		prefix:      cfg.Prefix,
		dir:         dir,
		manifest:    man,
		sandboxID:   cfg.SandboxID,
		dirIsMount:  cfg.DirIsMount,
		exclude:     ex,
		concurrency: cfg.Concurrency,
		uid:         cfg.UID,
		gid:         cfg.GID,
		keepOwner:   cfg.KeepOwner,
		logger:      cfg.Logger,
		large:       make(chan struct{}, LargeInFlight),
		sentinel:    cfg.Sentinel,
		maxNames:    cfg.MaxNames,
		trash:       cfg.TrashPrefix,
		lock:        make(chan struct{}, 1),
	}
	if s.maxNames <= 0 {
		s.maxNames = DefaultMaxNames
	}
	if s.trash != "" {
		if err := objstore.ValidateKey(s.trash); err != nil || !strings.HasSuffix(s.trash, "/") || strings.HasPrefix(s.prefix, s.trash) || strings.HasPrefix(s.trash, s.prefix) {
			return nil, invalid("trash prefix %q must be a key prefix ending in \"/\", apart from the hot prefix", cfg.TrashPrefix)
		}
	}
	if s.concurrency <= 0 {
		s.concurrency = DefaultConcurrency
	}
	if s.uid == 0 {
		s.uid = DefaultUID
	}
	if s.gid == 0 {
		s.gid = DefaultGID
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	s.logger = s.logger.With("sandbox_id", s.sandboxID, "prefix", s.prefix)
	return s, nil
}

// acquire takes the syncer's lock, or fails when ctx ends first.
func (s *Syncer) acquire(ctx context.Context, op string) (release func(), err error) {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("hotsync %s: waiting for the sync in progress: %w", op, ctx.Err())
	}
	if s.closed {
		<-s.lock
		return nil, ErrClosed
	}
	return func() { <-s.lock }, nil
}

// Finish runs the final Up and, only if it completed, remove (the
// directory's removal) while still holding the lock; afterwards every
// Down and Up fails with ErrClosed. No checkpoint can run between the
// final sync and the removal, or after it.
func (s *Syncer) Finish(ctx context.Context, remove func() error) (Result, error) {
	release, err := s.acquire(ctx, "finish")
	if err != nil {
		return Result{}, err
	}
	defer release()
	res, err := s.up(ctx)
	if err != nil {
		return res, err
	}
	if err := remove(); err != nil {
		return res, err
	}
	s.closed = true
	return res, nil
}

// Close waits for a sync in progress, runs remove (the directory's
// removal without a sync: only for data already safe) under the lock, and
// closes the syncer, so nothing syncs the directory while or after it goes.
func (s *Syncer) Close(ctx context.Context, remove func() error) error {
	release, err := s.acquire(ctx, "close")
	if errors.Is(err, ErrClosed) {
		return remove()
	}
	if err != nil {
		return err
	}
	defer release()
	if err := remove(); err != nil {
		return err
	}
	s.closed = true
	return nil
}

// checkMounted enforces Config.DirIsMount.
func (s *Syncer) checkMounted(op string) error {
	if mounted, err := mountinfo.Mounted(s.dir); s.dirIsMount && (!mounted || err != nil) {
		return fmt.Errorf("hotsync %s: %s should be a mounted disk image but nothing is mounted there; refusing to sync: %w",
			op, s.dir, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// ConflictName returns the key under which a conflicting version of key is
// saved by this sandbox.
func (s *Syncer) ConflictName(key string) string {
	return key + ".conflict-" + s.sandboxID
}

// collector gathers a Result from parallel workers.
type collector struct {
	mu   sync.Mutex
	res  Result
	errs []error
}

func (c *collector) do(fn func(r *Result)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(&c.res)
}

func (c *collector) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, err)
}

func (c *collector) reject(p, reason string) {
	c.do(func(r *Result) { r.Rejected = append(r.Rejected, Rejection{Path: p, Reason: reason}) })
}

// finish sorts the lists and joins the errors (capped, so that a dead
// endpoint does not produce thousands of lines).
func (c *collector) finish(op string) (Result, error) {
	r := c.res
	for _, l := range [][]string{r.Downloaded, r.Uploaded, r.Deleted, r.Skipped, r.Conflicts} {
		slices.Sort(l)
	}
	slices.SortFunc(r.Rejected, func(a, b Rejection) int { return strings.Compare(a.Path, b.Path) })
	if len(c.errs) == 0 {
		return r, nil
	}
	errs := c.errs
	const maxErrs = 10
	if len(errs) > maxErrs {
		errs = append(errs[:maxErrs:maxErrs], fmt.Errorf("and %d more errors", len(c.errs)-maxErrs))
	}
	return r, fmt.Errorf("hotsync %s: %d failures: %w", op, len(c.errs), errors.Join(errs...))
}

// fsSpace describes the filesystem holding a syncer's Dir, in bytes.
type fsSpace struct{ total, free, block int64 }

// gateLarge takes one of the LargeInFlight slots for a transfer of size
// bytes when it is large, and returns what gives it back.
func (s *Syncer) gateLarge(ctx context.Context, size int64) (release func(), err error) {
	if size < objstore.DefaultPartSize {
		return func() {}, nil
	}
	select {
	case s.large <- struct{}{}:
		return func() { <-s.large }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// parallel runs fn for every item with at most n in flight, stopping early
// when ctx is done (items not started by then are not run).
func parallel[T any](ctx context.Context, n int, items []T, fn func(T)) {
	var g errgroup.Group
	g.SetLimit(n)
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if ctx.Err() == nil {
				fn(it)
			}
			return nil
		})
	}
	g.Wait()
}

// retry runs fn until it succeeds, fails with a permanent error, or
// attempts are used up. Transient errors (errdefs.ErrUnavailable, and those
// classified transient by isTransient) are retried with exponential backoff.
func retry(ctx context.Context, attempts int, isTransient func(error) bool, fn func() error) error {
	delay := 200 * time.Millisecond
	for i := 1; ; i++ {
		err := fn()
		if err == nil || i >= attempts || ctx.Err() != nil || !(errdefs.IsUnavailable(err) || isTransient(err)) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay *= 2
	}
}

const retryAttempts = 3

func noExtraTransient(error) bool { return false }
