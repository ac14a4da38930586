package sandbox

import (
	"context"
	"time"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
)

// Repair kinds besides the runtime's (runtime.Leftover*): each repair is a
// log line, a matrx_reconcile_repairs_total{kind} count and a "repaired"
// event.
const (
	RepairRecord    = "record"     // a live record whose container is gone: stopped as failed
	RepairHotDir    = "hot_dir"    // the hot dir of a sandbox with no live record: synced, then removed
	RepairColdMount = "cold_mount" // a cold mount no live sandbox holds: unmounted
)

// RepairKinds lists every kind of repair.
func RepairKinds() []string {
	return []string{RepairRecord, runtime.LeftoverContainer, runtime.LeftoverProcesses, runtime.LeftoverSnapshot, runtime.LeftoverControlDir,
		runtime.LeftoverNetwork, RepairHotDir, RepairColdMount}
}

// Reconcile compares the registry with what exists and repairs every
// difference (at startup, after containerd comes back, and every
// --reconcile-interval):
//
//   - a ready or running record whose container is gone is stopped as
//     failed (runtime_lost), through the normal stop path, so its hot
//     files are synced first;
//   - containers (and their tasks), snapshots, control dirs and networks
//     of sandboxes that have no live record are removed (runtime.GC), and
//     then their hot dirs synced and removed;
//   - cold mounts no live sandbox holds are unmounted, once startup
//     recovery has re-acquired the survivors' mounts.
//
// Nothing that a live record (creating, starting, ready, running,
// shutting_down) names is ever touched: a create writes its record
// before it makes anything, and a stop marks the record terminal only
// after it released everything. Without containerd the runtime half is
// skipped.
func (m *Manager) Reconcile(ctx context.Context) {
	m.reconcileMu.Lock()
	defer m.reconcileMu.Unlock()
	if m.rt.Connected() == nil {
		m.reconcileRuntime(ctx)
	}
	if err := m.retryPending(ctx, true, m.shutdownSyncBudget()); err != nil {
		m.log.Warn("reconcile: hot dir scan failed", "error", err)
	}
	select {
	case <-m.recovered:
		users, err := m.storage.SweepCold(ctx)
		for _, u := range users {
			m.repaired(RepairColdMount, "", u, "unmounted a cold mount no live sandbox holds")
		}
		if err != nil {
			m.log.Warn("reconcile: cold mount sweep failed", "error", err)
		}
		slots, err := m.storage.SweepColdSlots(m.HasContainer)
		for _, id := range slots {
			m.repaired(RepairColdMount, id, "", "removed the cold slot of a sandbox with no live record")
		}
		if err != nil {
			m.log.Warn("reconcile: cold slot sweep failed", "error", err)
		}
	default:
	}
	m.forgetGone(ctx)
}

func (m *Manager) reconcileRuntime(ctx context.Context) {
	rs, err := m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
	if err != nil {
		m.log.Warn("reconcile: registry scan failed", "error", err)
		return
	}
	for _, r := range rs {
		st, err := m.rt.TaskState(ctx, r.ID)
		if err != nil || st.Container {
			continue // a task that is not running is the watch's to report
		}
		if m.stopAsync(ctx, r.ID, stopCause{reason: ReasonRuntimeLost, final: registry.StatusFailed,
			message: "its container is gone (removed outside matrxd?)"}) {
			m.repaired(RepairRecord, r.ID, r.UserID, "record said "+string(r.Status)+" but the container is gone")
		}
	}
	pooled, err := m.pooled(ctx)
	if err != nil {
		m.log.Warn("reconcile: warm pool scan failed", "error", err)
	}
	for _, r := range pooled {
		if st, err := m.rt.TaskState(ctx, r.ID); err == nil && !st.Running {
			if m.retirePooled(ctx, r.ID, "its task is not running") {
				m.repaired(RepairRecord, r.ID, "", "a pooled sandbox's task was not running")
			}
		}
	}
	left, err := m.rt.GC(ctx, runtime.GCPolicy{IsSandbox: ids.ValidSandboxID, Keep: m.HasContainer})
	for _, l := range left {
		if l.Kind == runtime.LeftoverContainer {
			m.closeHome(l.SandboxID)
		}
		m.repaired(l.Kind, l.SandboxID, "", "removed a "+l.Kind+" of a sandbox with no live record")
	}
	if err != nil {
		m.log.Warn("reconcile: runtime leftovers remain", "error", err)
	}
}

// forgetGone drops in-memory state of sandboxes that are no longer live.
func (m *Manager) forgetGone(ctx context.Context) {
	m.mu.Lock()
	ids := make([]string, 0, len(m.live))
	for id := range m.live {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		if !m.HasContainer(id) {
			m.forget(id)
		}
	}
}

// repaired logs, counts and publishes one repair.
func (m *Manager) repaired(kind, id string, userID ids.UserID, detail string) {
	m.log.Warn("reconcile: repaired", "kind", kind, "sandbox_id", id, "user_id", userID, "detail", detail)
	m.metrics.IncReconcileRepair(kind)
	m.emit(Event{Type: EventRepaired, SandboxID: id, UserID: userID, Repair: kind, Detail: detail})
}

// RunReconcile reconciles every interval until ctx ends (the startup
// reconcile is part of Recover).
func (m *Manager) RunReconcile(ctx context.Context, interval time.Duration) {
	every(ctx, interval, m.Reconcile)
}

// PruneRecords deletes terminal records that stopped more than retention
// ago (never when retention is 0). Records whose hot files are still
// pending stay.
func (m *Manager) PruneRecords(ctx context.Context, retention time.Duration) {
	if retention <= 0 {
		return
	}
	n, err := m.store.Prune(ctx, m.now().Add(-retention))
	if err != nil {
		m.log.Warn("record pruning failed", "error", err)
		return
	}
	if n > 0 {
		m.log.Info("pruned stopped sandbox records", "records", n, "retention", retention.String())
	}
}

// Quarantined lists the registry records that failed to decode (for the
// admin route).
func (m *Manager) Quarantined(ctx context.Context) ([]registry.Quarantined, error) {
	return m.store.Quarantined(ctx)
}
