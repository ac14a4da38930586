package sandbox

// Supervision keeps every record true while the daemon runs:
//
//   - Supervise turns runtime task events (PID 1 exited, OOM-killed, the
//     task or its shim lost; runtime.Watch) into stops: within a poll
//     interval (2 s) plus the stop itself the record is failed with the
//     stop reason and PID 1's exit status, after the normal stop path
//     (finishShutdown: destroy, final hot sync, cold release) ran. Every
//     OOM kill is counted on the record.
//   - EnforceDeadlines stops sandboxes whose heartbeat or idle timeout
//     passed, through the same stop path.
//   - Conditions say why the daemon is degraded (containerd unavailable,
//     bucket unreachable); creates (and, without containerd, execs) are
//     refused with Unavailable meanwhile, while get and list keep
//     answering from the registry.
//   - Touch is the one way any kind of activity keeps a sandbox from
//     idling out (see its doc).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
)

// Stop reasons of supervision (besides ReasonUserRequested & co).
const (
	ReasonExited        = "exited"         // PID 1 exited on its own: failed
	ReasonOOMKilled     = "oom_killed"     // PID 1 was OOM-killed: failed
	ReasonRuntimeLost   = "runtime_lost"   // task, shim or container gone: failed
	ReasonHeartbeatLost = "heartbeat_lost" // heartbeat_timeout_seconds passed: failed
	ReasonIdle          = "idle"           // idle_timeout_seconds passed: stopped
)

// StopReasons lists every stop reason a record can carry.
func StopReasons() []string {
	return []string{ReasonUserRequested, ReasonGracefulShutdown, ReasonError, ReasonExpired, ReasonAdmin,
		ReasonExited, ReasonOOMKilled, ReasonRuntimeLost, ReasonHeartbeatLost, ReasonIdle}
}

// Degraded-condition reasons (GET /health lists the ones that hold).
const (
	ConditionContainerd = "containerd_unavailable"
	ConditionS3         = "s3_unreachable"
)

// Condition is one reason the daemon is degraded.
type Condition struct {
	Reason string
	Detail string
	Since  time.Time
}

// conditions is the set of degraded reasons that hold now.
type conditions struct {
	mu sync.Mutex
	m  map[string]Condition
}

// SetCondition records that reason holds (err says why) or, with a nil
// err, that it no longer does.
func (m *Manager) SetCondition(reason string, err error) {
	c := &m.conds
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]Condition{}
	}
	_, had := c.m[reason]
	switch {
	case err == nil && had:
		delete(c.m, reason)
		m.log.Info("daemon no longer degraded by "+reason, "reason", reason)
	case err != nil && !had:
		c.m[reason] = Condition{Reason: reason, Detail: err.Error(), Since: m.now().UTC()}
		m.log.Warn("daemon degraded", "reason", reason, "error", err)
	case err != nil:
		cur := c.m[reason]
		cur.Detail = err.Error()
		c.m[reason] = cur
	}
}

// Conditions returns the degraded reasons that hold, sorted.
func (m *Manager) Conditions() []Condition {
	c := &m.conds
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Condition, 0, len(c.m))
	for _, v := range c.m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reason < out[j].Reason })
	return out
}

// holds reports whether a degraded condition holds now.
func (m *Manager) holds(reason string) bool {
	c := &m.conds
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[reason]
	return ok
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// refuseWhileDegraded answers Unavailable when one of reasons holds.
func (m *Manager) refuseWhileDegraded(op string, reasons ...string) error {
	var held []string
	for _, c := range m.Conditions() {
		if slices.Contains(reasons, c.Reason) {
			held = append(held, c.Reason+": "+c.Detail)
		}
	}
	if len(held) == 0 {
		return nil
	}
	return fmt.Errorf("matrxd is degraded (%s): %s is refused until it recovers; list and get still answer: %w",
		strings.Join(held, "; "), op, errdefs.ErrUnavailable)
}

// --- task events --------------------------------------------------------

// Supervise watches every sandbox's task until ctx ends: deaths become
// stops, OOM kills are counted, and containerd going away (or coming
// back, after which everything is reconciled) is a condition. poll is the
// status poll interval (0: 2 s).
func (m *Manager) Supervise(ctx context.Context, poll time.Duration) {
	m.rt.Watch(ctx, runtime.WatchConfig{
		Poll:    poll,
		OnEvent: func(ev runtime.TaskEvent) { m.onTaskEvent(ctx, ev) },
		OnConnection: func(err error) {
			m.SetCondition(ConditionContainerd, err)
			if err == nil {
				// Events were lost while containerd was away.
				m.bg.Go(func() { m.Reconcile(ctx) })
			}
		},
	})
}

func (m *Manager) onTaskEvent(ctx context.Context, ev runtime.TaskEvent) {
	if !ids.ValidSandboxID(ev.SandboxID) {
		return
	}
	id := ev.SandboxID
	switch ev.Kind {
	case runtime.TaskOOM:
		rec, err := m.store.Update(ctx, id, func(r *registry.Record) error {
			if r.Status.Terminal() {
				return errSkip
			}
			r.OOMKills++
			return nil
		})
		if err != nil {
			return
		}
		m.log.Warn("oom kill in sandbox", "sandbox_id", id, "user_id", rec.UserID, "oom_kills", rec.OOMKills)
		m.emit(Event{Type: EventOOM, SandboxID: id, UserID: rec.UserID, Status: string(rec.Status),
			Detail: fmt.Sprintf("the kernel OOM killer killed a process (%d so far)", rec.OOMKills)})
	case runtime.TaskExited, runtime.TaskLost:
		c := stopCause{final: registry.StatusFailed}
		if ev.HasStatus {
			code := int(ev.ExitStatus)
			c.exitCode = &code
		}
		switch {
		case ev.Kind == runtime.TaskLost:
			c.reason = ReasonRuntimeLost
			c.message = "the sandbox's task was lost: its shim died, or it was removed outside matrxd"
		case ev.OOMKilled:
			c.reason = ReasonOOMKilled
			c.message = "PID 1 was killed by the kernel's OOM killer (memory limit reached)"
		default:
			c.reason = ReasonExited
			c.message = fmt.Sprintf("PID 1 exited with status %d", ev.ExitStatus)
		}
		if !m.stopAsync(ctx, id, c) {
			// A pooled sandbox that died is never handed out.
			m.bg.Go(func() { m.retirePooled(ctx, id, c.message) })
		}
	}
}

// errSkip aborts a store update that has nothing to change.
var errSkip = errors.New("nothing to update")

// stopCause is why supervision stops a sandbox, and how.
type stopCause struct {
	reason   string
	final    registry.Status
	graceful bool
	exitCode *int
	message  string // recorded as the record's error
}

// maxBackgroundStops bounds supervision's concurrent stops.
const maxBackgroundStops = 16

// stopAsync claims the stop of a ready or running sandbox (it becomes
// shutting_down at once, with the cause recorded) and runs the normal
// stop path in the background. A sandbox that is not live, or that
// someone else is stopping, is left alone.
func (m *Manager) stopAsync(ctx context.Context, id string, c stopCause) bool {
	rec, claimed, err := m.claimStop(ctx, id, func(r *registry.Record) {
		r.ExitCode = c.exitCode
		if c.message != "" {
			r.Error = c.message
		}
	})
	if err != nil || !claimed {
		return false
	}
	m.log.Warn("supervision stops sandbox", "sandbox_id", id, "user_id", rec.UserID, "reason", c.reason, "detail", c.message)
	m.bg.Go(func() {
		m.stopSem <- struct{}{}
		defer func() { <-m.stopSem }()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.limits.ShutdownTimeout+2*time.Minute)
		defer cancel()
		m.finishShutdown(sctx, rec, c.graceful, c.reason, c.final)
	})
	return true
}

// claimStop moves a ready or running sandbox to shutting_down, applying
// mutate in the same update, and reports whether this call did it.
func (m *Manager) claimStop(ctx context.Context, id string, mutate func(*registry.Record)) (*registry.Record, bool, error) {
	claimed := false
	rec, err := m.store.Update(ctx, id, func(r *registry.Record) error {
		if !r.Status.AcceptsExec() {
			return errSkip
		}
		claimed = true
		r.Status = registry.StatusShuttingDown
		mutate(r)
		return nil
	})
	if errors.Is(err, errSkip) {
		err = nil
	}
	return rec, claimed, err
}

// --- activity, heartbeats, idleness ------------------------------------

// activitySaveEvery bounds how often Touch writes the record: activity is
// kept in memory and saved at most this often per sandbox, so a chatty
// process does not turn into a stream of registry writes. After a crash,
// idleness counts from the last saved activity (at most this much early).
const activitySaveEvery = 5 * time.Second

// Touch records activity on a sandbox. Every kind of activity that keeps
// a sandbox from idling out must call it: API calls about the sandbox and
// heartbeats, output delivered to follows and attaches and attach input
// (package api does all of these); StartProcess (SSH sessions too),
// Heartbeat and every connection Dial makes (proxied requests, preview,
// port tunnels, SSH forwards) touch by themselves. Output a background
// process writes is noticed by EnforceDeadlines. CPU use alone is not
// activity. It is cheap (memory; the
// record is written at most every 5 s) and safe from any goroutine; an id
// that is unknown or not live is ignored.
func (m *Manager) Touch(ctx context.Context, id string) {
	if !ids.ValidSandboxID(id) {
		return
	}
	now := m.now().UTC()
	m.mu.Lock()
	st, ok := m.live[id]
	save := false
	if ok {
		st.activity = now
		if now.Sub(st.saved) >= activitySaveEvery {
			st.saved, save = now, true
		}
	}
	m.mu.Unlock()
	if !ok {
		// After a restart the in-memory state is rebuilt on first use,
		// and only for live sandboxes.
		rec, err := m.store.Get(ctx, id)
		if err != nil || !rec.Status.AcceptsExec() {
			return
		}
		m.mu.Lock()
		st = m.stateLocked(id)
		st.activity, st.saved, save = now, now, true
		m.mu.Unlock()
	}
	if save {
		// Not on m.bg: callers (output streams, proxies) may touch while
		// the daemon stops; a save after the registry closed just fails.
		go func() {
			m.store.Update(context.WithoutCancel(ctx), id, func(r *registry.Record) error {
				if r.Status.Terminal() {
					return errSkip
				}
				if r.LastActivityAt == nil || r.LastActivityAt.Before(now) {
					r.LastActivityAt = &now
				}
				return nil
			})
		}()
	}
}

// lastActivity is the newest activity known of r: in memory, saved, or
// its becoming ready (creation before that).
func (m *Manager) lastActivity(r *registry.Record) time.Time {
	last := r.CreatedAt
	for _, t := range []*time.Time{r.ReadyAt, r.LastActivityAt} {
		if t != nil && t.After(last) {
			last = *t
		}
	}
	m.mu.Lock()
	if st, ok := m.live[r.ID]; ok && st.activity.After(last) {
		last = st.activity
	}
	m.mu.Unlock()
	return last
}

// withActivity returns r with LastActivityAt brought up to date from
// memory, for callers (the API) that show it.
func (m *Manager) withActivity(r *registry.Record) *registry.Record {
	if r == nil || r.Status.Terminal() {
		return r
	}
	last := m.lastActivity(r)
	r.LastActivityAt = &last
	return r
}

// IdleExpiresAt is when r stops for idleness unless something touches it
// (nil without an idle timeout, or once it stopped).
func IdleExpiresAt(r *registry.Record) *time.Time {
	if r.Config.IdleTimeoutSeconds <= 0 || r.Status.Terminal() || r.LastActivityAt == nil {
		return nil
	}
	t := r.LastActivityAt.Add(time.Duration(r.Config.IdleTimeoutSeconds) * time.Second)
	return &t
}

// heartbeatDeadline is when r fails for lack of heartbeats (zero: no
// heartbeat timeout). The clock starts when the sandbox became ready.
func heartbeatDeadline(r *registry.Record) time.Time {
	if r.Config.HeartbeatTimeoutSeconds <= 0 {
		return time.Time{}
	}
	base := r.CreatedAt
	for _, t := range []*time.Time{r.ReadyAt, r.LastHeartbeatAt} {
		if t != nil && t.After(base) {
			base = *t
		}
	}
	return base.Add(time.Duration(r.Config.HeartbeatTimeoutSeconds) * time.Second)
}

// EnforceDeadlines stops every ready or running sandbox whose heartbeat
// timeout (failed, heartbeat_lost) or idle timeout (stopped, idle) has
// passed, through the normal stop path (graceful, last sync after the
// processes are gone). An exec in flight counts as activity.
func (m *Manager) EnforceDeadlines(ctx context.Context) {
	rs, err := m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
	if err != nil {
		m.log.Warn("deadline scan failed", "error", err)
		return
	}
	now := m.now()
	for _, r := range rs {
		if d := heartbeatDeadline(r); !d.IsZero() && !now.Before(d) {
			m.stopAsync(ctx, r.ID, stopCause{reason: ReasonHeartbeatLost, final: registry.StatusFailed, graceful: true,
				message: fmt.Sprintf("no heartbeat for %d s (heartbeat_timeout_seconds)", r.Config.HeartbeatTimeoutSeconds)})
			continue
		}
		idle := time.Duration(r.Config.IdleTimeoutSeconds) * time.Second
		if idle <= 0 || m.execsInFlight(r.ID) > 0 {
			continue
		}
		if last := m.lastActivity(r); now.Sub(last) < idle {
			continue
		}
		// Output of a background process is activity, read or not.
		if m.processOutputGrew(ctx, r.ID) {
			m.Touch(ctx, r.ID)
			continue
		}
		m.stopAsync(ctx, r.ID, stopCause{reason: ReasonIdle, final: registry.StatusStopped, graceful: true})
	}
}

// RunDeadlines calls EnforceDeadlines every interval until ctx ends.
func (m *Manager) RunDeadlines(ctx context.Context, interval time.Duration) {
	every(ctx, interval, m.EnforceDeadlines)
}

// processOutputGrew reports whether any background process of the sandbox
// wrote output since the last look (the first look counts as growth when
// there is any output, so a restart never idles out a chatty sandbox).
func (m *Manager) processOutputGrew(ctx context.Context, id string) bool {
	ps, err := m.rt.Processes(ctx, id)
	if err != nil {
		return false
	}
	grew := false
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stateLocked(id)
	if st.outputEnds == nil {
		st.outputEnds = map[string]int64{}
	}
	for _, p := range ps {
		end, err := p.OutputEnd()
		if err != nil {
			continue
		}
		pid := p.Info().ID
		if prev, seen := st.outputEnds[pid]; end > prev || !seen && end > 0 {
			grew = true
		}
		st.outputEnds[pid] = end
	}
	return grew
}

func (m *Manager) execsInFlight(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st, ok := m.live[id]; ok {
		return st.execs
	}
	return 0
}

// --- lifetime ------------------------------------------------------------

// SetTTL extends (or shortens) a live sandbox's lifetime: it expires ttl
// from now, and its ttl_seconds becomes the whole lifetime (expires_at −
// created_at), which may not exceed the daemon's maximum TTL.
func (m *Manager) SetTTL(ctx context.Context, id string, ttl time.Duration) (*registry.Record, error) {
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	if ttl < time.Second {
		return nil, invalid("ttl_seconds must be at least 1")
	}
	now := m.now().UTC()
	rec, err := m.store.Update(ctx, id, func(r *registry.Record) error {
		if r.UserID == "" {
			return errPooled(id)
		}
		if !r.Status.AcceptsExec() {
			return fmt.Errorf("sandbox %s is %s: only a ready or running sandbox's lifetime can change: %w", id, r.Status, errdefs.ErrFailedPrecondition)
		}
		expires := now.Add(ttl)
		lifetime := expires.Sub(r.CreatedAt)
		if lifetime > m.limits.MaxTTL {
			most := int64((m.limits.MaxTTL - now.Sub(r.CreatedAt)) / time.Second)
			return invalid("ttl_seconds %d would make the sandbox live %d s in all, above the daemon's maximum of %d s (--max-ttl); at most %d is allowed now",
				int64(ttl/time.Second), int64(lifetime/time.Second), int64(m.limits.MaxTTL/time.Second), max(most, 0))
		}
		r.ExpiresAt = expires
		r.Config.TTLSeconds = int64((lifetime + time.Second - 1) / time.Second)
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.log.Info("sandbox lifetime changed", "sandbox_id", id, "user_id", rec.UserID, "expires_at", rec.ExpiresAt, "ttl_seconds", rec.Config.TTLSeconds)
	return m.withActivity(rec), nil
}
