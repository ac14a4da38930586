package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/registry"
)

func pagingManager(t *testing.T, n int) *Manager {
	t.Helper()
	m := &Manager{store: registry.NewMemory(), limits: DefaultLimits(), log: slog.New(slog.DiscardHandler), now: time.Now}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		status := registry.StatusRunning
		if i%3 == 0 {
			status = registry.StatusStopped
		}
		// Two records per timestamp: ties are ordered by id.
		r := &registry.Record{ID: fmt.Sprintf("sbx-%012x", i), UserID: ids.MustParseUserID(fmt.Sprintf("u%d", i%2)), Status: status, CreatedAt: base.Add(time.Duration(i/2) * time.Second)}
		if err := m.store.Create(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func TestListPageWalksEverythingNewestFirstOnce(t *testing.T) {
	m := pagingManager(t, 25)
	for _, all := range []bool{false, true} {
		want, err := m.List(context.Background(), "", all)
		if err != nil {
			t.Fatal(err)
		}
		for _, limit := range []int{1, 2, 7, 1000} {
			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				p, err := m.ListPage(context.Background(), PageRequest{All: all, Limit: limit, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				if p.Total != len(want) {
					t.Fatalf("total %d, want %d", p.Total, len(want))
				}
				if len(p.Records) > limit {
					t.Fatalf("page of %d with limit %d", len(p.Records), limit)
				}
				for _, r := range p.Records {
					got = append(got, r.ID)
				}
				if p.NextCursor == "" {
					break
				}
				cursor = p.NextCursor
				if pages > 100 {
					t.Fatal("cursor never ends")
				}
			}
			if len(got) != len(want) {
				t.Fatalf("all=%v limit=%d: walked %d records, want %d", all, limit, len(got), len(want))
			}
			for i, id := range got {
				if w := want[len(want)-1-i].ID; id != w {
					t.Fatalf("all=%v limit=%d: position %d is %s, want %s (newest first)", all, limit, i, id, w)
				}
			}
		}
	}
}

func TestListPageRejectsBadInput(t *testing.T) {
	m := pagingManager(t, 3)
	for _, req := range []PageRequest{
		{Limit: -1}, {Limit: MaxPageSize + 1}, {Cursor: "!!"}, {Cursor: "bm90LWEtY3Vyc29y"}, {UserID: "a/b"},
	} {
		if _, err := m.ListPage(context.Background(), req); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%+v: got %v, want InvalidArgument", req, err)
		}
	}
}

func TestCreateWithAUsedIdempotencyKeyReturnsTheFirstSandbox(t *testing.T) {
	m := &Manager{store: registry.NewMemory(), limits: DefaultLimits(), log: slog.New(slog.DiscardHandler), now: time.Now}
	ctx := context.Background()
	first := &registry.Record{ID: "sbx-00000000000a", UserID: "alice", Status: registry.StatusStarting, CreatedAt: time.Now().UTC(), IdempotencyKey: "k"}
	if err := m.store.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	// The first create finishes while the retry waits for it.
	go func() {
		time.Sleep(200 * time.Millisecond)
		now := time.Now()
		m.store.Update(ctx, first.ID, func(r *registry.Record) error {
			r.Status, r.HotSyncedAt = registry.StatusReady, &now
			return nil
		})
	}()
	got, err := m.Create(ctx, CreateRequest{UserID: "alice", IdempotencyKey: "k"})
	if err != nil || got.ID != first.ID || got.Status != registry.StatusReady {
		t.Fatalf("retry: %v %+v, want the first sandbox, ready", err, got)
	}
	rs, _ := m.store.List(ctx, registry.Filter{})
	if len(rs) != 1 {
		t.Fatalf("%d records, want 1", len(rs))
	}
	if _, err := m.Create(ctx, CreateRequest{UserID: "bob", IdempotencyKey: "k"}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("key reused by another user: got %v, want FailedPrecondition", err)
	}
	failed := &registry.Record{ID: "sbx-00000000000b", UserID: "alice", Status: registry.StatusFailed, Error: "boom", CreatedAt: time.Now().UTC(), IdempotencyKey: "k2"}
	if err := m.store.Create(ctx, failed); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, CreateRequest{UserID: "alice", IdempotencyKey: "k2"}); !errdefs.IsFailedPrecondition(err) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("key of a failed create: got %v, want FailedPrecondition", err)
	}
	for _, k := range []string{"has space", "tab\t", string(make([]byte, MaxIdempotencyKey+1))} {
		if _, err := m.Create(ctx, CreateRequest{UserID: "alice", IdempotencyKey: k}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("key %q: got %v, want InvalidArgument", k, err)
		}
	}
}
