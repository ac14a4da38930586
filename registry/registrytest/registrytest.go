// Package registrytest is the conformance suite every registry.Store must
// pass. It owns no production code.
package registrytest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/registry"
)

// Run exercises a fresh, empty store returned by open.
func Run(t *testing.T, open func(t *testing.T) registry.Store) {
	ctx := context.Background()
	rec := func(id string, user ids.UserID, at time.Time) *registry.Record {
		return &registry.Record{
			ID: id, UserID: user, Status: registry.StatusCreating, CreatedAt: at,
			Config: registry.Config{Image: "img", Env: map[string]string{"A": "1"}},
		}
	}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	t.Run("CreateGet", func(t *testing.T) {
		s := open(t)
		if err := s.Create(ctx, rec("sbx-000000000001", "u1", base)); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "sbx-000000000001")
		if err != nil {
			t.Fatal(err)
		}
		if got.UserID != "u1" || got.Config.Env["A"] != "1" || !got.CreatedAt.Equal(base) || got.UpdatedAt.IsZero() {
			t.Fatalf("round trip lost data: %+v", got)
		}
	})
	t.Run("Duplicate", func(t *testing.T) {
		s := open(t)
		r := rec("sbx-000000000001", "u1", base)
		if err := s.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, r); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("duplicate create: got %v, want AlreadyExists", err)
		}
	})
	t.Run("IdempotencyKey", func(t *testing.T) {
		s := open(t)
		first := rec("sbx-000000000001", "u1", base)
		first.IdempotencyKey = "k1"
		if err := s.Create(ctx, first); err != nil {
			t.Fatal(err)
		}
		again := rec("sbx-000000000002", "u1", base.Add(time.Hour))
		again.IdempotencyKey = "k1"
		var ic *registry.IdempotencyConflict
		if err := s.Create(ctx, again); !errors.As(err, &ic) || ic.SandboxID != first.ID || !errdefs.IsAlreadyExists(err) {
			t.Fatalf("second create with the same key: got %v, want IdempotencyConflict naming %s", err, first.ID)
		}
		if _, err := s.Get(ctx, again.ID); !errdefs.IsNotFound(err) {
			t.Fatalf("refused create was stored: %v", err)
		}
		other := rec("sbx-000000000003", "u1", base.Add(time.Hour))
		other.IdempotencyKey = "k2"
		if err := s.Create(ctx, other); err != nil {
			t.Fatalf("another key: %v", err)
		}
		later := rec("sbx-000000000004", "u1", base.Add(registry.IdempotencyWindow+time.Second))
		later.IdempotencyKey = "k1"
		if err := s.Create(ctx, later); err != nil {
			t.Fatalf("key reused after the window: %v", err)
		}
		// Concurrent creates with one key: exactly one wins.
		var wg sync.WaitGroup
		var won sync.Map
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				r := rec(fmt.Sprintf("sbx-00000000010%d", i), "u1", base)
				r.IdempotencyKey = "race"
				if s.Create(ctx, r) == nil {
					won.Store(i, true)
				}
			}(i)
		}
		wg.Wait()
		n := 0
		won.Range(func(any, any) bool { n++; return true })
		if n != 1 {
			t.Fatalf("%d concurrent creates with one key succeeded, want 1", n)
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		s := open(t)
		for _, r := range []*registry.Record{nil, {}, {ID: "x"}, {ID: "x", UserID: "u"}, {ID: "x", Status: registry.StatusReady}} {
			if err := s.Create(ctx, r); !errdefs.IsInvalidArgument(err) {
				t.Fatalf("create %+v: got %v, want InvalidArgument", r, err)
			}
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(ctx, "sbx-doesnotexist"); !errdefs.IsNotFound(err) {
			t.Fatalf("get: got %v", err)
		}
		if _, err := s.Update(ctx, "sbx-doesnotexist", func(*registry.Record) error { return nil }); !errdefs.IsNotFound(err) {
			t.Fatalf("update: got %v", err)
		}
	})
	t.Run("UpdateAtomicAndAbortable", func(t *testing.T) {
		s := open(t)
		if err := s.Create(ctx, rec("sbx-000000000001", "u1", base)); err != nil {
			t.Fatal(err)
		}
		stop := base.Add(time.Hour)
		got, err := s.Update(ctx, "sbx-000000000001", func(r *registry.Record) error {
			r.Status = registry.StatusStopped
			r.StoppedAt = &stop
			r.StopReason = "user_requested"
			return nil
		})
		if err != nil || got.Status != registry.StatusStopped {
			t.Fatalf("update: %v %+v", err, got)
		}
		boom := errors.New("boom")
		if _, err := s.Update(ctx, "sbx-000000000001", func(r *registry.Record) error {
			r.Status = registry.StatusFailed
			return boom
		}); !errors.Is(err, boom) {
			t.Fatalf("aborted update: got %v", err)
		}
		got, _ = s.Get(ctx, "sbx-000000000001")
		if got.Status != registry.StatusStopped || got.StopReason != "user_requested" || got.StoppedAt == nil || !got.StoppedAt.Equal(stop) {
			t.Fatalf("aborted update changed the record: %+v", got)
		}
		if _, err := s.Update(ctx, "sbx-000000000001", func(r *registry.Record) error { r.ID = "other"; return nil }); !errdefs.IsInvalidArgument(err) {
			t.Fatalf("id change: got %v", err)
		}
	})
	t.Run("ConcurrentUpdates", func(t *testing.T) {
		s := open(t)
		if err := s.Create(ctx, rec("sbx-000000000001", "u1", base)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Update(ctx, "sbx-000000000001", func(r *registry.Record) error {
					r.Config.Pids++
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		got, _ := s.Get(ctx, "sbx-000000000001")
		if got.Config.Pids != 20 {
			t.Fatalf("lost updates: pids=%d, want 20", got.Config.Pids)
		}
	})
	t.Run("CopiesAreIsolated", func(t *testing.T) {
		s := open(t)
		r := rec("sbx-000000000001", "u1", base)
		if err := s.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		r.Config.Env["A"] = "mutated"
		got, _ := s.Get(ctx, "sbx-000000000001")
		got.Config.Env["A"] = "mutated too"
		again, _ := s.Get(ctx, "sbx-000000000001")
		if again.Config.Env["A"] != "1" {
			t.Fatalf("store shares memory with callers: %q", again.Config.Env["A"])
		}
	})
	t.Run("ListFilterOrder", func(t *testing.T) {
		s := open(t)
		for i, u := range []ids.UserID{"u2", "u1", "u1"} {
			r := rec(fmt.Sprintf("sbx-00000000000%d", 3-i), u, base.Add(time.Duration(i)*time.Minute))
			if err := s.Create(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Update(ctx, "sbx-000000000001", func(r *registry.Record) error { r.Status = registry.StatusReady; return nil }); err != nil {
			t.Fatal(err)
		}
		all, _ := s.List(ctx, registry.Filter{})
		if len(all) != 3 || all[0].ID != "sbx-000000000003" || all[2].ID != "sbx-000000000001" {
			t.Fatalf("list order: %v", recordIDs(all))
		}
		u1, _ := s.List(ctx, registry.Filter{UserID: "u1"})
		if len(u1) != 2 {
			t.Fatalf("user filter: %v", recordIDs(u1))
		}
		ready, _ := s.List(ctx, registry.Filter{UserID: "u1", Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
		if len(ready) != 1 || ready[0].ID != "sbx-000000000001" {
			t.Fatalf("status filter: %v", recordIDs(ready))
		}
		none, _ := s.List(ctx, registry.Filter{UserID: "nobody"})
		if len(none) != 0 {
			t.Fatalf("unknown user: %v", recordIDs(none))
		}
	})
	t.Run("StatusChangesMoveBetweenLiveAndStopped", func(t *testing.T) {
		s := open(t)
		for i := 1; i <= 4; i++ {
			if err := s.Create(ctx, rec(fmt.Sprintf("sbx-00000000000%d", i), "u", base.Add(time.Duration(i)*time.Second))); err != nil {
				t.Fatal(err)
			}
		}
		stop := func(id string, status registry.Status, at time.Time, pending bool) {
			t.Helper()
			if _, err := s.Update(ctx, id, func(r *registry.Record) error {
				r.Status, r.StoppedAt, r.HotSyncPending = status, &at, pending
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		stop("sbx-000000000001", registry.StatusStopped, base.Add(time.Hour), false)
		stop("sbx-000000000002", registry.StatusFailed, base.Add(2*time.Hour), true)
		if _, err := s.Update(ctx, "sbx-000000000003", func(r *registry.Record) error { r.Status = registry.StatusRunning; return nil }); err != nil {
			t.Fatal(err)
		}
		live, err := s.List(ctx, registry.Filter{Statuses: registry.LiveStatuses()})
		if err != nil || len(live) != 2 || live[0].ID != "sbx-000000000003" || live[1].ID != "sbx-000000000004" {
			t.Fatalf("live list: %v %v", err, recordIDs(live))
		}
		c, err := s.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[registry.Status]int{registry.StatusStopped: 1, registry.StatusFailed: 1, registry.StatusRunning: 1, registry.StatusCreating: 1}
		for st, n := range want {
			if c.ByStatus[st] != n {
				t.Errorf("count %s = %d, want %d (%v)", st, c.ByStatus[st], n, c.ByStatus)
			}
		}
		if c.TerminalPending != 1 {
			t.Errorf("terminal pending = %d, want 1", c.TerminalPending)
		}
		// A pending sync that later succeeds leaves the count.
		if _, err := s.Update(ctx, "sbx-000000000002", func(r *registry.Record) error { r.HotSyncPending = false; return nil }); err != nil {
			t.Fatal(err)
		}
		if c, _ := s.Counts(ctx); c.TerminalPending != 0 || c.ByStatus[registry.StatusFailed] != 1 {
			t.Errorf("after the retried sync: %+v", c)
		}
	})
	t.Run("Users", func(t *testing.T) {
		s := open(t)
		for i, u := range []ids.UserID{"bob", "alice", "bob"} {
			if err := s.Create(ctx, rec(fmt.Sprintf("sbx-00000000000%d", i+1), u, base)); err != nil {
				t.Fatal(err)
			}
		}
		if us, err := s.Users(ctx); err != nil || fmt.Sprint(us) != "[alice bob]" {
			t.Fatalf("users: %v %v", us, err)
		}
	})
	t.Run("PooledClaim", func(t *testing.T) {
		s := open(t)
		pooled := &registry.Record{ID: "sbx-000000000001", Status: registry.StatusPooled, CreatedAt: base}
		if err := s.Create(ctx, pooled); err != nil {
			t.Fatalf("a pooled record has no user: %v", err)
		}
		if err := s.Create(ctx, &registry.Record{ID: "sbx-000000000009", UserID: "u1", Status: registry.StatusPooled, CreatedAt: base}); !errdefs.IsInvalidArgument(err) {
			t.Fatalf("pooled record with a user: got %v, want InvalidArgument", err)
		}
		if us, _ := s.Users(ctx); len(us) != 0 {
			t.Fatalf("a pooled record made a user: %v", us)
		}
		if rs, _ := s.List(ctx, registry.Filter{Statuses: registry.LiveStatuses()}); len(rs) != 0 {
			t.Fatalf("a pooled record is listed as live: %v", recordIDs(rs))
		}
		if rs, _ := s.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusPooled}}); len(rs) != 1 {
			t.Fatalf("pooled records: %v", recordIDs(rs))
		}
		holder := rec("sbx-000000000002", "u2", base)
		holder.IdempotencyKey = "held"
		if err := s.Create(ctx, holder); err != nil {
			t.Fatal(err)
		}
		claim := func(user ids.UserID, key string) (*registry.Record, error) {
			return s.Update(ctx, pooled.ID, func(r *registry.Record) error {
				r.Status, r.UserID, r.IdempotencyKey = registry.StatusCreating, user, key
				return nil
			})
		}
		var ic *registry.IdempotencyConflict
		if _, err := claim("u1", "held"); !errors.As(err, &ic) || ic.SandboxID != holder.ID {
			t.Fatalf("claim with a key another sandbox holds: got %v, want IdempotencyConflict naming %s", err, holder.ID)
		}
		if r, _ := s.Get(ctx, pooled.ID); r.Status != registry.StatusPooled || r.UserID != "" {
			t.Fatalf("a refused claim changed the record: %+v", r)
		}
		if _, err := claim("u1", "mine"); err != nil {
			t.Fatal(err)
		}
		again := rec("sbx-000000000003", "u1", base)
		again.IdempotencyKey = "mine"
		if err := s.Create(ctx, again); !errors.As(err, &ic) || ic.SandboxID != pooled.ID {
			t.Fatalf("create with the claimed key: got %v, want IdempotencyConflict naming %s", err, pooled.ID)
		}
		if us, _ := s.Users(ctx); fmt.Sprint(us) != "[u1 u2]" {
			t.Fatalf("users after the claim: %v", us)
		}
		if _, err := s.Update(ctx, pooled.ID, func(r *registry.Record) error { r.UserID = "u3"; return nil }); !errdefs.IsInvalidArgument(err) {
			t.Fatalf("changing a sandbox's user: got %v, want InvalidArgument", err)
		}
	})
	t.Run("Prune", func(t *testing.T) {
		s := open(t)
		for i := 1; i <= 3; i++ {
			r := rec(fmt.Sprintf("sbx-00000000000%d", i), "u", base)
			r.IdempotencyKey = fmt.Sprintf("k%d", i)
			if err := s.Create(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		for i, at := range []time.Time{base.Add(time.Hour), base.Add(3 * time.Hour)} {
			at := at
			if _, err := s.Update(ctx, fmt.Sprintf("sbx-00000000000%d", i+1), func(r *registry.Record) error {
				r.Status, r.StoppedAt = registry.StatusStopped, &at
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.Prune(ctx, base.Add(2*time.Hour))
		if err != nil || n != 1 {
			t.Fatalf("prune: %d %v, want 1", n, err)
		}
		if _, err := s.Get(ctx, "sbx-000000000001"); !errdefs.IsNotFound(err) {
			t.Fatalf("pruned record: %v", err)
		}
		for _, id := range []string{"sbx-000000000002", "sbx-000000000003"} {
			if _, err := s.Get(ctx, id); err != nil {
				t.Fatalf("%s (stopped after the cutoff, or live) was pruned: %v", id, err)
			}
		}
		// The pruned record's idempotency key names no sandbox any more.
		again := rec("sbx-000000000009", "u", base.Add(time.Minute))
		again.IdempotencyKey = "k1"
		if err := s.Create(ctx, again); err != nil {
			t.Fatalf("key of a pruned record: %v", err)
		}
		if _, err := s.Update(ctx, "sbx-000000000003", func(r *registry.Record) error {
			at := base.Add(4 * time.Hour)
			r.Status, r.StoppedAt, r.HotSyncPending = registry.StatusFailed, &at, true
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Prune(ctx, base.Add(100*time.Hour)); err != nil || n != 1 {
			t.Fatalf("second prune: %d %v, want 1 (live records and pending hot files stay)", n, err)
		}
		if _, err := s.Get(ctx, "sbx-000000000003"); err != nil {
			t.Fatalf("a record whose hot files are pending was pruned: %v", err)
		}
	})
}

func recordIDs(rs []*registry.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}
