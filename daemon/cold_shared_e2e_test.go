package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// TestSharedColdMount runs matrxd with --cold-shared on a real S3 server
// (s3fs): pooled and unpooled sandboxes of three users get their cold
// files through one FUSE daemon, each sees only their own and writes land
// under their own prefix; the mounts survive a daemon restart; deletes
// leave no per-user mount. Budget: ~40 s.
func TestSharedColdMount(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	srv, bucket := s3Env(t)
	put(t, srv, bucket, "users/alice/cold/c.txt", "alice cold")
	put(t, srv, bucket, "users/bob/cold/c.txt", "bob cold")
	h := daemontest.Start(t, withS3(srv, bucket), withPool(1), func(c *daemon.Config) { c.Storage.ColdShared = true })
	waitPooled(t, h, 1, 60*time.Second)
	alice := h.Create("alice", nil) // from the pool
	bob := h.Create("bob", nil)     // made (the pool refills behind)
	carol := h.Create("carol", nil) // a new user: nothing in S3 yet
	stateDir, err := filepath.EvalSymlinks(h.Config.StateDir)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ id, want string }{{alice.SandboxID, "alice cold"}, {bob.SandboxID, "bob cold"}} {
		if r := h.Exec(c.id, "cat /data/cold/c.txt; ls -A /data/cold"); r.ExitCode != 0 || r.Stdout != c.want+"c.txt\n" {
			t.Fatalf("cold files in %s: %+v, want %q and only c.txt", c.id, r, c.want)
		}
	}
	// Her directory is empty but for the prefix marker, which EnsureCold
	// writes only when it lists the prefix before the shared mount's
	// mkdir of her directory has made its directory object (the two run
	// side by side).
	if r := h.Exec(carol.SandboxID, "for f in $(ls -A /data/cold); do [ \"$f\" = .keep ] || echo \"$f\"; done; echo carol > /data/cold/new.txt && id -u && stat -c %u /data/cold/new.txt"); r.ExitCode != 0 || r.Stdout != "1000\n1000\n" {
		t.Fatalf("carol's new cold dir (empty, or only the prefix marker) and her write: %+v", r)
	}
	if got, ok := get(t, srv, bucket, "users/carol/cold/new.txt"); !ok || got != "carol\n" {
		t.Fatalf("carol's write in S3: %q %v", got, ok)
	}
	if r := h.Exec(alice.SandboxID, "ls -A /data/cold"); r.Stdout != "c.txt\n" {
		t.Fatalf("alice sees another user's write: %+v", r)
	}
	if n := fuseDaemonsOf(t, stateDir); n != 1 {
		t.Fatalf("%d s3fs daemons for three users, want 1", n)
	}

	// A restart keeps every running sandbox's view (the next daemon
	// stacks its own shared mount and binds), and new objects show up.
	h.Stop()
	h.Start()
	put(t, srv, bucket, "users/bob/cold/after.txt", "after")
	waitColdFile(t, h, bob.SandboxID, "after.txt", "after")
	if r := h.Exec(alice.SandboxID, "cat /data/cold/c.txt"); r.Stdout != "alice cold" {
		t.Fatalf("alice's cold file after the restart: %+v", r)
	}

	for _, s := range []string{alice.SandboxID, bob.SandboxID, carol.SandboxID} {
		if err := h.Client().Delete(t.Context(), s, false); err != nil {
			t.Fatal(err)
		}
	}
	users, _ := os.ReadDir(filepath.Join(stateDir, "cold", "mnt", "users"))
	for _, u := range users {
		if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), filepath.Join(stateDir, "cold", "mnt", "users", u.Name())+"/") {
			t.Errorf("a cold mount of %s is left after its sandboxes were deleted", u.Name())
		}
	}
	// With no sandbox left using it, the shared mount ends with the daemon.
	h.Stop()
	// (The first daemon's s3fs, left under the second's mount by the
	// restart, exits once its mount is gone.)
	for start := time.Now(); fuseDaemonsOf(t, stateDir) != 0; time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%d s3fs daemons left 10 s after a stop with no sandbox", fuseDaemonsOf(t, stateDir))
		}
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), filepath.Join(stateDir, "cold", "all")+"/") {
		t.Error("the shared cold mount is left after a stop with no sandbox")
	}
}

// waitColdFile waits up to 20 s for a sandbox to read want from
// /data/cold/name (a new object shows after the metadata TTL, and after a
// restart once the next daemon's mount is in place).
func waitColdFile(t *testing.T, h *daemontest.Harness, id, name, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := h.Exec(id, "cat /data/cold/"+name)
		if r.ExitCode == 0 && r.Stdout == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's new cold file %s after the restart: %+v", id, name, r)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fuseDaemonsOf counts the s3fs processes serving mounts below stateDir.
func fuseDaemonsOf(t *testing.T, stateDir string) int {
	t.Helper()
	return len(s3fsDaemons(t, stateDir))
}
