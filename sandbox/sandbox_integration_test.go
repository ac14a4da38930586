//go:build linux

package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/mounts"
	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

func newManager(t *testing.T) (*Manager, *runtime.Runtime) {
	m, rt, _, _ := newManagerWithStorage(t)
	return m, rt
}

// newManagerWithStorage is newManager that also returns its host storage
// and the local bucket behind it.
func newManagerWithStorage(t *testing.T) (*Manager, *runtime.Runtime, *mounts.Storage, *objstore.Local) {
	return newManagerWrapped(t, func(s *mounts.Storage) Storage { return s })
}

// newManagerWrapped is newManagerWithStorage with the manager's storage
// wrapped (to watch or delay what the lifecycle asks of it).
func newManagerWrapped(t *testing.T, wrap func(*mounts.Storage) Storage) (*Manager, *runtime.Runtime, *mounts.Storage, *objstore.Local) {
	env := containerdtest.Start(t, "matrx-sbx-test")
	ctx := context.Background()
	rt, err := runtime.New(ctx, runtime.Config{Address: env.Address, Namespace: "matrx-sbx-test",
		StateDir: filepath.Join(env.Dir, "rt"), InitPath: env.InitPath, RelayPath: env.RelayPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	f, _ := os.Open(env.ImageTar)
	defer f.Close()
	if _, err := rt.Import(ctx, f); err != nil {
		t.Fatal(err)
	}
	l := DefaultLimits()
	l.DefaultImage = containerdtest.MinimalImage
	l.DefaultMemoryMB = 128
	// Small disks: admission counts every disk at its full size against
	// the host's free space, and these tests write almost nothing (20 GiB
	// each made two parallel tests fail on a host with 40 GiB free).
	l.DefaultDiskMB = 256
	l.ShutdownTimeout = time.Second
	storage, bucket := localStorage(t, env.Dir)
	m, err := New(Config{Store: registry.NewMemory(), Runtime: rt, Storage: wrap(storage), Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	return m, rt, storage, bucket
}

func TestExpiry(t *testing.T) {
	m, rt := newManager(t)
	ctx := context.Background()
	short, err := m.Create(ctx, CreateRequest{UserID: "u", Config: registry.Config{TTLSeconds: 60}})
	if err != nil {
		t.Fatal(err)
	}
	long, err := m.Create(ctx, CreateRequest{UserID: "u", Config: registry.Config{TTLSeconds: 3600}})
	if err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	m.ExpireDue(ctx)
	got, _ := m.Get(ctx, short.ID)
	if got.Status != registry.StatusExpired || got.StopReason != ReasonExpired || got.StoppedAt == nil {
		t.Fatalf("expired sandbox: %+v", got)
	}
	if ok, _ := rt.Running(ctx, short.ID); ok {
		t.Fatal("expired sandbox still running")
	}
	if got, _ := m.Get(ctx, long.ID); !got.Status.AcceptsExec() {
		t.Fatalf("sandbox within its TTL was stopped: %+v", got)
	}
	m.mu.Lock()
	_, kept := m.live[short.ID]
	m.mu.Unlock()
	if kept {
		t.Fatal("per-sandbox memory not released on expiry")
	}
}

func TestRecoverMarksLostSandboxes(t *testing.T) {
	m, rt := newManager(t)
	ctx := context.Background()
	s, err := m.Create(ctx, CreateRequest{UserID: "u", Config: registry.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	alive, err := m.Create(ctx, CreateRequest{UserID: "u", Config: registry.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	// The container vanishes behind the daemon's back (say, a host reboot).
	if err := rt.Destroy(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	// A record caught mid-create by a crash.
	now := time.Now().UTC()
	stuck := &registry.Record{ID: "sbx-00000000abcd", UserID: "u", Status: registry.StatusStarting, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := m.store.Create(ctx, stuck); err != nil {
		t.Fatal(err)
	}
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	<-m.Recovered()
	for _, id := range []string{s.ID, stuck.ID} {
		got, _ := m.Get(ctx, id)
		if got.Status != registry.StatusFailed || got.Error == "" {
			t.Fatalf("%s after recover: %+v", id, got)
		}
	}
	if got, _ := m.Get(ctx, alive.ID); !got.Status.AcceptsExec() {
		t.Fatalf("running sandbox disturbed by recover: %+v", got)
	}
	if _, err := m.Exec(ctx, s.ID, ExecInput{Command: "true"}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("exec on lost sandbox: %v", err)
	}
}

// TestRecoverDiscardsHotDirsOfSandboxesNeverReady: a crash during create
// leaves a hot dir with half a download and no manifest. Recovery removes
// it without uploading anything (the agent never ran), instead of turning
// the partial file into a conflict copy in the user's bucket; a sandbox
// that was ready keeps its files synced as before.
func TestRecoverDiscardsHotDirsOfSandboxesNeverReady(t *testing.T) {
	m, _, storage, bucket := newManagerWithStorage(t)
	ctx := context.Background()
	if err := storage.EnsureCold(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	put := func(key, body string) {
		t.Helper()
		if _, err := bucket.Put(ctx, key, strings.NewReader(body), int64(len(body)), objstore.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("users/u/hot/big.bin", "the whole file")

	now := time.Now().UTC()
	for _, c := range []struct {
		id     string
		status registry.Status
		synced bool
	}{
		{"sbx-00000000aaaa", registry.StatusStarting, false}, // caught mid-create
		{"sbx-00000000bbbb", registry.StatusRunning, true},   // was ready; its task is gone
	} {
		rec := &registry.Record{ID: c.id, UserID: "u", Status: c.status, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if c.synced {
			rec.HotSyncedAt = &now
		}
		if err := m.store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		home, err := storage.PrepareHot(c.id, "u", 0)
		if err != nil {
			t.Fatal(err)
		}
		// Half a download in both; the ready one also made a file.
		if err := os.WriteFile(filepath.Join(home, "big.bin"), []byte("the wh"), 0o644); err != nil {
			t.Fatal(err)
		}
		if c.synced {
			if err := os.WriteFile(filepath.Join(home, "work.txt"), []byte("agent output"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	<-m.Recovered()
	for _, id := range []string{"sbx-00000000aaaa", "sbx-00000000bbbb"} {
		if storage.HasHot(id) {
			t.Errorf("hot dir of %s left after recovery", id)
		}
	}
	var keys []string
	for obj, err := range bucket.List(ctx, "users/u/hot/") {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, strings.TrimPrefix(obj.Key, "users/u/hot/"))
	}
	// The ready sandbox's work is saved (its half file, for all anyone can
	// tell an edit by the agent, may land as its conflict copy); the
	// never-ready sandbox uploads nothing.
	if !slices.Contains(keys, "work.txt") {
		t.Errorf("the ready sandbox's work was not synced: %q", keys)
	}
	for _, k := range keys {
		if strings.Contains(k, "conflict-sbx-00000000aaaa") {
			t.Errorf("the never-ready sandbox uploaded %s", k)
		}
	}
	if got, _ := m.Get(ctx, "sbx-00000000aaaa"); got.Status != registry.StatusFailed || got.HotSyncedAt != nil || got.HotSyncPending {
		t.Errorf("never-ready sandbox after recovery (failed, never synced, nothing pending): %+v", got)
	}
}
