//go:build linux

package daemon_test

// The warm pool, end to end (issue 16): claims, refill, exhaustion,
// isolation between the users of pooled sandboxes, and a daemon restart
// with a partly filled pool. Liveness deadlines are asserted, never speed.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/sandbox"
)

// withPool gives the harness's default image a warm pool of n.
func withPool(n int) func(*daemon.Config) {
	return func(c *daemon.Config) {
		c.Pools = []sandbox.PoolSpec{{Image: c.Limits.DefaultImage, Size: n}}
	}
}

// pooledIDs lists the sandboxes waiting in the pools.
func pooledIDs(t *testing.T, c *client.Client) []string {
	t.Helper()
	l, err := c.ListPage(context.Background(), client.ListOptions{Pooled: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range l.Sandboxes {
		if s.Status != "pooled" || s.UserID != "" {
			t.Fatalf("pooled list holds %+v", s)
		}
		out = append(out, s.SandboxID)
	}
	return out
}

// waitPooled waits until the pools hold n sandboxes and returns them.
func waitPooled(t *testing.T, h *daemontest.Harness, n int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ids := pooledIDs(t, h.Client())
		if len(ids) == n {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool holds %d sandboxes, not %d, after %v", len(ids), n, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cgroupMemory is a sandbox's memory limit, from the host's cgroup files.
func cgroupMemory(t *testing.T, id string) string {
	t.Helper()
	for _, p := range []string{"/sys/fs/cgroup/matrx/" + id + "/memory.max", "/sys/fs/cgroup/memory/matrx/" + id + "/memory.limit_in_bytes"} {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("no memory cgroup for %s", id)
	return ""
}

func TestWarmPool(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	srv, bucket := s3Env(t)
	put(t, srv, bucket, "users/alice/hot/notes/a.txt", "alice hot\n")
	put(t, srv, bucket, "users/alice/cold/c.txt", "alice cold")
	put(t, srv, bucket, "users/bob/hot/b.txt", "bob hot\n")
	h := daemontest.Start(t, withS3(srv, bucket), withPool(2))
	ctx := context.Background()
	c := h.Client()
	pool := waitPooled(t, h, 2, 60*time.Second)

	// Pooled sandboxes are nobody's: hidden from the list and the live
	// count, and not reachable through the user API.
	if l, err := c.List(ctx, "", true); err != nil || len(l.Sandboxes) != 0 {
		t.Fatalf("the sandbox list shows pooled sandboxes: %v %+v", err, l)
	}
	if hl, err := c.Health(ctx); err != nil || hl.ActiveSandboxes != 0 || hl.PooledSandboxes != 2 {
		t.Fatalf("health: %v %+v, want 0 active and 2 pooled", err, hl)
	}
	if _, err := c.Get(ctx, pool[0]); !errdefs.IsNotFound(err) {
		t.Fatalf("GET of a pooled sandbox: %v, want 404", err)
	}
	if _, err := c.Exec(ctx, pool[0], apitype.ExecRequest{Command: "true"}); !errdefs.IsNotFound(err) {
		t.Fatalf("exec in a pooled sandbox: %v, want 404", err)
	}
	if err := c.Delete(ctx, pool[0], false); !errdefs.IsNotFound(err) {
		t.Fatalf("DELETE of a pooled sandbox: %v, want 404", err)
	}
	if _, err := c.ListPage(ctx, client.ListOptions{Pooled: true, All: true}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("pooled=true&all=true: %v, want 400", err)
	}
	if out, _, code := h.CLI("ls", "--pooled"); code != 0 || !strings.Contains(out, pool[0]) || !strings.Contains(out, pool[1]) || !strings.Contains(out, "pooled") {
		t.Fatalf("matrx ls --pooled: %d %q", code, out)
	}
	if out, _, code := h.CLI("ls"); code != 0 || strings.Contains(out, pool[0]) {
		t.Fatalf("matrx ls shows a pooled sandbox: %d %q", code, out)
	}
	if _, errOut, code := h.CLI("ls", "--pooled", "--all"); code == 0 || !strings.Contains(errOut, "--pooled") {
		t.Fatalf("matrx ls --pooled --all: exit %d %q, want a usage error", code, errOut)
	}

	// A claim: the user's files, cold storage, environment and limits.
	a := h.Create("alice", &apitype.SandboxConfig{MemoryMB: 128, Env: map[string]string{"ALICE_SECRET": "a1"}})
	if !slices.Contains(pool, a.SandboxID) {
		t.Fatalf("alice's sandbox %s is not from the pool %v", a.SandboxID, pool)
	}
	if a.Status != "ready" || a.UserID != "alice" || a.Config.MemoryMB != 128 {
		t.Fatalf("claimed sandbox: %+v", a)
	}
	want := fmt.Sprintf("alice hot\nalice cold\n%s\nalice %s a1 /home/agent\n", a.SandboxID, a.SandboxID)
	if r := h.Exec(a.SandboxID, `cat notes/a.txt; cat /data/cold/c.txt; echo; hostname; echo "$USER_ID $SANDBOX_ID $ALICE_SECRET $HOME"`); r.Stdout != want {
		t.Fatalf("in alice's claimed sandbox: %+v, want %q", r, want)
	}
	if got := cgroupMemory(t, a.SandboxID); got != fmt.Sprint(128<<20) {
		t.Fatalf("alice's memory limit %s, want %d (lowered on the live cgroup)", got, 128<<20)
	}
	if r := h.Exec(a.SandboxID, "echo written > /data/cold/out.txt && sync"); r.ExitCode != 0 {
		t.Fatalf("cold write: %+v", r)
	}
	waitObject(t, srv, bucket, "users/alice/cold/out.txt", "written\n")
	// Alice leaves traces everywhere a next user could look.
	h.Exec(a.SandboxID, "echo alice > /tmp/alice; echo alice > /home/agent/mine.txt; (sleep 1000 >/dev/null 2>&1 &); (nc -l -p 7777 >/dev/null 2>&1 &); true")

	// Exhaustion: one pooled sandbox left, two creates at once (refills
	// wait while creates run): one is claimed, one made the normal way.
	var wg sync.WaitGroup
	got := map[string]*apitype.Sandbox{}
	var mu sync.Mutex
	for _, u := range []string{"bob", "carol"} {
		wg.Go(func() {
			s, err := h.NewClient(client.WithRetries(50)).Create(ctx, u, nil)
			if err != nil {
				t.Errorf("create for %s: %v", u, err)
				return
			}
			mu.Lock()
			got[u] = s
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	fromPool := 0
	for _, s := range got {
		if slices.Contains(pool, s.SandboxID) {
			fromPool++
		}
		if s.SandboxID == a.SandboxID {
			t.Fatalf("a second user got alice's sandbox %s", a.SandboxID)
		}
	}
	if fromPool != 1 {
		t.Fatalf("%d of two creates claimed from a pool with one left (%v; pool %v), want 1", fromPool, got, pool)
	}

	// Nothing of alice's reaches bob or carol, pooled or not: files,
	// processes, environment, listeners; each one's hostname is its own.
	for _, u := range []string{"bob", "carol"} {
		s := got[u]
		r := h.Exec(s.SandboxID, `ls -A /tmp; ls /data/cold /home/agent; hostname; env | grep -c ALICE_SECRET; ps -o args | grep -c "[s]leep 1000"; netstat -ltn 2>/dev/null | grep -c 7777; echo "$USER_ID"`)
		home := ""
		if u == "bob" {
			home = "b.txt\n"
		}
		want := "/data/cold:\n\n/home/agent:\n" + home + s.SandboxID + "\n0\n0\n0\n" + u + "\n"
		if r.Stdout != want {
			t.Fatalf("%s's sandbox %s shows %q, want %q (stderr %q)", u, s.SandboxID, r.Stdout, want, r.Stderr)
		}
	}

	// The pool refills, and a create that does not fit (another disk
	// size) takes the normal path without touching it.
	pool2 := waitPooled(t, h, 2, 60*time.Second)
	d := h.Create("dave", &apitype.SandboxConfig{DiskMB: 64})
	if slices.Contains(pool2, d.SandboxID) {
		t.Fatalf("a create for a 64 MiB disk claimed %s from a pool of default disks", d.SandboxID)
	}
	if now := pooledIDs(t, c); !slices.Equal(now, pool2) {
		t.Fatalf("a create that does not fit changed the pool: %v -> %v", pool2, now)
	}

	// A claimed sandbox stops like any other: its files are saved.
	if err := c.Delete(ctx, a.SandboxID, true); err != nil {
		t.Fatal(err)
	}
	if v, ok := get(t, srv, bucket, "users/alice/hot/mine.txt"); !ok || v != "alice\n" {
		t.Fatalf("alice's new file was not synced up: %q %v", v, ok)
	}
	if slices.Contains(pooledIDs(t, c), a.SandboxID) {
		t.Fatal("a stopped claimed sandbox went back to the pool")
	}
}

// TestWarmPoolRestart: a daemon that stops with a partly filled pool adopts
// the pooled sandboxes whose task still runs, retires the one that died
// while it was away (never handing it out), removes what an unfinished
// fill left, and fills up again; a claim of an adopted sandbox works.
func TestWarmPoolRestart(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	h := daemontest.Start(t, withPool(3))
	before := waitPooled(t, h, 2, 60*time.Second)
	h.Stop() // a third may be half-made: its fill is cut short
	dead := before[0]
	pid := h.Env.TaskPID(t, daemontest.Namespace, dead)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) { // reaped: containerd knows
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("pid %d of %s still there 10 s after SIGKILL", pid, dead)
		}
	}
	h.Start()
	// Retired before the daemon served: never listed, never claimable.
	if now := pooledIDs(t, h.Client()); slices.Contains(now, dead) {
		t.Fatalf("the pooled sandbox whose task died (%s) is still pooled: %v", dead, now)
	}
	after := waitPooled(t, h, 3, 90*time.Second)
	if !slices.Contains(after, before[1]) {
		t.Fatalf("the live pooled sandbox %s was not adopted: %v", before[1], after)
	}
	// Nothing is left of the dead one or of a cut-short fill: every hot
	// dir and cold slot belongs to a pooled sandbox.
	deadline := time.Now().Add(60 * time.Second)
	for {
		hot, _ := os.ReadDir(filepath.Join(h.Config.StateDir, "hot"))
		slots, _ := os.ReadDir(filepath.Join(h.Config.StateDir, "cold", "mnt", "slots"))
		var names []string
		for _, e := range append(hot, slots...) {
			names = append(names, e.Name())
		}
		stray := slices.DeleteFunc(names, func(n string) bool { return slices.Contains(after, n) })
		if len(stray) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leftovers of sandboxes no longer pooled: %v (pooled %v)", stray, after)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A pooled sandbox that dies while the daemon runs is retired by
	// supervision (never handed out), and the pool fills up again.
	victim := slices.DeleteFunc(slices.Clone(after), func(id string) bool { return id == before[1] })[0]
	if err := syscall.Kill(h.Env.TaskPID(t, daemontest.Namespace, victim), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); slices.Contains(pooledIDs(t, h.Client()), victim); time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("pooled sandbox %s still pooled 10 s after its task died", victim)
		}
	}
	after = waitPooled(t, h, 3, 90*time.Second)
	s := h.Create("erin", nil)
	if s.SandboxID != before[1] {
		t.Fatalf("erin got %s, want the oldest pooled sandbox %s (adopted across the restart)", s.SandboxID, before[1])
	}
	if r := h.Exec(s.SandboxID, `echo "$USER_ID $(hostname)"`); r.Stdout != "erin "+s.SandboxID+"\n" {
		t.Fatalf("claimed adopted sandbox: %+v", r)
	}
	// Its first exec already went through the exec agent this daemon
	// adopted (the runc path's shell has no parent in the sandbox).
	const chain = `p=$$; while [ "$p" -gt 1 ]; do tr '\0' ' ' < /proc/$p/cmdline; echo; p=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$p/status); done`
	if r := h.Exec(s.SandboxID, chain); !strings.Contains(r.Stdout, "exec-agent") {
		t.Fatalf("an exec in the claimed adopted sandbox did not go through its exec agent; its ancestors: %+v", r)
	}
}
