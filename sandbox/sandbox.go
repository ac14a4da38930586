// Package sandbox owns the lifecycle of a sandbox: validating what a client
// asks for, recording it in the registry, preparing its storage, starting it
// through the runtime, running execs with a remembered working directory,
// and stopping it for every reason (request, completion, error, TTL).
//
// It must not speak HTTP (that is package api) nor talk to containerd
// directly (that is package runtime). Every error it returns is wrapped on
// an errdefs class; api maps those classes to status codes.
//
// Statuses move creating → starting → ready → running (first exec or
// heartbeat) → shutting_down → stopped | expired | failed. Records are
// kept for audit (pruned only by --record-retention).
//
// Supervision (supervise.go, reconcile.go) keeps every record true: task
// deaths, missed heartbeats and idleness become stops through the normal
// stop path, and a reconcile loop repairs whatever a crash left behind.
//
// Activity: Manager.Touch is the one method every kind of activity calls
// to keep a sandbox from idling out (idle_timeout_seconds). The API calls
// it for every request about a sandbox (its processes included), for
// heartbeats, and per chunk a follow or an attach delivers and per
// attach keystroke; an exec in flight counts, and so does a background
// process's output growing (the idle check looks before it stops a
// sandbox). SSH sessions start processes (StartProcess touches), and
// every connection Dial makes into a sandbox (HTTP proxy, preview, port
// tunnels, SSH forwards) touches per read and write. Heartbeats touch,
// also those sent from inside over the sandbox listener. It is cheap
// enough to call per chunk of output.
package sandbox

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/hostconfig"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/metrics"
	"github.com/matrx-dev/matrx/mounts"
	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/fshelper"
	"github.com/matrx-dev/matrx/runtime/network"
)

// Paths inside every sandbox.
const (
	HotPath  = "/home/agent"
	ColdPath = "/data/cold"
	// HomeSocketDir holds the sandbox listener's socket (HomeSocketName)
	// in sandboxes without a bridge address; MATRX_API_SOCKET names it.
	HomeSocketDir  = "/.matrx/api"
	HomeSocketName = "sandbox.sock"
)

// Home is the way back from inside a sandbox: a listener that matrxd
// serves for sandboxes only (package api), where a sandbox may read its
// own record and send heartbeats and complete/error signals about itself.
// A sandbox with a bridge address reaches it at URL (the gateway); one
// without (network mode none, or networking off) through a Unix socket of
// its own, bound read-only at HomeSocketDir. Every process of the sandbox
// learns where from ORCHESTRATOR_URL (and MATRX_API_SOCKET).
type Home interface {
	// URL is where sandboxes with a bridge address reach home, e.g.
	// http://10.213.0.1:8787; "" when they cannot.
	URL() string
	// OpenSocket makes (or, after a daemon restart, makes again) the
	// socket of a sandbox without a bridge address and returns the host
	// directory holding it, to bind at HomeSocketDir.
	OpenSocket(id string) (string, error)
	// CloseSocket stops serving a sandbox's socket and removes it and its
	// directory. Closing a sandbox that has none is a no-op.
	CloseSocket(id string)
}

// Stop reasons recorded on a stopped sandbox.
const (
	ReasonUserRequested    = "user_requested"
	ReasonGracefulShutdown = "graceful_shutdown"
	ReasonError            = "error"
	ReasonExpired          = "expired"
	ReasonAdmin            = "admin"
)

// Runtime is what the lifecycle needs from the container runtime.
type Runtime interface {
	Create(ctx context.Context, req runtime.CreateRequest) error
	Claim(ctx context.Context, req runtime.ClaimRequest) error
	Destroy(ctx context.Context, id string, grace time.Duration) error
	DestroyThen(ctx context.Context, id string, grace time.Duration, stopped func()) error
	Exec(ctx context.Context, id string, req runtime.ExecRequest) (*runtime.ExecResult, error)
	// WarmExecAgent starts a sandbox's exec agent ahead of its first exec
	// (the warm pool's sandboxes; others start theirs at their first exec).
	WarmExecAgent(ctx context.Context, id string) error
	Files(ctx context.Context, id string, user runtime.ExecUser, req fshelper.Request, body io.Reader) (*runtime.FilesCall, error)
	Running(ctx context.Context, id string) (bool, error)
	StartProcess(ctx context.Context, id string, spec runtime.ProcessSpec) (*runtime.Process, error)
	Processes(ctx context.Context, id string) ([]*runtime.Process, error)
	RemoveProcess(ctx context.Context, p *runtime.Process) error
	Dial(ctx context.Context, id string, port int) (net.Conn, error)
	Networking() bool
	CheckNetwork(p network.Policy) error
	// IPv4 is the bridge address of a sandbox this runtime created since
	// it started (invalid without networking or for another sandbox).
	IPv4(id string) netip.Addr
	// Supervision (runtime.Watch, GC, TaskState, Connected).
	Watch(ctx context.Context, cfg runtime.WatchConfig)
	GC(ctx context.Context, p runtime.GCPolicy) ([]runtime.Leftover, error)
	TaskState(ctx context.Context, id string) (runtime.TaskState, error)
	Connected() error
	// Images (images.go).
	ImageDigest(ctx context.Context, name string) (string, error)
	Pull(ctx context.Context, req runtime.PullRequest) (runtime.ImageInfo, error)
	Images(ctx context.Context) ([]runtime.ImageInfo, error)
	ImagesInUse(ctx context.Context) (map[string][]string, error)
	DeleteImage(ctx context.Context, name string) error
}

// Storage is what the lifecycle needs from host-side storage
// (mounts.Storage): per-sandbox hot directories synced with the bucket and
// per-user cold mounts.
type Storage interface {
	// EnsureCold makes the user's cold prefix; SyncDown marks the hot
	// one when its listing finds it empty.
	EnsureCold(ctx context.Context, userID ids.UserID) error
	PrepareHot(sandboxID string, userID ids.UserID, diskBytes int64) (string, error)
	// ClaimHot gives a warm-pool sandbox's hot dir (prepared with no
	// user) its owner.
	ClaimHot(sandboxID string, userID ids.UserID) error
	SyncDown(ctx context.Context, sandboxID string, userID ids.UserID) (hotsync.Result, error)
	SyncUp(ctx context.Context, sandboxID string, userID ids.UserID) (hotsync.Result, error)
	FinishHot(ctx context.Context, sandboxID string, userID ids.UserID) (hotsync.Result, error)
	RemoveHot(ctx context.Context, sandboxID string) error
	HasHot(sandboxID string) bool
	Pending() ([]mounts.PendingHot, error)
	// AcquireCold and ReleaseCold count one reference per sandbox: a
	// release by a sandbox that holds none (its acquire failed) is a no-op.
	AcquireCold(ctx context.Context, userID ids.UserID, sandboxID string) (string, error)
	ReleaseCold(ctx context.Context, userID ids.UserID, sandboxID string) error
	// ColdSlot makes a sandbox's empty cold slot (to bind at ColdPath);
	// AcquireColdSlot binds the user's cold storage into it (at a pool
	// claim, or beside a create's container start); ReleaseCold removes
	// it; SweepColdSlots removes the slots of sandboxes keep does not know.
	ColdSlot(sandboxID string) (string, error)
	AcquireColdSlot(ctx context.Context, userID ids.UserID, sandboxID string) error
	SweepColdSlots(keep func(sandboxID string) bool) ([]string, error)
	// SweepCold unmounts cold mounts no reference holds (a previous
	// daemon's), returning their users.
	SweepCold(ctx context.Context) ([]ids.UserID, error)
	Stats(ctx context.Context, userID ids.UserID) (mounts.TierStats, error)
	Clean(ctx context.Context, userID ids.UserID, tier string) (int64, error)
	PruneTrash(ctx context.Context, userID ids.UserID, now time.Time) (int, error)
	RestoreHot(ctx context.Context, userID ids.UserID, path string, at time.Time) ([]string, error)
}

// Limits are the daemon's defaults and the maximums a request may ask for.
type Limits struct {
	DefaultImage    string
	DefaultCPU      float64
	MaxCPU          float64
	DefaultMemoryMB int64
	MaxMemoryMB     int64
	DefaultPids     int64
	MaxPids         int64
	// DefaultDiskMB sizes each sandbox's home disk (a loop-mounted ext4
	// image); 0 turns disk quotas off.
	DefaultDiskMB     int64
	MaxDiskMB         int64
	DefaultTTL        time.Duration
	MaxTTL            time.Duration
	ShutdownTimeout   time.Duration
	MaxCommandLength  int
	DefaultCmdTimeout time.Duration
	MaxCmdTimeout     time.Duration
	OutputLimit       int64
	// DefaultHeartbeatTimeout and DefaultIdleTimeout apply to sandboxes
	// whose config does not set them; 0 is off.
	DefaultHeartbeatTimeout time.Duration
	DefaultIdleTimeout      time.Duration
	// Background processes: at most MaxProcesses running per sandbox (blocking
	// execs do not count), each keeping ProcessOutputCap bytes of output on
	// the host; ended ones are kept ProcessRetention, at most
	// ProcessRetainCount of them; a process timeout is at most
	// MaxProcessTimeout.
	MaxProcesses       int
	ProcessOutputCap   int64
	ProcessRetention   time.Duration
	ProcessRetainCount int
	// ProcessRetainBytes bounds the output ended processes keep, per
	// sandbox: beyond it the oldest ended processes are forgotten.
	ProcessRetainBytes int64
	MaxProcessTimeout  time.Duration
	// MaxSandboxes is the host's sandbox slots: a create beyond this many
	// live sandboxes is refused (ResourceExhausted). 0 is no limit. A
	// cluster scheduler places work against it (docs/fleet.md); the daemon
	// enforces it for everyone, so a create that bypasses the scheduler
	// cannot overfill the host.
	MaxSandboxes int
}

// ProcessOutputBound is the most host disk one sandbox's process output can
// take: every running process at the cap, plus what ended ones may keep
// (for the host-disk admission of creates).
func (l Limits) ProcessOutputBound() int64 {
	return int64(l.MaxProcesses)*l.ProcessOutputCap + l.ProcessRetainBytes
}

// DefaultLimits are ORIGINAL.md's defaults.
func DefaultLimits() Limits {
	return Limits{
		DefaultImage: hostconfig.Image,
		DefaultCPU:   2, MaxCPU: 8,
		DefaultMemoryMB: 4096, MaxMemoryMB: 32768,
		DefaultPids: 1024, MaxPids: 32768,
		DefaultDiskMB: 20480, MaxDiskMB: 204800,
		DefaultTTL: 7200 * time.Second, MaxTTL: 7 * 24 * time.Hour,
		ShutdownTimeout:   30 * time.Second,
		MaxCommandLength:  10000,
		DefaultCmdTimeout: 30 * time.Second, MaxCmdTimeout: 600 * time.Second,
		OutputLimit:  1 << 20,
		MaxProcesses: 64, ProcessOutputCap: 16 << 20,
		ProcessRetention: 10 * time.Minute, ProcessRetainCount: 100, ProcessRetainBytes: 256 << 20,
		MaxProcessTimeout: 24 * time.Hour,
	}
}

// Validate checks the limits are coherent (config values are validated at
// startup, not at first use).
func (l Limits) Validate() error {
	switch {
	case l.DefaultImage == "":
		return invalid("default image is empty")
	case l.MaxCPU <= 0 || l.DefaultCPU <= 0 || l.DefaultCPU > l.MaxCPU:
		return invalid("cpu limits: default %.2f must be in (0, max %.2f]", l.DefaultCPU, l.MaxCPU)
	case l.MaxMemoryMB < 64 || l.DefaultMemoryMB < 64 || l.DefaultMemoryMB > l.MaxMemoryMB:
		return invalid("memory limits: default %d MB must be in [64, max %d MB]", l.DefaultMemoryMB, l.MaxMemoryMB)
	case l.MaxPids < 16 || l.DefaultPids < 16 || l.DefaultPids > l.MaxPids:
		return invalid("pids limits: default %d must be in [16, max %d]", l.DefaultPids, l.MaxPids)
	case l.DefaultDiskMB < 0 || l.DefaultDiskMB > 0 && (l.DefaultDiskMB < 64 || l.DefaultDiskMB > l.MaxDiskMB):
		return invalid("disk limits: default %d MB must be 0 (off) or in [64, max %d MB]", l.DefaultDiskMB, l.MaxDiskMB)
	case l.MaxTTL < time.Minute || l.DefaultTTL < time.Minute || l.DefaultTTL > l.MaxTTL:
		return invalid("ttl limits: default %v must be in [1m, max %v]", l.DefaultTTL, l.MaxTTL)
	case l.DefaultHeartbeatTimeout < 0 || l.DefaultHeartbeatTimeout > l.MaxTTL:
		return invalid("default heartbeat timeout %v must be in [0 (off), max ttl %v]", l.DefaultHeartbeatTimeout, l.MaxTTL)
	case l.DefaultIdleTimeout < 0 || l.DefaultIdleTimeout > l.MaxTTL:
		return invalid("default idle timeout %v must be in [0 (off), max ttl %v]", l.DefaultIdleTimeout, l.MaxTTL)
	case l.ShutdownTimeout < 0 || l.ShutdownTimeout > 10*time.Minute:
		return invalid("shutdown timeout %v must be in [0, 10m]", l.ShutdownTimeout)
	case l.MaxCommandLength < 1:
		return invalid("max command length must be positive")
	case l.DefaultCmdTimeout < time.Second || l.MaxCmdTimeout < l.DefaultCmdTimeout:
		return invalid("command timeouts: default %v must be in [1s, max %v]", l.DefaultCmdTimeout, l.MaxCmdTimeout)
	case l.OutputLimit < 1024:
		return invalid("output limit %d must be at least 1024 bytes", l.OutputLimit)
	case l.MaxProcesses < 1 || l.MaxProcesses > 4096:
		return invalid("max processes %d must be in [1, 4096]", l.MaxProcesses)
	case l.ProcessOutputCap < 256<<10 || l.ProcessOutputCap > 1<<30:
		return invalid("process output cap %d must be in [256 KiB, 1 GiB]", l.ProcessOutputCap)
	case l.ProcessRetention < 0 || l.ProcessRetainCount < 0:
		return invalid("process retention must not be negative")
	case l.ProcessRetainBytes < l.ProcessOutputCap:
		return invalid("process retain bytes %d must be at least the process output cap %d (the newest ended process keeps its output)", l.ProcessRetainBytes, l.ProcessOutputCap)
	case l.MaxProcessTimeout < time.Second:
		return invalid("max process timeout %v must be at least 1s", l.MaxProcessTimeout)
	case l.MaxSandboxes < 0:
		return invalid("max sandboxes %d must be 0 (no limit) or positive", l.MaxSandboxes)
	}
	return nil
}

// Config holds the manager's required dependencies.
type Config struct {
	Store   registry.Store
	Runtime Runtime
	Storage Storage
	Limits  Limits
	Logger  *slog.Logger
	// Metrics, when set, records lifecycle latencies and sync volumes.
	Metrics *metrics.Metrics
	// Home, when set, is the listener sandboxes call home on; without it
	// no process in a sandbox is told of any way back.
	Home Home
	// PinnedImages are kept by PruneImages even when no sandbox uses
	// them (the default image always is).
	PinnedImages []string
	// Pools are the warm pools to keep full (pool.go); RunPool fills them.
	Pools []PoolSpec
}

// Manager runs sandbox lifecycles.
type Manager struct {
	store   registry.Store
	rt      Runtime
	storage Storage
	metrics *metrics.Metrics
	home    Home
	limits  Limits
	log     *slog.Logger
	now     func() time.Time

	// admitMu makes "count the live sandboxes, record a new one" atomic
	// when Limits.MaxSandboxes is set.
	admitMu sync.Mutex

	mu      sync.Mutex
	live    map[string]*liveState // in-memory per-sandbox state, dropped on stop
	procMu  sync.Mutex            // process starts and pruning, one at a time
	hotBusy map[string]bool       // hot dirs a retry or repair is syncing now
	bg      sync.WaitGroup        // background shutdowns, recovery, saves

	events      eventLog
	conds       conditions
	stopSem     chan struct{} // bounds supervision's concurrent stops
	reconcileMu sync.Mutex
	recovered   chan struct{} // closed once startup recovery finished
	pins        []string      // normalized PinnedImages
	images      imageState    // pulls in flight, images of starting sandboxes
	pool        *pool         // warm pools (pool.go)
	gate        *claimGate    // bounds the claims from the pool at once (gate.go)

}

// liveState is what the manager remembers about a running sandbox.
type liveState struct {
	cwd      string
	watches  int       // file watches streaming now (WatchFiles)
	activity time.Time // last Touch
	saved    time.Time // when activity was last written to the record
	execs    int       // execs in flight
	// outputEnds is where each background process's output ended when
	// idleness last looked (its growth is activity).
	outputEnds map[string]int64
}

// New returns a manager. It does not touch existing sandboxes; call Recover
// once at startup for that.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Runtime == nil || cfg.Storage == nil {
		return nil, invalid("sandbox manager needs a store, a runtime and storage")
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// Images are kept by their full names, the way containerd stores them.
	def, err := normalizeImage("default image", cfg.Limits.DefaultImage)
	if err != nil {
		return nil, err
	}
	cfg.Limits.DefaultImage = def
	var pins []string
	for _, p := range cfg.PinnedImages {
		n, err := normalizeImage("pinned image", p)
		if err != nil {
			return nil, err
		}
		pins = append(pins, n)
	}
	wp, err := newPool(cfg.Pools)
	if err != nil {
		return nil, err
	}
	return &Manager{
		pool: wp, gate: newClaimGate(claimGateSize(), claimGateHold),
		store: cfg.Store, rt: cfg.Runtime, storage: cfg.Storage, metrics: cfg.Metrics, home: cfg.Home, limits: cfg.Limits,
		log: cfg.Logger, now: time.Now, live: map[string]*liveState{},
		hotBusy: map[string]bool{}, stopSem: make(chan struct{}, maxBackgroundStops), recovered: make(chan struct{}),
		pins:   pins,
		images: imageState{starting: map[string]int{}, pulls: map[string]*sharedPull{}},
	}, nil
}

// Limits returns the manager's limits.
func (m *Manager) Limits() Limits { return m.limits }

// Get returns one sandbox.
func (m *Manager) Get(ctx context.Context, id string) (*registry.Record, error) {
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	r, err := m.userRecord(ctx, id)
	return m.withActivity(r), err
}

// userRecord is a sandbox's record for a user's request: a pooled sandbox
// (which has no user yet) is not found.
func (m *Manager) userRecord(ctx context.Context, id string) (*registry.Record, error) {
	r, err := m.store.Get(ctx, id)
	if err == nil && r.UserID == "" {
		return nil, errPooled(id)
	}
	return r, err
}

// List returns a user's sandboxes (all users when userID is empty); only
// live ones unless all is set.
func (m *Manager) List(ctx context.Context, userID string, all bool) ([]*registry.Record, error) {
	var f registry.Filter
	if userID != "" {
		u, err := ids.ParseUserID(userID)
		if err != nil {
			return nil, err
		}
		f.UserID = u
	}
	if !all {
		f.Statuses = registry.LiveStatuses()
	}
	rs, err := m.store.List(ctx, f)
	// Pooled sandboxes (and retired ones, which never had a user) are
	// nobody's: ListPooled shows them.
	rs = slices.DeleteFunc(rs, func(r *registry.Record) bool { return r.UserID == "" })
	for _, r := range rs {
		m.withActivity(r)
	}
	return rs, err
}

// ListPooled returns the sandboxes waiting in the warm pools.
func (m *Manager) ListPooled(ctx context.Context) ([]*registry.Record, error) {
	return m.pooled(ctx)
}

// MaxPageSize bounds one page of GET /sandboxes.
const MaxPageSize = 1000

// PageRequest selects one page of sandboxes, newest first.
type PageRequest struct {
	UserID string
	All    bool // stopped ones too
	// Pooled lists the warm pools' sandboxes instead (with neither
	// UserID nor All: they have no user and are never stopped).
	Pooled bool
	// Limit is the page size; 0 means every match (the original API's
	// behaviour, for clients that do not page).
	Limit int
	// Cursor is a previous page's NextCursor: the page starts after it.
	Cursor string
}

// Page is one page of sandboxes, newest first. Total counts every match,
// not only this page; NextCursor is empty on the last page.
type Page struct {
	Records    []*registry.Record
	Total      int
	NextCursor string
}

// ListPage returns one page of sandboxes, newest first (creation time, then
// id). Cursors are opaque to clients and stable under inserts: a page
// starts strictly after the record its cursor names.
func (m *Manager) ListPage(ctx context.Context, req PageRequest) (*Page, error) {
	if req.Limit < 0 || req.Limit > MaxPageSize {
		return nil, invalid("limit %d is out of range [1, %d] (omit it for every sandbox)", req.Limit, MaxPageSize)
	}
	var after *cursor
	if req.Cursor != "" {
		c, err := parseCursor(req.Cursor)
		if err != nil {
			return nil, err
		}
		after = &c
	}
	if req.Pooled && (req.UserID != "" || req.All) {
		return nil, invalid("pooled sandboxes have no user and are never stopped: pooled=true goes with neither user_id nor all")
	}
	list := func() ([]*registry.Record, error) { return m.List(ctx, req.UserID, req.All) }
	if req.Pooled {
		list = func() ([]*registry.Record, error) { return m.ListPooled(ctx) }
	}
	rs, err := list()
	if err != nil {
		return nil, err
	}
	slices.Reverse(rs) // the store lists oldest first
	out := &Page{Total: len(rs), Records: []*registry.Record{}}
	for _, r := range rs {
		if after != nil && !after.before(r) {
			continue
		}
		if req.Limit > 0 && len(out.Records) == req.Limit {
			last := out.Records[len(out.Records)-1]
			out.NextCursor = cursor{At: last.CreatedAt, ID: last.ID}.String()
			break
		}
		out.Records = append(out.Records, r)
	}
	return out, nil
}

// cursor names the last record of a page.
type cursor struct {
	At time.Time
	ID string
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.At.UnixNano(), 10) + ":" + c.ID))
}

// before reports whether r comes after the cursor in newest-first order.
func (c cursor) before(r *registry.Record) bool {
	if !r.CreatedAt.Equal(c.At) {
		return r.CreatedAt.Before(c.At)
	}
	return r.ID < c.ID
}

func parseCursor(s string) (cursor, error) {
	bad := invalid("cursor %q is not one this daemon handed out (use next_cursor of a previous page)", s)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, bad
	}
	ns, id, ok := strings.Cut(string(b), ":")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || !ids.ValidSandboxID(id) {
		return cursor{}, bad
	}
	return cursor{At: time.Unix(0, n).UTC(), ID: id}, nil
}

// ActiveCount is the number of sandboxes that are not in a terminal state
// (from the registry's index: no record is read).
func (m *Manager) ActiveCount(ctx context.Context) (int, error) {
	c, err := m.store.Counts(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range registry.LiveStatuses() {
		n += c.ByStatus[s]
	}
	return n, nil
}

// Usage is what the live sandboxes hold of the host: each one a slot, and
// its CPU and memory limits.
type Usage struct {
	Sandboxes int
	CPU       float64
	MemoryMB  int64
}

// Usage sums the limits of the sandboxes that are not in a terminal state.
func (m *Manager) Usage(ctx context.Context) (Usage, error) {
	rs, err := m.List(ctx, "", false)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{Sandboxes: len(rs)}
	for _, r := range rs {
		u.CPU += r.Config.CPU
		u.MemoryMB += r.Config.MemoryMB
	}
	return u, nil
}
