package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// s3fsDaemons lists the command lines of the s3fs processes serving
// mounts below stateDir.
func s3fsDaemons(t *testing.T, stateDir string) []string {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range procs {
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == "s3fs" && strings.Contains(string(b), stateDir+"/") {
			out = append(out, strings.Join(args, " "))
		}
	}
	return out
}

// countMentioning counts the command lines that contain s.
func countMentioning(cmds []string, s string) int {
	n := 0
	for _, c := range cmds {
		if strings.Contains(c, s) {
			n++
		}
	}
	return n
}

// TestColdSpares runs matrxd with a warm pool and per-user s3fs cold
// mounts on a real S3 server, with the default spares (as many as the
// pool holds): new users' first sandboxes get their cold files from
// daemons started ahead, each serving one user and only that user's
// directory; their writes land under their own prefix; a restart keeps
// the running sandboxes' view; deleting the sandboxes and stopping the
// daemon leaves no s3fs process; the metrics count the spares taken.
// Budget: ~40 s.
func TestColdSpares(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	srv, bucket := s3Env(t)
	put(t, srv, bucket, "users/alice/cold/c.txt", "alice cold")
	put(t, srv, bucket, "users/bob/cold/c.txt", "bob cold")
	h := daemontest.Start(t, withS3(srv, bucket), withPool(2))
	stateDir, err := filepath.EvalSymlinks(h.Config.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	spares := filepath.Join(stateDir, "cold", "stage", "spares") + "/"
	waitPooled(t, h, 2, 60*time.Second)
	waitSpares := func(n int) {
		t.Helper()
		for start := time.Now(); countMentioning(s3fsDaemons(t, stateDir), spares) < n; time.Sleep(50 * time.Millisecond) {
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%d spare s3fs daemons after 20 s, want %d: %q", countMentioning(s3fsDaemons(t, stateDir), spares), n, s3fsDaemons(t, stateDir))
			}
		}
	}
	waitSpares(2)
	alice := h.Create("alice", nil) // both from the pool, both new users
	bob := h.Create("bob", nil)

	for _, c := range []struct{ id, want string }{{alice.SandboxID, "alice cold"}, {bob.SandboxID, "bob cold"}} {
		if r := h.Exec(c.id, "cat /data/cold/c.txt; ls -A /data/cold"); r.ExitCode != 0 || r.Stdout != c.want+"c.txt\n" {
			t.Fatalf("cold files in %s: %+v, want %q and only c.txt", c.id, r, c.want)
		}
	}
	daemons := s3fsDaemons(t, stateDir)
	for _, u := range []string{"alice", "bob"} {
		if n := countMentioning(daemons, filepath.Join(stateDir, "cold", "stage", "users", u)); n != 0 {
			t.Fatalf("%s has a daemon of her own (%q); a spare should serve her", u, daemons)
		}
	}
	mx, err := h.Client().Metrics(t.Context())
	if err != nil || !strings.Contains(string(mx), "\nmatrx_cold_spares_taken_total 2\n") {
		t.Fatalf("metrics after two new users took spares (%v): want matrx_cold_spares_taken_total 2 in\n%s", err, mx)
	}
	if r := h.Exec(alice.SandboxID, "echo alice > /data/cold/new.txt && ls /data/cold/.. && stat -c %u /data/cold/new.txt"); r.ExitCode != 0 || !strings.HasSuffix(r.Stdout, "1000\n") || strings.Contains(r.Stdout, "bob") {
		t.Fatalf("alice's write and what is above her cold dir: %+v", r)
	}
	if got, ok := get(t, srv, bucket, "users/alice/cold/new.txt"); !ok || got != "alice\n" {
		t.Fatalf("alice's write in S3: %q %v", got, ok)
	}
	if r := h.Exec(bob.SandboxID, "ls -A /data/cold"); r.Stdout != "c.txt\n" {
		t.Fatalf("bob sees another user's write: %+v", r)
	}

	// A restart keeps every running sandbox's view: the spares' mounts
	// are detached, the users' binds hold them, and the next daemon
	// stacks fresh mounts for the sandboxes it adopts.
	h.Stop()
	h.Start()
	put(t, srv, bucket, "users/bob/cold/after.txt", "after")
	waitColdFile(t, h, bob.SandboxID, "after.txt", "after")
	if r := h.Exec(alice.SandboxID, "cat /data/cold/c.txt"); r.Stdout != "alice cold" {
		t.Fatalf("alice's cold file after the restart: %+v", r)
	}

	for _, s := range []string{alice.SandboxID, bob.SandboxID} {
		if err := h.Client().Delete(t.Context(), s, false); err != nil {
			t.Fatal(err)
		}
	}
	h.Stop()
	for start := time.Now(); len(s3fsDaemons(t, stateDir)) != 0; time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("s3fs daemons left 10 s after a stop with no user's sandbox: %q", s3fsDaemons(t, stateDir))
		}
	}
}
