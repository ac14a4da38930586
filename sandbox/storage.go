package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sync/errgroup"

	"github.com/matrx-dev/matrx/fault"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/mounts"
	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/registry"
)

// finalSync runs the last hot sync of a stopped sandbox within budget
// (shutdownSyncBudget on a stop path, retrySyncBudget for a retry).
func (m *Manager) finalSync(ctx context.Context, id string, userID ids.UserID, budget time.Duration, log *slog.Logger) (syncReport, error) {
	if !m.storage.HasHot(id) {
		return syncReport{}, nil
	}
	sctx, cancel := context.WithTimeout(fault.With(ctx, "final-sync"), budget)
	defer cancel()
	res, err := m.storage.FinishHot(sctx, id, userID)
	rep := reportOf(res, err)
	if err != nil {
		m.metrics.AddHotSync("up", 0, 0, 0, 1)
		log.Error("final hot sync did not complete; files kept on the host for retry", "error", err)
		return rep, err
	}
	m.metrics.AddHotSync("up", res.Bytes, int64(len(res.Uploaded)), len(res.Conflicts), 0)
	log.Info("hot storage synced up", "uploaded", len(res.Uploaded), "deleted", len(res.Deleted),
		"conflicts", len(res.Conflicts), "rejected", len(res.Rejected), "bytes", res.Bytes)
	for _, c := range res.Conflicts {
		log.Warn("hot sync conflict: kept the other version, saved ours as a conflict copy", "path", c)
	}
	return rep, nil
}

// shutdownSyncBudget bounds a final sync on a stop path and at startup:
// the shutdown timeout, at least 30 s (the container is already gone, so
// the agent's grace time is not eaten twice). A sync cut short stays
// pending; its files are already partly in the bucket (the manifest keeps
// what succeeded).
func (m *Manager) shutdownSyncBudget() time.Duration {
	return max(m.limits.ShutdownTimeout, 30*time.Second)
}

// retrySyncBudget bounds a background retry, where nothing waits: long
// enough for a file too big to upload within a shutdown budget, which would
// otherwise be cut short on every retry and never reach the bucket.
const retrySyncBudget = time.Hour

// checkpointBudget bounds one sandbox's checkpoint, so that a sandbox
// whose sync is stuck cannot hold the others' back (they run beside it,
// checkpointParallel at a time).
const (
	checkpointBudget   = 10 * time.Minute
	checkpointParallel = 4
)

// syncReport is what a record keeps of a sync pass beyond its error: the
// entries that could not be stored and the names cap.
type syncReport struct {
	walked    bool // the pass walked the home: the fields below are current
	rejected  []string
	count     int
	overLimit string
}

func reportOf(res hotsync.Result, err error) syncReport {
	var held *hotsync.HeldError
	if err != nil && !errors.As(err, &held) && res.Uploaded == nil && res.Rejected == nil && res.OverLimit == nil {
		return syncReport{} // failed before it looked at the home
	}
	rep := syncReport{walked: true, count: len(res.Rejected)}
	for _, r := range res.Rejected {
		if len(rep.rejected) == registry.MaxRejectedListed {
			break
		}
		rep.rejected = append(rep.rejected, r.Path+": "+r.Reason)
	}
	if res.OverLimit != nil {
		rep.overLimit = res.OverLimit.String()
	}
	return rep
}

// recordSync stores a sync outcome on a record. An incomplete sync (held
// deletions, over the names cap) is pending, with the reason.
func recordSync(r *registry.Record, rep syncReport, err error, at time.Time) {
	if rep.walked {
		r.HotSyncRejected, r.HotSyncRejectedCount, r.HotSyncOverLimit = rep.rejected, rep.count, rep.overLimit
	}
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
// loses at most one interval of work. Sandboxes are synced
// checkpointParallel at a time, each within checkpointBudget.
func (m *Manager) Checkpoint(ctx context.Context) {
	rs, err := m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
	if err != nil {
		m.log.Warn("checkpoint scan failed", "error", err)
		return
	}
	var g errgroup.Group
	g.SetLimit(checkpointParallel)
	for _, r := range rs {
		g.Go(func() error {
			m.checkpointOne(ctx, r)
			return nil
		})
	}
	g.Wait()
}

func (m *Manager) checkpointOne(ctx context.Context, r *registry.Record) {
	log := m.log.With("sandbox_id", r.ID, "user_id", r.UserID)
	// The list may be old by now: a sandbox that began stopping is the
	// final sync's alone (mounts serializes them too).
	if cur, err := m.store.Get(ctx, r.ID); err != nil || !cur.Status.AcceptsExec() {
		return
	}
	ctx = fault.With(ctx, "checkpoint")
	cctx, cancel := context.WithTimeout(ctx, checkpointBudget)
	defer cancel()
	res, err := m.storage.SyncUp(cctx, r.ID, r.UserID)
	if err != nil {
		m.metrics.AddHotSync("up", 0, 0, 0, 1)
	} else {
		m.metrics.AddHotSync("up", res.Bytes, int64(len(res.Uploaded)), len(res.Conflicts), 0)
	}
	if err != nil {
		log.Warn("hot checkpoint did not complete", "error", err)
	} else if len(res.Uploaded)+len(res.Deleted) > 0 {
		log.Info("hot checkpoint", "uploaded", len(res.Uploaded), "deleted", len(res.Deleted), "conflicts", len(res.Conflicts), "bytes", res.Bytes)
	}
	rep := reportOf(res, err)
	fault.At(ctx, "checkpoint/synced")
	now := m.now().UTC()
	m.store.Update(ctx, r.ID, func(rec *registry.Record) error {
		if rec.Status.AcceptsExec() {
			recordSync(rec, rep, err, now)
		}
		return nil
	})
}

// RunStorageTasks calls Checkpoint every checkpoint interval (never when
// it is 0) and RetryPending every retry interval until ctx ends. They run
// on separate goroutines, so an hour-long retry does not hold checkpoints
// back; they touch different sandboxes (live vs stopped), and each
// sandbox's syncs are serialized by its syncer anyway.
func (m *Manager) RunStorageTasks(ctx context.Context, checkpoint, retry time.Duration) {
	var wg sync.WaitGroup
	if checkpoint > 0 {
		wg.Go(func() { every(ctx, checkpoint, m.Checkpoint) })
	}
	wg.Go(func() { every(ctx, retry, m.RetryPending) })
	wg.Go(func() { every(ctx, trashPruneInterval, m.PruneTrash) })
	wg.Wait()
}

// trashPruneInterval: trash expires by the day, so hourly is plenty.
const trashPruneInterval = time.Hour

// PruneTrash drops expired trash of every user the registry knows (from
// the registry's user index: no record is decoded).
func (m *Manager) PruneTrash(ctx context.Context) {
	users, err := m.store.Users(ctx)
	if err != nil {
		m.log.Warn("trash prune scan failed", "error", err)
		return
	}
	for _, u := range users {
		if n, err := m.storage.PruneTrash(ctx, u, m.now()); err != nil {
			m.log.Warn("trash prune failed", "user_id", u, "error", err)
		} else if n > 0 {
			m.log.Info("expired trash pruned", "user_id", u, "objects", n)
		}
	}
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
func (m *Manager) StorageStats(ctx context.Context, user string) (mounts.TierStats, error) {
	userID, err := ids.ParseUserID(user)
	if err != nil {
		return mounts.TierStats{}, err
	}
	return m.storage.Stats(ctx, userID)
}

// CleanStorage deletes one tier of a user's stored objects. It is an
// explicit admin action and refuses while the user has any sandbox that is
// not stopped (its files would come back, or vanish under it).
func (m *Manager) CleanStorage(ctx context.Context, user string, tier string) (int64, error) {
	userID, err := ids.ParseUserID(user)
	if err != nil {
		return 0, err
	}
	if tier != "hot" && tier != "cold" && tier != "trash" {
		return 0, invalid("tier %q: want hot, cold or trash", tier)
	}
	active, err := m.List(ctx, userID.String(), false)
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

// RestoreStorage brings trashed versions of a user's hot file or directory
// back (see mounts.Storage.RestoreHot): the version current at `at`, or the
// last one trashed. Like CleanStorage it refuses while the user has any
// sandbox that is not stopped: a running sandbox's next sync does not know
// the restored objects and would turn them into conflicts.
func (m *Manager) RestoreStorage(ctx context.Context, user string, path string, at time.Time) ([]string, error) {
	userID, err := ids.ParseUserID(user)
	if err != nil {
		return nil, err
	}
	if path == "" {
		return nil, invalid("path is required (a file or directory relative to the home)")
	}
	active, err := m.List(ctx, userID.String(), false)
	if err != nil {
		return nil, err
	}
	if len(active) > 0 {
		return nil, fmt.Errorf("user %q has %d active sandbox(es); stop them first: %w", userID, len(active), errdefs.ErrFailedPrecondition)
	}
	return m.storage.RestoreHot(ctx, userID, path, at)
}
