package runtime

// Supervision: what happened to each sandbox's task, as containerd tells
// it. Events (/tasks/exit, /tasks/oom, /tasks/delete) say it at once, but
// containerd does not replay them to a subscriber that reconnects, so a
// status poll (as containerd's own restart monitor does) catches whatever
// the stream missed. The poll reports every sandbox container whose task
// is not running, every time: deciding what that means (a sandbox still
// being created has no task yet; one being stopped loses it on purpose) is
// the caller's job, and repeated reports must be harmless to it.

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
)

// TaskEventKind says what happened to a sandbox's task.
type TaskEventKind string

// The kinds of TaskEvent.
const (
	// TaskExited: PID 1 exited; ExitStatus says how, OOMKilled whether
	// the kernel's OOM killer took it.
	TaskExited TaskEventKind = "exited"
	// TaskOOM: the OOM killer killed a process of the sandbox (PID 1 or
	// any other).
	TaskOOM TaskEventKind = "oom"
	// TaskLost: the task is gone or unreachable without PID 1's exit
	// having been seen: its shim died, or the task was deleted behind the
	// daemon's back.
	TaskLost TaskEventKind = "lost"
)

// TaskEvent is one thing that happened to a sandbox's task.
type TaskEvent struct {
	SandboxID string
	Kind      TaskEventKind
	// ExitStatus is PID 1's exit status (TaskExited; TaskLost when
	// containerd reported one).
	ExitStatus uint32
	HasStatus  bool
	OOMKilled  bool
	At         time.Time
}

// WatchConfig says how Watch reports.
type WatchConfig struct {
	// Poll is the status poll interval (default 2 s).
	Poll time.Duration
	// OnEvent receives task events, one at a time. It must not block for
	// long: start slow work (a stop) on a goroutine of its own.
	OnEvent func(TaskEvent)
	// OnConnection is called when containerd stops answering (with why)
	// and when it answers again (nil), after the event stream has been
	// resubscribed and the poll has run once.
	OnConnection func(error)
}

// oomWindow is how close to PID 1's SIGKILL exit an OOM event must be for
// the exit to count as an OOM kill; the shim reports the two
// independently, in either order.
const oomWindow = 2 * time.Second

// Watch reports task events of the daemon's namespace until ctx ends,
// reconnecting to containerd with backoff (100 ms doubling to 5 s) and
// resubscribing whenever the stream breaks.
func (r *Runtime) Watch(ctx context.Context, cfg WatchConfig) {
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(TaskEvent) {}
	}
	w := &watcher{r: r, cfg: cfg, oom: map[string]time.Time{}, connected: true}
	w.wg.Go(func() { w.pollLoop(ctx) })
	w.streamLoop(ctx)
	// No report after Watch returns: the caller may be shutting down.
	w.wg.Wait()
}

// Connected reports whether containerd answered the supervisor's last
// call (nil), or why not.
func (r *Runtime) Connected() error {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	return r.connErr
}

type watcher struct {
	r   *Runtime
	cfg WatchConfig

	mu        sync.Mutex
	oom       map[string]time.Time // last OOM event per sandbox
	connected bool
	connAt    time.Time      // when the call behind the last recorded reachability began
	wg        sync.WaitGroup // the poll loop and exit classifications
}

// setConn records containerd's reachability, as learnt by a call that
// began at began, and reports changes. The poll loop and the event stream
// both observe it, so an observation older than the one recorded is
// dropped: a poll that began while containerd was away must not undo the
// reconnection the stream reported while that poll was still waiting.
func (w *watcher) setConn(err error, began time.Time) {
	w.mu.Lock()
	if began.Before(w.connAt) {
		w.mu.Unlock()
		return
	}
	w.connAt = began
	changed := (err == nil) != w.connected
	w.connected = err == nil
	w.mu.Unlock()
	w.r.connMu.Lock()
	w.r.connErr = err
	w.r.connMu.Unlock()
	if changed && w.cfg.OnConnection != nil {
		w.cfg.OnConnection(err)
	}
}

func (w *watcher) streamLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	var filters []string
	for _, topic := range []string{"/tasks/exit", "/tasks/oom", "/tasks/delete"} {
		filters = append(filters, "namespace=="+strconv.Quote(w.r.ns)+",topic=="+strconv.Quote(topic))
	}
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		evs, errs := w.r.client.Subscribe(sctx, filters...)
		// The subscription is live once containerd answers a call made
		// after it (Subscribe itself returns before the stream exists).
		began := time.Now()
		vctx, vcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := w.r.client.Version(vctx)
		vcancel()
		if err != nil {
			cancel()
			w.setConn(unavailable(err), began)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		// Events were not delivered while the stream was down: look at
		// every task now, then say containerd is back.
		w.poll(ctx)
		w.setConn(nil, began)
	recv:
		for {
			select {
			case <-ctx.Done():
				cancel()
				return
			case ev, ok := <-evs:
				if !ok {
					break recv
				}
				w.handle(ctx, ev.Event)
			case err := <-errs:
				if err != nil && ctx.Err() == nil {
					w.r.log.Warn("containerd event stream broke; reconnecting", "error", err)
					w.setConn(unavailable(err), time.Now())
				}
				break recv
			}
		}
		cancel()
	}
}

func (w *watcher) handle(ctx context.Context, any typeurl.Any) {
	v, err := typeurl.UnmarshalAny(any)
	if err != nil {
		return
	}
	switch e := v.(type) {
	case *eventstypes.TaskOOM:
		w.mu.Lock()
		w.oom[e.ContainerID] = time.Now()
		w.mu.Unlock()
		w.cfg.OnEvent(TaskEvent{SandboxID: e.ContainerID, Kind: TaskOOM, At: time.Now()})
	case *eventstypes.TaskExit:
		if e.ID != e.ContainerID {
			return // an exec's process, not PID 1
		}
		status := e.ExitStatus
		w.wg.Go(func() { w.classifyExit(ctx, e.ContainerID, &status) })
	case *eventstypes.TaskDelete:
		// Our own deletes come after the caller stopped the sandbox; one
		// it did not ask for is a lost task (a dead shim's cleanup
		// publishes exit, then delete).
		w.wg.Go(func() { w.classifyExit(ctx, e.ContainerID, nil) })
	}
}

// classifyExit decides, from the task's state now, whether PID 1 exited
// (the task is stopped) or the task was lost (gone, or its shim does not
// answer while containerd does).
func (w *watcher) classifyExit(ctx context.Context, id string, status *uint32) {
	st, err := w.r.taskStatus(ctx, id)
	switch {
	case err == nil && st.Status == containerd.Stopped:
		w.reportExit(ctx, id, st.ExitStatus)
	case err == nil:
		// Running again, or created: nothing to report.
	case errdefs.IsNotFound(err):
		w.reportLost(id, status)
	default:
		vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, verr := w.r.client.Version(vctx)
		cancel()
		if verr == nil {
			w.reportLost(id, status)
		}
		// containerd itself is away: the poll decides once it is back.
	}
}

// reportLost reports a task gone without its exit seen. Neither it nor
// reportExit reports a sandbox this runtime is creating or destroying, or
// has just destroyed: its container exists without a task by design for a
// moment (seen: a poll between a Create's container and its task reported
// a healthy sandbox lost), a poll may ask about a container it listed just
// before a Destroy removed it, and a Destroy's kill is no news to its
// caller. A sandbox that really died or was lost after a Create is
// reported by the next poll.
func (w *watcher) reportLost(id string, status *uint32) {
	if w.r.ownChange(id) {
		return
	}
	ev := TaskEvent{SandboxID: id, Kind: TaskLost, At: time.Now()}
	if status != nil {
		ev.ExitStatus, ev.HasStatus = *status, true
	}
	w.cfg.OnEvent(ev)
}

// reportExit reports PID 1's exit; a SIGKILL exit waits briefly for the
// OOM event that may explain it.
func (w *watcher) reportExit(ctx context.Context, id string, status uint32) {
	if w.r.ownChange(id) {
		return
	}
	ev := TaskEvent{SandboxID: id, Kind: TaskExited, ExitStatus: status, HasStatus: true, At: time.Now()}
	if status == 128+uint32(syscall.SIGKILL) {
		deadline := time.Now().Add(oomWindow / 2)
		for {
			w.mu.Lock()
			last, seen := w.oom[id]
			w.mu.Unlock()
			if seen && time.Since(last) < oomWindow {
				ev.OOMKilled = true
				break
			}
			if time.Now().After(deadline) || !sleepCtx(ctx, 50*time.Millisecond) {
				break
			}
		}
	}
	w.cfg.OnEvent(ev)
}

func (w *watcher) pollLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A poll that answers also ends an outage: the stream is
			// resubscribed on its own backoff, and the poll covers the
			// events it misses meanwhile.
			began := time.Now()
			w.setConn(w.poll(ctx), began)
		}
	}
}

// poll reports every sandbox container whose task is not running.
func (w *watcher) poll(ctx context.Context) error {
	nctx := w.r.nsCtx(ctx)
	cs, err := w.r.client.Containers(nctx)
	if err != nil {
		return unavailable(err)
	}
	for _, c := range cs {
		id := c.ID()
		st, err := w.r.taskStatus(ctx, id)
		switch {
		case errdefs.IsNotFound(err):
			w.reportLost(id, nil)
		case err != nil:
			// The shim does not answer; containerd cleans up a dead one
			// and publishes it, or the next poll sees the task gone.
		case st.Status == containerd.Stopped:
			w.reportExit(ctx, id, st.ExitStatus)
		}
	}
	w.mu.Lock()
	for id, at := range w.oom {
		if time.Since(at) > time.Minute {
			delete(w.oom, id)
		}
	}
	w.mu.Unlock()
	return nil
}

// taskStatus asks containerd for a sandbox task's status, without the
// runtime's cached handle (which may belong to a dead shim).
func (r *Runtime) taskStatus(ctx context.Context, id string) (containerd.Status, error) {
	nctx := r.nsCtx(ctx)
	c, err := r.client.LoadContainer(nctx, id)
	if err != nil {
		return containerd.Status{}, err
	}
	t, err := c.Task(nctx, nil)
	if err != nil {
		return containerd.Status{}, err
	}
	return t.Status(nctx)
}

func unavailable(err error) error {
	if errdefs.IsUnavailable(err) {
		return err
	}
	return fmt.Errorf("containerd does not answer: %v: %w", err, errdefs.ErrUnavailable)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// TaskState is what containerd says of one sandbox right now.
type TaskState struct {
	Container  bool // its container exists
	Task       bool // the container has a task
	Running    bool
	Stopped    bool // PID 1 exited (ExitStatus says how)
	ExitStatus uint32
}

// TaskState asks containerd about a sandbox's container and task. A
// sandbox containerd does not know is the zero TaskState, not an error;
// errors mean containerd (or the task's shim) did not answer.
func (r *Runtime) TaskState(ctx context.Context, id string) (TaskState, error) {
	nctx := r.nsCtx(ctx)
	c, err := r.client.LoadContainer(nctx, id)
	if errdefs.IsNotFound(err) {
		return TaskState{}, nil
	}
	if err != nil {
		return TaskState{}, unavailable(err)
	}
	out := TaskState{Container: true}
	t, err := c.Task(nctx, nil)
	if errdefs.IsNotFound(err) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("load task %s: %w", id, err)
	}
	out.Task = true
	st, err := t.Status(nctx)
	if errdefs.IsNotFound(err) {
		return TaskState{Container: true}, nil
	}
	if err != nil {
		return out, fmt.Errorf("task status %s: %w", id, err)
	}
	out.Running = st.Status == containerd.Running || st.Status == containerd.Paused || st.Status == containerd.Pausing
	out.Stopped = st.Status == containerd.Stopped
	out.ExitStatus = st.ExitStatus
	return out, nil
}
