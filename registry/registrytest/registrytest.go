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
	"github.com/matrx-dev/matrx/registry"
)

// Run exercises a fresh, empty store returned by open.
func Run(t *testing.T, open func(t *testing.T) registry.Store) {
	ctx := context.Background()
	rec := func(id, user string, at time.Time) *registry.Record {
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
		for _, r := range []*registry.Record{nil, {}, {ID: "x"}, {ID: "x", UserID: "u"}} {
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
		for i, u := range []string{"u2", "u1", "u1"} {
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
			t.Fatalf("list order: %v", ids(all))
		}
		u1, _ := s.List(ctx, registry.Filter{UserID: "u1"})
		if len(u1) != 2 {
			t.Fatalf("user filter: %v", ids(u1))
		}
		ready, _ := s.List(ctx, registry.Filter{UserID: "u1", Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
		if len(ready) != 1 || ready[0].ID != "sbx-000000000001" {
			t.Fatalf("status filter: %v", ids(ready))
		}
		none, _ := s.List(ctx, registry.Filter{UserID: "nobody"})
		if len(none) != 0 {
			t.Fatalf("unknown user: %v", ids(none))
		}
	})
}

func ids(rs []*registry.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}
