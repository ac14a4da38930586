package sandbox

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
)

// Background processes: the lifecycle half. The runtime starts them,
// relays their output and adopts them after a restart (runtime/process.go);
// this layer validates requests with exec's rules (shell, env, user, cwd
// defaulting to the sandbox's remembered directory), enforces the
// per-sandbox cap on running processes (blocking execs do not count),
// resolves tags, and forgets ended processes after the retention period or
// beyond the retained count (and their output with them). Every process
// dies with its sandbox: a stop destroys the task, and the runtime removes
// the processes' directories.
//
// This is the Go API the SSH gateway and the Kubernetes provider use
// (start, attach through OpenOutput, stdin, signals, resize, wait); the
// HTTP routes are one client of it.

// ProcessInput is a request for a background process.
type ProcessInput struct {
	Command string
	Cwd     string // "": the remembered directory
	User    string
	Env     map[string]string
	Tag     string
	PTY     *runtime.WinSize
	Timeout time.Duration // 0: none
	Stdin   bool
}

var tagRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`)

// StartProcess starts a background process in a live sandbox.
func (m *Manager) StartProcess(ctx context.Context, id string, in ProcessInput) (*runtime.Process, error) {
	l := m.limits
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	if err := m.validateCommand(in.Command); err != nil {
		return nil, err
	}
	user, err := execUser(in.User)
	if err != nil {
		return nil, err
	}
	if in.Cwd != "" {
		if err := validateCwd(in.Cwd); err != nil {
			return nil, err
		}
	}
	if err := validateEnv(in.Env, "env"); err != nil {
		return nil, err
	}
	if in.Tag != "" && (!tagRe.MatchString(in.Tag) || runtime.ValidProcessID(in.Tag)) {
		return nil, invalid("tag %q is invalid: want 1-64 of [a-zA-Z0-9._-], starting alphanumeric, not shaped like a process id", in.Tag)
	}
	if in.PTY != nil && (in.PTY.Rows < 1 || in.PTY.Rows > 1000 || in.PTY.Cols < 1 || in.PTY.Cols > 1000) {
		return nil, invalid("pty size %dx%d is out of range: rows and cols must be in [1, 1000]", in.PTY.Rows, in.PTY.Cols)
	}
	if in.Timeout < 0 || in.Timeout > l.MaxProcessTimeout {
		return nil, invalid("timeout %v is out of range [0 (none), %v]", in.Timeout, l.MaxProcessTimeout)
	}
	rec, err := m.liveRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	m.procMu.Lock()
	defer m.procMu.Unlock()
	ps, err := m.processes(ctx, id)
	if err != nil {
		return nil, err
	}
	running := 0
	for _, p := range ps {
		info := p.Info()
		if info.Exited {
			continue
		}
		running++
		if in.Tag != "" && info.Tag == in.Tag {
			return nil, fmt.Errorf("tag %q is taken by running process %s: %w", in.Tag, info.ID, errdefs.ErrAlreadyExists)
		}
	}
	if running >= l.MaxProcesses {
		return nil, fmt.Errorf("sandbox %s already runs %d background processes, the most allowed: %w", id, running, errdefs.ErrResourceExhausted)
	}
	spec := runtime.ProcessSpec{
		ID: runtime.NewProcessID(), Tag: in.Tag, Command: in.Command, User: user, Env: m.sandboxEnv(rec),
		PTY: in.PTY, Stdin: in.Stdin, Timeout: in.Timeout, OutputCap: l.ProcessOutputCap,
	}
	for k, v := range in.Env {
		spec.Env[k] = v
	}
	spec.Cwd = in.Cwd
	if spec.Cwd == "" {
		st := m.state(id)
		m.mu.Lock()
		spec.Cwd = st.cwd
		m.mu.Unlock()
		spec.FallbackCwd = HotPath
	}
	p, err := m.rt.StartProcess(ctx, id, spec)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("sandbox %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	m.log.Info("background process started", "sandbox_id", id, "user_id", rec.UserID, "process_id", spec.ID, "tag", in.Tag)
	m.Touch(ctx, id) // over the API or as an SSH session: activity either way
	m.markRunning(ctx, rec)
	return p, nil
}

// Processes lists a live sandbox's processes (running and recently ended),
// oldest first.
func (m *Manager) Processes(ctx context.Context, id string) ([]*runtime.Process, error) {
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	if _, err := m.liveRecord(ctx, id); err != nil {
		return nil, err
	}
	m.procMu.Lock()
	defer m.procMu.Unlock()
	return m.processes(ctx, id)
}

// Process finds one process by id or by tag (the running one with that
// tag, else the most recent ended one).
func (m *Manager) Process(ctx context.Context, id, ref string) (*runtime.Process, error) {
	ps, err := m.Processes(ctx, id)
	if err != nil {
		return nil, err
	}
	var byTag *runtime.Process
	for _, p := range ps {
		info := p.Info()
		if info.ID == ref {
			return p, nil
		}
		if info.Tag == ref && (byTag == nil || !info.Exited || byTag.Info().Exited) {
			byTag = p
		}
	}
	if byTag != nil {
		return byTag, nil
	}
	return nil, fmt.Errorf("process %q in sandbox %s: %w", ref, id, errdefs.ErrNotFound)
}

// processes lists and prunes; m.procMu is held.
func (m *Manager) processes(ctx context.Context, id string) ([]*runtime.Process, error) {
	ps, err := m.rt.Processes(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("sandbox %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	return m.prune(ctx, id, ps), nil
}

// prune forgets ended processes older than the retention period, beyond
// the retained count, or whose output would take the sandbox's ended
// processes past ProcessRetainBytes (newest kept first).
func (m *Manager) prune(ctx context.Context, id string, ps []*runtime.Process) []*runtime.Process {
	l := m.limits
	var ended []*runtime.Process
	for _, p := range ps {
		if p.Info().Exited {
			ended = append(ended, p)
		}
	}
	sort.Slice(ended, func(i, j int) bool { return endedAt(ended[i]).After(endedAt(ended[j])) }) // newest first
	drop := map[*runtime.Process]bool{}
	now := m.now()
	var keptBytes int64
	for i, p := range ended {
		if i >= l.ProcessRetainCount || now.Sub(endedAt(p)) > l.ProcessRetention {
			drop[p] = true
			continue
		}
		if keptBytes += p.DiskUsage(); keptBytes > l.ProcessRetainBytes {
			drop[p] = true
		}
	}
	if len(drop) == 0 {
		return ps
	}
	kept := ps[:0:0]
	for _, p := range ps {
		if !drop[p] {
			kept = append(kept, p)
			continue
		}
		if err := m.rt.RemoveProcess(ctx, p); err != nil {
			m.log.Warn("forget ended process", "sandbox_id", id, "process_id", p.Info().ID, "error", err)
		}
	}
	return kept
}

func endedAt(p *runtime.Process) time.Time {
	if e := p.Info().EndedAt; e != nil {
		return *e
	}
	return time.Time{}
}

// PruneProcesses applies the retention rules to every live sandbox whose
// processes are loaded (called from the expiry loop).
func (m *Manager) PruneProcesses(ctx context.Context) {
	rs, err := m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
	if err != nil {
		return
	}
	for _, r := range rs {
		m.procMu.Lock()
		if ps, err := m.rt.Processes(ctx, r.ID); err == nil {
			m.prune(ctx, r.ID, ps)
		}
		m.procMu.Unlock()
	}
}

func (m *Manager) validateCommand(cmd string) error {
	if cmd == "" {
		return invalid("command must not be empty")
	}
	if n := len([]rune(cmd)); n > m.limits.MaxCommandLength {
		return invalid("command is %d characters, at most %d allowed", n, m.limits.MaxCommandLength)
	}
	if strings.IndexByte(cmd, 0) >= 0 {
		return invalid("command must not contain NUL bytes")
	}
	return nil
}

func execUser(u string) (runtime.ExecUser, error) {
	user := runtime.ExecUser(u)
	if user == "" {
		user = runtime.UserAgent
	}
	if user != runtime.UserAgent && user != runtime.UserRoot {
		return "", invalid("user %q is invalid: want agent or root", u)
	}
	return user, nil
}

// liveRecord returns the record of a sandbox that accepts work.
func (m *Manager) liveRecord(ctx context.Context, id string) (*registry.Record, error) {
	rec, err := m.userRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	if !rec.Status.AcceptsExec() {
		return nil, fmt.Errorf("sandbox %s is %s, not running: %w", id, rec.Status, errdefs.ErrFailedPrecondition)
	}
	return rec, nil
}

// markRunning moves a ready sandbox to running (its first work).
func (m *Manager) markRunning(ctx context.Context, rec *registry.Record) {
	if rec.Status == registry.StatusReady {
		m.store.Update(ctx, rec.ID, func(r *registry.Record) error {
			if r.Status == registry.StatusReady {
				r.Status = registry.StatusRunning
			}
			return nil
		})
	}
}
