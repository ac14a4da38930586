package registry_test

import (
	"context"
	"fmt"
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

// rawPut writes bytes straight into a bbolt file, as a bug, a disk error or
// an older daemon might have left them.
func rawPut(t *testing.T, path string, bucket, key string, value []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), value)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestBoltMigratesVersion2: a file written by schema version 2 (no
// indexes) gets its live/ and stopped/ indexes built, and a record that
// does not decode is quarantined instead of failing the open.
func TestBoltMigratesVersion2(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	now := time.Now().UTC().Truncate(time.Second)
	rawPut(t, path, "meta", "schema_version", []byte("2"))
	rawPut(t, path, "idempotency", "k", []byte("sbx-000000000001"))
	rawPut(t, path, "sandboxes", "sbx-000000000001", []byte(`{"sandbox_id":"sbx-000000000001","user_id":"u","status":"running","created_at":"`+now.Format(time.RFC3339)+`"}`))
	rawPut(t, path, "sandboxes", "sbx-000000000002", []byte(`{"sandbox_id":"sbx-000000000002","user_id":"u","status":"stopped","created_at":"`+now.Format(time.RFC3339)+`","stopped_at":"`+now.Format(time.RFC3339)+`"}`))
	rawPut(t, path, "sandboxes", "sbx-000000000003", []byte(`{"sandbox_id": truncated`))
	s, err := registry.OpenBolt(ctx, path)
	if err != nil {
		t.Fatalf("open a version 2 file with a corrupt record: %v", err)
	}
	defer s.Close()
	live, err := s.List(ctx, registry.Filter{Statuses: registry.LiveStatuses()})
	if err != nil || len(live) != 1 || live[0].ID != "sbx-000000000001" {
		t.Fatalf("live after migration: %v %v", err, live)
	}
	all, err := s.List(ctx, registry.Filter{})
	if err != nil || len(all) != 2 {
		t.Fatalf("all after migration: %v %d", err, len(all))
	}
	c, _ := s.Counts(ctx)
	if c.ByStatus[registry.StatusRunning] != 1 || c.ByStatus[registry.StatusStopped] != 1 {
		t.Fatalf("counts after migration: %+v", c)
	}
	if us, _ := s.Users(ctx); fmt.Sprint(us) != "[u]" {
		t.Fatalf("users after migration: %v", us)
	}
	q, err := s.Quarantined(ctx)
	if err != nil || len(q) != 1 || q[0].ID != "sbx-000000000003" || string(q[0].Raw) != `{"sandbox_id": truncated` || q[0].Error == "" {
		t.Fatalf("quarantine after migration: %v %+v", err, q)
	}
}

// TestBoltQuarantinesCorruptRecords: a record that stops decoding after
// it was written is skipped and quarantined by whatever reads it first
// (never failing List), and a list of live records never decodes the
// terminal ones: the index is what periodic loops read.
func TestBoltQuarantinesCorruptRecords(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := registry.OpenBolt(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i, st := range []registry.Status{registry.StatusRunning, registry.StatusRunning, registry.StatusStopped} {
		r := &registry.Record{ID: fmt.Sprintf("sbx-00000000000%d", i+1), UserID: "u", Status: st, CreatedAt: now}
		if st.Terminal() {
			r.StoppedAt = &now
		}
		if err := s.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	rawPut(t, path, "sandboxes", "sbx-000000000002", []byte("\x00garbage"))
	rawPut(t, path, "sandboxes", "sbx-000000000003", []byte("{also garbage"))
	s, err = registry.OpenBolt(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	live, err := s.List(ctx, registry.Filter{Statuses: registry.LiveStatuses()})
	if err != nil || len(live) != 1 || live[0].ID != "sbx-000000000001" {
		t.Fatalf("live list with a corrupt live record: %v %v", err, live)
	}
	q, _ := s.Quarantined(ctx)
	if len(q) != 1 || q[0].ID != "sbx-000000000002" {
		t.Fatalf("after the live list, quarantine = %+v; want only the live record (terminal ones are not decoded)", q)
	}
	if _, err := s.Get(ctx, "sbx-000000000003"); !errdefs.IsNotFound(err) {
		t.Fatalf("get of a corrupt record: %v, want NotFound", err)
	}
	if _, err := s.Update(ctx, "sbx-000000000002", func(*registry.Record) error { return nil }); !errdefs.IsNotFound(err) {
		t.Fatalf("update of a quarantined record: %v, want NotFound", err)
	}
	all, err := s.List(ctx, registry.Filter{})
	if err != nil || len(all) != 1 {
		t.Fatalf("list all: %v %d", err, len(all))
	}
	if q, _ := s.Quarantined(ctx); len(q) != 2 {
		t.Fatalf("quarantine = %+v, want both corrupt records", q)
	}
	if c, _ := s.Counts(ctx); c.ByStatus[registry.StatusRunning] != 1 || c.ByStatus[registry.StatusStopped] != 0 {
		t.Fatalf("counts still include quarantined records: %+v", c)
	}
}
