package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

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
	s.starting, s.tried = true, time.Now()
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
	if s.starting || (s.agent != nil && s.agent.Alive()) {
		s.mu.Unlock()
		return nil
	}
	s.starting, s.tried = true, time.Now()
	s.mu.Unlock()
	return r.startAgent(ctx, id, st)
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
		if s, serr := p.Status(ctx); serr == nil && s.Status == containerd.Running {
			if a, err := execagent.Open(int(p.Pid())); err == nil {
				return a, nil
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
	var out execOutcome
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (*os.File, *os.File, error) {
		pr, pw, err := os.Pipe()
		if err == nil {
			files = append(files, pr, pw)
		}
		return pr, pw, err
	}
	inR, inW, err1 := pipe()
	outR, outPW, err2 := pipe()
	errR, errPW, err3 := pipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		closeAll()
		return out, fmt.Errorf("%w: pipes: %v", execagent.ErrNotStarted, err)
	}
	defer closeAll()
	cmd, err := a.Start(execagent.Request{Argv: args, Env: env}, inR, outPW, errPW)
	// The child holds its own copies now (or there is no child).
	inR.Close()
	outPW.Close()
	errPW.Close()
	if err != nil {
		return out, err
	}
	defer cmd.Close()
	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); io.Copy(outW, outR) }()
	go func() { defer copies.Done(); io.Copy(errW, errR) }()
	stopCopies := func() {
		outR.Close()
		errR.Close()
		copies.Wait()
	}
	hostPid, err := a.ChildHostPid(cmd.NsPid)
	var group *execGroup
	var child *childWatch
	if err == nil {
		child, err = watchChild(hostPid)
	}
	if err == nil {
		group, err = newExecGroup(hostPid, "exec-"+execID)
		if err != nil {
			child.close()
		}
	}
	if err != nil {
		// The gate closes without its line: the wrapper exits without
		// running the command.
		inW.Close()
		stopCopies()
		return out, fmt.Errorf("%w: %v", execagent.ErrNotStarted, err)
	}
	defer child.close()
	release.Push("exec cgroup", func(context.Context) error { group.remove(); return nil })
	inW.Write([]byte("\n"))
	inW.Close()
	fault.At(ctx, "exec/started")

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var ex execagent.ExitResult
	exited := false
	select {
	case ex = <-cmd.Exited():
		exited = true
	case <-timer.C:
		out.timedOut = true
	case <-ctx.Done():
		out.timedOut = true
	}
	if exited && ex.Err != nil {
		// The agent went away (the command may have killed it: it is the
		// agent user's): the command itself may still run. Its end, and
		// its status, come from the host's own handle on it.
		select {
		case <-child.exited:
			ex = child.status()
		case <-timer.C:
			out.timedOut = true
		case <-ctx.Done():
			out.timedOut = true
		}
	}
	if out.timedOut {
		if err := group.kill(); err != nil {
			r.log.Warn("exec timeout kill failed", "sandbox_id", id, "error", err)
		}
		select {
		case <-child.exited:
		case <-time.After(2 * time.Second):
			syscall.Kill(hostPid, syscall.SIGKILL)
		}
	}
	if !out.timedOut && ex.Err != nil {
		stopCopies()
		return out, fmt.Errorf("exec in %s: %v: %w", id, ex.Err, errdefs.ErrUnavailable)
	}
	fault.At(ctx, "exec/exited")
	// Let the output reach EOF, but not forever (see ioDrainGrace).
	drained := make(chan struct{})
	go func() { copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(ioDrainGrace):
		stopCopies()
	}
	out.code = ex.Code
	if out.timedOut {
		out.code = ExitTimedOut
	}
	return out, nil
}
