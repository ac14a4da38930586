package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/mounts"
	"github.com/matrx-dev/matrx/registry"
)

// finalSync runs the last hot sync of a stopped sandbox within budget
// (shutdownSyncBudget on a stop path, retrySyncBudget for a retry).
func (m *Manager) finalSync(ctx context.Context, id, userID string, budget time.Duration, log *slog.Logger) error {
	if !m.storage.HasHot(id) {
		return nil
	}
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
		if rec.Status.AcceptsExec() {
			recordSync(rec, err, now)
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
	wg.Wait()
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
