package registry_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/registry/registrytest"
	bolt "go.etcd.io/bbolt"
)

func TestMemoryConformance(t *testing.T) {
	registrytest.Run(t, func(t *testing.T) registry.Store { return registry.NewMemory() })
}

func TestBoltConformance(t *testing.T) {
	registrytest.Run(t, func(t *testing.T) registry.Store {
		s, err := registry.OpenBolt(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestBoltSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state", "registry.db")
	s, err := registry.OpenBolt(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := s.Create(ctx, &registry.Record{ID: "sbx-000000000001", UserID: "u", Status: registry.StatusReady, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = registry.OpenBolt(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(ctx, "sbx-000000000001")
	if err != nil || got.Status != registry.StatusReady || !got.CreatedAt.Equal(now) {
		t.Fatalf("after reopen: %v %+v", err, got)
	}
}

func TestBoltRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("schema_version"), []byte("99"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.OpenBolt(ctx, path); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("newer schema: got %v, want FailedPrecondition", err)
	}
}

func TestBoltLockedByAnotherOpen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := registry.OpenBolt(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// bbolt's flock is per open file description, so a second open in the
	// same process contends like a second daemon would.
	if _, err := registry.OpenBolt(ctx, path); !errdefs.IsUnavailable(err) {
		t.Fatalf("second open: got %v, want Unavailable", err)
	}
}
