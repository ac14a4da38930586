//go:build linux

package daemon_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api"
	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/testenv"
)

func TestLifecycle(t *testing.T) {
	testenv.BothContainerds(t)
	h := daemontest.Start(t)
	ctx := context.Background()
	s := h.Create("alice", &apitype.SandboxConfig{Labels: map[string]string{"team": "a"}, Env: map[string]string{"GREETING": "hi"}})
	if !ids.ValidSandboxID(s.SandboxID) || s.Status != "ready" || s.UserID != "alice" || s.HotPath != "/home/agent" ||
		s.ColdPath != "/data/cold" || s.TTLSeconds != 7200 || s.SSHPort != nil || s.ContainerID == "" || s.Image != containerdtest.MinimalImage {
		t.Fatalf("created sandbox: %+v", s)
	}
	got, err := h.Client().Get(ctx, s.SandboxID)
	if err != nil || got.SandboxID != s.SandboxID || got.Config.Labels["team"] != "a" {
		t.Fatalf("get: %v %+v", err, got)
	}
	r := h.Exec(s.SandboxID, `echo "$SANDBOX_ID $USER_ID $HOT_PATH $COLD_PATH $GREETING"; id -u`)
	if want := fmt.Sprintf("%s alice /home/agent /data/cold hi\n1000\n", s.SandboxID); r.Stdout != want || r.ExitCode != 0 || r.Cwd != "/home/agent" {
		t.Fatalf("exec: %+v", r)
	}
	// Sandboxes run in a user namespace: container ids map to the
	// configured host range.
	if r := h.Exec(s.SandboxID, "cat /proc/self/uid_map"); strings.Join(strings.Fields(r.Stdout), " ") != "0 1000000 65536" {
		t.Fatalf("uid map: %q", r.Stdout)
	}
	// The working directory is remembered between calls, overridden by an
	// explicit cwd, and reported after the command.
	if r := h.Exec(s.SandboxID, "cd /tmp"); r.Cwd != "/tmp" {
		t.Fatalf("cd: %+v", r)
	}
	if r := h.Exec(s.SandboxID, "pwd"); r.Stdout != "/tmp\n" {
		t.Fatalf("remembered cwd: %+v", r)
	}
	cwd := "/home/agent"
	r, err = h.Client().Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "pwd", Cwd: &cwd})
	if err != nil || r.Stdout != "/home/agent\n" {
		t.Fatalf("explicit cwd: %v %+v", err, r)
	}
	// byte-exact output without a trailing newline, and binary output
	if r := h.Exec(s.SandboxID, `printf 'a\nb'`); r.Stdout != "a\nb" {
		t.Fatalf("no trailing newline: %q", r.Stdout)
	}
	r = h.Exec(s.SandboxID, `printf '\377\000x'`)
	if b, _ := base64.StdEncoding.DecodeString(r.StdoutBase64); string(b) != "\xff\x00x" {
		t.Fatalf("binary output: %+v", r)
	}
	// root exec
	if r, err := h.Client().Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "id -u", User: "root"}); err != nil || r.Stdout != "0\n" {
		t.Fatalf("root exec: %v %+v", err, r)
	}
	// timeout
	one := 1
	r, err = h.Client().Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "sleep 30", Timeout: &one})
	if err != nil || !r.TimedOut || r.ExitCode != 124 {
		t.Fatalf("timeout: %v %+v", err, r)
	}
	// home persists per user across sandboxes
	h.Exec(s.SandboxID, "echo kept > /home/agent/note")
	hb, err := h.Client().Heartbeat(ctx, s.SandboxID)
	if err != nil || !hb.Acknowledged || hb.SandboxID != s.SandboxID {
		t.Fatalf("heartbeat: %v %+v", err, hb)
	}
	if got, _ := h.Client().Get(ctx, s.SandboxID); got.Status != "running" || got.LastHeartbeatAt == nil {
		t.Fatalf("after heartbeat: %+v", got)
	}
	l, err := h.Client().List(ctx, "alice", false)
	if err != nil || l.Total != 1 || l.Sandboxes[0].SandboxID != s.SandboxID {
		t.Fatalf("list: %v %+v", err, l)
	}
	if err := h.Client().Delete(ctx, s.SandboxID, true); err != nil {
		t.Fatal(err)
	}
	got, err = h.Client().Get(ctx, s.SandboxID)
	if err != nil || got.Status != "stopped" || got.StoppedAt == nil || got.StopReason == nil || *got.StopReason != "user_requested" {
		t.Fatalf("after delete: %v %+v", err, got)
	}
	if _, err := h.Client().Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "true"}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("exec on destroyed sandbox: %v", err)
	}
	if l, _ := h.Client().List(ctx, "alice", false); l.Total != 0 {
		t.Fatalf("stopped sandbox listed as active: %+v", l)
	}
	if l, _ := h.Client().List(ctx, "alice", true); l.Total != 1 {
		t.Fatalf("--all misses the stopped sandbox: %+v", l)
	}
	// A second delete is a no-op.
	if err := h.Client().Delete(ctx, s.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	s2 := h.Create("alice", nil)
	if r := h.Exec(s2.SandboxID, "cat /home/agent/note"); r.Stdout != "kept\n" {
		t.Fatalf("home did not persist: %+v", r)
	}
	health, err := h.Client().Health(ctx)
	if err != nil || health.Status != "healthy" || health.ActiveSandboxes != 1 {
		t.Fatalf("health: %v %+v", err, health)
	}
	// Every request is logged with method, path, status, request id and the
	// caller's uid from SO_PEERCRED.
	if !strings.Contains(h.Logs(), `"peer_uid":0`) || !strings.Contains(h.Logs(), `"request_id"`) {
		t.Fatalf("request log lacks peer credentials:\n%s", h.Logs())
	}
}

func TestSignals(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	a := h.Create("bob", nil)
	res, err := h.Client().Complete(ctx, a.SandboxID, map[string]any{"ok": true})
	if err != nil || res.Status != "shutting_down" || res.SandboxID != a.SandboxID {
		t.Fatalf("complete: %v %+v", err, res)
	}
	b := h.Create("bob", nil)
	res, err = h.Client().SignalError(ctx, b.SandboxID, "agent crashed", map[string]any{"trace": "x"})
	if err != nil || !res.ErrorReceived {
		t.Fatalf("error signal: %v %+v", err, res)
	}
	waitStatus(t, h.Client(), a.SandboxID, "stopped", "graceful_shutdown")
	got := waitStatus(t, h.Client(), b.SandboxID, "stopped", "error")
	if got.Error != "agent crashed" {
		t.Fatalf("error not recorded: %+v", got)
	}
	if _, err := h.Client().Complete(ctx, a.SandboxID, nil); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("complete on stopped: %v", err)
	}
	if _, err := h.Client().Heartbeat(ctx, a.SandboxID); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("heartbeat on stopped: %v", err)
	}
}

func waitStatus(t *testing.T, c *client.Client, id, status, reason string) *apitype.Sandbox {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := c.Get(context.Background(), id)
		if err == nil && s.Status == status && (reason == "" || (s.StopReason != nil && *s.StopReason == reason)) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s never reached %s/%s: %v %+v", id, status, reason, err, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRestartKeepsRecordsAndSandboxes(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	live := h.Create("carol", nil)
	h.Exec(live.SandboxID, "echo before > /tmp/marker")
	gone := h.Create("carol", nil)
	if err := h.Client().Delete(ctx, gone.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	h.Stop()
	// The sandbox keeps running while the daemon is down.
	h.Start()
	got, err := h.Client().Get(ctx, live.SandboxID)
	if err != nil || got.Status != "running" {
		t.Fatalf("live sandbox after restart: %v %+v", err, got)
	}
	if r := h.Exec(live.SandboxID, "cat /tmp/marker"); r.Stdout != "before\n" {
		t.Fatalf("exec after restart: %+v", r)
	}
	got, err = h.Client().Get(ctx, gone.SandboxID)
	if err != nil || got.Status != "stopped" || got.StoppedAt == nil {
		t.Fatalf("stopped record after restart: %v %+v", err, got)
	}
}

func TestBadInput(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	s := h.Create("dave", nil)
	long := strings.Repeat("x", 10001)
	big := `{"user_id":"u","config":{"labels":{"a":"` + strings.Repeat("b", 2<<20) + `"}}}`
	cases := []struct {
		name, method, path, body string
		status                   int
		detail                   string
	}{
		{"malformed json", "POST", "/sandboxes", `{"user_id":`, 400, "malformed JSON"},
		{"not an object", "POST", "/sandboxes", `[]`, 400, "malformed JSON"},
		{"empty body", "POST", "/sandboxes", ``, 400, "empty"},
		{"trailing data", "POST", "/sandboxes", `{"user_id":"u"} {}`, 400, "trailing"},
		{"unknown field", "POST", "/sandboxes", `{"user_id":"u","bogus":1}`, 400, "unknown field"},
		{"unknown config key", "POST", "/sandboxes", `{"user_id":"u","config":{"gpu":1}}`, 400, "unknown field"},
		{"oversized body", "POST", "/sandboxes", big, 400, "exceeds"},
		{"missing user_id", "POST", "/sandboxes", `{}`, 400, "user_id"},
		{"invalid user_id", "POST", "/sandboxes", `{"user_id":"a/b"}`, 400, "user_id"},
		{"dotdot user_id", "POST", "/sandboxes", `{"user_id":".."}`, 400, "user_id"},
		{"long user_id", "POST", "/sandboxes", `{"user_id":"` + strings.Repeat("a", 256) + `"}`, 400, "user_id"},
		{"cpu too high", "POST", "/sandboxes", `{"user_id":"u","config":{"cpu":100}}`, 400, "config.cpu"},
		{"memory too low", "POST", "/sandboxes", `{"user_id":"u","config":{"memory_mb":1}}`, 400, "config.memory_mb"},
		{"pids too high", "POST", "/sandboxes", `{"user_id":"u","config":{"pids":99999999}}`, 400, "config.pids"},
		{"ttl too short", "POST", "/sandboxes", `{"user_id":"u","config":{"ttl_seconds":5}}`, 400, "ttl_seconds"},
		{"bad env key", "POST", "/sandboxes", `{"user_id":"u","config":{"env":{"1A":"x"}}}`, 400, "config.env"},
		{"reserved env key", "POST", "/sandboxes", `{"user_id":"u","config":{"env":{"SANDBOX_ID":"x"}}}`, 400, "reserved"},
		{"bad label", "POST", "/sandboxes", `{"user_id":"u","config":{"labels":{"-x":"y"}}}`, 400, "labels"},
		{"bad image", "POST", "/sandboxes", `{"user_id":"u","config":{"image":"../../x"}}`, 400, "image"},
		{"wrong type", "POST", "/sandboxes", `{"user_id":5}`, 400, "malformed JSON"},
		{"unknown image, pull never", "POST", "/sandboxes", `{"user_id":"u","config":{"image":"localhost/none:latest","pull":"never"}}`, 404, "not present"},
		{"unknown image, registry unreachable", "POST", "/sandboxes", `{"user_id":"u","config":{"image":"127.0.0.1:1/none:latest"}}`, 502, "not present here"},
		{"bad pull policy", "POST", "/sandboxes", `{"user_id":"u","config":{"pull":"sometimes"}}`, 400, "config.pull"},
		{"pull without ref", "POST", "/images/pull", `{}`, 400, "ref"},
		{"pull bad ref", "POST", "/images/pull", `{"ref":"127.0.0.1:1/Team/App:1"}`, 400, "ref"},
		{"pull bad platform", "POST", "/images/pull", `{"ref":"127.0.0.1:1/x:1","platform":"linux/amd64/v9/x"}`, 400, "platform"},
		{"pull empty password", "POST", "/images/pull", `{"ref":"127.0.0.1:1/x:1","auth":{"username":"u","password":""}}`, 400, "auth.password"},
		{"pull unknown field", "POST", "/images/pull", `{"ref":"127.0.0.1:1/x:1","force":true}`, 400, "unknown field"},
		{"delete unknown image", "DELETE", "/images/localhost/none:latest", ``, 404, "none"},
		{"delete bad image name", "DELETE", "/images/..%2Fx", ``, 400, "image"},
		{"prune with a body", "POST", "/images/prune", `{"all":true}`, 400, "unknown field"},
		{"unknown sandbox", "GET", "/sandboxes/sbx-doesnotexist", ``, 404, ""},
		{"unknown well-formed sandbox", "GET", "/sandboxes/sbx-000000000000", ``, 404, ""},
		{"weird sandbox id", "GET", "/sandboxes/..%2f..%2fetc", ``, 404, ""},
		{"exec unknown sandbox", "POST", "/sandboxes/sbx-doesnotexist/exec", `{"command":"true"}`, 404, ""},
		{"delete unknown sandbox", "DELETE", "/sandboxes/sbx-doesnotexist", ``, 404, ""},
		{"heartbeat unknown", "POST", "/sandboxes/sbx-doesnotexist/heartbeat", ``, 404, ""},
		{"complete unknown", "POST", "/sandboxes/sbx-doesnotexist/complete", `{}`, 404, ""},
		{"error unknown", "POST", "/sandboxes/sbx-doesnotexist/error", `{"error":"x"}`, 404, ""},
		{"empty command", "POST", "/sandboxes/" + s.SandboxID + "/exec", `{"command":""}`, 400, "command"},
		{"long command", "POST", "/sandboxes/" + s.SandboxID + "/exec", `{"command":"` + long + `"}`, 400, "10000"},
		{"timeout zero", "POST", "/sandboxes/" + s.SandboxID + "/exec", `{"command":"true","timeout":0}`, 400, "timeout"},
		{"timeout too long", "POST", "/sandboxes/" + s.SandboxID + "/exec", `{"command":"true","timeout":601}`, 400, "timeout"},
		{"bad user", "POST", "/sandboxes/" + s.SandboxID + "/exec", `{"command":"true","user":"admin"}`, 400, "user"},
		{"relative cwd", "POST", "/sandboxes/" + s.SandboxID + "/exec", `{"command":"true","cwd":"tmp"}`, 400, "absolute"},
		{"missing cwd", "POST", "/sandboxes/" + s.SandboxID + "/exec", `{"command":"true","cwd":"/nonexistent"}`, 400, "does not exist"},
		{"exec unknown field", "POST", "/sandboxes/" + s.SandboxID + "/exec", `{"command":"true","shell":"zsh"}`, 400, "unknown field"},
		{"bad graceful", "DELETE", "/sandboxes/" + s.SandboxID + "?graceful=maybe", ``, 400, "graceful"},
		{"bad list param", "GET", "/sandboxes?owner=x", ``, 400, "owner"},
		{"bad list user", "GET", "/sandboxes?user_id=a%2Fb", ``, 400, "user_id"},
		{"error without message", "POST", "/sandboxes/" + s.SandboxID + "/error", `{}`, 400, "error must"},
		{"unknown route", "GET", "/nope", ``, 404, "not found"},
		{"wrong method", "PUT", "/sandboxes", ``, 405, "method not allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body, err := h.Client().Raw(ctx, c.method, c.path, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			var e apitype.ErrorResponse
			if jerr := json.Unmarshal(body, &e); jerr != nil || e.Detail == "" {
				t.Fatalf("error body is not {\"detail\":...}: %s", body)
			}
			if status != c.status || !strings.Contains(e.Detail, c.detail) {
				t.Fatalf("got %d %q, want %d containing %q", status, e.Detail, c.status, c.detail)
			}
		})
	}
	// Nothing was created by any of it, and the sandbox still works.
	l, _ := h.Client().List(ctx, "", true)
	for _, sb := range l.Sandboxes {
		if sb.SandboxID != s.SandboxID && sb.Status != "failed" {
			t.Fatalf("bad input created a sandbox: %+v", sb)
		}
	}
	if r := h.Exec(s.SandboxID, "echo ok"); r.Stdout != "ok\n" {
		t.Fatalf("sandbox broken by bad input: %+v", r)
	}
	// The failed create (unknown image) left a failed record and nothing else.
	infos, _ := os.ReadDir(filepath.Join(h.Config.StateDir, "runtime", "sandboxes"))
	if len(infos) != 1 {
		t.Fatalf("runtime state dirs: %d, want 1 (the live sandbox)", len(infos))
	}
	// ...and no hot directory or cold mount of the failed create's user.
	if hot, _ := os.ReadDir(filepath.Join(h.Config.StateDir, "hot")); len(hot) != 1 {
		t.Fatalf("hot dirs: %d, want 1 (the live sandbox)", len(hot))
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), h.Config.StateDir+"/cold/mnt/users/u/cold") {
		t.Fatalf("cold mount of the failed create left behind:\n%s", mi)
	}
}

func TestSocket(t *testing.T) {
	h := daemontest.Start(t)
	st, err := os.Stat(h.Config.Socket)
	if err != nil || st.Mode().Perm() != 0o660 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode: %v %v", err, st.Mode())
	}
	// A live daemon's socket is not stolen by a second one.
	if _, err := api.ListenUnix(h.Config.Socket, 0o660, 0); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	// A stale socket left by a crashed daemon is replaced.
	stale := filepath.Join(h.Env.Dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := api.ListenUnix(stale, 0o660, 0)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	// A regular file at the socket path is never removed.
	file := filepath.Join(h.Env.Dir, "file.sock")
	os.WriteFile(file, []byte("x"), 0o600)
	if _, err := api.ListenUnix(file, 0o660, 0); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("regular file at socket path: %v", err)
	}
}

func TestCLI(t *testing.T) {
	h := daemontest.Start(t)
	run := h.CLI
	out, errOut, code := run("create", "--user", "erin", "--label", "k=v")
	id := strings.TrimSpace(out)
	if code != 0 || !ids.ValidSandboxID(id) {
		t.Fatalf("create: %q %q %d", out, errOut, code)
	}
	out, errOut, code = run("exec", id, "--cwd", "/tmp", "--", "pwd; echo err >&2; exit 3")
	if out != "/tmp\n" || errOut != "err\n" || code != 3 {
		t.Fatalf("exec: %q %q %d", out, errOut, code)
	}
	out, _, code = run("ls", "--user", "erin")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "running") {
		t.Fatalf("ls: %q", out)
	}
	out, _, _ = run("ls", "--json")
	var l apitype.SandboxList
	if err := json.Unmarshal([]byte(out), &l); err != nil || l.Total != 1 {
		t.Fatalf("ls --json: %v %q", err, out)
	}
	out, _, _ = run("inspect", id)
	var s apitype.Sandbox
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Config.Labels["k"] != "v" {
		t.Fatalf("inspect: %v %q", err, out)
	}
	out, _, code = run("image", "ls")
	if code != 0 || !strings.Contains(out, containerdtest.MinimalImage) {
		t.Fatalf("image ls: %q", out)
	}
	out, _, code = run("version")
	if code != 0 || !strings.Contains(out, "containerd:") {
		t.Fatalf("version: %q", out)
	}
	if _, errOut, code = run("inspect", "sbx-doesnotexist"); code == 0 || errOut == "" {
		t.Fatalf("inspect unknown: %q %d", errOut, code)
	}
	if out, _, code = run("rm", "--force", id); code != 0 || strings.TrimSpace(out) != id {
		t.Fatalf("rm: %q %d", out, code)
	}
}

func TestDiskQuota(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	s := h.Create("frank", &apitype.SandboxConfig{DiskMB: 64})
	neighbour := h.Create("gina", nil)
	r := h.Exec(s.SandboxID, "dd if=/dev/zero of=/home/agent/fill bs=1M count=200 2>&1; df -m /home/agent | tail -1")
	if r.ExitCode != 0 && !strings.Contains(r.Stdout, "No space left on device") {
		t.Fatalf("disk filler: %+v", r)
	}
	if !strings.Contains(r.Stdout, "No space left on device") {
		t.Fatalf("writing past the 64 MiB quota did not fail with ENOSPC: %+v", r)
	}
	// /tmp is bounded too (tmpfs, charged to the memory cgroup).
	r = h.Exec(s.SandboxID, "dd if=/dev/zero of=/tmp/fill bs=1M count=2000 2>&1; rm -f /tmp/fill")
	if !strings.Contains(r.Stdout, "No space left on device") && r.ExitCode == 0 {
		t.Fatalf("/tmp filler was not stopped: %+v", r)
	}
	if r := h.Exec(neighbour.SandboxID, "echo ok > /home/agent/f && cat /home/agent/f"); r.Stdout != "ok\n" {
		t.Fatalf("neighbour affected: %+v", r)
	}
	if r := h.Exec(s.SandboxID, "rm /home/agent/fill && echo small > /home/agent/f && cat /home/agent/f"); r.Stdout != "small\n" {
		t.Fatalf("sandbox unusable after filling its disk: %+v", r)
	}
	if err := h.Client().Delete(ctx, s.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), s.SandboxID) {
		t.Fatalf("disk image of a destroyed sandbox still mounted")
	}
	if _, err := h.Client().Create(ctx, "frank", &apitype.SandboxConfig{DiskMB: 10}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("tiny disk accepted: %v", err)
	}
}

// TestConcurrentDeletes stops one sandbox from two callers at once: both
// succeed, and the user's shared cold mount is released once, so the
// user's other sandbox keeps it.
func TestConcurrentDeletes(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	a := h.Create("hank", nil)
	b := h.Create("hank", nil)
	h.Exec(b.SandboxID, "echo before > /data/cold/f")
	// A process that ignores SIGTERM holds the graceful stop open for the
	// whole shutdown timeout, so the deletes really overlap.
	h.Exec(a.SandboxID, "trap '' TERM; sleep 1000 >/dev/null 2>&1 &")
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() { errs <- h.Client().Delete(ctx, a.SandboxID, true) }()
	}
	for i := 0; i < 3; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent delete: %v", err)
		}
	}
	if n := strings.Count(h.Logs(), `"msg":"sandbox stopping","sandbox_id":"`+a.SandboxID); n != 1 {
		t.Fatalf("sandbox was stopped %d times, want once", n)
	}
	// The user's cold mount is still held for b.
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); !strings.Contains(string(mi), h.Config.StateDir+"/cold/mnt/users/hank/cold") {
		t.Fatal("the user's cold mount was released while another sandbox uses it")
	}
	if got, _ := h.Client().Get(ctx, a.SandboxID); got.Status != "stopped" {
		t.Fatalf("after concurrent deletes: %+v", got)
	}
	if r := h.Exec(b.SandboxID, "cat /data/cold/f && echo after >> /data/cold/f && cat /data/cold/f"); r.Stdout != "before\nbefore\nafter\n" {
		t.Fatalf("the other sandbox lost its cold mount: %+v", r)
	}
}

// TestCreateDestroyCyclesLeaveNothing runs 50 sandbox lifecycles through
// the API and then checks the host: no iptables rule of a sandbox, no veth
// on the bridge, no network namespace, no IP lease, no hot directory, no
// disk image mount, no control-dir mount is left.
func TestCreateDestroyCyclesLeaveNothing(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	countLeases := func() int {
		n := 0
		filepath.WalkDir(filepath.Join(h.Config.StateDir, "network"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasPrefix(filepath.Base(p), "10.") {
				n++
			}
			return nil
		})
		return n
	}
	var ids []string
	for i := 0; i < 50; i++ {
		s := h.Create("cycler", nil)
		ids = append(ids, s.SandboxID)
		if i == 0 && countLeases() != 1 {
			t.Fatalf("a live sandbox holds %d leases; the leak check below would prove nothing", countLeases())
		}
		if i%10 == 0 {
			if r := h.Exec(s.SandboxID, "echo ok"); r.Stdout != "ok\n" {
				t.Fatalf("cycle %d: %+v", i, r)
			}
		}
		if err := h.Client().Delete(ctx, s.SandboxID, i%2 == 0); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	// Only this test's sandboxes count: other daemons (make up's, other
	// tests') have rules of their own on this host.
	out, _ := exec.Command("iptables", "-S").CombinedOutput()
	for _, id := range ids {
		if strings.Contains(string(out), "matrx-sandbox="+id) {
			t.Errorf("iptables rules of %s left:\n%s", id, out)
			break
		}
	}
	chain := "MATRX-" + h.Config.Network.Bridge + "-SBX"
	if out, _ := exec.Command("iptables", "-S", chain).CombinedOutput(); strings.Contains(string(out), "matrx-sandbox=") {
		t.Errorf("sandbox rules left in this daemon's chain %s:\n%s", chain, out)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", h.Config.Network.Bridge).CombinedOutput(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("veths left on %s:\n%s", h.Config.Network.Bridge, out)
	}
	for _, dir := range []string{"network/netns", "hot", "runtime/sandboxes"} {
		if ents, _ := os.ReadDir(filepath.Join(h.Config.StateDir, dir)); len(ents) != 0 {
			t.Errorf("%s not empty: %d entries", dir, len(ents))
		}
	}
	if leases := countLeases(); leases != 0 {
		t.Errorf("%d IP leases left", leases)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Count(string(mi), h.Config.StateDir+"/hot/") != 0 || strings.Count(string(mi), h.Config.StateDir+"/runtime/") != 0 {
		t.Errorf("sandbox mounts left under %s", h.Config.StateDir)
	}
}

// TestHotFilesLargerThanDisk: a user whose hot files do not fit the
// requested disk gets a clear error naming the sizes, and the failed create
// leaves no hot dir, mount or container; the files stay in the bucket.
func TestHotFilesLargerThanDisk(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	s := h.Create("ivan", nil) // makes users/ivan/hot/ in the local bucket
	if err := h.Client().Delete(ctx, s.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(h.Config.StateDir, "storage", "users", "ivan", "hot", "big.bin")
	if err := os.Truncate(big, 0); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	_, err = h.Client().Create(ctx, "ivan", &apitype.SandboxConfig{DiskMB: 64})
	if err == nil {
		t.Fatal("100 MiB of hot files fit a 64 MiB disk")
	}
	t.Logf("create: %v", err)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "config.disk_mb") {
		t.Errorf("want a 400 naming config.disk_mb, got %v", err)
	}
	if fi, err := os.Stat(big); err != nil || fi.Size() != 100<<20 {
		t.Fatalf("hot file in the bucket changed: %v %v", fi, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.Config.StateDir, "hot")); len(ents) != 0 {
		t.Errorf("hot dir left behind: %d entries", len(ents))
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), h.Config.StateDir+"/hot/") {
		t.Errorf("disk image left mounted")
	}
	// The size the error suggests is enough.
	var suggested int64
	if i := strings.LastIndex(err.Error(), "ask for at least "); i < 0 {
		t.Fatalf("no suggested size in %q", err)
	} else if _, serr := fmt.Sscan(err.Error()[i+len("ask for at least "):], &suggested); serr != nil {
		t.Fatalf("suggested size in %q: %v", err, serr)
	}
	s = h.Create("ivan", &apitype.SandboxConfig{DiskMB: suggested})
	if r := h.Exec(s.SandboxID, "stat -c %s /home/agent/big.bin"); r.Stdout != "104857600\n" {
		t.Fatalf("big file after create with room: %+v", r)
	}
}

// TestUploadAmplifiersAreNotUploaded: a sandbox with a 64 MiB disk makes a
// 1 TiB sparse file and 50 hard links of an 8 MiB file (over 1 TiB
// claimed). The final sync uploads the real data only, and still
// succeeds, so the daemon is not stuck retrying terabytes of zeros.
func TestUploadAmplifiersAreNotUploaded(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	s := h.Create("oscar", &apitype.SandboxConfig{DiskMB: 64})
	r := h.Exec(s.SandboxID, "truncate -s 1099511627776 huge && head -c 8388608 /dev/urandom > d && for i in $(seq 50); do ln d l$i; done && echo made")
	if r.Stdout != "made\n" {
		t.Fatalf("setup: %+v", r)
	}
	if err := h.Client().Delete(ctx, s.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	got, _ := h.Client().Get(ctx, s.SandboxID)
	if got.HotSyncPending {
		t.Fatalf("final sync did not finish: %s", got.HotSyncError)
	}
	hot := filepath.Join(h.Config.StateDir, "storage", "users", "oscar", "hot")
	if fi, err := os.Stat(filepath.Join(hot, "d")); err != nil || fi.Size() != 8<<20 {
		t.Fatalf("the real data did not reach the bucket: %v %v", fi, err)
	}
	for _, name := range []string{"huge", "l1", "l50"} {
		if _, err := os.Stat(filepath.Join(hot, name)); !os.IsNotExist(err) {
			t.Errorf("%s was uploaded (%v)", name, err)
		}
	}
}

// TestIdempotentCreateAndPaging: a create retried with its Idempotency-Key
// returns the first sandbox, also while the first is still being made; a
// key is bound to its user; GET /sandboxes pages newest first.
func TestIdempotentCreateAndPaging(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	c := h.Client()
	var wg sync.WaitGroup
	ids := make([]string, 4)
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := c.Create(ctx, "idem", nil, client.WithIdempotencyKey("create-1"))
			if err != nil {
				t.Errorf("create %d: %v", i, err)
				return
			}
			ids[i] = s.SandboxID
		}(i)
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent creates with one key made different sandboxes: %v", ids)
		}
	}
	l, err := c.List(ctx, "idem", true)
	if err != nil || len(l.Sandboxes) != 1 {
		t.Fatalf("user has %d sandboxes (%v), want 1", len(l.Sandboxes), err)
	}
	if _, err := c.Create(ctx, "other", nil, client.WithIdempotencyKey("create-1")); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("key reused by another user: got %v, want 409", err)
	}
	if code, body, _ := c.RawWithHeader(ctx, "POST", "/sandboxes", []byte(`{"user_id":"idem"}`), apitype.IdempotencyKeyHeader, "has space"); code != 400 {
		t.Fatalf("bad key: %d %s", code, body)
	}
	// Paging: five more sandboxes, walked two at a time, newest first.
	for i := 0; i < 5; i++ {
		h.Create("idem", nil)
	}
	want, err := c.List(ctx, "idem", false)
	if err != nil || len(want.Sandboxes) != 6 {
		t.Fatalf("list: %v %d", err, len(want.Sandboxes))
	}
	for i := 1; i < len(want.Sandboxes); i++ {
		if want.Sandboxes[i].CreatedAt.After(want.Sandboxes[i-1].CreatedAt) {
			t.Fatalf("list is not newest first at %d", i)
		}
	}
	var walked []string
	cursor := ""
	for {
		p, err := c.ListPage(ctx, client.ListOptions{UserID: "idem", Limit: 2, Cursor: cursor})
		if err != nil || len(p.Sandboxes) > 2 || p.Total != 6 {
			t.Fatalf("page: %v %+v", err, p)
		}
		for _, s := range p.Sandboxes {
			walked = append(walked, s.SandboxID)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	for i, s := range want.Sandboxes {
		if i >= len(walked) || walked[i] != s.SandboxID {
			t.Fatalf("paged walk %v differs from the list", walked)
		}
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=nope"} {
		if code, _, _ := c.Raw(ctx, "GET", "/sandboxes?"+q, nil); code != 400 {
			t.Errorf("GET /sandboxes?%s: %d, want 400", q, code)
		}
	}
}

// TestREADMECommands runs every CLI line of the README's "Using it" block
// as written against a real daemon, with the placeholder id replaced by
// the sandbox the first line creates.
func TestREADMECommands(t *testing.T) {
	h := daemontest.Start(t)
	b, err := os.ReadFile(filepath.Join(containerdtest.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "<!-- readme-cli: begin -->")
	block, _, ok2 := strings.Cut(block, "<!-- readme-cli: end -->")
	if !ok || !ok2 {
		t.Fatal("README.md lost its readme-cli markers")
	}
	comment := regexp.MustCompile(`\s{2,}#.*$`)
	want := map[string]string{ // command line → expected stdout
		"matrx exec sbx-0123456789ab -- pwd":                            "/tmp\n",
		`matrx exec sbx-0123456789ab -- printf '%s\n' 'a b' c`:          "a b\nc\n",
		"matrx exec sbx-0123456789ab --user root --timeout 60 -- id -u": "0\n",
	}
	// Exit codes other than 0 that a line must end with: attach to the
	// process the INT above ended returns the shell's 130.
	wantCode := map[string]int{"matrx attach sbx-0123456789ab p-3f9c2a1b7d4e": 130}
	id, proc, ran := "", "", 0
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(comment.ReplaceAllString(line, ""))
		if !strings.HasPrefix(line, "matrx ") {
			continue
		}
		words := shellWords(t, line)
		for i, w := range words {
			if rest, ok := strings.CutPrefix(w, "sbx-0123456789ab:"); ok { // matrx cp ID:PATH
				words[i] = id + ":" + rest
			}
			switch w {
			case "sbx-0123456789ab":
				words[i] = id
			case "p-3f9c2a1b7d4e":
				words[i] = proc
			case "build/images/sandbox.tar":
				words[i] = h.Env.ImageTar // the minimal image, same command
			case "README.md":
				words[i] = filepath.Join(containerdtest.RepoRoot(), "README.md")
			case "./project-copy":
				words[i] = filepath.Join(t.TempDir(), "project-copy") // not into the source tree
			}
		}
		out, errOut, code := h.CLI(words[1:]...)
		ran++
		switch {
		case words[1] == "create":
			id = strings.TrimSpace(out)
			if code != 0 || !ids.ValidSandboxID(id) {
				t.Fatalf("%s: exit %d, printed %q %s", line, code, out, errOut)
			}
		case words[1] == "exec" && words[2] == "-d":
			proc = strings.TrimSpace(out)
			if code != 0 || !strings.HasPrefix(proc, "p-") {
				t.Fatalf("%s: exit %d, printed %q %s", line, code, out, errOut)
			}
		case words[1] == "logs" && words[2] != "--offset":
			// The loop prints a date a second; wait for one.
			for try := 0; code == 0 && out == "" && try < 50; try++ {
				time.Sleep(100 * time.Millisecond)
				out, errOut, code = h.CLI(words[1:]...)
			}
			if code != 0 || out == "" {
				t.Errorf("%s: exit %d, printed %q %s", line, code, out, errOut)
			}
		case words[1] == "kill" && code == 0:
			// The attach below must find the process ended, or it would
			// wait for it: give the signal time to land, and say so if
			// it never does.
			waitEnded(t, h, id, proc, 15*time.Second)
		case wantCode[line] != 0:
			if code != wantCode[line] {
				t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", line, code, wantCode[line], out, errOut)
			}
		case words[1] == "doctor":
			// The host may lack what doctor checks (exit 1), but it
			// must report every check.
			var rep struct{ Checks []any }
			if json.Unmarshal([]byte(out), &rep) != nil || len(rep.Checks) < 5 || code > 1 {
				t.Errorf("%s: exit %d, output %.300q %s", line, code, out, errOut)
			}
		case code != 0:
			t.Errorf("%s: exit %d\nstdout: %s\nstderr: %s", line, code, out, errOut)
		case want[line] != "" && out != want[line]:
			t.Errorf("%s: printed %q, want %q", line, out, want[line])
		}
	}
	if ran < 15 {
		t.Fatalf("ran only %d README commands", ran)
	}
}

// waitEnded waits until a background process is no longer running.
func waitEnded(t *testing.T, h *daemontest.Harness, id, proc string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		p, err := h.Client().Process(context.Background(), id, proc)
		if err != nil {
			t.Fatalf("process %s: %v", proc, err)
		}
		if p.Status != "running" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %s still running %v after the signal: %+v", proc, within, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shellWords splits a command line the way bash does.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	out, err := exec.Command("bash", "-c", `words() { for w; do printf '%s\0' "$w"; done; }; words `+line).Output()
	if err != nil {
		t.Fatalf("split %q: %v", line, err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// TestPipedStdinReachesExec: echo x | matrx exec ID -- cat prints x (the
// exec runs as a process with stdin), never silently dropping the input.
func TestPipedStdinReachesExec(t *testing.T) {
	h := daemontest.Start(t)
	s := h.Create("pipe", nil)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { w.WriteString("one\ntwo\n"); w.Close() }()
	defer r.Close()
	out, errOut, code := h.CLIWithStdin(r, "exec", s.SandboxID, "--", "cat")
	if code != 0 || out != "one\ntwo\n" {
		t.Fatalf("piped stdin: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A regular file as stdin, and the exit code of the command.
	f := filepath.Join(t.TempDir(), "in")
	os.WriteFile(f, []byte("abc"), 0o600)
	in, _ := os.Open(f)
	defer in.Close()
	out, errOut, code = h.CLIWithStdin(in, "exec", s.SandboxID, "--", "wc -c; exit 3")
	if code != 3 || strings.TrimSpace(out) != "3" {
		t.Fatalf("file stdin: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
