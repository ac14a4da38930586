package cold

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
	"golang.org/x/sys/unix"
)

// TestLocalDriver: without a bucket, cold files are the local store's
// users/USER/cold directory, bind-mounted onto the mountpoint.
func TestLocalDriver(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	dir := testDir(t)
	storage := filepath.Join(dir, "storage")
	d, err := Select(SelectConfig{Mode: "auto", LocalStorageDir: storage, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name() != DriverLocal {
		t.Fatalf("auto without a bucket chose %s", d.Name())
	}
	m := newTestManager(t, dir, d, WithOwner(1234, 5678))

	mp, err := m.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	sandbox := filepath.Join(dir, "sandbox")
	bindLikeContainer(t, mp, sandbox)
	if err := os.WriteFile(filepath.Join(sandbox, "big.bin"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(storage, "users", "alice", "cold")
	if b, err := os.ReadFile(filepath.Join(src, "big.bin")); err != nil || string(b) != "data" {
		t.Fatalf("file written in the sandbox, in the store: %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil || st.Uid != 1234 || st.Gid != 5678 {
		t.Fatalf("store dir owner: %v %d:%d", err, st.Uid, st.Gid)
	}
	if err := m.Release(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(mp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mountpoint after Release: %v", err)
	}
	if _, err := os.Stat(filepath.Join(src, "big.bin")); err != nil {
		t.Errorf("the store lost the file: %v", err)
	}
	if err := unmountStack(sandbox); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Acquire(ctx, "alice"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Acquire after Close = %v, want FailedPrecondition", err)
	}
	assertNoLeftovers(t, dir)
}

// TestRestartStacksOnStaleMounts simulates a daemon crash: supervision stops
// and the FUSE daemons die, leaving dead mounts on the mountpoints. The next
// manager on the same directory stacks a new mount on a dead one (a sandbox
// that survived the crash gets its files back), SweepStale removes the dead
// mounts nobody re-acquired, and Release removes the whole stack.
func TestRestartStacksOnStaleMounts(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	dir := testDir(t)
	d, _ := fakeDriver(t, "fake-fuse")

	m1, err := NewManager(ctx, ManagerConfig{Dir: filepath.Join(dir, "cold"), Driver: d, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	mp, err := m1.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	carol, err := m1.Acquire(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	sandbox := filepath.Join(dir, "sandbox")
	bindLikeContainer(t, mp, sandbox)
	for _, u := range []ids.UserID{"alice", "carol"} { // the crash
		fm := fuseMountOf(t, m1, u)
		fm.cancel()
		<-fm.done
		pid := fm.PID()
		_ = unix.Kill(pid, unix.SIGKILL)
		eventually(t, 5*time.Second, "daemon death", func() bool { return !alive(pid) })
	}
	var st unix.Stat_t
	if err := unix.Stat(sandbox, &st); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("sandbox after the crash: %v, want ENOTCONN", err)
	}

	m2 := newTestManager(t, dir, d)
	again, err := m2.Acquire(ctx, "alice")
	if err != nil || again != mp {
		t.Fatalf("Acquire after restart = %q, %v", again, err)
	}
	pid := fuseMountOf(t, m2, "alice").PID()
	if got := mtimeOf(t, sandbox); got != int64(pid) {
		t.Fatalf("surviving sandbox served by %d, want the new daemon %d", got, pid)
	}
	if n := len(stackAt(mustMountinfo(t), mp)); n != 2 {
		t.Fatalf("%d mounts on %s, want the dead one and the new one", n, mp)
	}

	if _, err := m2.SweepStale(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(stackAt(mustMountinfo(t), carol)); n != 0 {
		t.Errorf("SweepStale left %d mounts on carol's mountpoint", n)
	}
	if _, err := os.Lstat(carol); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("carol's mountpoint after SweepStale: %v", err)
	}
	if got := mtimeOf(t, mp); got != int64(pid) {
		t.Fatalf("SweepStale touched alice's held mount")
	}

	if err := m2.Release(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if n := len(stackAt(mustMountinfo(t), mp)); n != 0 {
		t.Errorf("Release left %d mounts on %s", n, mp)
	}
	if err := unmountStack(sandbox); err != nil {
		t.Fatal(err)
	}
	if err := m2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m1.unbindIfEmpty(); err != nil { // the crashed manager's binds
		t.Fatal(err)
	}
	assertNoLeftovers(t, dir)
}
