package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/fault"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/network"
	"github.com/matrx-dev/matrx/undo"
)

// CreateRequest is what a client asks for: the owner and the sandbox's
// configuration, whose zero fields take the daemon's defaults.
type CreateRequest struct {
	UserID string
	Config registry.Config
	// IdempotencyKey, when set, makes a retried create return the sandbox
	// the first one made (within registry.IdempotencyWindow).
	IdempotencyKey string
}

// resolve validates c against the limits and fills in defaults.
func (m *Manager) resolve(out registry.Config) (registry.Config, error) {
	l := m.limits
	if out.Image == "" {
		out.Image = l.DefaultImage
	}
	image, err := normalizeImage("config.image", out.Image)
	if err != nil {
		return out, err
	}
	out.Image = image
	if out.Pull, err = validatePull(out.Pull); err != nil {
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
	for _, t := range []struct {
		field string
		v     *int64
		def   time.Duration
	}{
		{"config.heartbeat_timeout_seconds", &out.HeartbeatTimeoutSeconds, l.DefaultHeartbeatTimeout},
		{"config.idle_timeout_seconds", &out.IdleTimeoutSeconds, l.DefaultIdleTimeout},
	} {
		if *t.v == 0 {
			*t.v = int64(t.def / time.Second)
		}
		if *t.v < 0 || *t.v > int64(l.MaxTTL/time.Second) {
			return out, invalid("%s %d is out of range [1, %d] (0 or omitted: the daemon's default)", t.field, *t.v, int64(l.MaxTTL/time.Second))
		}
	}
	if err := validateEnv(out.Env, "config.env"); err != nil {
		return out, err
	}
	if err := validateLabels(out.Labels); err != nil {
		return out, err
	}
	if err := validatePublicPorts(out.PublicPorts); err != nil {
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

// Create validates, records and starts a sandbox. It returns once the
// sandbox is ready, or with an error after undoing everything it made; a
// sandbox that failed to start stays in the registry as failed, with the
// reason.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (_ *registry.Record, err error) {
	start := time.Now()
	userID, err := ids.ParseUserID(req.UserID)
	if err != nil {
		return nil, err
	}
	if err := validateIdempotencyKey(req.IdempotencyKey); err != nil {
		return nil, err
	}
	cfg, err := m.resolve(req.Config)
	if err != nil {
		return nil, err
	}
	if err := m.refuseWhileDegraded("create", ConditionContainerd, ConditionS3); err != nil {
		return nil, err
	}
	defer m.pool.begin()()
	if out, ok, err := m.claimPooled(ctx, userID, cfg, req.IdempotencyKey); ok {
		return out, err
	}
	now := m.now().UTC()
	rec := &registry.Record{
		ID: ids.NewSandboxID(), UserID: userID, Status: registry.StatusCreating,
		Config: cfg, CreatedAt: now, ExpiresAt: now.Add(time.Duration(cfg.TTLSeconds) * time.Second),
		IdempotencyKey: req.IdempotencyKey, ColdSlot: true,
	}
	rec.ContainerID = rec.ID
	admitted, err := m.admit(ctx, req.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	err = m.store.Create(ctx, rec)
	admitted()
	if err != nil {
		if ic := (*registry.IdempotencyConflict)(nil); errors.As(err, &ic) {
			return m.replayCreate(ctx, ic.SandboxID, userID)
		}
		return nil, fmt.Errorf("record sandbox: %w", err)
	}
	fault.At(ctx, "create/recorded")
	log := m.log.With("sandbox_id", rec.ID, "user_id", userID)
	log.Info("sandbox creating", "image", cfg.Image, "pull", cfg.Pull, "cpu", cfg.CPU, "memory_mb", cfg.MemoryMB, "pids", cfg.Pids)
	// The image is in use from here until the container exists (then
	// containerd and the record say so): a prune in between keeps it.
	releaseImage := m.acquireImage(cfg.Image)
	defer releaseImage()
	m.emit(Event{Type: EventCreated, SandboxID: rec.ID, UserID: userID, Status: string(registry.StatusCreating)})

	// Undo steps, run newest first if anything below fails. Hot files may
	// be removed here: the agent never ran. The failure is recorded even
	// if the caller went away.
	var rollback undo.Stack
	defer func() {
		if err != nil {
			m.createFailed(ctx, rec, err, &rollback, log, start)
		}
	}()

	// The image first: a create that cannot have it does no storage work.
	digest, err := m.ensureImage(ctx, cfg.Image, cfg.Pull)
	if err != nil {
		return nil, err
	}
	if rec, err = m.store.Update(ctx, rec.ID, func(r *registry.Record) error {
		r.ImageDigest = digest
		return nil
	}); err != nil {
		return nil, err
	}
	// Phase timings for the "sandbox ready" line: where create time goes.
	phase := map[string]time.Duration{"image": time.Since(start)}
	mark := func(name string, since time.Time) { phase[name] = time.Since(since) }
	waitEnsured := m.ensureColdPrefixBeside(ctx, userID, &rollback)
	t0 := time.Now()
	home, err := m.storage.PrepareHot(rec.ID, userID, cfg.DiskMB<<20)
	if err != nil {
		return nil, err
	}
	mark("prepare_hot", t0)
	fault.At(ctx, "create/hot-prepared")
	rollback.Push("remove hot dir", func(c context.Context) error { return m.storage.RemoveHot(c, rec.ID) })
	// Hot files download while the cold mount and the container come up.
	// The download must have ended before any undo step runs (it writes
	// into the hot dir), so waiting for it is the newest undo step until
	// it has been waited for.
	down := m.startSyncDown(ctx, rec.ID, userID, log)
	rollback.Push("wait for hot sync-down", func(context.Context) error { down.wait(); return nil })
	// The container binds the sandbox's empty cold slot, and the user's
	// cold storage is mounted into it while the container comes up (a new
	// user's FUSE mount takes 15-30 ms here to be in place, see cold's
	// "Answered later").
	// Nothing of the agent runs before both are done (the record becomes
	// ready only then), so no command ever sees the slot empty.
	slot, err := m.storage.ColdSlot(rec.ID)
	if err != nil {
		return nil, err
	}
	rollback.Push("release cold mount", func(c context.Context) error { return m.storage.ReleaseCold(c, userID, rec.ID) })
	waitCold := m.startColdSlot(ctx, userID, rec.ID)
	rollback.Push("wait for cold storage", func(context.Context) error { waitCold(); return nil })
	if _, err := m.setStatus(ctx, rec.ID, registry.StatusStarting); err != nil {
		return nil, err
	}
	fault.At(ctx, "create/starting")
	policy, _ := networkPolicy(cfg.Network) // validated by resolve
	mounts := []runtime.Mount{
		{Source: home, Destination: HotPath},
		{Source: slot, Destination: ColdPath, Slave: true},
	}
	if m.home != nil && !bridged(rec) {
		dir, err := m.home.OpenSocket(rec.ID)
		if err != nil {
			return nil, err
		}
		rollback.Push("close home socket", func(context.Context) error { m.home.CloseSocket(rec.ID); return nil })
		mounts = append(mounts, runtime.Mount{Source: dir, Destination: HomeSocketDir, ReadOnly: true})
	}
	t1 := time.Now()
	err = m.rt.Create(ctx, runtime.CreateRequest{
		ID: rec.ID, UserID: userID.String(), Image: cfg.Image,
		Resources: runtime.Resources{CPU: cfg.CPU, MemoryBytes: cfg.MemoryMB << 20, Pids: cfg.Pids},
		Mounts:    mounts,
		Env:       m.sandboxEnv(rec),
		Network:   policy,
		CreatedAt: now,
	})
	if err != nil {
		return nil, err
	}
	rollback.Push("destroy container", func(c context.Context) error { return m.rt.Destroy(c, rec.ID, 0) })
	mark("container", t1)
	if phase["ensure_user"], err = waitEnsured(); err != nil {
		return nil, err
	}
	if phase["cold"], err = waitCold(); err != nil {
		return nil, err
	}
	fault.At(ctx, "create/cold-acquired")
	if err := down.wait(); err != nil {
		return nil, m.syncDownError(userID, cfg, err)
	}
	phase["sync_down"] = down.took
	fault.At(ctx, "create/synced-down")
	return m.markReady(ctx, rec, &rollback, log, start, phase, []string{"image", "ensure_user", "prepare_hot", "cold", "container", "sync_down"})
}

// createFailed undoes a create (or a claim) that failed after its record
// was stored, and records the failure even if the caller went away.
func (m *Manager) createFailed(ctx context.Context, rec *registry.Record, err error, rollback *undo.Stack, log *slog.Logger, start time.Time) {
	rollback.Run(ctx, log)
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
	m.emit(Event{Type: EventStopped, SandboxID: rec.ID, UserID: rec.UserID, Status: string(registry.StatusFailed), Reason: ReasonError, Detail: err.Error()})
	log.Error("sandbox create failed", "error", err)
	m.metrics.ObserveCreate(time.Since(start), false)
}

// markReady is the end of a create or a claim: the sandbox's files are
// down, so it is ready (and its live state exists). The phase timings go
// on the "sandbox ready" line, in the order given.
func (m *Manager) markReady(ctx context.Context, rec *registry.Record, rollback *undo.Stack, log *slog.Logger, start time.Time, phase map[string]time.Duration, order []string) (*registry.Record, error) {
	syncedAt := m.now().UTC()
	m.mu.Lock()
	m.live[rec.ID] = &liveState{cwd: HotPath, activity: syncedAt, saved: syncedAt}
	m.mu.Unlock()
	rollback.Push("forget live state", func(context.Context) error { m.forget(rec.ID); return nil })
	ip := m.rt.IPv4(rec.ID)
	out, err := m.store.Update(ctx, rec.ID, func(r *registry.Record) error {
		r.Status = registry.StatusReady
		r.HotSyncedAt = &syncedAt
		r.ReadyAt = &syncedAt
		r.LastActivityAt = &syncedAt
		if ip.IsValid() {
			r.IPAddress = ip.String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.emit(Event{Type: EventReady, SandboxID: rec.ID, UserID: rec.UserID, Status: string(registry.StatusReady)})
	fault.At(ctx, "create/ready")
	args := []any{"total_ms", ms(time.Since(start))}
	for _, k := range order {
		args = append(args, k+"_ms", ms(phase[k]))
	}
	log.Info("sandbox ready", args...)
	m.metrics.ObserveCreate(time.Since(start), true)
	return out, nil
}

// admit holds a slot for a new sandbox when the host has a slot limit:
// it refuses the create while Limits.MaxSandboxes sandboxes are live, and
// otherwise returns with the admission lock held, for the caller to
// release once the new record is stored (so two creates never take the
// last slot). A create retrying the Idempotency-Key of a live sandbox is
// let through, to be answered with that sandbox.
func (m *Manager) admit(ctx context.Context, key string) (release func(), err error) {
	max := m.limits.MaxSandboxes
	if max == 0 {
		return func() {}, nil
	}
	m.admitMu.Lock()
	live, err := m.List(ctx, "", false)
	if err != nil {
		m.admitMu.Unlock()
		return nil, fmt.Errorf("count live sandboxes: %w", err)
	}
	if len(live) < max {
		return m.admitMu.Unlock, nil
	}
	m.admitMu.Unlock()
	for _, r := range live {
		if key != "" && r.IdempotencyKey == key {
			return func() {}, nil
		}
	}
	return nil, fmt.Errorf("this host is full: %d of %d sandbox slots in use (matrxd --max-sandboxes): %w", len(live), max, errdefs.ErrResourceExhausted)
}

// replayCreate answers a create whose Idempotency-Key an earlier create
// used: with that create's sandbox once it has left creating/starting, so
// a client (or the fleet provider after a crash) that retries never gets
// two sandboxes. A key is bound to its user; a create that failed is not
// retried under the same key.
func (m *Manager) replayCreate(ctx context.Context, id string, userID ids.UserID) (*registry.Record, error) {
	for {
		rec, err := m.store.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		switch {
		case rec.UserID != userID:
			return nil, fmt.Errorf("Idempotency-Key was already used by a create for another user: %w", errdefs.ErrFailedPrecondition)
		case rec.Status == registry.StatusCreating || rec.Status == registry.StatusStarting:
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		case rec.Status == registry.StatusFailed && neverReady(rec):
			return nil, fmt.Errorf("the create with this Idempotency-Key failed (%s); use a new key to try again: %w", rec.Error, errdefs.ErrFailedPrecondition)
		}
		m.log.Info("create replayed for its idempotency key", "sandbox_id", id, "user_id", userID)
		return rec, nil
	}
}

// syncDown is a hot sync-down running in the background of a create.
type syncDown struct {
	done chan struct{}
	err  error
	took time.Duration
}

// wait returns the download's outcome; it may be called more than once.
func (d *syncDown) wait() error {
	<-d.done
	return d.err
}

// ensureColdPrefixBeside starts EnsureCold (the user's cold prefix: a list and,
// for a new user, a put; the hot one is marked by the sync-down, which
// lists it anyway) in the background, so that it is off
// a create's critical path: in a burst of 50 pooled claims it took 80-230
// ms before anything else could start (2026-12-02). What runs beside it:
// the hot sync-down, the container or the runtime's claim, and the cold
// mount (startColdSlot). A create waits for it before it is ready.
// Waiting for it is pushed on rollback.
func (m *Manager) ensureColdPrefixBeside(ctx context.Context, userID ids.UserID, rollback *undo.Stack) (wait func() (time.Duration, error)) {
	wait = inBackground(func() error { return m.storage.EnsureCold(ctx, userID) })
	rollback.Push("wait for the user's prefixes", func(context.Context) error { wait(); return nil })
	return wait
}

// startSyncDown starts filling a new sandbox's hot dir from the bucket.
func (m *Manager) startSyncDown(ctx context.Context, id string, userID ids.UserID, log *slog.Logger) *syncDown {
	d := &syncDown{done: make(chan struct{})}
	t0 := time.Now()
	go func() {
		defer close(d.done)
		res, err := m.storage.SyncDown(ctx, id, userID)
		d.took, d.err = time.Since(t0), err
		if err == nil {
			log.Info("hot storage synced down", "files", len(res.Downloaded), "bytes", res.Bytes, "rejected", len(res.Rejected))
			m.metrics.AddHotSync("down", res.Bytes, int64(len(res.Downloaded)), 0, 0)
		} else {
			m.metrics.AddHotSync("down", 0, 0, 0, 1)
		}
	}()
	return d
}

// syncDownError explains a failed sync-down. When the request chose (or
// defaulted) a disk too small for the user's files, it says which field to
// change and to what.
func (m *Manager) syncDownError(userID ids.UserID, cfg registry.Config, err error) error {
	if nr := (*hotsync.NoRoomError)(nil); cfg.DiskMB > 0 && errors.As(err, &nr) {
		// Filesystem overhead (journal, inode tables) is what the empty
		// disk lacks of its size; 16 MiB more leaves room to work.
		overhead := max(cfg.DiskMB-nr.Free>>20, 0)
		return invalid("config.disk_mb: user %s's hot files (%d files, %d MiB) do not fit the %d MiB free on a %d MiB disk; ask for at least %d",
			userID, nr.Files, mibUp(nr.Need), nr.Free>>20, cfg.DiskMB, mibUp(nr.Need)+overhead+16)
	}
	if cfg.DiskMB > 0 && errdefs.IsResourceExhausted(err) {
		return invalid("config.disk_mb: user %s's hot files do not fit a %d MiB disk; ask for a larger one (%v)", userID, cfg.DiskMB, err)
	}
	return fmt.Errorf("hot storage sync-down: %w", err)
}

// ms is d in milliseconds with 0.1 ms resolution, for log lines.
func ms(d time.Duration) float64 { return float64(d.Microseconds()/100) / 10 }

// mibUp is b in MiB, rounded up.
func mibUp(b int64) int64 { return (b + 1<<20 - 1) >> 20 }

// sandboxEnv is the environment every process of the sandbox gets.
func (m *Manager) sandboxEnv(rec *registry.Record) map[string]string {
	env := map[string]string{}
	for k, v := range rec.Config.Env {
		env[k] = v
	}
	env["SANDBOX_ID"] = rec.ID
	env["USER_ID"] = rec.UserID.String()
	env["HOT_PATH"] = HotPath
	env["COLD_PATH"] = ColdPath
	switch {
	case m.home == nil:
	case bridged(rec):
		if u := m.home.URL(); u != "" {
			env["ORCHESTRATOR_URL"] = u
		}
	default:
		// No address: the socket carries the requests; the URL gives
		// clients a host to put in them (curl --unix-socket
		// "$MATRX_API_SOCKET" "$ORCHESTRATOR_URL/sandboxes/$SANDBOX_ID").
		env["ORCHESTRATOR_URL"] = "http://localhost"
		env["MATRX_API_SOCKET"] = HomeSocketDir + "/" + HomeSocketName
	}
	return env
}

// bridged reports whether a sandbox has an address on the bridge (resolve
// records mode none when the daemon has no networking).
func bridged(rec *registry.Record) bool {
	return rec.Config.Network.Mode != string(network.ModeNone)
}

func (m *Manager) setStatus(ctx context.Context, id string, s registry.Status) (*registry.Record, error) {
	return m.store.Update(ctx, id, func(r *registry.Record) error {
		r.Status = s
		return nil
	})
}
