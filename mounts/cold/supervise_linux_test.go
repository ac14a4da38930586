package cold

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
	"golang.org/x/sys/unix"
)

// fakeDriver returns the mount-s3 driver running the fake daemon for bucket
// with fast supervision timings.
func fakeDriver(t *testing.T, bucket string, opts ...Option) (*MountS3, string) {
	t.Helper()
	bin := fakeMountS3Binary(t)
	d, err := NewMountS3(FUSEConfig{S3: S3Config{Bucket: bucket}, Logger: testLogger(t)}, append([]Option{
		WithBinary(bin),
		WithStartTimeout(10 * time.Second),
		WithStopTimeout(2 * time.Second),
		WithProbeInterval(50*time.Millisecond, 2*time.Second),
		WithBackoff(10*time.Millisecond, 200*time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return d, bin
}

// TestSupervisionWithFakeDaemon runs the real supervisor against a fake
// mount-s3 that serves a real FUSE mount whose root mtime is its pid, and
// breaks it three ways: the daemon is killed, its FUSE connection drops while
// it stays alive (ENOTCONN), and its mount is unmounted behind its back. Each
// time the mount comes back, also inside an existing sandbox-style bind.
func TestSupervisionWithFakeDaemon(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	dir := testDir(t)
	d, bin := fakeDriver(t, "fake-fuse")
	var mu sync.Mutex
	var hooked []string
	m := newTestManager(t, dir, d, WithRemountHook(func(u ids.UserID) {
		mu.Lock()
		hooked = append(hooked, u.String())
		mu.Unlock()
	}))

	mp, err := m.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "cold", "mnt", "users", "alice", "cold"); mp != want {
		t.Fatalf("mountpoint %s, want %s", mp, want)
	}
	fm := fuseMountOf(t, m, "alice")
	pid := fm.PID()
	if got := mtimeOf(t, mp); got != int64(pid) {
		t.Fatalf("mountpoint served by %d, want daemon %d", got, pid)
	}
	if got := topFSType(t, mp); got != "fuse.fakefs" {
		t.Fatalf("top mount on %s is %q", mp, got)
	}
	cl := cmdline(pid)
	stage := filepath.Join(dir, "cold", "stage", "users", "alice")
	for _, want := range []string{bin + " fake-fuse " + stage + " ", "--prefix users/alice/cold/", "--uid 1000 --gid 1000", "--cache " + filepath.Join(dir, "cold", "cache", "users", "alice"), "--foreground"} {
		if !strings.Contains(cl, want) {
			t.Errorf("daemon command line %q lacks %q", cl, want)
		}
	}
	if pgid, err := unix.Getpgid(pid); err != nil || pgid != pid {
		t.Errorf("daemon pgid = %d, %v; want its own group %d", pgid, err, pid)
	}

	sandbox := filepath.Join(dir, "sandbox")
	bindLikeContainer(t, mp, sandbox)

	breaks := []struct {
		name   string
		break_ func(pid int)
	}{
		{"kill -9", func(pid int) { _ = unix.Kill(pid, unix.SIGKILL) }},
		// The fake stays alive after dropping its connection, so only the
		// ENOTCONN probe can notice.
		{"connection dropped, daemon alive", func(pid int) { _ = unix.Kill(pid, unix.SIGUSR1) }},
		{"unmounted behind its back", func(int) {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, b := range breaks {
		old := fm.PID()
		b.break_(old)
		eventually(t, 10*time.Second, b.name+": remount", func() bool { return fm.Remounts() == uint64(i+1) })
		pid := fm.PID()
		if pid == 0 || pid == old {
			t.Fatalf("%s: serving pid %d after remount, old %d", b.name, pid, old)
		}
		if got := mtimeOf(t, mp); got != int64(pid) {
			t.Fatalf("%s: mountpoint served by %d, want %d", b.name, got, pid)
		}
		if got := mtimeOf(t, sandbox); got != int64(pid) {
			t.Fatalf("%s: existing sandbox bind served by %d, want the new daemon %d", b.name, got, pid)
		}
		eventually(t, 5*time.Second, b.name+": old daemon gone", func() bool { return !alive(old) })
	}
	mu.Lock()
	if strings.Join(hooked, ",") != "alice,alice,alice" {
		t.Errorf("remount hook calls = %v", hooked)
	}
	mu.Unlock()
	if m.Remounts() != 3 {
		t.Errorf("manager counted %d remounts, want 3", m.Remounts())
	}

	last := fm.PID()
	if err := m.Release(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if alive(last) {
		t.Errorf("daemon %d alive after Release", last)
	}
	if fm.PID() != 0 {
		t.Errorf("PID() = %d after Unmount", fm.PID())
	}
	if _, err := os.Lstat(mp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mountpoint dir after Release: %v", err)
	}
	for _, sub := range []string{"stage", "cache"} {
		if _, err := os.Lstat(filepath.Join(dir, "cold", sub, "users", "alice")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s dir after Release: %v", sub, err)
		}
	}
	if err := unmountStack(sandbox); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, dir)
	for _, p := range fakePIDs(t, bin) {
		if alive(p) {
			t.Errorf("fake daemon %d alive", p)
		}
	}
}

// TestStartFailuresLeaveNothing checks every way a start can fail reports the
// daemon's output and leaves no process, mount or directory behind.
func TestStartFailuresLeaveNothing(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		bucket string
		opts   []Option
		class  func(error) bool
		want   []string
	}{
		{"daemon exits", "fake-fail", nil, errdefs.IsUnavailable, []string{"exited before mounting", "bucket fake-fail does not exist"}},
		{"daemon never mounts", "fake-hang", []Option{WithStartTimeout(700 * time.Millisecond)}, errdefs.IsUnavailable, []string{"did not mount", "within 700ms", "connecting to S3"}},
		{"binary missing", "fake-fuse", []Option{WithBinary("/nonexistent/mount-s3")}, errdefs.IsFailedPrecondition, []string{"/nonexistent/mount-s3"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := testDir(t)
			d, bin := fakeDriver(t, c.bucket, c.opts...)
			m := newTestManager(t, dir, d)
			_, err := m.Acquire(ctx, "alice")
			if err == nil || !c.class(err) {
				t.Fatalf("Acquire = %v, want a classified error", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, p := range fakePIDs(t, bin) {
				if alive(p) {
					t.Errorf("daemon %d alive after the failed start", p)
				}
			}
			if err := m.Release(ctx, "alice"); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("Release after a failed Acquire = %v, want FailedPrecondition", err)
			}
			if _, err := os.Lstat(filepath.Join(dir, "cold", "mnt", "users", "alice")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("user dir after the failed start: %v", err)
			}
			if err := m.Close(ctx); err != nil {
				t.Fatal(err)
			}
			assertNoLeftovers(t, dir)
		})
	}
}

// TestRefcount: concurrent Acquires share one daemon, the mount lives until
// the last Release, and a later Acquire mounts anew.
func TestRefcount(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	dir := testDir(t)
	d, _ := fakeDriver(t, "fake-fuse")
	m := newTestManager(t, dir, d)

	var wg sync.WaitGroup
	paths := make([]string, 3)
	errs := make([]error, 3)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = m.Acquire(ctx, "bob")
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Fatalf("Acquire %d = %q, %v", i, paths[i], errs[i])
		}
	}
	mp := paths[0]
	pid := fuseMountOf(t, m, "bob").PID()
	if n := len(fakeDaemonsServing(t, mp)); n != 1 {
		t.Fatalf("%d mounts on %s, want 1 shared mount", n, mp)
	}
	for i := 0; i < 2; i++ {
		if err := m.Release(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if !alive(pid) || mtimeOf(t, mp) != int64(pid) {
			t.Fatalf("mount gone after release %d of 3", i+1)
		}
	}
	if err := m.Release(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("daemon alive after the last Release")
	}
	if err := m.Release(ctx, "bob"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("extra Release = %v, want FailedPrecondition", err)
	}

	// A new Acquire after the last Release mounts again.
	if _, err := m.Acquire(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if p := fuseMountOf(t, m, "bob").PID(); p == pid || mtimeOf(t, mp) != int64(p) {
		t.Fatalf("re-acquired mount served by %d (old %d)", p, pid)
	}
	// A cancelled Acquire waiting on a live mount gives its reference back.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Acquire(cctx, "bob"); err == nil {
		// The mount was ready: the reference was taken; give it back.
		if err := m.Release(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Release(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, dir)
}

func fakeDaemonsServing(t *testing.T, mp string) []mountInfo {
	var out []mountInfo
	for _, mi := range stackAt(mustMountinfo(t), mp) {
		if mi.FSType == "fuse.fakefs" {
			out = append(out, mi)
		}
	}
	return out
}

// TestStageMustBePrivate: a stage below a shared mount cannot work (the
// kernel refuses to move mounts out of shared parents), so startFUSE refuses
// it up front.
func TestStageMustBePrivate(t *testing.T) {
	requireFUSE(t)
	dir := testDir(t)
	shared := filepath.Join(dir, "shared")
	for _, p := range []string{filepath.Join(shared, "stage"), filepath.Join(shared, "mp")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bindSelf(shared, unix.MS_SHARED); err != nil {
		t.Fatal(err)
	}
	d, bin := fakeDriver(t, "fake-fuse")
	// Checked before the daemon starts, and, once the driver is proven
	// (see "Answered later"), by the kernel refusing the move.
	for _, proven := range []bool{false, true} {
		d.proven.Store(proven)
		_, err := d.Mount(context.Background(), Request{
			UserID: "alice", Mountpoint: filepath.Join(shared, "mp"), StageDir: filepath.Join(shared, "stage"),
		})
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "private") {
			t.Fatalf("Mount with a shared stage (proven %v) = %v, want FailedPrecondition naming the private mount", proven, err)
		}
	}
	for _, p := range fakePIDs(t, bin) {
		if alive(p) {
			t.Errorf("daemon %d alive after the refused start", p)
		}
	}
	for _, p := range []string{"stage", "mp"} {
		if mounted, err := mountedAt(filepath.Join(shared, p)); err != nil || mounted {
			t.Errorf("%s mounted after the refused start: %v %v", p, mounted, err)
		}
	}
}

// TestAnsweredLater: until one of a driver's mounts has answered, a start
// waits for the daemon's INIT answer; after that it returns with the mount
// in place and INIT still unanswered, the kernel holding requests on the
// mount until the answer. A generation that then does not answer is
// remounted, and the driver waits for the answer again at its next start
// (see "Answered later"). The fake daemon holds INIT until its gate file
// exists and, if a fail file exists by then, exits unanswered.
func TestAnsweredLater(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	dir := testDir(t)
	d, bin := fakeDriver(t, "fake-gated", WithStartTimeout(5*time.Second))
	gate, fail := filepath.Join(filepath.Dir(bin), "gate"), filepath.Join(filepath.Dir(bin), "fail")
	touch := func(p string) {
		t.Helper()
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := newTestManager(t, dir, d)
	defer m.Close(ctx)

	// Nothing proven yet: the start waits for the answer.
	if d.proven.Load() {
		t.Fatal("a new driver counts as proven")
	}
	touch(gate)
	if _, err := m.Acquire(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if !d.proven.Load() {
		t.Fatal("driver not proven after a mount answered")
	}

	// Proven: bob's start returns while his daemon holds INIT.
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	bobMP, err := m.Acquire(actx, "bob")
	cancel()
	if err != nil {
		t.Fatalf("Acquire with INIT unanswered = %v, want the mount in place", err)
	}
	if got := topFSType(t, bobMP); got != "fuse.fakefs" {
		t.Fatalf("top mount on %s is %q, want fuse.fakefs", bobMP, got)
	}
	statted := make(chan error, 1)
	go func() {
		var st unix.Stat_t
		statted <- unix.Stat(bobMP, &st)
	}()
	select {
	case err := <-statted:
		t.Fatalf("stat of a mount whose INIT is unanswered returned (%v) instead of waiting", err)
	case <-time.After(100 * time.Millisecond):
	}
	touch(gate)
	select {
	case err := <-statted:
		if err != nil {
			t.Fatalf("stat once the daemon answered: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stat still waits after the daemon answered")
	}

	// A daemon that mounts and then fails its check: carol's start
	// returns, the supervisor sees the failure and remounts (failing while
	// the check fails), and the next start waits for the answer again.
	touch(fail)
	if _, err := m.Acquire(ctx, "carol"); err != nil {
		t.Fatalf("Acquire with a proven driver = %v", err)
	}
	eventually(t, 10*time.Second, "the driver no longer proven", func() bool { return !d.proven.Load() })
	_, err = m.Acquire(ctx, "dave")
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "bucket check failed") {
		t.Fatalf("Acquire once unproven with a failing daemon = %v, want Unavailable with its output", err)
	}
	if err := os.Remove(fail); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "carol's mount remounted", func() bool { return m.Remounts() > 0 })
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "cold", "mnt", "users", "carol", "cold"), &st); err != nil {
		t.Fatalf("carol's mount after the remount: %v", err)
	}
	for _, u := range []ids.UserID{"alice", "bob", "carol"} {
		if err := m.Release(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, dir)
}
