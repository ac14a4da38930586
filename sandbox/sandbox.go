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
// heartbeat) → shutting_down → stopped | expired | failed. Records are never
// deleted.
package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/matrx-dev/matrx/undo"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/metrics"
	"github.com/matrx-dev/matrx/mounts"
	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/network"
)

// Paths inside every sandbox.
const (
	HotPath  = "/home/agent"
	ColdPath = "/data/cold"
)

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
	Destroy(ctx context.Context, id string, grace time.Duration) error
	Exec(ctx context.Context, id string, req runtime.ExecRequest) (*runtime.ExecResult, error)
	Running(ctx context.Context, id string) (bool, error)
	Networking() bool
	CheckNetwork(p network.Policy) error
}

// Storage is what the lifecycle needs from host-side storage
// (mounts.Storage): per-sandbox hot directories synced with the bucket and
// per-user cold mounts.
type Storage interface {
	EnsureUser(ctx context.Context, userID string) error
	PrepareHot(sandboxID, userID string, diskBytes int64) (string, error)
	SyncDown(ctx context.Context, sandboxID, userID string) (hotsync.Result, error)
	SyncUp(ctx context.Context, sandboxID, userID string) (hotsync.Result, error)
	FinishHot(ctx context.Context, sandboxID, userID string) (hotsync.Result, error)
	RemoveHot(sandboxID string) error
	HasHot(sandboxID string) bool
	Pending() ([]mounts.PendingHot, error)
	AcquireCold(ctx context.Context, userID string) (string, error)
	ReleaseCold(ctx context.Context, userID string) error
	Stats(ctx context.Context, userID string) (mounts.TierStats, error)
	Clean(ctx context.Context, userID, tier string) (int64, error)
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
}

// DefaultLimits are ORIGINAL.md's defaults.
func DefaultLimits() Limits {
	return Limits{
		DefaultImage: "localhost/matrx/sandbox:latest",
		DefaultCPU:   2, MaxCPU: 8,
		DefaultMemoryMB: 4096, MaxMemoryMB: 32768,
		DefaultPids: 1024, MaxPids: 32768,
		DefaultDiskMB: 20480, MaxDiskMB: 204800,
		DefaultTTL: 7200 * time.Second, MaxTTL: 7 * 24 * time.Hour,
		ShutdownTimeout:   30 * time.Second,
		MaxCommandLength:  10000,
		DefaultCmdTimeout: 30 * time.Second, MaxCmdTimeout: 600 * time.Second,
		OutputLimit: 1 << 20,
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
	case l.ShutdownTimeout < 0 || l.ShutdownTimeout > 10*time.Minute:
		return invalid("shutdown timeout %v must be in [0, 10m]", l.ShutdownTimeout)
	case l.MaxCommandLength < 1:
		return invalid("max command length must be positive")
	case l.DefaultCmdTimeout < time.Second || l.MaxCmdTimeout < l.DefaultCmdTimeout:
		return invalid("command timeouts: default %v must be in [1s, max %v]", l.DefaultCmdTimeout, l.MaxCmdTimeout)
	case l.OutputLimit < 1024:
		return invalid("output limit %d must be at least 1024 bytes", l.OutputLimit)
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
}

// Manager runs sandbox lifecycles.
type Manager struct {
	store   registry.Store
	rt      Runtime
	storage Storage
	metrics *metrics.Metrics
	limits  Limits
	log     *slog.Logger
	now     func() time.Time

	mu   sync.Mutex
	live map[string]*liveState // in-memory per-sandbox state, dropped on stop
	bg   sync.WaitGroup        // background shutdowns
}

// liveState is what the manager remembers about a running sandbox.
type liveState struct {
	cwd string
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
	return &Manager{
		store: cfg.Store, rt: cfg.Runtime, storage: cfg.Storage, metrics: cfg.Metrics, limits: cfg.Limits,
		log: cfg.Logger, now: time.Now, live: map[string]*liveState{},
	}, nil
}

// Limits returns the manager's limits.
func (m *Manager) Limits() Limits { return m.limits }

// CreateConfig is what a client may set on a new sandbox. Zero values take
// the daemon's defaults.
type CreateConfig struct {
	Image      string
	CPU        float64
	MemoryMB   int64
	Pids       int64
	DiskMB     int64
	TTLSeconds int64
	Env        map[string]string
	Labels     map[string]string
	Network    registry.NetworkConfig
}

// resolve validates c against the limits and fills in defaults.
func (m *Manager) resolve(c CreateConfig) (registry.Config, error) {
	l := m.limits
	out := registry.Config{
		Image: c.Image, CPU: c.CPU, MemoryMB: c.MemoryMB, Pids: c.Pids, DiskMB: c.DiskMB, TTLSeconds: c.TTLSeconds,
		Env: c.Env, Labels: c.Labels, Network: c.Network,
	}
	if out.Image == "" {
		out.Image = l.DefaultImage
	}
	if err := validateImage(out.Image); err != nil {
		return out, err
	}
	if out.CPU == 0 {
		out.CPU = l.DefaultCPU
	}
	if out.CPU < 0.1 || out.CPU > l.MaxCPU {
		return out, invalid("config.cpu %g is out of range [0.1, %g]", out.CPU, l.MaxCPU)
	}
	if out.MemoryMB == 0 {
		out.MemoryMB = l.DefaultMemoryMB
	}
	if out.MemoryMB < 64 || out.MemoryMB > l.MaxMemoryMB {
		return out, invalid("config.memory_mb %d is out of range [64, %d]", out.MemoryMB, l.MaxMemoryMB)
	}
	if out.Pids == 0 {
		out.Pids = l.DefaultPids
	}
	if out.Pids < 16 || out.Pids > l.MaxPids {
		return out, invalid("config.pids %d is out of range [16, %d]", out.Pids, l.MaxPids)
	}
	if out.DiskMB == 0 {
		out.DiskMB = l.DefaultDiskMB
	} else if l.DefaultDiskMB == 0 {
		return out, invalid("config.disk_mb: disk quotas are turned off on this daemon")
	}
	if out.DiskMB != 0 && (out.DiskMB < 64 || out.DiskMB > l.MaxDiskMB) {
		return out, invalid("config.disk_mb %d is out of range [64, %d]", out.DiskMB, l.MaxDiskMB)
	}
	if out.TTLSeconds == 0 {
		out.TTLSeconds = int64(l.DefaultTTL / time.Second)
	}
	if out.TTLSeconds < 60 || out.TTLSeconds > int64(l.MaxTTL/time.Second) {
		return out, invalid("config.ttl_seconds %d is out of range [60, %d]", out.TTLSeconds, int64(l.MaxTTL/time.Second))
	}
	if err := validateEnv(out.Env, "config.env"); err != nil {
		return out, err
	}
	if err := validateLabels(out.Labels); err != nil {
		return out, err
	}
	if out.Network.Mode == "" {
		out.Network.Mode = string(network.ModeNone)
		if m.rt != nil && m.rt.Networking() {
			out.Network.Mode = string(network.ModeDefault)
		}
	}
	p, err := networkPolicy(out.Network)
	if err != nil {
		return out, err
	}
	if m.rt != nil {
		if err := m.rt.CheckNetwork(p); err != nil {
			return out, fmt.Errorf("config.network: %w", err)
		}
	}
	return out, nil
}

// networkPolicy parses a sandbox's network config.
func networkPolicy(c registry.NetworkConfig) (network.Policy, error) {
	p := network.Policy{Mode: network.Mode(c.Mode)}
	if len(c.Allow) > network.MaxAllow {
		return p, invalid("config.network.allow has %d entries, at most %d allowed", len(c.Allow), network.MaxAllow)
	}
	for _, a := range c.Allow {
		pfx, err := netip.ParsePrefix(a)
		if err != nil {
			return p, invalid("config.network.allow entry %q is not a CIDR (e.g. 203.0.113.0/24)", a)
		}
		p.Allow = append(p.Allow, pfx)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("config.network: %w", err)
	}
	return p, nil
}

// Create validates, records and starts a sandbox for userID. It returns once
// the sandbox is ready, or with an error after undoing everything it made; a
// sandbox that failed to start stays in the registry as failed, with the
// reason.
func (m *Manager) Create(ctx context.Context, userID string, c CreateConfig) (*registry.Record, error) {
	start := time.Now()
	if err := ValidateUserID(userID); err != nil {
		return nil, err
	}
	cfg, err := m.resolve(c)
	if err != nil {
		return nil, err
	}
	now := m.now().UTC()
	rec := &registry.Record{
		ID: newSandboxID(), UserID: userID, Status: registry.StatusCreating,
		Config: cfg, CreatedAt: now, ExpiresAt: now.Add(time.Duration(cfg.TTLSeconds) * time.Second),
	}
	rec.ContainerID = rec.ID
	if err := m.store.Create(ctx, rec); err != nil {
		return nil, fmt.Errorf("record sandbox: %w", err)
	}
	log := m.log.With("sandbox_id", rec.ID, "user_id", userID)
	log.Info("sandbox creating", "image", cfg.Image, "cpu", cfg.CPU, "memory_mb", cfg.MemoryMB, "pids", cfg.Pids)

	fail := func(err error) (*registry.Record, error) {
		// Record the failure even if the caller went away.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		stopped := m.now().UTC()
		m.store.Update(cctx, rec.ID, func(r *registry.Record) error {
			r.Status = registry.StatusFailed
			r.Error = err.Error()
			r.StoppedAt = &stopped
			r.StopReason = ReasonError
			return nil
		})
		log.Error("sandbox create failed", "error", err)
		m.metrics.ObserveCreate(time.Since(start), false)
		return nil, err
	}

	if err := m.storage.EnsureUser(ctx, userID); err != nil {
		return fail(err)
	}
	// Undo steps, run newest first on failure. Hot files may be removed
	// here: the agent never ran.
	var rollback undo.Stack
	undoAll := func() { rollback.Run(ctx, log) }
	home, err := m.storage.PrepareHot(rec.ID, userID, cfg.DiskMB<<20)
	if err != nil {
		return fail(err)
	}
	rollback.Push("remove hot dir", func(context.Context) error { return m.storage.RemoveHot(rec.ID) })
	// Hot files download while the cold mount and the container come up.
	downDone := make(chan error, 1)
	go func() {
		res, err := m.storage.SyncDown(ctx, rec.ID, userID)
		if err == nil {
			log.Info("hot storage synced down", "files", len(res.Downloaded), "bytes", res.Bytes, "rejected", len(res.Rejected))
			m.metrics.AddHotSync("down", res.Bytes, int64(len(res.Downloaded)), 0, 0)
		} else {
			m.metrics.AddHotSync("down", 0, 0, 0, 1)
		}
		downDone <- err
	}()
	waitDown := func() error { return <-downDone }
	coldPath, err := m.storage.AcquireCold(ctx, userID)
	if err != nil {
		waitDown()
		undoAll()
		return fail(err)
	}
	rollback.Push("release cold mount", func(c context.Context) error { return m.storage.ReleaseCold(c, userID) })
	if _, err := m.setStatus(ctx, rec.ID, registry.StatusStarting); err != nil {
		waitDown()
		undoAll()
		return fail(err)
	}
	policy, _ := networkPolicy(cfg.Network) // validated by resolve
	err = m.rt.Create(ctx, runtime.CreateRequest{
		ID: rec.ID, UserID: userID, Image: cfg.Image,
		Resources: runtime.Resources{CPU: cfg.CPU, MemoryBytes: cfg.MemoryMB << 20, Pids: cfg.Pids},
		Mounts: []runtime.Mount{
			{Source: home, Destination: HotPath},
			{Source: coldPath, Destination: ColdPath, Slave: true},
		},
		Env:       m.sandboxEnv(rec),
		Network:   policy,
		CreatedAt: now,
	})
	if err != nil {
		waitDown()
		undoAll()
		return fail(err)
	}
	rollback.Push("destroy container", func(c context.Context) error { return m.rt.Destroy(c, rec.ID, 0) })
	if err := waitDown(); err != nil {
		undoAll()
		return fail(fmt.Errorf("hot storage sync-down: %w", err))
	}
	m.mu.Lock()
	m.live[rec.ID] = &liveState{cwd: HotPath}
	m.mu.Unlock()
	syncedAt := m.now().UTC()
	out, err := m.store.Update(ctx, rec.ID, func(r *registry.Record) error {
		r.Status = registry.StatusReady
		r.HotSyncedAt = &syncedAt
		return nil
	})
	if err != nil {
		m.forget(rec.ID)
		undoAll()
		return fail(err)
	}
	log.Info("sandbox ready")
	m.metrics.ObserveCreate(time.Since(start), true)
	return out, nil
}

// sandboxEnv is the environment every process of the sandbox gets.
func (m *Manager) sandboxEnv(rec *registry.Record) map[string]string {
	env := map[string]string{}
	for k, v := range rec.Config.Env {
		env[k] = v
	}
	env["SANDBOX_ID"] = rec.ID
	env["USER_ID"] = rec.UserID
	env["HOT_PATH"] = HotPath
	env["COLD_PATH"] = ColdPath
	return env
}

func (m *Manager) setStatus(ctx context.Context, id string, s registry.Status) (*registry.Record, error) {
	return m.store.Update(ctx, id, func(r *registry.Record) error {
		r.Status = s
		return nil
	})
}

// Get returns one sandbox.
func (m *Manager) Get(ctx context.Context, id string) (*registry.Record, error) {
	if !ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	return m.store.Get(ctx, id)
}

// List returns a user's sandboxes (all users when userID is empty); only
// live ones unless all is set.
func (m *Manager) List(ctx context.Context, userID string, all bool) ([]*registry.Record, error) {
	if userID != "" {
		if err := ValidateUserID(userID); err != nil {
			return nil, err
		}
	}
	f := registry.Filter{UserID: userID}
	if !all {
		f.Statuses = []registry.Status{registry.StatusCreating, registry.StatusStarting, registry.StatusReady, registry.StatusRunning, registry.StatusShuttingDown}
	}
	return m.store.List(ctx, f)
}

// ActiveCount is the number of sandboxes that are not in a terminal state.
func (m *Manager) ActiveCount(ctx context.Context) (int, error) {
	rs, err := m.List(ctx, "", false)
	return len(rs), err
}

// ExecInput is one exec request as the client sent it.
type ExecInput struct {
	Command string
	Timeout time.Duration // 0: default
	User    string        // "", "agent" or "root"
	Cwd     string        // "": remembered
	Env     map[string]string
}

// ExecOutput is the exec's result plus the directory the next exec starts in.
type ExecOutput struct {
	*runtime.ExecResult
}

// Exec runs a command in a live sandbox.
func (m *Manager) Exec(ctx context.Context, id string, in ExecInput) (*ExecOutput, error) {
	l := m.limits
	if !ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	if in.Command == "" {
		return nil, invalid("command must not be empty")
	}
	if n := len([]rune(in.Command)); n > l.MaxCommandLength {
		return nil, invalid("command is %d characters, at most %d allowed", n, l.MaxCommandLength)
	}
	if strings.IndexByte(in.Command, 0) >= 0 {
		return nil, invalid("command must not contain NUL bytes")
	}
	if in.Timeout == 0 {
		in.Timeout = l.DefaultCmdTimeout
	}
	if in.Timeout < time.Second || in.Timeout > l.MaxCmdTimeout {
		return nil, invalid("timeout %v is out of range [1s, %v]", in.Timeout, l.MaxCmdTimeout)
	}
	user := runtime.ExecUser(in.User)
	if user == "" {
		user = runtime.UserAgent
	}
	if user != runtime.UserAgent && user != runtime.UserRoot {
		return nil, invalid("user %q is invalid: want agent or root", in.User)
	}
	if in.Cwd != "" {
		if err := validateCwd(in.Cwd); err != nil {
			return nil, err
		}
	}
	if err := validateEnv(in.Env, "env"); err != nil {
		return nil, err
	}
	rec, err := m.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !rec.Status.Live() {
		return nil, fmt.Errorf("sandbox %s is %s, not running: %w", id, rec.Status, errdefs.ErrFailedPrecondition)
	}
	st := m.state(id)
	req := runtime.ExecRequest{
		Command: in.Command, User: user, Timeout: in.Timeout, OutputLimit: l.OutputLimit,
		Env: m.sandboxEnv(rec),
	}
	for k, v := range in.Env {
		req.Env[k] = v
	}
	if in.Cwd != "" {
		req.Cwd = in.Cwd
	} else {
		m.mu.Lock()
		req.Cwd = st.cwd
		m.mu.Unlock()
		// A remembered directory the agent has since removed falls back
		// to home instead of failing the call.
		req.FallbackCwd = HotPath
	}
	res, err := m.rt.Exec(ctx, id, req)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("sandbox %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	if res.Cwd == "" {
		res.Cwd = req.Cwd
	} else {
		m.mu.Lock()
		st.cwd = res.Cwd
		m.mu.Unlock()
	}
	m.metrics.ObserveExec(res.Duration, res.TimedOut)
	if res.TimedOut {
		m.log.Warn("exec timed out", "sandbox_id", id, "user_id", rec.UserID, "timeout", in.Timeout)
	}
	if rec.Status == registry.StatusReady {
		m.store.Update(ctx, id, func(r *registry.Record) error {
			if r.Status == registry.StatusReady {
				r.Status = registry.StatusRunning
			}
			return nil
		})
	}
	return &ExecOutput{res}, nil
}

// state returns the in-memory state of a sandbox, creating it after a daemon
// restart (the remembered cwd does not survive restarts: it falls back to
// home).
func (m *Manager) state(id string) *liveState {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.live[id]
	if !ok {
		st = &liveState{cwd: HotPath}
		m.live[id] = st
	}
	return st
}

func (m *Manager) forget(id string) {
	m.mu.Lock()
	delete(m.live, id)
	m.mu.Unlock()
}

// Heartbeat records that the agent is alive.
func (m *Manager) Heartbeat(ctx context.Context, id string) (*registry.Record, error) {
	if !ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	now := m.now().UTC()
	return m.store.Update(ctx, id, func(r *registry.Record) error {
		if !r.Status.Live() {
			return fmt.Errorf("sandbox %s is %s: %w", id, r.Status, errdefs.ErrFailedPrecondition)
		}
		r.LastHeartbeatAt = &now
		if r.Status == registry.StatusReady {
			r.Status = registry.StatusRunning
		}
		return nil
	})
}

// Destroy stops a sandbox and waits for it. Graceful stops give processes
// the shutdown timeout after SIGTERM. Destroying a stopped sandbox is a
// no-op.
func (m *Manager) Destroy(ctx context.Context, id string, graceful bool, reason string) (*registry.Record, error) {
	rec, started, err := m.beginShutdown(ctx, id, "")
	if err != nil || rec.Status.Terminal() {
		return rec, err
	}
	if !started {
		// Another caller (a second DELETE, a signal, the TTL) is stopping
		// it: wait for that instead of releasing its resources twice.
		return m.waitStopped(ctx, id)
	}
	return m.finishShutdown(ctx, rec, graceful, reason, registry.StatusStopped)
}

// waitStopped polls until a sandbox that someone else is stopping reaches a
// terminal state.
func (m *Manager) waitStopped(ctx context.Context, id string) (*registry.Record, error) {
	deadline := time.Now().Add(m.limits.ShutdownTimeout + 2*time.Minute)
	for {
		rec, err := m.store.Get(ctx, id)
		if err != nil || rec.Status.Terminal() {
			return rec, err
		}
		if time.Now().After(deadline) {
			return rec, fmt.Errorf("sandbox %s is still shutting down: %w", id, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return rec, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Signal handles an agent's complete/error signal: the sandbox moves to
// shutting_down at once and stops in the background.
func (m *Manager) Signal(ctx context.Context, id string, reason, errMsg string) (*registry.Record, error) {
	rec, started, err := m.beginShutdown(ctx, id, errMsg)
	if err != nil {
		return nil, err
	}
	if !started {
		return nil, fmt.Errorf("sandbox %s is already %s: %w", id, rec.Status, errdefs.ErrFailedPrecondition)
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.limits.ShutdownTimeout+time.Minute)
		defer cancel()
		m.finishShutdown(ctx, rec, true, reason, registry.StatusStopped)
	}()
	return rec, nil
}

// beginShutdown moves a live sandbox to shutting_down and reports whether
// this call did it (and so owns the stop). A sandbox still being created
// cannot be stopped yet (FailedPrecondition: retry); one already stopping or
// stopped is returned as it is. A sandbox already in a
// terminal state is returned unchanged.
func (m *Manager) beginShutdown(ctx context.Context, id, errMsg string) (*registry.Record, bool, error) {
	if !ValidSandboxID(id) {
		return nil, false, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	started := false
	rec, err := m.store.Update(ctx, id, func(r *registry.Record) error {
		switch {
		case r.Status == registry.StatusCreating || r.Status == registry.StatusStarting:
			return fmt.Errorf("sandbox %s is still being created; retry once it is ready: %w", id, errdefs.ErrFailedPrecondition)
		case !r.Status.Live():
			return nil // terminal, or someone else is stopping it
		}
		started = true
		r.Status = registry.StatusShuttingDown
		if errMsg != "" {
			r.Error = errMsg
		}
		return nil
	})
	return rec, started, err
}

func (m *Manager) finishShutdown(ctx context.Context, rec *registry.Record, graceful bool, reason string, final registry.Status) (_ *registry.Record, derr error) {
	start := time.Now()
	log := m.log.With("sandbox_id", rec.ID, "user_id", rec.UserID)
	log.Info("sandbox stopping", "reason", reason, "graceful", graceful)
	defer func() { m.metrics.ObserveDestroy(time.Since(start), derr == nil) }()
	grace := time.Duration(0)
	if graceful {
		grace = m.limits.ShutdownTimeout
	}
	// The container must go even if the client hangs up mid-request.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+time.Minute)
	defer cancel()
	derr = m.rt.Destroy(dctx, rec.ID, grace)
	m.forget(rec.ID)
	// The processes are gone, so the hot files are quiescent: sync them up.
	// The directory is removed only if the sync succeeded; otherwise it
	// stays, the record says so, and the next daemon start retries.
	var serr error
	if derr == nil {
		serr = m.finalSync(dctx, rec.ID, rec.UserID, log)
		if err := m.storage.ReleaseCold(dctx, rec.UserID); err != nil {
			log.Warn("cold release failed", "error", err)
		}
	} else {
		// The container may still be running and writing: save what is
		// there, keep the directory and the mount, and let recovery finish.
		if _, serr = m.storage.SyncUp(dctx, rec.ID, rec.UserID); serr == nil {
			serr = fmt.Errorf("sandbox could not be destroyed; hot files kept on the host")
		}
	}
	now := m.now().UTC()
	out, err := m.store.Update(dctx, rec.ID, func(r *registry.Record) error {
		if derr != nil {
			r.Status = registry.StatusFailed
			r.Error = "destroy: " + derr.Error()
		} else {
			r.Status = final
		}
		r.StoppedAt = &now
		r.StopReason = reason
		recordSync(r, serr, now)
		return nil
	})
	if derr != nil {
		log.Error("sandbox destroy failed", "error", derr)
		return out, derr
	}
	log.Info("sandbox stopped", "reason", reason)
	return out, err
}

// finalSync runs the last hot sync of a stopped sandbox within the
// shutdown budget (at least 30 s: the container is already gone, so the
// agent's grace time is not eaten twice).
func (m *Manager) finalSync(ctx context.Context, id, userID string, log *slog.Logger) error {
	if !m.storage.HasHot(id) {
		return nil
	}
	budget := max(m.limits.ShutdownTimeout, 30*time.Second)
	sctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	res, err := m.storage.FinishHot(sctx, id, userID)
	if err != nil {
		m.metrics.AddHotSync("up", 0, 0, 0, 1)
		log.Error("final hot sync failed; files kept on the host for retry", "error", err)
		return err
	}
	m.metrics.AddHotSync("up", res.Bytes, int64(len(res.Uploaded)), len(res.Conflicts), 0)
	log.Info("hot storage synced up", "uploaded", len(res.Uploaded), "deleted", len(res.Deleted),
		"conflicts", len(res.Conflicts), "rejected", len(res.Rejected), "bytes", res.Bytes)
	for _, c := range res.Conflicts {
		log.Warn("hot sync conflict: kept the other version, saved ours as a conflict copy", "path", c)
	}
	return nil
}

// recordSync stores a sync outcome on a record.
func recordSync(r *registry.Record, err error, at time.Time) {
	if err != nil {
		r.HotSyncPending = true
		r.HotSyncError = err.Error()
		return
	}
	r.HotSyncPending = false
	r.HotSyncError = ""
	r.HotSyncedAt = &at
}

// Checkpoint syncs the hot files of every live sandbox up, so a host crash
// loses at most one interval of work.
func (m *Manager) Checkpoint(ctx context.Context) {
	rs, err := m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
	if err != nil {
		m.log.Warn("checkpoint scan failed", "error", err)
		return
	}
	for _, r := range rs {
		m.checkpointOne(ctx, r)
	}
}

func (m *Manager) checkpointOne(ctx context.Context, r *registry.Record) {
	log := m.log.With("sandbox_id", r.ID, "user_id", r.UserID)
	res, err := m.storage.SyncUp(ctx, r.ID, r.UserID)
	if err != nil {
		m.metrics.AddHotSync("up", 0, 0, 0, 1)
	} else {
		m.metrics.AddHotSync("up", res.Bytes, int64(len(res.Uploaded)), len(res.Conflicts), 0)
	}
	if err != nil {
		log.Warn("hot checkpoint failed", "error", err)
	} else if len(res.Uploaded)+len(res.Deleted) > 0 {
		log.Info("hot checkpoint", "uploaded", len(res.Uploaded), "deleted", len(res.Deleted), "conflicts", len(res.Conflicts), "bytes", res.Bytes)
	}
	now := m.now().UTC()
	m.store.Update(ctx, r.ID, func(rec *registry.Record) error {
		if rec.Status.Live() {
			recordSync(rec, err, now)
		}
		return nil
	})
}

// RunCheckpoints calls Checkpoint every interval until ctx ends.
func (m *Manager) RunCheckpoints(ctx context.Context, interval time.Duration) {
	every(ctx, interval, m.Checkpoint)
}

// every calls fn each interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

// StorageStats reports a user's stored objects per tier.
func (m *Manager) StorageStats(ctx context.Context, userID string) (mounts.TierStats, error) {
	if err := ValidateUserID(userID); err != nil {
		return mounts.TierStats{}, err
	}
	return m.storage.Stats(ctx, userID)
}

// CleanStorage deletes one tier of a user's stored objects. It is an
// explicit admin action and refuses while the user has any sandbox that is
// not stopped (its files would come back, or vanish under it).
func (m *Manager) CleanStorage(ctx context.Context, userID, tier string) (int64, error) {
	if err := ValidateUserID(userID); err != nil {
		return 0, err
	}
	if tier != "hot" && tier != "cold" {
		return 0, invalid("tier %q: want hot or cold", tier)
	}
	active, err := m.List(ctx, userID, false)
	if err != nil {
		return 0, err
	}
	if len(active) > 0 {
		return 0, fmt.Errorf("user %q has %d active sandbox(es); stop them first: %w", userID, len(active), errdefs.ErrFailedPrecondition)
	}
	n, err := m.storage.Clean(ctx, userID, tier)
	if err == nil {
		m.log.Warn("admin storage cleanup", "user_id", userID, "tier", tier, "objects", n)
	}
	return n, err
}

// ExpireDue stops every live sandbox whose TTL has passed.
func (m *Manager) ExpireDue(ctx context.Context) {
	rs, err := m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
	if err != nil {
		m.log.Warn("expiry scan failed", "error", err)
		return
	}
	now := m.now()
	for _, r := range rs {
		if now.Before(r.ExpiresAt) {
			continue
		}
		rec, started, err := m.beginShutdown(ctx, r.ID, "")
		if err != nil || !started {
			continue
		}
		m.finishShutdown(ctx, rec, true, ReasonExpired, registry.StatusExpired)
	}
}

// RunExpiry calls ExpireDue every interval until ctx ends.
func (m *Manager) RunExpiry(ctx context.Context, interval time.Duration) {
	every(ctx, interval, m.ExpireDue)
}

// Recover runs once at startup, before the API serves.
//
//   - Live sandboxes whose task still runs keep running: their cold mount is
//     acquired again (the refcount lives in memory) and their hot files are
//     checkpointed now, so nothing written before a daemon crash waits for
//     the next interval.
//   - Sandboxes caught mid-transition (creating, starting, shutting_down) or
//     whose task is gone are stopped, their hot files synced up, and marked
//     failed with the reason.
//   - Hot directories whose final sync failed earlier (or that have no
//     record at all, e.g. with the in-memory registry) are synced again and
//     removed only on success.
func (m *Manager) Recover(ctx context.Context) error {
	rs, err := m.List(ctx, "", false)
	if err != nil {
		return err
	}
	for _, r := range rs {
		log := m.log.With("sandbox_id", r.ID, "user_id", r.UserID)
		if r.Status.Live() {
			ok, err := m.rt.Running(ctx, r.ID)
			if err != nil {
				log.Warn("recover: cannot check sandbox", "error", err)
				continue
			}
			if ok {
				if _, err := m.storage.AcquireCold(ctx, r.UserID); err != nil {
					log.Warn("recover: cold mount failed", "error", err)
				}
				m.checkpointOne(ctx, r)
				log.Info("recovered running sandbox")
				continue
			}
		}
		if err := m.rt.Destroy(ctx, r.ID, 0); err != nil {
			log.Warn("recover: destroy leftover failed", "error", err)
		}
		serr := m.finalSync(ctx, r.ID, r.UserID, log)
		now := m.now().UTC()
		status := r.Status
		m.store.Update(ctx, r.ID, func(rec *registry.Record) error {
			rec.Status = registry.StatusFailed
			rec.Error = fmt.Sprintf("daemon restarted while sandbox was %s", status)
			rec.StoppedAt = &now
			rec.StopReason = ReasonError
			recordSync(rec, serr, now)
			return nil
		})
		log.Warn("recover: sandbox marked failed", "was", status)
	}
	pending, err := m.storage.Pending()
	if err != nil {
		return err
	}
	for _, p := range pending {
		rec, err := m.store.Get(ctx, p.SandboxID)
		if err == nil && !rec.Status.Terminal() {
			continue // a live sandbox: its files stay in use
		}
		log := m.log.With("sandbox_id", p.SandboxID, "user_id", p.UserID)
		serr := m.finalSync(ctx, p.SandboxID, p.UserID, log)
		if err == nil {
			now := m.now().UTC()
			m.store.Update(ctx, p.SandboxID, func(r *registry.Record) error {
				recordSync(r, serr, now)
				return nil
			})
		}
		if serr == nil {
			log.Info("recover: pending hot files synced")
		}
	}
	return nil
}

// Wait blocks until background shutdowns have finished.
func (m *Manager) Wait() { m.bg.Wait() }

func newSandboxID() string {
	var b [6]byte
	rand.Read(b[:])
	return "sbx-" + hex.EncodeToString(b[:])
}

// IsLive reports whether a sandbox's record says its container should
// exist (for garbage collection of host resources after a crash).
func (m *Manager) IsLive(id string) bool {
	r, err := m.store.Get(context.Background(), id)
	return err == nil && !r.Status.Terminal()
}
