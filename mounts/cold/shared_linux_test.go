package cold

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/ids"
)

// TestSharedMount runs the shared mode (WithSharedMount) on a real S3
// server with s3fs: one daemon for every user, each user's mountpoint a
// bind of their own directory only; names in the bucket that would point
// a bind elsewhere are refused; a kill -9 of the one daemon remounts and
// reaches an existing sandbox-style bind of every user; Release and Close
// leave nothing. Budget: ~15 s.
func TestSharedMount(t *testing.T) {
	d, srv, bucket := s3fsSetup(t, "")
	client := srv.Client()
	ctx := context.Background()
	dir := testDir(t)
	m := newTestManager(t, dir, d, WithSharedMount())
	shared := filepath.Join(dir, "cold", "all", "users")

	putObject(t, client, bucket, "users/alice/cold/a.txt", "alice's")
	putObject(t, client, bucket, "users/bob/cold/b.txt", "bob's")
	alice, err := m.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := m.Acquire(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	// carol has nothing in S3 yet: her directory is made through the mount.
	carol, err := m.Acquire(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("one daemon, each user sees only their own files", func(t *testing.T) {
		var fuse int
		for _, mi := range mountsAtOrBelow(t, filepath.Join(dir, "cold")) {
			if mi.FSType == "fuse.s3fs" && mi.Mountpoint == shared {
				fuse++
			}
		}
		if fuse != 1 {
			t.Fatalf("%d s3fs mounts on %s, want 1", fuse, shared)
		}
		if n := len(processesMentioning(filepath.Join(dir, "cold", "stage"))); n != 1 {
			t.Fatalf("%d s3fs processes, want 1", n)
		}
		if got := readFile(t, filepath.Join(alice, "a.txt")); got != "alice's" {
			t.Fatalf("alice's a.txt = %q", got)
		}
		for _, c := range []struct{ mp, name string }{{alice, "b.txt"}, {bob, "a.txt"}, {carol, "a.txt"}} {
			if _, err := os.Stat(filepath.Join(c.mp, c.name)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s sees %s: %v", c.mp, c.name, err)
			}
		}
		// The bind's root is the user's directory: ".." is the host's
		// mountpoint parent, never the shared mount.
		if ents, err := os.ReadDir(filepath.Join(alice, "..")); err != nil || len(ents) != 1 || ents[0].Name() != "cold" {
			t.Fatalf("alice's mountpoint parent: %v %v", ents, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(carol, &st); err != nil || st.Uid != 1000 || st.Gid != 1000 || st.Mode&0o777 != 0o755 {
			t.Fatalf("carol's new directory: %v, uid %d gid %d mode %o; want 1000:1000 0755", err, st.Uid, st.Gid, st.Mode&0o777)
		}
		if err := os.WriteFile(filepath.Join(carol, "c.txt"), []byte("carol's"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := getObject(t, client, bucket, "users/carol/cold/c.txt"); err != nil || got != "carol's" {
			t.Fatalf("carol's write in S3: %q, %v", got, err)
		}
		fi, err := os.Stat(filepath.Dir(shared))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("shared mount's parent: %v %v, want mode 0700", fi, err)
		}
	})

	t.Run("a symlink in the bucket never redirects a bind", func(t *testing.T) {
		// A hostile name as the shared mount shows it: a user directory
		// that is a symlink, and a cold directory that points at another
		// user's. Neither may be bound.
		if err := os.Symlink("/etc", filepath.Join(shared, "mallory")); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(shared, "trudy"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../alice/cold", filepath.Join(shared, "trudy", "cold")); err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{"mallory", "trudy"} {
			if _, err := m.Acquire(ctx, ids.UserID(u)); err == nil || !errdefs.IsUnavailable(err) {
				t.Fatalf("Acquire(%s) through a symlink: %v, want unavailable", u, err)
			}
			mp, _ := m.Mountpoint(ids.UserID(u))
			if n := len(stackAt(mustMountinfo(t), mp)); n != 0 {
				t.Fatalf("%d mounts on %s after a refused acquire", n, mp)
			}
			if _, err := os.Lstat(filepath.Dir(mp)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s's directories after a refused acquire: %v", u, err)
			}
		}
	})

	aliceBox := filepath.Join(dir, "sandbox-alice")
	bobBox := filepath.Join(dir, "sandbox-bob")
	bindLikeContainer(t, alice, aliceBox)
	bindLikeContainer(t, bob, bobBox)

	t.Run("kill -9 of the one daemon reaches every user's sandbox", func(t *testing.T) {
		m.mu.Lock()
		fm, _ := m.all.mount.(*FUSEMount)
		m.mu.Unlock()
		if fm == nil {
			t.Fatal("no shared FUSE mount")
		}
		old := fm.PID()
		before := m.Remounts()
		if err := unix.Kill(old, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "remount", func() bool { return fm.Remounts() == 1 })
		if m.Remounts() != before+1 {
			t.Fatalf("manager counts %d remounts, want %d", m.Remounts(), before+1)
		}
		// Every user's bind is made again, on top of the old one.
		eventually(t, 5*time.Second, "rebinds", func() bool {
			ms := mustMountinfo(t)
			return len(stackAt(ms, alice)) == 2 && len(stackAt(ms, bob)) == 2 && len(stackAt(ms, carol)) == 2
		})
		putObject(t, client, bucket, "users/bob/cold/late.txt", "late")
		if got := readFile(t, filepath.Join(aliceBox, "a.txt")); got != "alice's" {
			t.Fatalf("alice's sandbox after the remount: %q", got)
		}
		if got := readFile(t, filepath.Join(bobBox, "late.txt")); got != "late" {
			t.Fatalf("bob's sandbox after the remount: %q", got)
		}
		if _, err := os.Stat(filepath.Join(bobBox, "a.txt")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("bob's sandbox sees alice's file after the remount: %v", err)
		}
	})

	t.Run("release and close leave nothing", func(t *testing.T) {
		for _, u := range []string{"alice", "bob", "carol"} {
			if err := m.Release(ctx, ids.UserID(u)); err != nil {
				t.Fatal(err)
			}
		}
		for _, mp := range []string{alice, bob, carol} {
			if n := len(stackAt(mustMountinfo(t), mp)); n != 0 {
				t.Fatalf("%d mounts left on %s", n, mp)
			}
		}
		// The shared daemon stays for the next user.
		if n := len(stackAt(mustMountinfo(t), shared)); n == 0 {
			t.Fatal("shared mount gone with the last user")
		}
		for _, b := range []string{aliceBox, bobBox} {
			if err := unmountStack(b); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
		assertNoLeftovers(t, dir)
		if got, err := getObject(t, client, bucket, "users/carol/cold/c.txt"); err != nil || got != "carol's" {
			t.Fatalf("carol's file in S3 after Close: %q, %v", got, err)
		}
	})
}

// TestSharedMountNeedsFUSE: the local driver has no shared mode.
func TestSharedMountNeedsFUSE(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	d, err := NewLocal(LocalConfig{StorageDir: filepath.Join(dir, "storage"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewManager(context.Background(), ManagerConfig{Dir: filepath.Join(dir, "cold"), Driver: d, Logger: testLogger(t)}, WithSharedMount())
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("shared mount with the local driver: %v, want invalid argument", err)
	}
	assertNoLeftovers(t, dir)
}
