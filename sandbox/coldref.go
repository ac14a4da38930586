package sandbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/registry"
)

// reacquireCold takes a cold reference again for a sandbox that survived a
// daemon restart (references are counted in memory, one per sandbox). If
// the sandbox stopped meanwhile (its stop found no reference to release),
// the reference goes back at once: a stop claims the record before it
// releases, so either the stop sees this reference or this sees the stop.
func (m *Manager) reacquireCold(ctx context.Context, r *registry.Record, log *slog.Logger) {
	actx, cancel := context.WithTimeout(ctx, coldAcquireBudget)
	defer cancel()
	acquire := func() error { _, err := m.storage.AcquireCold(actx, r.UserID, r.ID); return err }
	if r.FromPool || r.ColdSlot {
		acquire = func() error { return m.storage.AcquireColdSlot(actx, r.UserID, r.ID) }
	}
	if err := acquire(); err != nil {
		log.Warn("recover: cold mount failed", "error", err)
		return
	}
	if cur, err := m.store.Get(ctx, r.ID); err == nil && cur.Status.AcceptsExec() {
		return
	}
	if err := m.storage.ReleaseCold(context.WithoutCancel(ctx), r.UserID, r.ID); err != nil {
		log.Warn("recover: cold release failed", "error", err)
	}
}

// startColdSlot mounts the user's cold storage into the sandbox's slot
// (AcquireColdSlot) in the background (inBackground), beside EnsureCold
// (ensureColdPrefixBeside): no cold driver needs the user's prefix to exist. S3
// has no directories, so a FUSE daemon serves a prefix without objects as
// an empty directory (s3fs 1.90's start-up check of the prefix stats its
// mount root, which it answers from the mountpoint without asking S3), and
// the shared mount and the local driver make the user's directories
// themselves.
func (m *Manager) startColdSlot(ctx context.Context, userID ids.UserID, id string) (wait func() (time.Duration, error)) {
	return inBackground(func() error { return m.storage.AcquireColdSlot(ctx, userID, id) })
}

// coldAcquireBudget bounds one cold (re-)mount during recovery.
const coldAcquireBudget = 30 * time.Second
