//go:build linux

package runtime_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/testenv"
)

// events collects what Watch reports.
type events struct {
	mu  sync.Mutex
	got []runtime.TaskEvent
}

func (e *events) add(ev runtime.TaskEvent) {
	e.mu.Lock()
	e.got = append(e.got, ev)
	e.mu.Unlock()
}

// wait returns the first event for id of one of kinds within d.
func (e *events) wait(t *testing.T, id string, kind runtime.TaskEventKind, d time.Duration, orKinds ...runtime.TaskEventKind) runtime.TaskEvent {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		e.mu.Lock()
		for _, ev := range e.got {
			if ev.SandboxID == id && (ev.Kind == kind || slices.Contains(orKinds, ev.Kind)) {
				e.mu.Unlock()
				return ev
			}
		}
		e.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t.Fatalf("no %s event for %s within %v; got %+v", kind, id, d, e.got)
	return runtime.TaskEvent{}
}

func (e *events) none(t *testing.T, id string) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.got {
		if ev.SandboxID == id {
			t.Errorf("event for a healthy sandbox: %+v", ev)
		}
	}
}

// TestWatchReportsDeaths: PID 1 exiting (SIGTERM from a root exec), PID 1
// OOM-killed (its oom_score_adj raised from the host, then memory hogs
// that are each smaller than it in the OOM killer's eyes), and a shim
// killed with SIGKILL are each reported within 5 s; execs that exit and a
// healthy sandbox are not.
func TestWatchReportsDeaths(t *testing.T) {
	testenv.BothContainerds(t)
	rt, env := newRuntime(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ev events
	done := make(chan struct{})
	go func() {
		defer close(done)
		rt.Watch(ctx, runtime.WatchConfig{Poll: time.Second, OnEvent: ev.add})
	}()
	defer func() { cancel(); <-done }()

	healthy := startSandbox(t, rt, env, runtime.Resources{})
	run(t, rt, healthy, runtime.ExecRequest{Command: "exit 3"})

	termed := startSandbox(t, rt, env, runtime.Resources{})
	run(t, rt, termed, runtime.ExecRequest{Command: "kill -TERM 1", User: runtime.UserRoot})
	e := ev.wait(t, termed, runtime.TaskExited, 5*time.Second)
	if !e.HasStatus || e.OOMKilled {
		t.Errorf("SIGTERM exit: %+v", e)
	}
	t.Logf("PID 1 after SIGTERM: exit status %d", e.ExitStatus)

	oom := startSandbox(t, rt, env, runtime.Resources{CPU: 1, MemoryBytes: 128 << 20, Pids: 128})
	pid := env.TaskPID(t, testNS, oom)
	if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte("1000"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Each hog stays well below the memory limit, so PID 1's score
	// (1000) beats every hog's (500 plus its share of the limit).
	go rt.Exec(context.Background(), oom, runtime.ExecRequest{
		Command: `for i in 1 2 3 4 5 6 7 8; do tail /dev/zero & done; wait`, User: runtime.UserAgent,
		Cwd: "/", Timeout: 30 * time.Second, OutputLimit: 1024,
	})
	ev.wait(t, oom, runtime.TaskOOM, 10*time.Second)
	e = ev.wait(t, oom, runtime.TaskExited, 5*time.Second)
	if !e.OOMKilled || e.ExitStatus != 137 {
		t.Errorf("OOM-killed PID 1: %+v", e)
	}

	lost := startSandbox(t, rt, env, runtime.Resources{})
	shim := env.ShimPID(lost)
	if shim == 0 {
		t.Fatal("no shim found")
	}
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, lost, runtime.TaskLost, 5*time.Second)
	ev.none(t, healthy)
	if err := rt.Connected(); err != nil {
		t.Errorf("connected: %v", err)
	}
}

// TestWatchSurvivesContainerdRestart: when containerd goes away, Watch
// says so; when it is back, Watch says so again and still reports a death
// that happened while it was away (the poll, since no event is replayed).
func TestWatchSurvivesContainerdRestart(t *testing.T) {
	testenv.BothContainerds(t)
	rt, env := newRuntime(t)
	ctx, cancel := context.WithCancel(context.Background())
	var ev events
	conn := make(chan error, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rt.Watch(ctx, runtime.WatchConfig{Poll: 500 * time.Millisecond, OnEvent: ev.add, OnConnection: func(err error) { conn <- err }})
	}()
	defer func() { cancel(); <-done }()
	id := startSandbox(t, rt, env, runtime.Resources{})
	keep := startSandbox(t, rt, env, runtime.Resources{})
	pid := env.TaskPID(t, testNS, id)
	env.Kill(t)
	select {
	case err := <-conn:
		if err == nil {
			t.Fatal("reported connected when containerd died")
		}
		t.Logf("while away: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("containerd's death not reported within 5 s")
	}
	if rt.Connected() == nil {
		t.Fatal("Connected says yes while containerd is dead")
	}
	// PID 1 dies while nobody listens.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	env.Restart(t)
	// A poll that began while containerd was away may still fail after it
	// came back: what counts is that "connected" is reported, and stays.
	deadline := time.After(10 * time.Second)
	for back := false; !back; {
		select {
		case err := <-conn:
			back = err == nil
		case <-deadline:
			t.Fatal("reconnection not reported within 10 s")
		}
	}
	time.Sleep(time.Second)
	if err := rt.Connected(); err != nil {
		t.Fatalf("a second after the reconnection: %v", err)
	}
	// containerd 1.6 finds the stopped task on restart; containerd 2
	// deletes it while loading the shim, so it is gone.
	e := ev.wait(t, id, runtime.TaskExited, 5*time.Second, runtime.TaskLost)
	t.Logf("death while containerd was away: %+v", e)
	ev.none(t, keep)
	if r := run(t, rt, keep, runtime.ExecRequest{Command: "echo ok"}); string(r.Stdout) != "ok\n" {
		t.Fatalf("exec after containerd restart: %+v", r)
	}
}

// TestWatchQuietWhileCreatingAndDestroying: a sandbox's container exists
// without a task for a moment in every Create (before its task) and
// Destroy (after it): a poll that lands there must not report the sandbox
// lost (seen once in CI: a healthy sandbox reported lost by a poll that
// ran while it was being created). The poll runs every 5 ms, well inside
// those windows (tens of ms each), across ten creates and destroys; a
// container that really has no task is still reported.
func TestWatchQuietWhileCreatingAndDestroying(t *testing.T) {
	rt, env := newRuntime(t)
	ctx, cancel := context.WithCancel(context.Background())
	var ev events
	done := make(chan struct{})
	go func() {
		defer close(done)
		rt.Watch(ctx, runtime.WatchConfig{Poll: 5 * time.Millisecond, OnEvent: ev.add})
	}()
	defer func() { cancel(); <-done }()
	var made []string
	for range 10 {
		id := startSandbox(t, rt, env, runtime.Resources{})
		made = append(made, id)
		if err := rt.Destroy(context.Background(), id, 0); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	for _, id := range made {
		ev.none(t, id)
	}
	// Not created by this runtime, and without a task: that is lost.
	orphan := "sbx-" + strconv.FormatInt(time.Now().UnixNano()%1e12, 16)
	c, err := containerd.New(env.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nctx := namespaces.WithNamespace(context.Background(), testNS)
	if _, err := c.NewContainer(nctx, orphan, containerd.WithNewSpec()); err != nil {
		t.Fatal(err)
	}
	defer c.ContainerService().Delete(nctx, orphan)
	ev.wait(t, orphan, runtime.TaskLost, 5*time.Second)
}
