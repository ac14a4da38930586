package cold

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/ids"
)

// spareOf returns the spare serving userID's mount (it fails the test
// when a daemon of the user's own serves it).
func spareOf(t *testing.T, m *Manager, userID ids.UserID) *spare {
	t.Helper()
	sm, ok := mountOf(t, m, userID).(*spareMount)
	if !ok {
		t.Fatalf("mount for %s is %T, want a spare's", userID, mountOf(t, m, userID))
	}
	return sm.sp
}

func readySpares(m *Manager) int { n, _ := m.SpareStats(); return n }

// TestSpareMounts runs per-user mounts with spare daemons (WithSpares) on a
// real S3 server with s3fs: a new user's first Acquire takes a daemon
// started ahead and binds only that user's directory of it; the user's
// second Acquire shares it; the pool refills; a kill -9 of a taken spare
// remounts and reaches a sandbox-style bind; a name in the bucket that
// would point the bind elsewhere makes the user get a daemon of their own
// instead; Release stops a taken spare's daemon; Close leaves nothing.
// Budget: ~20 s.
func TestSpareMounts(t *testing.T) {
	d, srv, bucket := s3fsSetup(t, "")
	client := srv.Client()
	ctx := context.Background()
	dir := testDir(t)
	m := newTestManager(t, dir, d, WithSpares(2))
	eventually(t, 20*time.Second, "two spares", func() bool { return readySpares(m) == 2 })

	putObject(t, client, bucket, "users/alice/cold/a.txt", "alice's")
	putObject(t, client, bucket, "users/bob/cold/b.txt", "bob's")
	alice, err := m.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	sp := spareOf(t, m, "alice")
	if _, taken := m.SpareStats(); taken != 1 {
		t.Fatalf("%d spares taken, want 1", taken)
	}

	t.Run("a spare serves only its user's directory", func(t *testing.T) {
		if got := readFile(t, filepath.Join(alice, "a.txt")); got != "alice's" {
			t.Fatalf("alice's a.txt = %q", got)
		}
		if _, err := os.Stat(filepath.Join(alice, "b.txt")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("alice sees bob's file: %v", err)
		}
		if ents, err := os.ReadDir(filepath.Join(alice, "..")); err != nil || len(ents) != 1 || ents[0].Name() != "cold" {
			t.Fatalf("alice's mountpoint parent: %v %v", ents, err)
		}
		// No daemon of alice's own was started.
		if n := len(processesMentioning(filepath.Join(dir, "cold", "stage", "users", "alice"))); n != 0 {
			t.Fatalf("%d daemons of alice's own, want 0 (a spare serves her)", n)
		}
		if err := os.WriteFile(filepath.Join(alice, "new.txt"), []byte("written"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := getObject(t, client, bucket, "users/alice/cold/new.txt"); err != nil || got != "written" {
			t.Fatalf("alice's write in S3: %q, %v", got, err)
		}
		fi, err := os.Stat(filepath.Join(dir, "cold", "spare"))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("spares' directory: %v %v, want mode 0700", fi, err)
		}
	})

	t.Run("a user's second acquire shares the spare", func(t *testing.T) {
		again, err := m.Acquire(ctx, "alice")
		if err != nil || again != alice {
			t.Fatalf("second Acquire = %q, %v", again, err)
		}
		if spareOf(t, m, "alice") != sp {
			t.Fatal("second Acquire took another spare")
		}
		if _, taken := m.SpareStats(); taken != 1 {
			t.Fatalf("%d spares taken, want 1", taken)
		}
		if err := m.Release(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the pool refills", func(t *testing.T) {
		eventually(t, 20*time.Second, "refill to two", func() bool { return readySpares(m) == 2 })
	})

	box := filepath.Join(dir, "sandbox-alice")
	bindLikeContainer(t, alice, box)
	t.Run("kill -9 of a taken spare reaches its user's sandbox", func(t *testing.T) {
		fm := sp.mount.(*FUSEMount)
		old, before := fm.PID(), m.Remounts()
		if err := unix.Kill(old, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "remount", func() bool { return fm.Remounts() == 1 })
		if m.Remounts() != before+1 {
			t.Fatalf("manager counts %d remounts, want %d", m.Remounts(), before+1)
		}
		eventually(t, 5*time.Second, "rebind", func() bool { return len(stackAt(mustMountinfo(t), alice)) == 2 })
		putObject(t, client, bucket, "users/alice/cold/late.txt", "late")
		if got := readFile(t, filepath.Join(box, "late.txt")); got != "late" {
			t.Fatalf("alice's sandbox after the remount: %q", got)
		}
	})

	t.Run("a symlink in the bucket makes the user a daemon of their own", func(t *testing.T) {
		eventually(t, 20*time.Second, "a ready spare", func() bool { return readySpares(m) > 0 })
		m.mu.Lock()
		next := m.spares.ready[0]
		m.mu.Unlock()
		// Made through the spare's own mount: a symlink object in S3.
		if err := os.Symlink("/etc", filepath.Join(next.root, "mallory")); err != nil {
			t.Fatal(err)
		}
		mp, err := m.Acquire(ctx, "mallory")
		if err == nil {
			defer m.Release(ctx, "mallory")
			if _, bySpare := mountOf(t, m, "mallory").(*spareMount); bySpare {
				t.Fatal("a spare serves mallory through a symlink")
			}
			if _, err := os.Stat(filepath.Join(mp, "passwd")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("mallory's mountpoint shows the host's /etc: %v", err)
			}
		} else if !errdefs.IsUnavailable(err) {
			t.Fatalf("Acquire(mallory): %v", err)
		}
		// The refused spare is gone, its daemon with it.
		eventually(t, 10*time.Second, "refused spare's daemon gone", func() bool { return len(processesMentioning(next.stage)) == 0 })
		if _, err := os.Lstat(next.root); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("refused spare's directory: %v", err)
		}
	})

	t.Run("release stops a taken spare's daemon", func(t *testing.T) {
		if err := unmountStack(box); err != nil {
			t.Fatal(err)
		}
		if err := m.Release(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if n := len(stackAt(mustMountinfo(t), alice)); n != 0 {
			t.Fatalf("%d mounts left on %s", n, alice)
		}
		eventually(t, 10*time.Second, "alice's spare daemon gone", func() bool { return len(processesMentioning(sp.stage)) == 0 })
		for _, p := range []string{sp.root, sp.stage, sp.cache} {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("taken spare's %s after release: %v", p, err)
			}
		}
	})

	t.Run("close leaves nothing", func(t *testing.T) {
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
		assertNoLeftovers(t, dir)
		if got, err := getObject(t, client, bucket, "users/alice/cold/new.txt"); err != nil || got != "written" {
			t.Fatalf("alice's file in S3 after Close: %q, %v", got, err)
		}
	})
}

// TestSparesAfterCrash: a manager that crashed (supervision gone, daemons
// left) leaves a spare nobody took and one alice took; the next manager on
// the same directory detaches both: the first's daemon exits, the second
// keeps serving alice's existing sandbox until her next Acquire stacks a
// fresh mount on top; Release and Close then leave nothing. Budget: ~15 s.
func TestSparesAfterCrash(t *testing.T) {
	d, srv, bucket := s3fsSetup(t, "")
	ctx := context.Background()
	dir := testDir(t)
	putObject(t, srv.Client(), bucket, "users/alice/cold/a.txt", "alice's")
	m1, err := NewManager(ctx, ManagerConfig{Dir: filepath.Join(dir, "cold"), Driver: d, Logger: testLogger(t)}, WithSpares(2))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "two spares", func() bool { return readySpares(m1) == 2 })
	alice, err := m1.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	taken := spareOf(t, m1, "alice")
	box := filepath.Join(dir, "sandbox-alice")
	bindLikeContainer(t, alice, box)
	// The crash: no refill, no supervisor; the daemons live on.
	m1.spares.cancel()
	<-m1.spares.done
	m1.mu.Lock()
	left := slices.Clone(m1.spares.ready)
	m1.mu.Unlock()
	for _, sp := range append(left, taken) {
		fm := sp.mount.(*FUSEMount)
		fm.cancel()
		<-fm.done
	}

	m2 := newTestManager(t, dir, d) // no spares this time
	for _, sp := range left {
		eventually(t, 10*time.Second, "untaken spare's daemon gone", func() bool { return len(processesMentioning(sp.stage)) == 0 })
	}
	if got := readFile(t, filepath.Join(box, "a.txt")); got != "alice's" {
		t.Fatalf("alice's sandbox after the restart: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "cold", "spare", taken.label.String())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("taken spare's directory after the restart: %v", err)
	}
	again, err := m2.Acquire(ctx, "alice")
	if err != nil || again != alice {
		t.Fatalf("Acquire after restart = %q, %v", again, err)
	}
	if n := len(stackAt(mustMountinfo(t), alice)); n != 2 {
		t.Fatalf("%d mounts on alice's mountpoint, want the old spare's bind and her new daemon", n)
	}
	if err := unmountStack(box); err != nil {
		t.Fatal(err)
	}
	if err := m2.Release(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	// Her bind held the old spare's mount; with it gone the daemon exits.
	eventually(t, 10*time.Second, "taken spare's daemon gone", func() bool { return len(processesMentioning(taken.stage)) == 0 })
	if err := m2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m1.unbindIfEmpty(); err != nil { // the crashed manager's binds
		t.Fatal(err)
	}
	assertNoLeftovers(t, dir)
}

// TestSparesRefused: spares need per-user FUSE mounts and a sane count.
func TestSparesRefused(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	local, err := NewLocal(LocalConfig{StorageDir: filepath.Join(dir, "storage"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	fuse, _ := fakeDriver(t, "fake-fuse")
	for _, c := range []struct {
		name string
		d    Driver
		opts []ManagerOption
	}{
		{"local driver", local, []ManagerOption{WithSpares(1)}},
		{"shared mount", fuse, []ManagerOption{WithSharedMount(), WithSpares(1)}},
		{"negative", fuse, []ManagerOption{WithSpares(-1)}},
		{"too many", fuse, []ManagerOption{WithSpares(maxSpares + 1)}},
	} {
		_, err := NewManager(context.Background(), ManagerConfig{Dir: filepath.Join(dir, "cold"), Driver: c.d, Logger: testLogger(t)}, c.opts...)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want invalid argument", c.name, err)
		}
	}
	assertNoLeftovers(t, dir)
}
