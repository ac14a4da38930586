package cold

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a tmpfs holding one file "id" with content id.
func mountTmpfs(t *testing.T, dir, id string) {
	t.Helper()
	if err := unix.Mount("cold-test-"+id, dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "id"), []byte(id), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readID(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "id"))
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b)
}

// TestSharedRootPropagation shows why the manager's root is a shared bind of
// itself: a mount made below it after a sandbox bound it (rbind + rslave)
// shows up in the sandbox's copy.
func TestSharedRootPropagation(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	root := filepath.Join(dir, "root")
	target := filepath.Join(dir, "target")
	if err := os.MkdirAll(filepath.Join(root, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	created, err := bindSelf(root, unix.MS_SHARED)
	if err != nil || !created {
		t.Fatalf("bindSelf = %v, %v", created, err)
	}
	if again, err := bindSelf(root, unix.MS_SHARED); err != nil || again {
		t.Fatalf("second bindSelf = %v, %v; want no new bind", again, err)
	}
	if st := stackAt(mustMountinfo(t), root); len(st) != 1 || !st[0].Shared() {
		t.Fatalf("root mount = %+v, want one shared mount", st)
	}

	bindLikeContainer(t, root, target)
	mountTmpfs(t, filepath.Join(root, "x"), "later")
	if got := readID(t, filepath.Join(target, "x")); got != "later" {
		t.Fatalf("target/x shows %q, want the tmpfs mounted later under root", got)
	}
	// And the unmount reaches it too.
	if err := unix.Unmount(filepath.Join(root, "x"), 0); err != nil {
		t.Fatal(err)
	}
	if got := topFSType(t, filepath.Join(target, "x")); got != "" {
		t.Fatalf("target/x still has a %s mount after the unmount under root", got)
	}
}

// TestRemountMustStack shows why a remount is stacked on the dead mount
// instead of replacing it: a sandbox that bound the mountpoint while a mount
// was on it holds a copy of that mount, and only mounts made on top of it
// propagate to that copy.
func TestRemountMustStack(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	root := filepath.Join(dir, "root")
	mp := filepath.Join(root, "users", "alice", "cold")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := bindSelf(root, unix.MS_SHARED); err != nil {
		t.Fatal(err)
	}

	t.Run("replace does not reach the sandbox", func(t *testing.T) {
		mountTmpfs(t, mp, "gen1")
		sandbox := filepath.Join(dir, "sandbox1")
		bindLikeContainer(t, mp, sandbox)
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
		mountTmpfs(t, mp, "gen2")
		if got := readID(t, sandbox); got == "gen2" {
			t.Fatalf("sandbox sees gen2 after detach+mount; stacking would be unnecessary")
		}
		if err := unmountStack(mp); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("stack reaches the sandbox", func(t *testing.T) {
		mountTmpfs(t, mp, "gen1")
		sandbox := filepath.Join(dir, "sandbox2")
		bindLikeContainer(t, mp, sandbox)
		mountTmpfs(t, mp, "gen2")
		if got := readID(t, sandbox); got != "gen2" {
			t.Fatalf("sandbox shows %q, want gen2 stacked on gen1", got)
		}
		if n := len(stackAt(mustMountinfo(t), mp)); n != 2 {
			t.Fatalf("%d mounts on the mountpoint, want 2", n)
		}
		if err := unmountStack(mp); err != nil {
			t.Fatal(err)
		}
		if n := len(stackAt(mustMountinfo(t), mp)); n != 0 {
			t.Fatalf("unmountStack left %d mounts", n)
		}
	})
}

func mustMountinfo(t *testing.T) []mountInfo {
	t.Helper()
	ms, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}
