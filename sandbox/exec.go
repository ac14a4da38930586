package sandbox

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/fault"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
)

// ExecInput is one exec request as the client sent it.
type ExecInput struct {
	Command string
	Timeout time.Duration // 0: default
	User    string        // "", "agent" or "root"
	Cwd     string        // "": remembered
	Env     map[string]string
	// Stdout and Stderr, when set, receive the output as it comes (a
	// streamed exec); the result then carries none.
	Stdout, Stderr io.Writer
}

// Exec runs a command in a live sandbox.
// The result's Cwd is where the next exec starts.
func (m *Manager) Exec(ctx context.Context, id string, in ExecInput) (*runtime.ExecResult, error) {
	l := m.limits
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	if in.Command == "" {
		return nil, invalid("command must not be empty")
	}
	if n := len([]rune(in.Command)); n > l.MaxCommandLength {
		return nil, invalid("command is %d characters, at most %d allowed", n, l.MaxCommandLength)
	}
	if strings.IndexByte(in.Command, 0) >= 0 {
		return nil, invalid("command must not contain NUL bytes")
	}
	if in.Timeout == 0 {
		in.Timeout = l.DefaultCmdTimeout
	}
	if in.Timeout < time.Second || in.Timeout > l.MaxCmdTimeout {
		return nil, invalid("timeout %v is out of range [1s, %v]", in.Timeout, l.MaxCmdTimeout)
	}
	user := runtime.ExecUser(in.User)
	if user == "" {
		user = runtime.UserAgent
	}
	if user != runtime.UserAgent && user != runtime.UserRoot {
		return nil, invalid("user %q is invalid: want agent or root", in.User)
	}
	if in.Cwd != "" {
		if err := validateCwd(in.Cwd); err != nil {
			return nil, err
		}
	}
	if err := validateEnv(in.Env, "env"); err != nil {
		return nil, err
	}
	rec, err := m.userRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	if !rec.Status.AcceptsExec() {
		return nil, fmt.Errorf("sandbox %s is %s, not running: %w", id, rec.Status, errdefs.ErrFailedPrecondition)
	}
	if err := m.refuseWhileDegraded("exec", ConditionContainerd); err != nil {
		return nil, err
	}
	st := m.state(id)
	// An exec in flight is activity for as long as it runs.
	m.mu.Lock()
	st.execs++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		st.execs--
		m.mu.Unlock()
		m.Touch(context.WithoutCancel(ctx), id)
	}()
	req := runtime.ExecRequest{
		Command: in.Command, User: user, Timeout: in.Timeout, OutputLimit: l.OutputLimit,
		Env: m.sandboxEnv(rec), Stdout: in.Stdout, Stderr: in.Stderr,
	}
	for k, v := range in.Env {
		req.Env[k] = v
	}
	if in.Cwd != "" {
		req.Cwd = in.Cwd
	} else {
		m.mu.Lock()
		req.Cwd = st.cwd
		m.mu.Unlock()
		// A remembered directory the agent has since removed falls back
		// to home instead of failing the call.
		req.FallbackCwd = HotPath
	}
	if rec.Status == registry.StatusReady {
		// The first exec marks the sandbox running. The registry write (an
		// fsync) runs beside the command instead of after it: it was on
		// every new sandbox's first answer, so on its time to first
		// command. The call still returns only once it is stored.
		flipped := make(chan struct{})
		go func() {
			defer close(flipped)
			m.store.Update(context.WithoutCancel(ctx), id, func(r *registry.Record) error {
				if r.Status == registry.StatusReady {
					r.Status = registry.StatusRunning
				}
				return nil
			})
		}()
		defer func() { <-flipped }()
	}
	res, err := m.rt.Exec(ctx, id, req)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("sandbox %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	fault.At(ctx, "exec/done")
	if res.Cwd == "" {
		res.Cwd = req.Cwd
	} else {
		m.mu.Lock()
		st.cwd = res.Cwd
		m.mu.Unlock()
	}
	m.metrics.ObserveExec(res.Duration, res.TimedOut)
	if res.TimedOut {
		m.log.Warn("exec timed out", "sandbox_id", id, "user_id", rec.UserID, "timeout", in.Timeout)
	}
	return res, nil
}

// state returns the in-memory state of a sandbox, creating it after a daemon
// restart (the remembered cwd does not survive restarts: it falls back to
// home).
func (m *Manager) state(id string) *liveState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stateLocked(id)
}

// stateLocked is state with m.mu held.
func (m *Manager) stateLocked(id string) *liveState {
	st, ok := m.live[id]
	if !ok {
		st = &liveState{cwd: HotPath}
		m.live[id] = st
	}
	return st
}

func (m *Manager) forget(id string) {
	m.mu.Lock()
	delete(m.live, id)
	m.mu.Unlock()
}

// Heartbeat records that the agent is alive.
func (m *Manager) Heartbeat(ctx context.Context, id string) (*registry.Record, error) {
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	now := m.now().UTC()
	rec, err := m.store.Update(ctx, id, func(r *registry.Record) error {
		if r.UserID == "" {
			return errPooled(id)
		}
		if !r.Status.AcceptsExec() {
			return fmt.Errorf("sandbox %s is %s: %w", id, r.Status, errdefs.ErrFailedPrecondition)
		}
		r.LastHeartbeatAt = &now
		if r.Status == registry.StatusReady {
			r.Status = registry.StatusRunning
		}
		return nil
	})
	if err == nil {
		// From the API or from inside the sandbox: activity either way.
		m.Touch(ctx, id)
	}
	return rec, err
}
