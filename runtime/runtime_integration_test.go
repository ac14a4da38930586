//go:build linux

package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/testenv"
)

const testNS = "matrx-test"

// newRuntime starts a private containerd with the minimal image imported.
func newRuntime(t *testing.T, opts ...runtime.Option) (*runtime.Runtime, *containerdtest.Env) {
	t.Helper()
	env := containerdtest.Start(t, testNS)
	ctx := context.Background()
	rt, err := runtime.New(ctx, runtime.Config{
		Address: env.Address, Namespace: testNS,
		StateDir: filepath.Join(env.Dir, "matrx"), InitPath: env.InitPath, RelayPath: env.RelayPath,
	}, append([]runtime.Option{runtime.WithOCIRuntime(containerdtest.OCIRuntime())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	f, err := os.Open(env.ImageTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := rt.Import(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != containerdtest.MinimalImage {
		t.Fatalf("import names = %v", names)
	}
	return rt, env
}

var sandboxSeq struct {
	sync.Mutex
	n int
}

func startSandbox(t *testing.T, rt *runtime.Runtime, env *containerdtest.Env, res runtime.Resources) string {
	t.Helper()
	sandboxSeq.Lock()
	sandboxSeq.n++
	id := fmt.Sprintf("sbx-%012x", sandboxSeq.n)
	sandboxSeq.Unlock()
	home := filepath.Join(env.Dir, "homes", id)
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(home, int(rt.UserNS().HostID(runtime.AgentUID)), int(rt.UserNS().HostID(runtime.AgentGID)))
	if res.CPU == 0 {
		res = runtime.Resources{CPU: 1, MemoryBytes: 256 << 20, Pids: 256}
	}
	err := rt.Create(context.Background(), runtime.CreateRequest{
		ID: id, UserID: "u1", Image: containerdtest.MinimalImage, Resources: res,
		Mounts:    []runtime.Mount{{Source: home, Destination: "/home/agent", Slave: true}},
		Env:       map[string]string{"SANDBOX_ID": id},
		CreatedAt: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Destroy(context.Background(), id, 0) })
	return id
}

// bothPaths runs fn as two subtests on sandbox id: "runtime" with every
// exec through the OCI runtime, then "agent" with the sandbox's exec agent
// up. viaAgent says which one runs.
func bothPaths(t *testing.T, rt *runtime.Runtime, id string, fn func(t *testing.T, viaAgent bool)) {
	t.Helper()
	for _, path := range []string{"runtime", "agent"} {
		t.Run(path, func(t *testing.T) {
			rt.SetExecAgent(path == "agent")
			if path == "agent" {
				if err := rt.WarmExecAgent(context.Background(), id); err != nil {
					t.Fatal(err)
				}
			}
			fn(t, path == "agent")
		})
	}
}

func run(t *testing.T, rt *runtime.Runtime, id string, req runtime.ExecRequest) *runtime.ExecResult {
	t.Helper()
	if req.User == "" {
		req.User = runtime.UserAgent
	}
	if req.Cwd == "" {
		req.Cwd = "/home/agent"
	}
	if req.Timeout == 0 {
		req.Timeout = 30 * time.Second
	}
	if req.OutputLimit == 0 {
		req.OutputLimit = 1 << 20
	}
	res, err := rt.Exec(context.Background(), id, req)
	if err != nil {
		t.Fatalf("exec %q: %v", req.Command, err)
	}
	return res
}

func TestHardening(t *testing.T) {
	rt, env := newRuntime(t)
	testHardening(t, rt, env)
}

// TestHardeningUserNS runs the same checks with sandboxes in a user
// namespace, plus the mapping itself.
func TestHardeningUserNS(t *testing.T) {
	testenv.BothContainerds(t)
	if ok, why := runtime.DetectUserNS(); !ok {
		containerdtest.Skip(t, "user namespaces unsupported: %s", why)
	}
	u, err := runtime.NewUserNS(runtime.DefaultUserNSBase)
	if err != nil {
		t.Fatal(err)
	}
	rt, env := newRuntime(t, runtime.WithUserNS(u))
	t.Logf("idmapped mounts: %v", rt.IDMapped())
	if os.Getenv("MATRX_TEST_EXPECT_IDMAP") == "1" && !rt.IDMapped() {
		t.Fatal("this containerd should map ids with idmapped mounts")
	}
	id := testHardening(t, rt, env)
	res := run(t, rt, id, runtime.ExecRequest{Command: "cat /proc/self/uid_map; id -u; stat -c %u /home/agent", User: runtime.UserRoot})
	want := fmt.Sprintf("0 %d 65536", runtime.DefaultUserNSBase)
	if !strings.Contains(strings.Join(strings.Fields(string(res.Stdout)), " "), want+" 0 1000") {
		t.Fatalf("uid map / ids inside: %q", res.Stdout)
	}
	// From the host, the agent's processes belong to the mapped uid.
	res = run(t, rt, id, runtime.ExecRequest{Command: "sleep 30 & echo $!", Timeout: 5 * time.Second})
	_ = res
	out := run(t, rt, id, runtime.ExecRequest{Command: "cat /proc/self/status | grep ^Uid", User: runtime.UserAgent})
	if !strings.Contains(string(out.Stdout), "1000") {
		t.Fatalf("status inside: %q", out.Stdout)
	}
	found := false
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(b), "sleep\x0030") {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if strings.Contains(string(st), fmt.Sprintf("Uid:\t%d", runtime.DefaultUserNSBase+1000)) {
			found = true
		}
	}
	if !found {
		t.Fatal("no sandbox process runs as the mapped host uid")
	}
}

func testHardening(t *testing.T, rt *runtime.Runtime, env *containerdtest.Env) string {
	id := startSandbox(t, rt, env, runtime.Resources{})

	cases := []struct {
		name    string
		user    runtime.ExecUser
		cmd     string
		wantOut string // substring of stdout
		wantErr bool   // non-zero exit expected
	}{
		{"agent uid", runtime.UserAgent, "id -u; id -g", "1000\n1000\n", false},
		{"agent has no effective caps", runtime.UserAgent, "grep CapEff /proc/self/status", "CapEff:\t0000000000000000", false},
		{"agent has empty bounding set", runtime.UserAgent, "grep CapBnd /proc/self/status", "CapBnd:\t0000000000000000", false},
		{"no_new_privs", runtime.UserAgent, "grep NoNewPrivs /proc/self/status", "NoNewPrivs:\t1", false},
		{"seccomp filter on", runtime.UserAgent, "grep Seccomp: /proc/self/status", "Seccomp:\t2", false},
		// CHOWN DAC_OVERRIDE FOWNER KILL SETGID SETUID NET_BIND_SERVICE
		{"root bounding set is the documented one", runtime.UserRoot, "grep CapBnd /proc/self/status", "CapBnd:\t00000000000004eb", false},
		{"root uid", runtime.UserRoot, "id -u", "0\n", false},
		{"mount fails for root", runtime.UserRoot, "mount -t tmpfs none /mnt", "", true},
		{"root fs read-only for root", runtime.UserRoot, "touch /etc/x", "", true},
		{"root fs read-only for agent", runtime.UserAgent, "touch /x", "", true},
		{"tmp writable", runtime.UserAgent, "echo hi > /tmp/f && cat /tmp/f", "hi\n", false},
		{"var tmp writable", runtime.UserAgent, "echo hi > /var/tmp/f && cat /var/tmp/f", "hi\n", false},
		{"home writable", runtime.UserAgent, "echo hi > /home/agent/f && cat /home/agent/f", "hi\n", false},
		{"no fuse device", runtime.UserRoot, "test -e /dev/fuse", "", true},
		{"cannot mknod", runtime.UserRoot, "mknod /tmp/fuse c 10 229", "", true},
		{"hostname is the sandbox id", runtime.UserAgent, "hostname", id + "\n", false},
		{"loopback only", runtime.UserAgent, "ls /sys/class/net", "lo\n", false},
		{"pid 1 is matrx-init", runtime.UserAgent, "cat /proc/1/cmdline", runtime.InitPath, false},
		{"proc sys read-only", runtime.UserRoot, "echo 1 > /proc/sys/kernel/domainname", "", true},
		{"kcore masked", runtime.UserRoot, "test -s /proc/kcore", "", true},
		{"tmp size limited to a quarter of memory", runtime.UserAgent, "df -k /tmp | tail -1", "65536", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := run(t, rt, id, runtime.ExecRequest{Command: c.cmd, User: c.user})
			if c.wantErr != (res.ExitCode != 0) {
				t.Fatalf("exit %d (want error=%v)\nstdout: %s\nstderr: %s", res.ExitCode, c.wantErr, res.Stdout, res.Stderr)
			}
			if !strings.Contains(string(res.Stdout), c.wantOut) {
				t.Fatalf("stdout %q does not contain %q (stderr %q)", res.Stdout, c.wantOut, res.Stderr)
			}
		})
	}
	return id
}

func TestPidsLimit(t *testing.T) {
	rt, env := newRuntime(t)
	id := startSandbox(t, rt, env, runtime.Resources{CPU: 1, MemoryBytes: 256 << 20, Pids: 64})
	// A fork loop: short sleepers pile up until fork fails at the pids
	// limit (the shell itself dies there); the count it reached is left in
	// /tmp. The sleepers exit by themselves after 3 s, freeing the pids.
	run(t, rt, id, runtime.ExecRequest{
		Command: `i=0; while [ $i -lt 500 ]; do sleep 3 & i=$((i+1)); echo $i > /tmp/count; done`,
		Timeout: 10 * time.Second,
	})
	var res *runtime.ExecResult
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		r, err := rt.Exec(context.Background(), id, runtime.ExecRequest{Command: "cat /tmp/count", User: runtime.UserAgent, Cwd: "/", Timeout: 5 * time.Second, OutputLimit: 100})
		if err == nil && r.ExitCode == 0 {
			res = r
			break
		}
	}
	if res == nil {
		t.Fatal("sandbox never answered again after the fork loop")
	}
	var started int
	fmt.Sscanf(strings.TrimSpace(string(res.Stdout)), "%d", &started)
	if started == 0 || started >= 64 {
		t.Fatalf("fork loop was not stopped by the pids limit of 64: started %q", res.Stdout)
	}
	if out := run(t, rt, id, runtime.ExecRequest{Command: "echo alive"}); string(out.Stdout) != "alive\n" {
		t.Fatalf("sandbox unhealthy after fork loop: %q", out.Stdout)
	}
}

func TestMemoryLimitOOMKills(t *testing.T) {
	rt, env := newRuntime(t)
	victim := startSandbox(t, rt, env, runtime.Resources{CPU: 1, MemoryBytes: 64 << 20, Pids: 128})
	neighbour := startSandbox(t, rt, env, runtime.Resources{})
	// Grow a shell variable past 64 MiB: the kernel OOM-kills the shell.
	res := run(t, rt, victim, runtime.ExecRequest{
		Command: `x=$(head -c 200000000 /dev/zero | tr '\0' a); echo survived ${#x}`,
		Timeout: 60 * time.Second,
	})
	if res.ExitCode == 0 || strings.Contains(string(res.Stdout), "survived") {
		t.Fatalf("allocation past the memory limit was not killed: exit %d %q", res.ExitCode, res.Stdout)
	}
	if out := run(t, rt, neighbour, runtime.ExecRequest{Command: "echo ok"}); string(out.Stdout) != "ok\n" {
		t.Fatalf("neighbour unhealthy: %q", out.Stdout)
	}
	if out := run(t, rt, victim, runtime.ExecRequest{Command: "echo still here"}); string(out.Stdout) != "still here\n" {
		t.Fatalf("victim sandbox did not survive its OOM kill: %q", out.Stdout)
	}
}

// TestExecSemantics runs every case twice: through the OCI runtime and
// through the sandbox's exec agent, which must behave the same.
func TestExecSemantics(t *testing.T) {
	testenv.BothContainerds(t)
	rt, env := newRuntime(t)
	id := startSandbox(t, rt, env, runtime.Resources{})
	bothPaths(t, rt, id, func(t *testing.T, viaAgent bool) { testExecSemantics(t, rt, id, viaAgent) })
}

func testExecSemantics(t *testing.T, rt *runtime.Runtime, id string, viaAgent bool) {
	run := func(t *testing.T, rt *runtime.Runtime, id string, req runtime.ExecRequest) *runtime.ExecResult {
		t.Helper()
		res := run(t, rt, id, req)
		if req.User != runtime.UserRoot && runtime.ViaAgent(res) != viaAgent {
			t.Fatalf("exec %q: via agent %v, want %v", req.Command, runtime.ViaAgent(res), viaAgent)
		}
		return res
	}
	t.Run("byte exact without trailing newline", func(t *testing.T) {
		res := run(t, rt, id, runtime.ExecRequest{Command: `printf 'no newline'; printf 'err' >&2`})
		if string(res.Stdout) != "no newline" || string(res.Stderr) != "err" {
			t.Fatalf("stdout %q stderr %q", res.Stdout, res.Stderr)
		}
	})
	t.Run("binary output", func(t *testing.T) {
		res := run(t, rt, id, runtime.ExecRequest{Command: `printf '\000\001\377'`})
		if string(res.Stdout) != "\x00\x01\xff" {
			t.Fatalf("stdout %q", res.Stdout)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		if res := run(t, rt, id, runtime.ExecRequest{Command: "exit 7"}); res.ExitCode != 7 {
			t.Fatalf("exit %d", res.ExitCode)
		}
	})
	t.Run("cwd reported after cd", func(t *testing.T) {
		res := run(t, rt, id, runtime.ExecRequest{Command: "cd /tmp && mkdir -p a/b && cd a/b"})
		if res.Cwd != "/tmp/a/b" {
			t.Fatalf("cwd %q", res.Cwd)
		}
		// exit inside the command still reports the directory
		res = run(t, rt, id, runtime.ExecRequest{Command: "cd /tmp; exit 3"})
		if res.Cwd != "/tmp" || res.ExitCode != 3 {
			t.Fatalf("cwd %q exit %d", res.Cwd, res.ExitCode)
		}
	})
	t.Run("missing cwd is invalid", func(t *testing.T) {
		_, err := rt.Exec(context.Background(), id, runtime.ExecRequest{
			Command: "true", User: runtime.UserAgent, Cwd: "/nope", Timeout: time.Second * 5, OutputLimit: 10,
		})
		if !errdefs.IsInvalidArgument(err) {
			t.Fatalf("got %v, want InvalidArgument", err)
		}
	})
	t.Run("fallback cwd", func(t *testing.T) {
		res := run(t, rt, id, runtime.ExecRequest{Command: "pwd", Cwd: "/gone", FallbackCwd: "/home/agent"})
		if string(res.Stdout) != "/home/agent\n" {
			t.Fatalf("stdout %q", res.Stdout)
		}
	})
	t.Run("env", func(t *testing.T) {
		res := run(t, rt, id, runtime.ExecRequest{Command: `printf '%s' "$FOO"`, Env: map[string]string{"FOO": "bar baz"}})
		if string(res.Stdout) != "bar baz" {
			t.Fatalf("stdout %q", res.Stdout)
		}
	})
	t.Run("stdin is empty", func(t *testing.T) {
		res := run(t, rt, id, runtime.ExecRequest{Command: "cat; echo done", Timeout: 5 * time.Second})
		if string(res.Stdout) != "done\n" || res.TimedOut {
			t.Fatalf("stdout %q timedout %v", res.Stdout, res.TimedOut)
		}
	})
	t.Run("output capped", func(t *testing.T) {
		res := run(t, rt, id, runtime.ExecRequest{Command: "head -c 100000 /dev/zero; head -c 10 /dev/zero >&2", OutputLimit: 1000})
		if len(res.Stdout) != 1000 || !res.StdoutTruncated || len(res.Stderr) != 10 || res.StderrTruncated {
			t.Fatalf("stdout %d trunc %v, stderr %d trunc %v", len(res.Stdout), res.StdoutTruncated, len(res.Stderr), res.StderrTruncated)
		}
	})
	t.Run("timeout kills the whole tree including setsid children", func(t *testing.T) {
		start := time.Now()
		res := run(t, rt, id, runtime.ExecRequest{
			Command: "setsid sh -c 'sleep 1000' & (sleep 1001 &) ; sleep 1002",
			Timeout: 2 * time.Second,
		})
		took := time.Since(start)
		if !res.TimedOut || res.ExitCode != runtime.ExitTimedOut {
			t.Fatalf("timedout %v exit %d", res.TimedOut, res.ExitCode)
		}
		if took > 4*time.Second {
			t.Fatalf("timeout returned after %v", took)
		}
		left := run(t, rt, id, runtime.ExecRequest{Command: "ps -o args | grep -c '[s]leep 100' || true", User: runtime.UserRoot})
		if strings.TrimSpace(string(left.Stdout)) != "0" {
			ps := run(t, rt, id, runtime.ExecRequest{Command: "ps -o pid,args", User: runtime.UserRoot})
			t.Fatalf("processes survived the timeout:\n%s", ps.Stdout)
		}
	})
	t.Run("background job does not hold the call", func(t *testing.T) {
		start := time.Now()
		res := run(t, rt, id, runtime.ExecRequest{Command: "sleep 5 & echo started"})
		if string(res.Stdout) != "started\n" || time.Since(start) > 3*time.Second {
			t.Fatalf("stdout %q after %v", res.Stdout, time.Since(start))
		}
	})
	t.Run("concurrent execs", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				res, err := rt.Exec(context.Background(), id, runtime.ExecRequest{
					Command: fmt.Sprintf("sleep 0.2; echo %d", i), User: runtime.UserAgent,
					Cwd: "/home/agent", Timeout: 20 * time.Second, OutputLimit: 100,
				})
				if err != nil {
					t.Error(err)
					return
				}
				if string(res.Stdout) != fmt.Sprintf("%d\n", i) {
					t.Errorf("exec %d got %q", i, res.Stdout)
				}
			}(i)
		}
		wg.Wait()
	})
}

func TestDestroy(t *testing.T) {
	rt, env := newRuntime(t)
	ctx := context.Background()
	id := startSandbox(t, rt, env, runtime.Resources{})
	// A process that ignores SIGTERM forces the SIGKILL path after grace.
	run(t, rt, id, runtime.ExecRequest{Command: "trap '' TERM; sleep 1000 > /dev/null 2>&1 &"})
	start := time.Now()
	if err := rt.Destroy(ctx, id, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("graceful destroy took %v", took)
	}
	if ok, err := rt.Running(ctx, id); err != nil || ok {
		t.Fatalf("running after destroy: %v %v", ok, err)
	}
	if _, err := rt.Exec(ctx, id, runtime.ExecRequest{Command: "true", User: runtime.UserAgent, Timeout: time.Second, OutputLimit: 1}); !errdefs.IsNotFound(err) {
		t.Fatalf("exec after destroy: %v", err)
	}
	infos, _ := rt.List(ctx)
	for _, i := range infos {
		if i.ID == id {
			t.Fatalf("container %s still listed", id)
		}
	}
	// Destroying twice is fine.
	if err := rt.Destroy(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
}

func TestCreateUnknownImageLeavesNothing(t *testing.T) {
	rt, env := newRuntime(t)
	ctx := context.Background()
	err := rt.Create(ctx, runtime.CreateRequest{ID: "sbx-0000000000ff", UserID: "u", Image: "localhost/nope:latest",
		Resources: runtime.Resources{CPU: 1, MemoryBytes: 64 << 20, Pids: 10}, CreatedAt: time.Now()})
	if !errdefs.IsNotFound(err) {
		t.Fatalf("got %v, want NotFound", err)
	}
	infos, _ := rt.List(ctx)
	if len(infos) != 0 {
		t.Fatalf("containers left: %v", infos)
	}
	if _, err := os.Stat(filepath.Join(env.Dir, "matrx", "sandboxes", "sbx-0000000000ff")); err == nil {
		t.Fatal("control dir left behind")
	}
}

// TestExecGateUnderLoad: many execs at once, each of which must run its
// command (not sit in the stdin gate until its timeout). The gate's line
// was once lost about once in 6,000 execs, when the shim's CloseIO raced
// its own reader's open of the stdin FIFO (execWrapper says how; execs no
// longer send CloseIO). A stress test of a rare race: it catches a
// regression only sometimes, three sandboxes exec'ing side by side widen
// the window.
func TestExecGateUnderLoad(t *testing.T) {
	rt, env := newRuntime(t)
	const sandboxes, each = 3, 150
	var wg sync.WaitGroup
	for range sandboxes {
		id := startSandbox(t, rt, env, runtime.Resources{})
		wg.Go(func() {
			for i := range each {
				res, err := rt.Exec(context.Background(), id, runtime.ExecRequest{
					Command: "echo ok", User: runtime.UserAgent, Cwd: "/home/agent",
					Timeout: 10 * time.Second, OutputLimit: 1024,
				})
				if err != nil {
					t.Errorf("exec %d in %s: %v", i, id, err)
					return
				}
				if res.TimedOut || string(res.Stdout) != "ok\n" {
					t.Errorf("exec %d in %s: timed out %v after %v, stdout %q", i, id, res.TimedOut, res.Duration, res.Stdout)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestDestroyThen: stopped runs once every process of the sandbox is gone
// (a writer that never stops has stopped writing, PID 1 does not exist),
// exactly once, and DestroyThen returns only after it did; a sandbox
// already gone still gets its call (nothing runs there either).
func TestDestroyThen(t *testing.T) {
	rt, env := newRuntime(t)
	ctx := context.Background()
	id := startSandbox(t, rt, env, runtime.Resources{})
	home := filepath.Join(env.Dir, "homes", id)
	run(t, rt, id, runtime.ExecRequest{Command: "(while :; do echo x >> /home/agent/tick; done) > /dev/null 2>&1 &"})
	pid := env.TaskPID(t, testNS, id)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(filepath.Join(home, "tick")); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer never wrote")
		}
	}
	var calls atomic.Int32
	var finished atomic.Bool
	err := rt.DestroyThen(ctx, id, 0, func() {
		calls.Add(1)
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("PID 1 (%d) still exists when stopped runs: %v", pid, err)
		}
		a, _ := os.ReadFile(filepath.Join(home, "tick"))
		time.Sleep(100 * time.Millisecond)
		b, _ := os.ReadFile(filepath.Join(home, "tick"))
		if len(a) == 0 || len(a) != len(b) {
			t.Errorf("the sandbox's writer still writes when stopped runs: %d bytes, then %d", len(a), len(b))
		}
		finished.Store(true)
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || !finished.Load() {
		t.Fatalf("stopped ran %d times, finished %v, before DestroyThen returned", calls.Load(), finished.Load())
	}
	if err := rt.DestroyThen(ctx, id, 0, func() { calls.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 {
		t.Fatalf("a destroyed sandbox's DestroyThen did not call stopped")
	}
}
