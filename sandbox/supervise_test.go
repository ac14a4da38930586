package sandbox

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/registry"
)

// TestPruneRecords: --record-retention prunes stopped records older than
// the retention, never live ones or ones whose hot files are pending, and
// 0 keeps everything.
func TestPruneRecords(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	m := &Manager{store: registry.NewMemory(), log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}
	mk := func(id string, st registry.Status, stoppedAgo time.Duration, pending bool) {
		at := now.Add(-stoppedAgo)
		r := &registry.Record{ID: id, UserID: "u", Status: st, CreatedAt: at.Add(-time.Hour), HotSyncPending: pending}
		if st.Terminal() {
			r.StoppedAt = &at
		}
		if err := m.store.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	mk("sbx-000000000001", registry.StatusStopped, 48*time.Hour, false)
	mk("sbx-000000000002", registry.StatusFailed, 48*time.Hour, true)
	mk("sbx-000000000003", registry.StatusStopped, time.Hour, false)
	mk("sbx-000000000004", registry.StatusRunning, 0, false)
	m.PruneRecords(ctx, 0)
	if rs, _ := m.store.List(ctx, registry.Filter{}); len(rs) != 4 {
		t.Fatalf("retention 0 pruned: %d records left", len(rs))
	}
	m.PruneRecords(ctx, 24*time.Hour)
	for id, want := range map[string]bool{"sbx-000000000001": false, "sbx-000000000002": true, "sbx-000000000003": true, "sbx-000000000004": true} {
		if _, err := m.store.Get(ctx, id); (err == nil) != want {
			t.Errorf("%s kept = %v, want %v", id, err == nil, want)
		}
	}
}

// TestDeadlines: heartbeat deadlines count from readiness or the last
// heartbeat; idle expiry from the last activity; neither without a
// timeout.
func TestDeadlines(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	ready := t0.Add(10 * time.Second)
	hb := t0.Add(time.Minute)
	r := &registry.Record{ID: "sbx-000000000001", Status: registry.StatusRunning, CreatedAt: t0, ReadyAt: &ready}
	if !heartbeatDeadline(r).IsZero() || IdleExpiresAt(r) != nil {
		t.Fatal("deadlines without timeouts")
	}
	r.Config.HeartbeatTimeoutSeconds = 30
	if d := heartbeatDeadline(r); !d.Equal(ready.Add(30 * time.Second)) {
		t.Errorf("heartbeat deadline before any heartbeat: %v", d)
	}
	r.LastHeartbeatAt = &hb
	if d := heartbeatDeadline(r); !d.Equal(hb.Add(30 * time.Second)) {
		t.Errorf("heartbeat deadline after one: %v", d)
	}
	r.Config.IdleTimeoutSeconds = 60
	r.LastActivityAt = &hb
	if e := IdleExpiresAt(r); e == nil || !e.Equal(hb.Add(time.Minute)) {
		t.Errorf("idle expiry: %v", e)
	}
	r.Status = registry.StatusStopped
	if IdleExpiresAt(r) != nil {
		t.Error("a stopped sandbox has an idle expiry")
	}
}
