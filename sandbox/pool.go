package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/network"
	"github.com/matrx-dev/matrx/undo"
)

// # The warm pool
//
// A warm pool keeps sandboxes made ahead of any request: container and task
// started, disk made and mounted, network attached but closed (no rule lets
// a packet through), the empty cold slot bound, no user. A create that fits
// (the pool's image and disk size exactly; cpu, memory and pids at or under
// the pool's, which are the daemon's defaults; the same kind of network, an
// attachment or none; no pull "always") claims one instead of making a
// sandbox: the record gets its user, the user's hot files are synced down
// into the sandbox's disk, the user's cold storage is bound into the slot
// (propagating into the running sandbox, see package cold), the limits are
// lowered on the live cgroup, the environment is set for every exec, the
// network policy replaces the closed one, and the TTL starts. The
// runtime's part (limits, environment, policy) touches none of the user's
// storage and runs beside the storage steps (ensuring the user's prefixes,
// the hot files and the cold bind, all side by side: ensureColdPrefixBeside,
// startColdSlot): nothing of the user
// runs in the sandbox before the claim is ready, and a claim that fails at
// any step is destroyed whole. The pool
// refills behind it, one sandbox at a time and only while no create is in
// flight (low priority: a refill never competes with a request).
//
// Why this is safe to hand to a stranger: a pooled sandbox has run nothing
// but PID 1 (matrx-init, which runs nothing), its disk is fresh (made or
// taken from the disk pool for it, never another sandbox's), its hostname
// is its own id (assigned at pool time, kept), and it is used once: a
// claimed sandbox is stopped like any other and never returns to the pool;
// a claim that fails destroys it.
//
// Records: a pooled sandbox's record has status pooled and no user. It is
// stored only once the sandbox is complete (a fill that dies half-way
// leaves resources with no record, which reconcile removes; fills in
// flight are kept meanwhile), so a claim can never get a half-made one.
// Pooled records are hidden from the sandbox list and the live count
// unless asked for, count against the host's disk admission (their disks
// are real), and survive a daemon restart: Recover adopts the ones whose
// task still runs and retires the rest.

// PoolSpec is one warm pool: Size sandboxes of Image.
type PoolSpec struct {
	Image string
	Size  int
}

// MaxPoolSize bounds one pool.
const MaxPoolSize = 1000

// ReasonPoolRetired is the stop reason of a pooled sandbox that was never
// claimed: its pool shrank or went, or it died before any claim.
const ReasonPoolRetired = "pool_retired"

// pool is the manager's warm-pool state.
type pool struct {
	specs []PoolSpec // normalized, one per image
	kick  chan struct{}

	mu       sync.Mutex
	filling  map[string]string // sandbox id -> image, fills in flight
	claiming map[string]bool   // pooled ids a claim is updating right now
	creating int               // creates and claims in flight (refills wait for none)
	lastEnd  time.Time         // when the last create or claim ended
	quiet    time.Duration     // refills wait this long after one (refillQuiet)
}

// refillQuiet is how long a refill waits after a create or claim ended: a
// new sandbox's first command usually follows its create at once, and a
// refill (runc, a shim, mkfs: ~200 ms of CPU) started beside it slowed
// that command on two vCPUs.
const refillQuiet = 300 * time.Millisecond

// ValidatePools checks warm pool specs (config values are validated at
// startup, not at first use).
func ValidatePools(specs []PoolSpec) error {
	_, err := newPool(specs)
	return err
}

func newPool(specs []PoolSpec) (*pool, error) {
	p := &pool{kick: make(chan struct{}, 1), filling: map[string]string{}, claiming: map[string]bool{}, quiet: refillQuiet}
	for _, s := range specs {
		img, err := normalizeImage("warm pool image", s.Image)
		if err != nil {
			return nil, err
		}
		if s.Size < 0 || s.Size > MaxPoolSize {
			return nil, invalid("warm pool of %s: size %d is out of range [0, %d]", img, s.Size, MaxPoolSize)
		}
		if slices.ContainsFunc(p.specs, func(o PoolSpec) bool { return o.Image == img }) {
			return nil, invalid("warm pool of %s is given twice", img)
		}
		if s.Size > 0 {
			p.specs = append(p.specs, PoolSpec{Image: img, Size: s.Size})
		}
	}
	return p, nil
}

// ImagesChanged tells the pools an image arrived (imported or pulled): a
// refill that waits for a missing image tries again at once.
func (m *Manager) ImagesChanged() { m.pool.wake() }

// Pools returns the warm pools the manager keeps.
func (m *Manager) Pools() []PoolSpec { return m.pool.all() }

// The pool's methods accept a nil pool (a Manager built without New, in
// tests): it has no specs and nothing in flight.

func (p *pool) all() []PoolSpec {
	if p == nil {
		return nil
	}
	return slices.Clone(p.specs)
}

func (p *pool) size(image string) int {
	for _, s := range p.all() {
		if s.Image == image {
			return s.Size
		}
	}
	return 0
}

func (p *pool) wake() {
	if p == nil {
		return
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// isFilling reports whether a fill is making sandbox id right now (its
// resources exist before its record does).
func (p *pool) isFilling(id string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.filling[id]
	return ok
}

// begin and end bracket a create or claim, so refills wait for them.
func (p *pool) begin() func() {
	if p == nil {
		return func() {}
	}
	p.mu.Lock()
	p.creating++
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		p.creating--
		p.lastEnd = time.Now()
		p.mu.Unlock()
		p.wake()
	}
}

// reserve marks a pooled id as being claimed, so that concurrent claims
// each try a different sandbox instead of all queueing on the registry's
// writer for the oldest one; false if another claim has it.
func (p *pool) reserve(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.claiming[id] {
		return false
	}
	p.claiming[id] = true
	return true
}

func (p *pool) unreserve(id string) {
	p.mu.Lock()
	delete(p.claiming, id)
	p.mu.Unlock()
}

// busy reports whether a refill should wait: a create or claim is in
// flight, or one ended less than the quiet time ago (then quietLeft says
// how long is left).
func (p *pool) busy() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.creating > 0 || time.Since(p.lastEnd) < p.quiet
}

// quietLeft is how much of the quiet time after the last create or claim
// is left (0 when none is).
func (p *pool) quietLeft() time.Duration {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(p.quiet-time.Since(p.lastEnd), 0)
}

// poolConfig is what every sandbox of a pool is made with.
func (m *Manager) poolConfig(image string) registry.Config {
	l := m.limits
	mode := network.ModeNone
	if m.rt.Networking() {
		mode = network.ModeDefault
	}
	return registry.Config{
		Image: image, CPU: l.DefaultCPU, MemoryMB: l.DefaultMemoryMB, Pids: l.DefaultPids, DiskMB: l.DefaultDiskMB,
		TTLSeconds: int64(l.DefaultTTL / time.Second), Network: registry.NetworkConfig{Mode: string(mode)},
	}
}

// fits reports whether a resolved create config can be served by a
// sandbox made with pool config p.
func fits(p, c registry.Config) bool {
	return c.Image == p.Image && c.DiskMB == p.DiskMB &&
		c.CPU <= p.CPU && c.MemoryMB <= p.MemoryMB && c.Pids <= p.Pids &&
		(c.Network.Mode == string(network.ModeNone)) == (p.Network.Mode == string(network.ModeNone)) &&
		c.Pull != PullAlways
}

// pooled lists the pooled records, oldest first.
func (m *Manager) pooled(ctx context.Context) ([]*registry.Record, error) {
	return m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusPooled}})
}

// PooledCount is the number of pooled sandboxes (for /health).
func (m *Manager) PooledCount(ctx context.Context) (int, error) {
	c, err := m.store.Counts(ctx)
	return c.ByStatus[registry.StatusPooled], err
}

// errTaken aborts a claim's update when another claim got the sandbox.
var errTaken = errors.New("pooled sandbox already taken")

// claimPooled serves a create from the pool when one fits; ok is false when
// none does (the caller makes a sandbox). The claimed record is returned
// once the sandbox is ready; on failure the sandbox is destroyed and its
// record failed, like a create's.
func (m *Manager) claimPooled(ctx context.Context, userID ids.UserID, cfg registry.Config, key string) (_ *registry.Record, ok bool, err error) {
	if len(m.pool.all()) == 0 {
		return nil, false, nil
	}
	start := time.Now()
	// A burst of claims takes turns (the claim gate, gate.go); the wait
	// counts in the claim's time.
	leave, err := m.gate.enter(ctx)
	if err != nil {
		return nil, true, err
	}
	defer leave()
	var rec *registry.Record
	// Oldest first (List's order): the pool turns over, and a sandbox
	// adopted across a restart goes before newer ones.
	cands, err := m.pooled(ctx)
	if err != nil || len(cands) == 0 {
		return nil, false, nil // the normal path still works
	}
	for _, c := range cands {
		if !fits(c.Config, cfg) || !m.pool.reserve(c.ID) {
			continue
		}
		admitted, err := m.admit(ctx, key)
		if err != nil {
			m.pool.unreserve(c.ID)
			return nil, true, err
		}
		now := m.now().UTC()
		rec, err = m.store.Update(ctx, c.ID, func(r *registry.Record) error {
			if r.Status != registry.StatusPooled {
				return errTaken
			}
			r.Status, r.UserID, r.Config, r.IdempotencyKey, r.FromPool = registry.StatusCreating, userID, cfg, key, true
			r.CreatedAt, r.ExpiresAt = now, now.Add(time.Duration(cfg.TTLSeconds)*time.Second)
			return nil
		})
		admitted()
		m.pool.unreserve(c.ID)
		if errors.Is(err, errTaken) {
			continue
		}
		if ic := (*registry.IdempotencyConflict)(nil); errors.As(err, &ic) {
			out, err := m.replayCreate(ctx, ic.SandboxID, userID)
			return out, true, err
		}
		if err != nil {
			return nil, true, fmt.Errorf("claim pooled sandbox: %w", err)
		}
		break
	}
	if rec == nil || rec.Status != registry.StatusCreating {
		return nil, false, nil
	}
	m.pool.wake()
	out, err := m.finishClaim(ctx, rec, start)
	return out, true, err
}

// startClaim has the runtime make a pooled sandbox rec's
// (runtime.Runtime.Claim) in the background (inBackground).
func (m *Manager) startClaim(ctx context.Context, rec *registry.Record, cfg registry.Config) (wait func() (time.Duration, error)) {
	policy, _ := networkPolicy(cfg.Network) // validated by resolve
	ip, _ := netip.ParseAddr(rec.IPAddress)
	req := runtime.ClaimRequest{
		ID: rec.ID, UserID: rec.UserID.String(), Env: m.sandboxEnv(rec),
		Resources: runtime.Resources{CPU: cfg.CPU, MemoryBytes: cfg.MemoryMB << 20, Pids: cfg.Pids},
		Network:   policy, IPv4: ip,
	}
	return inBackground(func() error { return m.rt.Claim(ctx, req) })
}

// finishClaim makes a claimed pooled sandbox its user's (see the pool's
// comment for the order and why).
func (m *Manager) finishClaim(ctx context.Context, rec *registry.Record, start time.Time) (_ *registry.Record, err error) {
	userID, cfg := rec.UserID, rec.Config
	log := m.log.With("sandbox_id", rec.ID, "user_id", userID)
	log.Info("sandbox creating from the warm pool", "image", cfg.Image, "cpu", cfg.CPU, "memory_mb", cfg.MemoryMB, "pids", cfg.Pids)
	m.emit(Event{Type: EventCreated, SandboxID: rec.ID, UserID: userID, Status: string(registry.StatusCreating)})
	// Everything the pool made is undone on failure: a claimed sandbox is
	// never returned to the pool. Hot files may be removed: the agent
	// never ran.
	var rollback undo.Stack
	rollback.Push("remove hot dir", func(c context.Context) error { return m.storage.RemoveHot(c, rec.ID) })
	rollback.Push("release cold storage", func(c context.Context) error { return m.storage.ReleaseCold(c, userID, rec.ID) })
	rollback.Push("close home socket", func(context.Context) error { m.closeHome(rec.ID); return nil })
	rollback.Push("destroy container", func(c context.Context) error { return m.rt.Destroy(c, rec.ID, 0) })
	defer func() {
		if err != nil {
			m.createFailed(ctx, rec, err, &rollback, log, start)
		}
	}()
	phase := map[string]time.Duration{}
	if err := m.storage.ClaimHot(rec.ID, userID); err != nil {
		return nil, err
	}
	if _, err := m.setStatus(ctx, rec.ID, registry.StatusStarting); err != nil {
		return nil, err
	}
	// The runtime applies the claim (limits, environment, network policy)
	// while the user's prefixes are ensured, the hot files download and
	// the cold storage mounts: the runtime's part touches nothing of the
	// user's storage, and nothing of the user runs in the sandbox before
	// it is ready. The storage steps run side by side too
	// (ensureColdPrefixBeside, startColdSlot). Each must have ended before any
	// undo step runs.
	waitClaim := m.startClaim(ctx, rec, cfg)
	rollback.Push("wait for the runtime's claim", func(context.Context) error { waitClaim(); return nil })
	waitEnsured := m.ensureColdPrefixBeside(ctx, userID, &rollback)
	down := m.startSyncDown(ctx, rec.ID, userID, log)
	rollback.Push("wait for hot sync-down", func(context.Context) error { down.wait(); return nil })
	waitCold := m.startColdSlot(ctx, userID, rec.ID)
	rollback.Push("wait for cold storage", func(context.Context) error { waitCold(); return nil })
	if phase["ensure_user"], err = waitEnsured(); err != nil {
		return nil, err
	}
	if phase["claim"], err = waitClaim(); err != nil {
		return nil, err
	}
	if phase["cold"], err = waitCold(); err != nil {
		return nil, err
	}
	if err := down.wait(); err != nil {
		return nil, m.syncDownError(userID, cfg, err)
	}
	phase["sync_down"] = down.took
	return m.markReady(ctx, rec, &rollback, log, start, phase, []string{"ensure_user", "cold", "claim", "sync_down"})
}

// RunPool keeps the warm pools full until ctx ends: one sandbox at a time,
// only while no create or claim is in flight, the host has a free slot and
// nothing is degraded. It starts once startup recovery has finished.
func (m *Manager) RunPool(ctx context.Context) {
	if len(m.pool.all()) == 0 {
		return
	}
	select {
	case <-m.recovered:
	case <-ctx.Done():
		return
	}
	m.retireExtras(ctx)
	backoff := time.Second
	for ctx.Err() == nil {
		image, err := m.nextFill(ctx)
		if err == nil && image != "" {
			if err = m.fillOne(ctx, image); err == nil {
				backoff = time.Second
				continue
			}
		}
		wait := 2 * time.Second
		if err != nil {
			m.log.Warn("warm pool refill failed; retrying", "error", err, "retry_in", backoff.String())
			wait, backoff = backoff, min(backoff*2, time.Minute)
		} else if left := m.pool.quietLeft(); left > 0 {
			wait = left
		}
		select {
		case <-ctx.Done():
		case <-m.pool.kick:
		case <-time.After(wait):
		}
	}
}

// nextFill picks the image whose pool is furthest below its size, or ""
// when none should be filled now.
func (m *Manager) nextFill(ctx context.Context) (string, error) {
	if m.pool.busy() || m.holds(ConditionContainerd) || m.holds(ConditionS3) {
		return "", nil
	}
	recs, err := m.pooled(ctx)
	if err != nil {
		return "", err
	}
	if max := m.limits.MaxSandboxes; max > 0 {
		live, err := m.List(ctx, "", false)
		if err != nil {
			return "", err
		}
		if len(live)+len(recs) >= max {
			return "", nil
		}
	}
	best, bestGap := "", 0
	for _, s := range m.pool.all() {
		have := 0
		for _, r := range recs {
			if r.Config.Image == s.Image {
				have++
			}
		}
		if gap := s.Size - have; gap > bestGap {
			best, bestGap = s.Image, gap
		}
	}
	return best, nil
}

// fillOne makes one pooled sandbox of image. Its record is stored last;
// until then isFilling keeps reconcile away from what it made.
func (m *Manager) fillOne(ctx context.Context, image string) (err error) {
	start := time.Now()
	id := ids.NewSandboxID()
	m.pool.mu.Lock()
	m.pool.filling[id] = image
	m.pool.mu.Unlock()
	defer func() {
		m.pool.mu.Lock()
		delete(m.pool.filling, id)
		m.pool.mu.Unlock()
	}()
	log := m.log.With("sandbox_id", id)
	var rollback undo.Stack
	defer func() {
		if err != nil {
			rollback.Run(context.WithoutCancel(ctx), log)
		}
	}()
	if _, err := m.ensureImage(ctx, image, PullIfNotPresent); err != nil {
		return err
	}
	releaseImage := m.acquireImage(image)
	defer releaseImage()
	cfg := m.poolConfig(image)
	now := m.now().UTC()
	rec := &registry.Record{ID: id, ContainerID: id, Status: registry.StatusPooled, Config: cfg, CreatedAt: now}
	home, err := m.storage.PrepareHot(id, "", cfg.DiskMB<<20)
	if err != nil {
		return err
	}
	rollback.Push("remove hot dir", func(c context.Context) error { return m.storage.RemoveHot(c, id) })
	slot, err := m.storage.ColdSlot(id)
	if err != nil {
		return err
	}
	rollback.Push("remove cold slot", func(c context.Context) error { return m.storage.ReleaseCold(c, "", id) })
	mounts := []runtime.Mount{
		{Source: home, Destination: HotPath},
		{Source: slot, Destination: ColdPath, Slave: true},
	}
	if m.home != nil && !bridged(rec) {
		dir, err := m.home.OpenSocket(id)
		if err != nil {
			return err
		}
		rollback.Push("close home socket", func(context.Context) error { m.home.CloseSocket(id); return nil })
		mounts = append(mounts, runtime.Mount{Source: dir, Destination: HomeSocketDir, ReadOnly: true})
	}
	policy, _ := networkPolicy(cfg.Network)
	policy.Closed = policy.Mode != network.ModeNone
	err = m.rt.Create(ctx, runtime.CreateRequest{
		ID: id, Image: image,
		Resources: runtime.Resources{CPU: cfg.CPU, MemoryBytes: cfg.MemoryMB << 20, Pids: cfg.Pids},
		Mounts:    mounts, Env: m.sandboxEnv(rec), Network: policy, CreatedAt: now,
	})
	if err != nil {
		return err
	}
	rollback.Push("destroy container", func(c context.Context) error { return m.rt.Destroy(c, id, 0) })
	// The claim's first exec then skips the OCI runtime. Not fatal: without
	// an agent, execs take the runtime path.
	if err := m.rt.WarmExecAgent(ctx, id); err != nil {
		log.Warn("warm pool sandbox has no exec agent; its execs use the OCI runtime", "error", err)
	}
	if ip := m.rt.IPv4(id); ip.IsValid() {
		rec.IPAddress = ip.String()
	}
	if digest, err := m.rt.ImageDigest(ctx, image); err == nil {
		rec.ImageDigest = digest
	}
	if err := m.store.Create(ctx, rec); err != nil {
		return fmt.Errorf("record pooled sandbox: %w", err)
	}
	log.Info("warm pool sandbox ready", "image", image, "total_ms", ms(time.Since(start)))
	return nil
}

// retireExtras retires pooled sandboxes beyond their pool's size (the
// daemon restarted with a smaller pool, or without one for their image).
func (m *Manager) retireExtras(ctx context.Context) {
	recs, err := m.pooled(ctx)
	if err != nil {
		m.log.Warn("warm pool scan failed", "error", err)
		return
	}
	have := map[string]int{}
	for _, r := range recs {
		have[r.Config.Image]++
		if have[r.Config.Image] > m.pool.size(r.Config.Image) {
			m.retirePooled(ctx, r.ID, "its pool is smaller than when it was made")
		}
	}
}

// retirePooled destroys a pooled sandbox that was never claimed and marks
// its record stopped (pool_retired). Nothing of any user's is in it: its
// hot dir is removed without a sync. It is a no-op for a sandbox a claim
// took meanwhile.
func (m *Manager) retirePooled(ctx context.Context, id, why string) bool {
	rec, err := m.store.Update(ctx, id, func(r *registry.Record) error {
		if r.Status != registry.StatusPooled {
			return errSkip
		}
		r.Status = registry.StatusShuttingDown
		r.Error = why
		return nil
	})
	if err != nil {
		return false
	}
	log := m.log.With("sandbox_id", id)
	dctx := context.WithoutCancel(ctx)
	var errs []error
	if err := m.rt.Destroy(dctx, id, 0); err != nil {
		errs = append(errs, err)
	} else {
		m.closeHome(id)
		errs = append(errs, m.storage.RemoveHot(dctx, id), m.storage.ReleaseCold(dctx, "", id))
	}
	final := registry.StatusStopped
	if err := errors.Join(errs...); err != nil {
		log.Warn("warm pool sandbox not fully removed; reconcile retries", "error", err)
		final = registry.StatusFailed
	}
	now := m.now().UTC()
	m.store.Update(dctx, id, func(r *registry.Record) error {
		r.Status, r.StoppedAt, r.StopReason = final, &now, ReasonPoolRetired
		return nil
	})
	log.Info("warm pool sandbox retired", "reason", why, "image", rec.Config.Image)
	m.pool.wake()
	return true
}

// adoptPooled is Recover's part for pooled records: a pooled sandbox whose
// task still runs stays in the pool (its home socket reopened), any other
// is retired, before the API serves, so no claim can get a dead one.
func (m *Manager) adoptPooled(ctx context.Context, log *slog.Logger) {
	recs, err := m.pooled(ctx)
	if err != nil {
		log.Warn("recover: warm pool scan failed", "error", err)
		return
	}
	var adopted []string
	defer func() {
		// Their exec agents too (the previous daemon's, still running, or
		// a new one), in the background: without this a claimed adopted
		// sandbox's first execs take the OCI runtime path (~100 ms of a
		// TTI in one run).
		m.bg.Go(func() {
			for _, id := range adopted {
				if ctx.Err() != nil {
					return
				}
				if err := m.rt.WarmExecAgent(ctx, id); err != nil {
					log.Warn("recover: pooled sandbox has no exec agent; its execs use the OCI runtime", "sandbox_id", id, "error", err)
				}
			}
		})
	}()
	for _, r := range recs {
		st, err := m.rt.TaskState(ctx, r.ID)
		if err != nil {
			log.Warn("recover: cannot check pooled sandbox; retiring it", "sandbox_id", r.ID, "error", err)
		}
		// Retired before the API serves: no claim can get it.
		if err != nil || !st.Running {
			m.retirePooled(ctx, r.ID, "its task was not running when the daemon restarted")
			continue
		}
		if m.home != nil && !bridged(r) {
			if _, err := m.home.OpenSocket(r.ID); err != nil {
				m.retirePooled(ctx, r.ID, "its way home could not be reopened: "+err.Error())
				continue
			}
		}
		log.Info("recover: adopted pooled sandbox", "sandbox_id", r.ID, "image", r.Config.Image)
		adopted = append(adopted, r.ID)
	}
}

// errPooled answers a user request about a pooled sandbox: not found, as
// it is nobody's yet.
func errPooled(id string) error {
	return fmt.Errorf("sandbox %s is in the warm pool: %w", id, errdefs.ErrNotFound)
}
