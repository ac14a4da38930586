//go:build linux

package sandbox

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/mounts"
	"github.com/matrx-dev/matrx/registry"
)

// orderedStorage is the real storage, watched: it says whether the cold
// mount started before EnsureCold ended, and can hold EnsureCold until the
// cold mount has started or make it fail.
type orderedStorage struct {
	*mounts.Storage
	ensureErr error

	mu          sync.Mutex
	ensured     bool
	coldBefore  bool // a cold mount started before EnsureCold had ended
	coldStarted chan struct{}
	startOnce   sync.Once
}

func (s *orderedStorage) EnsureCold(ctx context.Context, userID ids.UserID) error {
	// Beside the cold mount: it must start while this waits.
	select {
	case <-s.coldStarted:
	case <-time.After(20 * time.Second):
		return errors.New("test: the cold mount did not start while EnsureCold ran")
	}
	if s.ensureErr != nil {
		return s.ensureErr
	}
	err := s.Storage.EnsureCold(ctx, userID)
	s.mu.Lock()
	s.ensured = true
	s.mu.Unlock()
	return err
}

func (s *orderedStorage) AcquireColdSlot(ctx context.Context, userID ids.UserID, sandboxID string) error {
	s.mu.Lock()
	if !s.ensured {
		s.coldBefore = true
	}
	s.mu.Unlock()
	s.startOnce.Do(func() { close(s.coldStarted) })
	return s.Storage.AcquireColdSlot(ctx, userID, sandboxID)
}

// TestColdPrefixBesideColdMount: a create runs EnsureCold beside the cold mount
// (no driver needs the user's prefix, see startColdSlot), and a failed
// EnsureCold still fails the create and leaves nothing behind.
func TestColdPrefixBesideColdMount(t *testing.T) {
	for _, c := range []struct {
		name      string
		ensureErr error
	}{
		{"the cold prefix beside the cold mount", nil},
		{"a failing cold prefix beside the cold mount", errors.New("test: bucket refused the prefix")},
	} {
		t.Run(c.name, func(t *testing.T) {
			var st *orderedStorage
			m, rt, storage, bucket := newManagerWrapped(t, func(s *mounts.Storage) Storage {
				st = &orderedStorage{Storage: s, ensureErr: c.ensureErr, coldStarted: make(chan struct{})}
				return st
			})
			ctx := context.Background()
			rec, err := m.Create(ctx, CreateRequest{UserID: "u1", Config: registry.Config{TTLSeconds: 60}})
			if c.ensureErr != nil {
				if !errors.Is(err, c.ensureErr) {
					t.Fatalf("create with a failing EnsureCold: %v, want %v", err, c.ensureErr)
				}
				all, err := m.List(ctx, "u1", true)
				if err != nil || len(all) != 1 || all[0].Status != registry.StatusFailed {
					t.Fatalf("records after the failed create: %+v %v", all, err)
				}
				if storage.HasHot(all[0].ID) {
					t.Error("the failed create left its hot dir")
				}
				if ok, _ := rt.Running(ctx, all[0].ID); ok {
					t.Error("the failed create left its container running")
				}
				if slots, _ := storage.SweepColdSlots(func(string) bool { return true }); len(slots) != 0 {
					t.Errorf("the failed create left cold slots %v", slots)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st.mu.Lock()
			before := st.coldBefore
			st.mu.Unlock()
			if !before {
				t.Fatal("the cold mount waited for EnsureCold")
			}
			// EnsureCold really ran, and the sync-down marked the hot
			// prefix it found empty: the user's prefixes exist.
			for _, tier := range []string{"hot", "cold"} {
				n := 0
				for _, err := range bucket.List(ctx, ids.MustParseUserID("u1").KeyPrefix(tier)) {
					if err != nil {
						t.Fatal(err)
					}
					n++
				}
				if n == 0 {
					t.Errorf("the %s prefix of u1 was not made", tier)
				}
			}
			if _, err := m.Destroy(ctx, rec.ID, false, ReasonAdmin); err != nil {
				t.Fatal(err)
			}
		})
	}
}
