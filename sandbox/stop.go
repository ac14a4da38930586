package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sync/errgroup"

	"github.com/matrx-dev/matrx/fault"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/registry"
)

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
	if !ids.ValidSandboxID(id) {
		return nil, false, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	started := false
	rec, err := m.store.Update(ctx, id, func(r *registry.Record) error {
		switch {
		case r.Status == registry.StatusPooled:
			return errPooled(id)
		case r.Status == registry.StatusCreating || r.Status == registry.StatusStarting:
			return fmt.Errorf("sandbox %s is still being created; retry once it is ready: %w", id, errdefs.ErrFailedPrecondition)
		case !r.Status.AcceptsExec():
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
	m.emit(Event{Type: EventStopping, SandboxID: rec.ID, UserID: rec.UserID, Status: string(registry.StatusShuttingDown), Reason: reason})
	defer func() { m.metrics.ObserveDestroy(time.Since(start), derr == nil) }()
	grace := time.Duration(0)
	if graceful {
		grace = m.limits.ShutdownTimeout
	}
	// The container must go even if the client hangs up mid-request.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+time.Minute)
	defer cancel()
	dctx = fault.With(dctx, "stop")
	fault.At(dctx, "stop/shutting-down")
	t0 := time.Now()
	// Once the processes are gone the hot files are quiescent: they are
	// synced up while the runtime removes the task, network and container
	// (DestroyThen runs this beside that teardown and waits for both). The
	// directory is removed only if the sync succeeded; otherwise it stays,
	// the record says so, and RetryPending (on the checkpoint tick and at
	// the next daemon start) retries.
	var serr error
	var rep syncReport
	var storageTook time.Duration
	quiesced := false
	derr = m.rt.DestroyThen(dctx, rec.ID, grace, func() {
		s0 := time.Now()
		quiesced = true
		m.closeHome(rec.ID)
		rep, serr = m.finalSync(dctx, rec.ID, rec.UserID, m.shutdownSyncBudget(), log)
		fault.At(dctx, "stop/synced")
		if err := m.storage.ReleaseCold(dctx, rec.UserID, rec.ID); err != nil {
			log.Warn("cold release failed", "error", err)
		}
		fault.At(dctx, "stop/cold-released")
		storageTook = time.Since(s0)
	})
	m.forget(rec.ID)
	destroyTook := time.Since(t0)
	if derr != nil && !quiesced {
		// The container may still be running and writing: save what is
		// there, keep the directory and the mount, and let recovery finish.
		var res hotsync.Result
		res, serr = m.storage.SyncUp(dctx, rec.ID, rec.UserID)
		rep = reportOf(res, serr)
		if serr == nil {
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
		recordSync(r, rep, serr, now)
		return nil
	})
	fault.At(dctx, "stop/recorded")
	if out != nil {
		m.emit(Event{Type: EventStopped, SandboxID: rec.ID, UserID: rec.UserID, Status: string(out.Status), Reason: reason, ExitCode: out.ExitCode, Detail: out.Error})
	}
	if derr != nil {
		log.Error("sandbox destroy failed", "error", derr)
		return out, derr
	}
	log.Info("sandbox stopped", "reason", reason, "total_ms", ms(time.Since(start)),
		"teardown_ms", ms(destroyTook), "storage_ms", ms(storageTook))
	return out, err
}

// expireParallel bounds the expired sandboxes stopped at once: one whose
// stop is stuck (its final sync waiting on a silent S3) must not hold TTL
// enforcement back for the others.
const expireParallel = 8

// ExpireDue stops every live sandbox whose TTL has passed, expireParallel
// at a time.
func (m *Manager) ExpireDue(ctx context.Context) {
	rs, err := m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
	if err != nil {
		m.log.Warn("expiry scan failed", "error", err)
		return
	}
	now := m.now()
	var g errgroup.Group
	g.SetLimit(expireParallel)
	for _, r := range rs {
		if now.Before(r.ExpiresAt) {
			continue
		}
		rec, started, err := m.beginShutdown(ctx, r.ID, "")
		if err != nil || !started {
			continue
		}
		g.Go(func() error {
			m.finishShutdown(ctx, rec, true, ReasonExpired, registry.StatusExpired)
			return nil
		})
	}
	g.Wait()
}

// RunExpiry calls ExpireDue every interval until ctx ends.
func (m *Manager) RunExpiry(ctx context.Context, interval time.Duration) {
	every(ctx, interval, func(ctx context.Context) {
		m.ExpireDue(ctx)
		m.PruneProcesses(ctx)
	})
}

// Recover runs once at startup, before the API serves, and returns as
// soon as it has asked containerd about every live record (no storage
// call, so an S3 endpoint that does not answer never holds startup back):
//
//   - Live sandboxes whose task still runs keep running and accept exec at
//     once.
//   - Sandboxes caught mid-transition (creating, starting, shutting_down)
//     or whose task is gone are claimed (shutting_down) right away.
//
// The storage work then runs in the background, with deadlines (see
// recoverStorage): survivors get their cold mount reference back and are
// checkpointed, the claimed ones are destroyed, synced and marked failed,
// pending hot dirs are retried, and the first reconcile runs. Recovered
// closes when it is done.
func (m *Manager) Recover(ctx context.Context) error {
	rs, err := m.store.List(ctx, registry.Filter{Statuses: registry.LiveStatuses()})
	if err != nil {
		return err
	}
	var survivors []*registry.Record
	var dead []recoveredStop
	for _, r := range rs {
		log := m.log.With("sandbox_id", r.ID, "user_id", r.UserID)
		d := recoveredStop{was: r.Status, fresh: neverReady(r), reason: ReasonError,
			message: fmt.Sprintf("daemon restarted while sandbox was %s", r.Status)}
		if r.Status.AcceptsExec() {
			st, err := m.rt.TaskState(ctx, r.ID)
			if err != nil {
				log.Warn("recover: cannot check sandbox; supervision will", "error", err)
				continue
			}
			if st.Running {
				survivors = append(survivors, r)
				if m.home != nil && !bridged(r) {
					// The socket died with the previous daemon; its
					// directory is still bound in the sandbox.
					if _, err := m.home.OpenSocket(r.ID); err != nil {
						log.Warn("recover: the sandbox's way home could not be reopened", "error", err)
					}
				}
				// Adopt its background processes now (containerd only), so
				// that their timeouts run again and exits while the daemon
				// was away are recorded.
				if _, err := m.rt.Processes(ctx, r.ID); err != nil {
					log.Warn("recover: background processes", "error", err)
				}
				log.Info("recovered running sandbox")
				continue
			}
			d.reason, d.message = ReasonRuntimeLost, "its task was gone when the daemon restarted"
			if st.Stopped {
				code := int(st.ExitStatus)
				d.exitCode = &code
				d.reason, d.message = ReasonExited, fmt.Sprintf("PID 1 exited with status %d while the daemon was away", st.ExitStatus)
			}
		}
		rec, err := m.store.Update(ctx, r.ID, func(rec *registry.Record) error {
			rec.Status = registry.StatusShuttingDown
			if rec.Error == "" || r.Status.AcceptsExec() {
				rec.Error = d.message
			}
			if d.exitCode != nil {
				rec.ExitCode = d.exitCode
			}
			return nil
		})
		if err != nil {
			log.Warn("recover: cannot claim sandbox", "error", err)
			continue
		}
		d.rec = rec
		dead = append(dead, d)
	}
	m.adoptPooled(ctx, m.log)
	m.bg.Go(func() { m.recoverStorage(ctx, survivors, dead) })
	return nil
}

// Recovered is closed once the background part of Recover has given every
// survivor its cold mount reference back and finished the sandboxes it
// claimed (the first reconcile then starts).
func (m *Manager) Recovered() <-chan struct{} { return m.recovered }

// recoveredStop is a sandbox Recover found dead or mid-transition.
type recoveredStop struct {
	rec      *registry.Record
	was      registry.Status
	fresh    bool // never became ready: its hot dir holds nothing of the agent's
	reason   string
	message  string
	exitCode *int
}

// recoveryParallelism bounds the background recovery's concurrent
// storage calls (cold mounts, checkpoints, final syncs).
const recoveryParallelism = 4

// recoverStorage is Recover's background half. Each step has a deadline,
// and the whole of it stops when ctx ends (the daemon stopping): what it
// did not finish, the next start does.
func (m *Manager) recoverStorage(ctx context.Context, survivors []*registry.Record, dead []recoveredStop) {
	start := time.Now()
	// Every step needs the bucket (cold mounts, checkpoints, final
	// syncs): while it does not answer, trying would only wait out one
	// deadline per sandbox. The sandboxes run and accept exec meanwhile.
	if m.holds(ConditionS3) {
		m.log.Warn("recovery waits for the bucket to answer", "survivors", len(survivors), "stopped", len(dead))
		for m.holds(ConditionS3) {
			if !sleepCtx(ctx, 500*time.Millisecond) {
				close(m.recovered)
				return
			}
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, recoveryParallelism)
	for _, r := range survivors {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			log := m.log.With("sandbox_id", r.ID, "user_id", r.UserID)
			m.reacquireCold(ctx, r, log)
			cctx, cancel := context.WithTimeout(ctx, m.shutdownSyncBudget())
			defer cancel()
			m.checkpointOne(cctx, r)
		})
	}
	for _, d := range dead {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			m.finishRecovered(ctx, d)
		})
	}
	wg.Wait()
	close(m.recovered)
	// The first reconcile removes what no live record names (containers
	// first, so that hot dirs are quiescent) and retries pending hot dirs,
	// orphans included: the in-memory registry forgets records on restart.
	if ctx.Err() == nil {
		m.Reconcile(ctx)
	}
	m.log.Info("recovery finished", "survivors", len(survivors), "stopped", len(dead), "took_ms", ms(time.Since(start)))
}

// finishRecovered stops a sandbox Recover claimed: destroy what is left,
// save (or, for one that never became ready, discard) its hot files, and
// mark it failed.
func (m *Manager) finishRecovered(ctx context.Context, d recoveredStop) {
	r := d.rec
	log := m.log.With("sandbox_id", r.ID, "user_id", r.UserID)
	if err := m.rt.Destroy(ctx, r.ID, 0); err != nil {
		log.Warn("recover: destroy leftover failed", "error", err)
	} else {
		m.closeHome(r.ID)
	}
	m.forget(r.ID)
	var serr error
	var rep syncReport
	if d.fresh {
		// The agent never ran: the hot dir holds only what sync-down
		// wrote, maybe half a file and no manifest. Syncing it up would
		// turn partial downloads into conflict copies in the bucket.
		serr = m.discardHot(ctx, r.ID, log)
	} else {
		rep, serr = m.finalSync(ctx, r.ID, r.UserID, m.shutdownSyncBudget(), log)
	}
	if ctx.Err() != nil {
		return // the daemon is stopping: the record stays claimed for the next start
	}
	now := m.now().UTC()
	out, err := m.store.Update(context.WithoutCancel(ctx), r.ID, func(rec *registry.Record) error {
		rec.Status = registry.StatusFailed
		rec.StoppedAt = &now
		rec.StopReason = d.reason
		if !d.fresh || serr != nil {
			recordSync(rec, rep, serr, now) // nothing was synced for a discarded dir
		}
		return nil
	})
	if err == nil {
		m.emit(Event{Type: EventStopped, SandboxID: r.ID, UserID: r.UserID, Status: string(out.Status), Reason: d.reason, ExitCode: out.ExitCode, Detail: out.Error})
	}
	log.Warn("recover: sandbox marked failed", "was", d.was, "reason", d.reason)
}

// RetryPending syncs up the hot files of stopped sandboxes whose final
// sync failed (S3 unreachable, say), and removes each directory once its
// files are safe. It runs with every checkpoint, so an outage costs one
// interval, not a daemon restart.
func (m *Manager) RetryPending(ctx context.Context) {
	if err := m.retryPending(ctx, false, retrySyncBudget); err != nil {
		m.log.Warn("pending hot sync scan failed", "error", err)
	}
}

// retryPending syncs the hot dirs of stopped sandboxes within budget. At
// startup and in the reconcile loop (orphans true, with the shutdown
// budget so that nothing waits long; what is cut short is retried later)
// a hot dir without a record is synced too, since the in-memory registry
// forgets records on restart; the checkpoint tick only retries dirs of
// records in a terminal state. The container is destroyed first (a no-op
// when gone): a sandbox whose destroy failed may still be writing, and
// its dir stays until it is really gone. A dir another retry is syncing
// right now is skipped. Each dir it finishes (synced and removed, or
// discarded) is a repair.
func (m *Manager) retryPending(ctx context.Context, orphans bool, budget time.Duration) error {
	pending, err := m.storage.Pending()
	if err != nil {
		return err
	}
	for _, p := range pending {
		if m.pool.isFilling(p.SandboxID) {
			continue // a pool fill is making it; its record comes last
		}
		rec, err := m.store.Get(ctx, p.SandboxID)
		switch {
		case err == nil && !rec.Status.Terminal():
			continue // a live sandbox: its files stay in use
		case err != nil && !orphans:
			continue
		}
		if !m.tryHot(p.SandboxID) {
			continue
		}
		if p.UserID == "" {
			// A warm-pool dir with no live record: nobody's files.
			if m.discardHot(ctx, p.SandboxID, m.log.With("sandbox_id", p.SandboxID)) == nil {
				m.repaired(RepairHotDir, p.SandboxID, "", "removed the hot dir of a pooled sandbox that is gone")
			}
			m.doneHot(p.SandboxID)
			continue
		}
		m.retryOne(ctx, p.SandboxID, p.UserID, rec, budget)
		m.doneHot(p.SandboxID)
	}
	return nil
}

// retryOne is retryPending for one dir; rec is nil when it has no record.
func (m *Manager) retryOne(ctx context.Context, id string, userID ids.UserID, rec *registry.Record, budget time.Duration) {
	log := m.log.With("sandbox_id", id, "user_id", userID)
	if derr := m.rt.Destroy(ctx, id, 0); derr != nil {
		log.Warn("pending hot sync: sandbox still not destroyed; files kept", "error", derr)
		return
	}
	why := "its sandbox has no record"
	if rec != nil {
		why = "its sandbox is " + string(rec.Status)
	}
	if rec != nil && neverReady(rec) {
		// A create that failed, or was caught by a crash, and whose
		// dir could not be removed then: nothing to save.
		if m.discardHot(ctx, id, log) == nil {
			m.repaired(RepairHotDir, id, userID, "removed the hot dir of a sandbox that never became ready")
		}
		return
	}
	rep, serr := m.finalSync(ctx, id, userID, budget, log)
	if rec != nil {
		now := m.now().UTC()
		m.store.Update(ctx, id, func(r *registry.Record) error {
			recordSync(r, rep, serr, now)
			return nil
		})
	}
	if serr == nil {
		log.Info("pending hot files synced")
		m.repaired(RepairHotDir, id, userID, "synced and removed the hot dir ("+why+")")
	}
}

// tryHot marks a hot dir as being synced by a retry; false if one is.
func (m *Manager) tryHot(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hotBusy[id] {
		return false
	}
	m.hotBusy[id] = true
	return true
}

func (m *Manager) doneHot(id string) {
	m.mu.Lock()
	delete(m.hotBusy, id)
	m.mu.Unlock()
}

// neverReady reports whether a sandbox never became ready, so no agent
// command ever ran in it (exec needs ready or running). Create records
// HotSyncedAt in the same update that makes a sandbox ready, and nothing
// sets it earlier.
func neverReady(r *registry.Record) bool { return r.HotSyncedAt == nil }

// discardHot removes a hot dir without syncing it: only for sandboxes
// whose agent never ran.
func (m *Manager) discardHot(ctx context.Context, id string, log *slog.Logger) error {
	if !m.storage.HasHot(id) {
		return nil
	}
	if err := m.storage.RemoveHot(ctx, id); err != nil {
		log.Warn("recover: could not remove the hot dir of a sandbox that never became ready", "error", err)
		return err
	}
	log.Info("recover: removed the hot dir of a sandbox that never became ready (its agent never ran)")
	return nil
}

// closeHome removes a stopped sandbox's way home (a no-op without one).
func (m *Manager) closeHome(id string) {
	if m.home != nil {
		m.home.CloseSocket(id)
	}
}

// Wait blocks until background shutdowns have finished.
func (m *Manager) Wait() { m.bg.Wait() }

// HasContainer reports whether a sandbox's record says its container should
// exist: it is not in a terminal state (for garbage collection of host
// resources after a crash).
func (m *Manager) HasContainer(id string) bool {
	if m.pool.isFilling(id) {
		return true // a pool fill made it; its record comes last
	}
	r, err := m.store.Get(context.Background(), id)
	return err == nil && !r.Status.Terminal()
}
