package runtime

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/fault"
	"github.com/matrx-dev/matrx/runtime/execagent"
	"github.com/matrx-dev/matrx/undo"
)

// The exec agent (package runtime/execagent, whose doc holds the design and
// why a hostile sandbox gains nothing from it) starts the agent user's
// execs without the OCI runtime. Each sandbox gets one, started right
// after its second exec (the first two take the runtime path; see
// startAgentSoon), or ahead by WarmExecAgent, which the warm pool calls: a containerd exec of
// `matrx-init exec-agent` with the agent user's exec spec. Until it answers, and whenever it does not (killed from inside,
// its socket taken), execs take the OCI runtime path as before. Root execs
// always do: the agent holds no capability to start them.

// agentExecID is the containerd exec id of a sandbox's agent.
const agentExecID = "matrx-exec-agent"

// agentRetry is the least time between two starts of a sandbox's agent: a
// sandbox that keeps killing its own agent costs one extra runtime exec per
// interval, not one per exec.
const agentRetry = 5 * time.Second

// agentState is what a sandboxTask knows of its agent.
type agentState struct {
	mu       sync.Mutex
	agent    *execagent.Agent
	starting bool
	started  chan struct{} // closed when the start in progress ended
	tried    time.Time
	slow     int // execs that took the runtime path (startAgentSoon)
}

// close releases the pinned agent (the process itself dies with the
// sandbox).
func (s *agentState) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.agent != nil {
		s.agent.Close()
		s.agent = nil
	}
}

// WithoutExecAgent runs every exec through the OCI runtime (for
// benchmarks that compare the two paths, and as an operator's way out).
func WithoutExecAgent() Option { return func(r *Runtime) { r.noAgent.Store(true) } }

// agentFor returns the sandbox's live agent, or nil when there is none.
func (r *Runtime) agentFor(st *sandboxTask) *execagent.Agent {
	if r.noAgent.Load() {
		return nil
	}
	s := &st.agent
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.agent != nil && s.agent.Alive() {
		return s.agent
	}
	if s.agent != nil {
		s.agent.Close()
		s.agent = nil
	}
	return nil
}

// startAgentSoon starts the sandbox's agent in the background unless one
// runs, is starting, or was tried in the last agentRetry, once a second
// exec took the runtime path: a sandbox that runs one command never pays
// the agent's start (a runtime exec: in a burst of 50 creates that each
// ran `node -v`, starting agents after every first exec cost 6.9 -> 5.7
// creates/s in one run), one that runs more pays it once. Exec calls it after the exec, so the
// agent's own start never competes with the exec that needed it.
func (r *Runtime) startAgentSoon(id string, st *sandboxTask) {
	if r.noAgent.Load() {
		return
	}
	s := &st.agent
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slow++
	if s.slow < 2 || s.starting || (s.agent != nil && s.agent.Alive()) || time.Since(s.tried) < agentRetry {
		return
	}
	s.beginStart()
	go func() {
		ctx, cancel := context.WithTimeout(r.nsCtx(context.Background()), 30*time.Second)
		defer cancel()
		if err := r.startAgent(ctx, id, st); err != nil {
			r.log.Debug("exec agent not started; execs use the OCI runtime", "sandbox_id", id, "error", err)
		}
	}()
}

// WarmExecAgent starts sandbox id's agent now and waits until it answers
// (the warm pool does this while filling, so a claimed sandbox's first exec
// is fast).
func (r *Runtime) WarmExecAgent(ctx context.Context, id string) error {
	if r.noAgent.Load() {
		return nil
	}
	ctx = r.nsCtx(ctx)
	st, err := r.sandbox(ctx, id)
	if err != nil {
		return err
	}
	s := &st.agent
	s.mu.Lock()
	if s.agent != nil && s.agent.Alive() {
		s.mu.Unlock()
		return nil
	}
	if s.starting {
		// Another start is under way (startAgentSoon's): its outcome is
		// this call's.
		done := s.started
		s.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.agentFor(st) == nil {
			return fmt.Errorf("exec agent of %s did not start", id)
		}
		return nil
	}
	s.beginStart()
	s.mu.Unlock()
	return r.startAgent(ctx, id, st)
}

// beginStart marks a start as under way (s.mu held).
func (s *agentState) beginStart() {
	s.starting, s.tried, s.started = true, time.Now(), make(chan struct{})
}

// startAgent starts (or, after a daemon restart, adopts) the agent and
// publishes it once it accepts connections.
func (r *Runtime) startAgent(ctx context.Context, id string, st *sandboxTask) (err error) {
	var a *execagent.Agent
	defer func() {
		s := &st.agent
		s.mu.Lock()
		s.starting = false
		if err == nil {
			s.agent = a
		}
		if s.started != nil {
			close(s.started)
			s.started = nil
		}
		s.mu.Unlock()
	}()
	a, err = r.launchAgent(ctx, st)
	if err != nil {
		return err
	}
	// Wait until it listens (a few ms after its start).
	deadline := time.Now().Add(2 * time.Second)
	for {
		perr := a.Probe()
		if perr == nil {
			return nil
		}
		if !a.Alive() || time.Now().After(deadline) {
			a.Close()
			return fmt.Errorf("exec agent of %s does not answer: %w", id, perr)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (r *Runtime) launchAgent(ctx context.Context, st *sandboxTask) (*execagent.Agent, error) {
	// An agent this daemon did not start (before a restart) is adopted if it
	// runs; a dead one's exec entry is removed so its id can be used again.
	if p, err := st.task.LoadProcess(ctx, agentExecID, nil); err == nil {
		// A loaded process does not know its pid (p.Pid() is 0): ask the
		// task service, which does.
		got, gerr := r.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: st.task.ID(), ExecID: agentExecID})
		if gerr == nil && got.Process != nil && got.Process.Pid > 0 {
			if s, serr := p.Status(ctx); serr == nil && s.Status == containerd.Running {
				if a, err := execagent.Open(int(got.Process.Pid)); err == nil {
					return a, nil
				}
			}
		}
		// Kill it and wait for its exit before the entry can go.
		if exited, err := p.Wait(ctx); err == nil {
			if err := p.Kill(ctx, syscall.SIGKILL); err == nil || errdefs.IsNotFound(err) {
				select {
				case <-exited:
				case <-ctx.Done():
				}
			}
		}
		if _, err := p.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("remove the previous exec agent: %w", err)
		}
	}
	pspec, err := execProcess(UserAgent, []string{InitPath, "exec-agent"}, []string{"PATH=" + defaultPath})
	if err != nil {
		return nil, err
	}
	proc, err := st.task.Exec(ctx, agentExecID, pspec, cio.NullIO)
	if err != nil {
		return nil, fmt.Errorf("create the exec agent: %w", err)
	}
	if err := proc.Start(ctx); err != nil {
		proc.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		return nil, fmt.Errorf("start the exec agent: %w", err)
	}
	a, err := execagent.Open(int(proc.Pid()))
	if err != nil {
		proc.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		return nil, err
	}
	return a, nil
}

// execOutcome is how an exec ended, whichever path ran it.
type execOutcome struct {
	code     int
	timedOut bool
}

// execViaAgent runs the wrapper (args, env) through agent a. An error
// wrapping execagent.ErrNotStarted means the command did not and will not
// run: the caller takes the runtime path.
func (r *Runtime) execViaAgent(ctx context.Context, id string, a *execagent.Agent, execID string, args, env []string, timeout time.Duration, outW, errW io.Writer, release *undo.Stack) (execOutcome, error) {
	c, err := startAgentChild(a, execagent.Request{Argv: args, Env: env}, "exec-"+execID, false)
	if err != nil {
		return execOutcome{}, err
	}
	defer c.close()
	release.Push("exec cgroup", func(context.Context) error { c.group.remove(); return nil })
	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); io.Copy(outW, c.stdout) }()
	go func() { defer copies.Done(); io.Copy(errW, c.stderr) }()
	// Release the gate: the shell is in its cgroup now.
	c.stdin.Write([]byte("\n"))
	c.stdin.Close()
	fault.At(ctx, "exec/started")

	exited := make(chan execagent.ExitResult, 1)
	go func() { ex, _ := c.wait(nil); exited <- ex }()
	ex, timedOut := awaitExec(ctx, r.log, id, timeout, exited, c.group, func() { syscall.Kill(c.hostPid, syscall.SIGKILL) })
	if !timedOut && ex.Err != nil {
		c.stdout.Close()
		c.stderr.Close()
		copies.Wait()
		return execOutcome{}, fmt.Errorf("exec in %s: %v: %w", id, ex.Err, errdefs.ErrUnavailable)
	}
	fault.At(ctx, "exec/exited")
	drainOutput(copies.Wait, func() { c.stdout.Close(); c.stderr.Close() })
	out := execOutcome{code: ex.Code, timedOut: timedOut}
	if timedOut {
		out.code = ExitTimedOut
	}
	return out, nil
}

// awaitExec waits for an exec's end (exited), its timeout or ctx. On a
// timeout or cancel it kills the exec's cgroup, gives it 2 s, then calls
// hardKill (SIGKILL to the shell itself), and still waits for its end, so
// the caller never returns while the command runs.
func awaitExec[T any](ctx context.Context, log *slog.Logger, id string, timeout time.Duration, exited <-chan T, group *execGroup, hardKill func()) (T, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case ex := <-exited:
		return ex, false
	case <-timer.C:
	case <-ctx.Done():
	}
	if err := group.kill(); err != nil {
		log.Warn("exec timeout kill failed", "sandbox_id", id, "error", err)
	}
	select {
	case ex := <-exited:
		return ex, true
	case <-time.After(2 * time.Second):
		hardKill()
		return <-exited, true
	}
}

// drainOutput lets an exec's output reach EOF after its end, but not
// forever (see ioDrainGrace): then cancel stops the copies, and wait still
// returns before drainOutput does.
func drainOutput(wait, cancel func()) {
	drained := make(chan struct{})
	go func() { wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(ioDrainGrace):
		cancel()
		<-drained
	}
}
