package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/matrx-dev/matrx/runtime/relay"
)

// Background processes. Each is a containerd exec of the sandbox's task
// with exactly a blocking exec's hardening (execProcess), shell, env and
// per-process cgroup (whole-tree signals and kill), whose stdout and stderr
// go to matrx-relay, started by the runc shim as the exec's binary logger
// (see package runtime/relay for why and how). matrxd only reads the
// relay's files and writes stdin, so a process and its output outlive the
// daemon: after a restart LoadProcesses finds every process in its
// directory, re-attaches to the containerd exec (LoadProcess), and learns
// the exit status of those that ended meanwhile from containerd.
//
// A process directory, <state>/runtime/processes/SANDBOX/PROCESS (0700,
// root), holds the relay's segments, relay.pid, the control FIFO, for a
// terminal the stdin FIFO the shim reads, and what the runtime persists:
// meta.json (written once the process runs in its cgroup), exit.json (once
// it ended), timeout (written before a timeout kill, so the verdict
// survives a crash between kill and exit).
//
// Verified in the runc shim's source and on its containerd 1.6.20 and
// 2.2.9 builds (cmd/containerd-shim-runc-v2/process/io.go NewBinaryIO,
// runc/platform.go CopyConsole):
//   - a binary logger gets fd 3/4/5 for pipes and for terminals alike;
//   - without a terminal the shim does not connect stdin at all when stdout
//     is binary:// (the process's stdin is /dev/null, CloseIO does
//     nothing), so a process that asked for stdin reads a FIFO of its own in
//     the control directory (/.matrx/run/in/ID, owned by the process's user,
//     0600, in a root-owned 0711 directory), held open read-write by the
//     relay; closing stdin tells the relay to let go (its control FIFO);
//   - with a terminal the shim reads the stdin FIFO of the cio config into
//     the console master and holds a writer of its own until CloseIO, so
//     matrxd dying does not hang up the terminal; the relay holds it too in
//     case a shim does not. EOF on a terminal is ^D, the terminal's way;
//   - the shim SIGTERMs a pipe logger when the exec is deleted (and kills it
//     12 s later); a terminal's logger ends when the console closes.
//
// The command is gated until the shell runs in its own cgroup, as for
// exec, so no child escapes the tree kill; but a gate line on stdin would
// be echoed by a terminal and a FIFO could be written by the sandbox's
// root. Instead the wrapper polls its own /proc/self/cgroup until it names
// the process's cgroup: the kernel writes that file, only the host can move
// a process between cgroups (the sandbox's cgroupfs is read-only and it has
// no CAP_SYS_ADMIN), so the gate cannot be forged, it reads nothing from
// stdin and echoes nothing, and it costs a few shell builtins (about a
// millisecond) before the command runs.

// WinSize is a terminal's size.
type WinSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// ProcessSpec describes one background process.
type ProcessSpec struct {
	// ID names the process (NewProcessID); it is also its containerd exec id.
	ID string
	// Tag is the caller's name for the process, kept and returned as is.
	Tag     string
	Command string
	User    ExecUser
	// Cwd, FallbackCwd: as for ExecRequest.
	Cwd, FallbackCwd string
	Env              map[string]string
	// PTY, when set, gives the process a terminal of that size.
	PTY *WinSize
	// Stdin lets clients write to a process without a terminal (a terminal
	// always takes input).
	Stdin bool
	// Timeout kills the process tree after this long (0: never).
	Timeout time.Duration
	// OutputCap bounds the output kept on disk.
	OutputCap int64
}

// ProcessInfo is what is known about a process; it is persisted in its
// directory.
type ProcessInfo struct {
	ID        string    `json:"id"`
	Tag       string    `json:"tag,omitempty"`
	Command   string    `json:"command"`
	User      ExecUser  `json:"user"`
	Cwd       string    `json:"cwd"`
	PTY       *WinSize  `json:"pty,omitempty"`
	Stdin     bool      `json:"stdin"`
	StartedAt time.Time `json:"started_at"`
	// Deadline is when a timeout kills the process (zero: no timeout).
	Deadline time.Time `json:"deadline,omitzero"`
	// Pid is the process's pid inside the sandbox; HostPid on the host.
	Pid     int    `json:"pid"`
	HostPid int    `json:"host_pid"`
	Cgroup  string `json:"cgroup"`
	V2      bool   `json:"cgroup_v2,omitempty"`
	// StdinPath is the FIFO clients' input goes to (host path).
	StdinPath   string `json:"stdin_path,omitempty"`
	StdinClosed bool   `json:"stdin_closed,omitempty"`

	Exited   bool       `json:"-"`
	ExitCode int        `json:"-"`
	TimedOut bool       `json:"-"`
	EndedAt  *time.Time `json:"-"`
}

// exitRecord is exit.json.
type exitRecord struct {
	ExitCode int       `json:"exit_code"`
	TimedOut bool      `json:"timed_out"`
	EndedAt  time.Time `json:"ended_at"`
}

// NewProcessID returns a fresh process id ("p-" and 12 hex digits).
func NewProcessID() string {
	var b [6]byte
	rand.Read(b[:])
	return "p-" + hex.EncodeToString(b[:])
}

// ValidProcessID reports whether id has the shape NewProcessID gives.
func ValidProcessID(id string) bool {
	if len(id) != 14 || id[:2] != "p-" {
		return false
	}
	_, err := hex.DecodeString(id[2:])
	return err == nil && id[2:] == hexLower(id[2:])
}

func hexLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'F' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// Process is a background process's handle.
type Process struct {
	rt        *Runtime
	sandboxID string
	dir       string
	proc      containerd.Process
	group     *execGroup

	mu     sync.Mutex
	info   ProcessInfo
	stdinW *os.File
	done   chan struct{} // closed once the exit is recorded
	cancel context.CancelFunc
}

// The process wrapper: like execWrapper, but gated on its own cgroup (see
// above) and without the cwd file (a background process's directory does
// not become the sandbox's remembered one). Positional parameters: $1 the
// cgroup's name, $2 the stdin FIFO or "", $3 cwd, $4 fallback cwd, $5 the
// command.
const processWrapper = `__matrx_g=$1; __matrx_i=$2; __matrx_d=$3; __matrx_b=$4; __matrx_c=$5; shift 5
__matrx_in() { while IFS= read -r __matrx_l; do case $__matrx_l in *"/$__matrx_g") return 0;; esac; done </proc/self/cgroup; return 1; }
__matrx_n=0
until __matrx_in; do
  __matrx_n=$((__matrx_n+1))
  if [ "$__matrx_n" -gt 2000 ]; then printf 'matrx: the process was never placed in its cgroup\n' >&2; exit 125; fi
  if [ "$__matrx_n" -gt 100 ]; then sleep 0.01; fi
done
unset -f __matrx_in; unset __matrx_n __matrx_l __matrx_g
if [ -n "$__matrx_i" ]; then exec 0<"$__matrx_i" || exit 125; fi
if ! cd -- "$__matrx_d" 2>/dev/null; then
  if [ -z "$__matrx_b" ] || ! cd -- "$__matrx_b" 2>/dev/null; then
    printf 'matrx: working directory %s does not exist\n' "$__matrx_d" >&2; exit 125
  fi
fi
unset __matrx_d __matrx_b __matrx_i
eval "$__matrx_c"`

// processIO is the cio of a background process: nothing for containerd's
// client to copy, everything goes through the relay and the FIFOs.
type processIO struct{ cfg cio.Config }

func (p *processIO) Config() cio.Config { return p.cfg }
func (p *processIO) Cancel()            {}
func (p *processIO) Wait()              {}
func (p *processIO) Close() error       { return nil }

func (r *Runtime) processRoot(sandboxID string) string {
	return filepath.Join(r.stateDir, "processes", sandboxID)
}

// StartProcess starts a background process in sandbox id and returns once
// it runs in its own cgroup. On any failure nothing of it is left.
func (r *Runtime) StartProcess(ctx context.Context, id string, spec ProcessSpec) (_ *Process, err error) {
	ctx = r.nsCtx(ctx)
	if r.relayPath == "" {
		return nil, fmt.Errorf("background processes need matrx-relay, and this runtime has none configured: %w", errdefs.ErrNotImplemented)
	}
	if !ValidProcessID(spec.ID) {
		return nil, fmt.Errorf("process id %q is invalid: %w", spec.ID, errdefs.ErrInvalidArgument)
	}
	st, err := r.sandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	cwd, err := resolveCwd(int(st.task.Pid()), spec.Cwd, spec.FallbackCwd)
	if err != nil {
		return nil, err
	}
	var cleanups []func()
	defer func() {
		if err != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
		}
	}()
	root := r.processRoot(id)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("process dir: %w", err)
	}
	dir := filepath.Join(root, spec.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("process %s exists: %w", spec.ID, errdefs.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("process dir: %w", err)
	}
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	if err := syscall.Mkfifo(filepath.Join(dir, relay.CtlName), 0o600); err != nil {
		return nil, fmt.Errorf("control fifo: %w", err)
	}
	opts := relay.Options{Dir: dir, Cap: spec.OutputCap, PTY: spec.PTY != nil}
	opts.Segment = max(opts.Cap/8, 64<<10)
	cfg := cio.Config{Terminal: spec.PTY != nil}
	info := ProcessInfo{
		ID: spec.ID, Tag: spec.Tag, Command: spec.Command, User: spec.User, Cwd: cwd,
		PTY: spec.PTY, Stdin: spec.PTY != nil || spec.Stdin,
	}
	sandboxStdin := ""
	switch {
	case spec.PTY != nil:
		// The shim copies this FIFO into the console master.
		cfg.Stdin = filepath.Join(dir, "stdin")
		if err := syscall.Mkfifo(cfg.Stdin, 0o600); err != nil {
			return nil, fmt.Errorf("stdin fifo: %w", err)
		}
		opts.Hold, info.StdinPath = cfg.Stdin, cfg.Stdin
	case spec.Stdin:
		host, inside, err := r.makeSandboxStdin(id, spec.ID, spec.User)
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, func() { os.Remove(host) })
		opts.Hold, info.StdinPath, sandboxStdin = host, host, inside
	}
	uri, err := cio.LogURIGenerator("binary", r.relayPath, opts.Args())
	if err != nil {
		return nil, fmt.Errorf("relay uri: %w", err)
	}
	cfg.Stdout, cfg.Stderr = uri.String(), uri.String()

	groupName := "proc-" + spec.ID[2:]
	// The same environment as an exec's (execEnv): the image's, HOME per
	// user, root's PATH without the agent's directories.
	env := execEnv(st.env, spec.User, envList(spec.Env))
	if spec.PTY != nil && spec.Env["TERM"] == "" {
		env = append(env, "TERM=xterm-256color")
	}
	args := []string{st.shell, "-c", processWrapper, "matrx-proc", groupName, sandboxStdin, cwd, spec.FallbackCwd, spec.Command}
	pspec, err := execProcess(spec.User, args, env)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	if spec.PTY != nil {
		pspec.Terminal = true
		pspec.ConsoleSize = &specs.Box{Height: uint(spec.PTY.Rows), Width: uint(spec.PTY.Cols)}
	}
	proc, err := st.task.Exec(ctx, spec.ID, pspec, func(string) (cio.IO, error) { return &processIO{cfg: cfg}, nil })
	if err != nil {
		return nil, r.execError(ctx, id, st, "exec in", err)
	}
	cleanups = append(cleanups, func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		proc.Kill(c, syscall.SIGKILL)
		proc.Delete(c, containerd.WithProcessKill)
	})
	// The wait outlives the request: it is the process's supervisor's.
	superCtx, cancel := context.WithCancel(r.nsCtx(context.Background()))
	cleanups = append(cleanups, cancel)
	exited, err := proc.Wait(superCtx)
	if err != nil {
		return nil, fmt.Errorf("wait process in %s: %w", id, err)
	}
	if err := proc.Start(ctx); err != nil {
		return nil, r.execError(ctx, id, st, "start process in", err)
	}
	// The shim returns from Start once its logger said ready, or died:
	// only a relay that wrote its pid file runs.
	if _, err := os.Stat(filepath.Join(dir, relay.PidName)); err != nil {
		why, _ := os.ReadFile(filepath.Join(dir, relay.ErrorName))
		return nil, fmt.Errorf("output relay of process in %s did not start: %s: %w", id, bytesTrim(why), errdefs.ErrUnavailable)
	}
	if spec.PTY != nil {
		// Before the gate opens, so the command sees its size from the start.
		if err := proc.Resize(ctx, uint32(spec.PTY.Cols), uint32(spec.PTY.Rows)); err != nil {
			return nil, fmt.Errorf("size terminal of process in %s: %w", id, err)
		}
	}
	group, err := newExecGroup(int(proc.Pid()), groupName)
	if err != nil {
		return nil, fmt.Errorf("track process in %s: %w", id, err)
	}
	cleanups = append(cleanups, group.remove)
	info.HostPid = int(proc.Pid())
	info.Pid = sandboxPid(info.HostPid)
	info.Cgroup, info.V2 = group.dir, group.v2
	info.StartedAt = time.Now().UTC()
	if spec.Timeout > 0 {
		info.Deadline = info.StartedAt.Add(spec.Timeout)
	}
	if err := writeJSONFile(filepath.Join(dir, "meta.json"), info); err != nil {
		return nil, fmt.Errorf("record process: %w", err)
	}
	p := &Process{rt: r, sandboxID: id, dir: dir, proc: proc, group: group, info: info, done: make(chan struct{}), cancel: cancel}
	r.addProcess(p)
	go p.supervise(superCtx, exited)
	r.log.Info("process started", "sandbox_id", id, "process_id", spec.ID, "pid", info.Pid, "pty", spec.PTY != nil)
	return p, nil
}

func bytesTrim(b []byte) string {
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	if s == "" {
		return "no reason given"
	}
	return s
}

// writeJSONFile writes v atomically (temp file, rename).
func writeJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// supervise waits for the process to end (or its deadline, then kills the
// tree), records the exit, and deletes the containerd exec, which ends a
// pipe relay. It stops without recording anything when the runtime closes.
func (p *Process) supervise(ctx context.Context, exited <-chan containerd.ExitStatus) {
	p.mu.Lock()
	deadline := p.info.Deadline
	p.mu.Unlock()
	var timer <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timer = t.C
	}
	timedOut := false
	var status containerd.ExitStatus
	select {
	case status = <-exited:
	case <-ctx.Done():
		return
	case <-timer:
		timedOut = true
		os.WriteFile(filepath.Join(p.dir, "timeout"), nil, 0o600)
		if err := p.group.kill(); err != nil {
			p.rt.log.Warn("process timeout kill failed", "sandbox_id", p.sandboxID, "process_id", p.info.ID, "error", err)
		}
		select {
		case status = <-exited:
		case <-ctx.Done():
			return
		}
	}
	if ctx.Err() != nil {
		return // the runtime is closing, or the sandbox is being destroyed
	}
	code, at := int(status.ExitCode()), status.ExitTime()
	if status.Error() != nil {
		// The wait failed, not the process (containerd restarting, say):
		// ask until containerd answers, and wait again while it runs.
		var ok bool
		if code, at, ok = p.rewait(ctx, timer); !ok {
			return
		}
	}
	p.finish(ctx, code, timedOut || fileExists(filepath.Join(p.dir, "timeout")), at)
}

// rewait follows a process whose wait failed: it returns the exit once
// containerd reports one (-1 if containerd no longer knows the process),
// and false when the runtime closes first.
func (p *Process) rewait(ctx context.Context, timer <-chan time.Time) (int, time.Time, bool) {
	delay := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return 0, time.Time{}, false
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
		st, err := p.proc.Status(ctx)
		switch {
		case errdefs.IsNotFound(err):
			return -1, time.Time{}, true
		case err != nil:
			continue
		case st.Status == containerd.Stopped:
			return int(st.ExitStatus), st.ExitTime, true
		}
		exited, err := p.proc.Wait(ctx)
		if err != nil {
			continue
		}
		select {
		case status := <-exited:
			if status.Error() == nil {
				return int(status.ExitCode()), status.ExitTime(), true
			}
		case <-timer:
			os.WriteFile(filepath.Join(p.dir, "timeout"), nil, 0o600)
			p.group.kill()
		case <-ctx.Done():
			return 0, time.Time{}, false
		}
	}
}

// finish records an exit and releases the containerd exec.
func (p *Process) finish(ctx context.Context, code int, timedOut bool, at time.Time) {
	if timedOut {
		code = ExitTimedOut
	}
	if at.IsZero() || at.Year() < 2000 {
		at = time.Now()
	}
	at = at.UTC()
	writeJSONFile(filepath.Join(p.dir, "exit.json"), exitRecord{ExitCode: code, TimedOut: timedOut, EndedAt: at})
	p.mu.Lock()
	p.info.Exited, p.info.ExitCode, p.info.TimedOut, p.info.EndedAt = true, code, timedOut, &at
	if p.stdinW != nil {
		p.stdinW.Close()
		p.stdinW = nil
	}
	p.mu.Unlock()
	if p.proc != nil {
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		if _, err := p.proc.Delete(c); err != nil && !errdefs.IsNotFound(err) {
			p.rt.log.Warn("delete exited process", "sandbox_id", p.sandboxID, "process_id", p.info.ID, "error", err)
		}
		cancel()
	}
	p.group.remove()
	close(p.done)
	p.rt.log.Info("process exited", "sandbox_id", p.sandboxID, "process_id", p.info.ID, "exit_code", code, "timed_out", timedOut)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Info returns what is known about the process now.
func (p *Process) Info() ProcessInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.info
}

// SandboxID is the sandbox the process runs in.
func (p *Process) SandboxID() string { return p.sandboxID }

// Done is closed once the process has ended and its exit is recorded.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait blocks until the process has ended (or ctx ends) and returns its
// final info.
func (p *Process) Wait(ctx context.Context) (ProcessInfo, error) {
	select {
	case <-p.done:
		return p.Info(), nil
	case <-ctx.Done():
		return p.Info(), ctx.Err()
	}
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *Process) notRunning(what string) error {
	return fmt.Errorf("process %s has exited; cannot %s: %w", p.info.ID, what, errdefs.ErrFailedPrecondition)
}

// Signal delivers sig to every process of the tree at once (the cgroup is
// frozen while it is signalled, so nothing forks away in between).
func (p *Process) Signal(ctx context.Context, sig syscall.Signal) error {
	if p.exited() {
		return p.notRunning("signal it")
	}
	if sig == syscall.SIGKILL {
		return p.group.kill()
	}
	return p.group.signal(sig)
}

// Resize changes the terminal's size.
func (p *Process) Resize(ctx context.Context, ws WinSize) error {
	if p.Info().PTY == nil {
		return fmt.Errorf("process %s has no terminal to resize: %w", p.info.ID, errdefs.ErrFailedPrecondition)
	}
	if p.exited() || p.proc == nil {
		return p.notRunning("resize it")
	}
	if err := p.proc.Resize(p.rt.nsCtx(ctx), uint32(ws.Cols), uint32(ws.Rows)); err != nil {
		if errdefs.IsNotFound(err) {
			return p.notRunning("resize it")
		}
		return fmt.Errorf("resize process %s: %w", p.info.ID, err)
	}
	p.mu.Lock()
	p.info.PTY = &ws
	p.mu.Unlock()
	return nil
}

// WriteStdin writes b to the process's input, waiting while its pipe is
// full, until ctx ends.
func (p *Process) WriteStdin(ctx context.Context, b []byte) error {
	f, err := p.stdinWriter()
	if err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(d)
	} else {
		f.SetWriteDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Now()) })
	defer stop()
	_, err = f.Write(b)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("stdin of process %s: %w", p.info.ID, ctx.Err())
		}
		if errors.Is(err, syscall.EPIPE) {
			return p.notRunning("write its stdin")
		}
		return fmt.Errorf("stdin of process %s: %v: %w", p.info.ID, err, errdefs.ErrUnavailable)
	}
	return nil
}

func (p *Process) stdinWriter() (*os.File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !p.info.Stdin:
		return nil, fmt.Errorf("process %s was started without stdin: %w", p.info.ID, errdefs.ErrFailedPrecondition)
	case p.info.StdinClosed:
		return nil, fmt.Errorf("stdin of process %s is closed: %w", p.info.ID, errdefs.ErrFailedPrecondition)
	case p.info.Exited:
		return nil, p.notRunning("write its stdin")
	}
	if p.stdinW == nil {
		f, err := openFIFOWriter(p.info.StdinPath)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				return nil, p.notRunning("write its stdin")
			}
			return nil, fmt.Errorf("open stdin of process %s: %v: %w", p.info.ID, err, errdefs.ErrUnavailable)
		}
		p.stdinW = f
	}
	return p.stdinW, nil
}

// CloseStdin ends the process's input: ^D on a terminal (its EOF), else
// the relay lets go of the FIFO and the process reads EOF.
func (p *Process) CloseStdin(ctx context.Context) error {
	if p.Info().PTY != nil {
		return p.WriteStdin(ctx, []byte{4})
	}
	if _, err := p.stdinWriter(); err != nil {
		return err
	}
	// The process opens its FIFO only once it runs in its cgroup (the
	// wrapper's exec 0<FIFO). Let go before that, and the FIFO has no
	// writer left: the open waits for one forever. So wait (a few seconds
	// at most) until the process holds its end, or has ended.
	p.waitStdinOpen(ctx)
	p.mu.Lock()
	p.info.StdinClosed = true
	info := p.info
	if p.stdinW != nil {
		p.stdinW.Close()
		p.stdinW = nil
	}
	p.mu.Unlock()
	writeJSONFile(filepath.Join(p.dir, "meta.json"), info)
	ctl, err := openFIFOWriter(filepath.Join(p.dir, relay.CtlName))
	if err != nil {
		if errors.Is(err, syscall.ENXIO) {
			return nil // the relay is gone, and its hold with it
		}
		return fmt.Errorf("close stdin of process %s: %w", p.info.ID, err)
	}
	defer ctl.Close()
	_, err = ctl.Write([]byte{relay.CmdReleaseStdin})
	return err
}

// waitStdinOpen waits until the process's stdin is its FIFO, it has
// ended, ctx ends, or a few seconds have passed (a command that moved its
// stdin elsewhere never matches).
func (p *Process) waitStdinOpen(ctx context.Context) {
	info := p.Info()
	deadline := time.Now().Add(5 * time.Second)
	for !p.exited() && !stdinOpened(info.HostPid, info.StdinPath) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-p.done:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// relayRunning reports whether the process's relay still has its control
// FIFO open (it holds it read-write for its whole life).
func (p *Process) relayRunning() bool {
	f, err := openFIFOWriter(filepath.Join(p.dir, relay.CtlName))
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Output is a reader of a process's output from an offset.
type Output struct {
	p      *Process
	r      *relay.Reader
	sub    *relay.Sub
	follow bool
	buf    []byte
	// Consecutive records of one stream are returned as one chunk of up to
	// batchMax bytes (a program printing line by line makes many small
	// records); what ends a batch waits in pending (or pendErr).
	batch   []byte
	pending *relay.Chunk
	pbuf    []byte
	pendErr error
}

// batchMax bounds one chunk Next returns.
const batchMax = 64 << 10

// OpenOutput reads the process's output from offset; with follow, Next
// waits for more until the output ends.
func (p *Process) OpenOutput(offset int64, follow bool) (*Output, error) {
	r, err := relay.NewReader(p.dir, offset)
	if err != nil {
		return nil, fmt.Errorf("output of process %s: %w", p.info.ID, err)
	}
	o := &Output{p: p, r: r, follow: follow, buf: make([]byte, relay.MaxRecord), batch: make([]byte, 0, batchMax+relay.MaxRecord), pbuf: make([]byte, relay.MaxRecord)}
	if follow && p.rt.watcher != nil {
		if sub, err := p.rt.watcher.Watch(p.dir); err == nil {
			o.sub = sub
		}
	}
	return o, nil
}

// Next returns the next chunk (data, or a gap where output was dropped),
// merging what is already written of one stream into one chunk.
// io.EOF: the output is complete (the process ended, or closed its
// output). Without follow, relay.ErrNoData means "nothing more for now".
// The chunk's data is valid until the next call.
func (o *Output) Next(ctx context.Context) (relay.Chunk, error) {
	var c relay.Chunk
	switch {
	case o.pending != nil:
		c = *o.pending
		o.pending = nil
	case o.pendErr != nil:
		err := o.pendErr
		o.pendErr = nil
		return relay.Chunk{}, err
	default:
		var err error
		if c, err = o.next(ctx); err != nil {
			return c, err
		}
	}
	if c.Kind == relay.KindGap {
		return c, nil
	}
	o.batch = append(o.batch[:0], c.Data...)
	for len(o.batch) < batchMax {
		d, err := o.r.Next(o.buf)
		if errors.Is(err, relay.ErrNoData) {
			break
		}
		if err != nil {
			o.pendErr = err
			break
		}
		if d.Kind != c.Kind {
			d.Data = append(o.pbuf[:0], d.Data...)
			o.pending = &d
			break
		}
		o.batch = append(o.batch, d.Data...)
	}
	c.Data = o.batch
	return c, nil
}

// next is one record, waiting for it when following.
func (o *Output) next(ctx context.Context) (relay.Chunk, error) {
	for {
		c, err := o.r.Next(o.buf)
		if !errors.Is(err, relay.ErrNoData) {
			return c, err
		}
		if o.p.exited() && !o.p.relayRunning() {
			// The relay died without its end record (killed): what it
			// wrote is all there is. Read once more, then end.
			if c, err := o.r.Next(o.buf); !errors.Is(err, relay.ErrNoData) {
				return c, err
			}
			return relay.Chunk{}, io.EOF
		}
		if !o.follow {
			return relay.Chunk{}, relay.ErrNoData
		}
		var wake <-chan struct{}
		if o.sub != nil {
			wake = o.sub.C
		}
		select {
		case <-wake:
		case <-o.p.done:
		case <-time.After(time.Second): // no watcher, or a lost wakeup
		case <-ctx.Done():
			return relay.Chunk{}, ctx.Err()
		}
	}
}

// Close releases the reader.
func (o *Output) Close() {
	if o.sub != nil {
		o.sub.Close()
	}
	o.r.Close()
}

// --- the runtime's table of processes ------------------------------------

type sandboxProcs struct {
	loaded bool
	byID   map[string]*Process
}

func (r *Runtime) addProcess(p *Process) {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	sp := r.procs[p.sandboxID]
	if sp == nil {
		sp = &sandboxProcs{byID: map[string]*Process{}}
		r.procs[p.sandboxID] = sp
	}
	sp.byID[p.info.ID] = p
}

// Processes returns the sandbox's processes, running and ended ones,
// oldest first. After a daemon restart the first call adopts them from
// their directories: running ones are re-attached to containerd, the exit
// of those that ended meanwhile is learned from containerd and recorded.
func (r *Runtime) Processes(ctx context.Context, id string) ([]*Process, error) {
	r.pmu.Lock()
	sp := r.procs[id]
	loaded := sp != nil && sp.loaded
	r.pmu.Unlock()
	if !loaded {
		if err := r.loadProcesses(ctx, id); err != nil {
			return nil, err
		}
	}
	r.pmu.Lock()
	defer r.pmu.Unlock()
	sp = r.procs[id]
	out := make([]*Process, 0, len(sp.byID))
	for _, p := range sp.byID {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].info.StartedAt.Before(out[j].info.StartedAt) })
	return out, nil
}

func (r *Runtime) loadProcesses(ctx context.Context, id string) error {
	r.ploadMu.Lock()
	defer r.ploadMu.Unlock()
	r.pmu.Lock()
	if sp := r.procs[id]; sp != nil && sp.loaded {
		r.pmu.Unlock()
		return nil
	}
	r.pmu.Unlock()
	ents, err := os.ReadDir(r.processRoot(id))
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("list processes of %s: %w", id, err)
	}
	var task containerd.Task
	if st, err := r.sandbox(r.nsCtx(ctx), id); err == nil {
		task = st.task
	}
	for _, e := range ents {
		if !ValidProcessID(e.Name()) {
			continue
		}
		r.pmu.Lock()
		_, known := r.procs[id].lookup(e.Name())
		r.pmu.Unlock()
		if known {
			continue
		}
		if p := r.adopt(ctx, id, task, e.Name()); p != nil {
			r.addProcess(p)
		}
	}
	r.pmu.Lock()
	sp := r.procs[id]
	if sp == nil {
		sp = &sandboxProcs{byID: map[string]*Process{}}
		r.procs[id] = sp
	}
	sp.loaded = true
	r.pmu.Unlock()
	return nil
}

func (sp *sandboxProcs) lookup(pid string) (*Process, bool) {
	if sp == nil {
		return nil, false
	}
	p, ok := sp.byID[pid]
	return p, ok
}

// adopt rebuilds one process from its directory after a restart.
func (r *Runtime) adopt(ctx context.Context, id string, task containerd.Task, procID string) *Process {
	ctx = r.nsCtx(ctx)
	dir := filepath.Join(r.processRoot(id), procID)
	log := r.log.With("sandbox_id", id, "process_id", procID)
	var info ProcessInfo
	var proc containerd.Process
	if task != nil {
		proc, _ = task.LoadProcess(ctx, procID, nil)
	}
	if err := readJSONFile(filepath.Join(dir, "meta.json"), &info); err != nil {
		// The daemon died before the process reached its cgroup: it never
		// ran its command (the gate holds it). Kill what is left.
		if proc != nil {
			c, cancel := context.WithTimeout(ctx, 15*time.Second)
			proc.Kill(c, syscall.SIGKILL)
			proc.Delete(c, containerd.WithProcessKill)
			cancel()
		}
		os.RemoveAll(dir)
		os.Remove(filepath.Join(r.controlDir(id), "in", procID))
		log.Warn("removed a process caught before it started")
		return nil
	}
	p := &Process{rt: r, sandboxID: id, dir: dir, proc: proc, group: &execGroup{dir: info.Cgroup, v2: info.V2}, info: info, done: make(chan struct{})}
	var ex exitRecord
	if err := readJSONFile(filepath.Join(dir, "exit.json"), &ex); err == nil {
		at := ex.EndedAt
		p.info.Exited, p.info.ExitCode, p.info.TimedOut, p.info.EndedAt = true, ex.ExitCode, ex.TimedOut, &at
		p.proc = nil
		close(p.done)
		if proc != nil { // died between recording the exit and the delete
			c, cancel := context.WithTimeout(ctx, 20*time.Second)
			proc.Delete(c)
			cancel()
		}
		return p
	}
	if proc == nil {
		// containerd no longer knows it (its sandbox's task is gone): it
		// ended with the task, unobserved.
		p.finish(ctx, -1, false, time.Time{})
		log.Warn("process ended while the daemon was away; its exit status is lost with its sandbox's task")
		return p
	}
	superCtx, cancel := context.WithCancel(r.nsCtx(context.Background()))
	p.cancel = cancel
	exited, err := proc.Wait(superCtx)
	if err != nil {
		cancel()
		log.Warn("adopt process: wait failed", "error", err)
		p.finish(ctx, -1, false, time.Time{})
		return p
	}
	go p.supervise(superCtx, exited)
	log.Info("adopted process")
	return p
}

// Process returns one process of a sandbox.
func (r *Runtime) Process(ctx context.Context, id, procID string) (*Process, error) {
	ps, err := r.Processes(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if p.info.ID == procID {
			return p, nil
		}
	}
	return nil, fmt.Errorf("process %q in sandbox %s: %w", procID, id, errdefs.ErrNotFound)
}

// RemoveProcess forgets an ended process: its directory, output and stdin
// FIFO go. A running process is killed first.
func (r *Runtime) RemoveProcess(ctx context.Context, p *Process) error {
	if !p.exited() {
		p.group.kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("process %s did not end after SIGKILL: %w", p.info.ID, errdefs.ErrUnavailable)
		}
	}
	r.pmu.Lock()
	if sp := r.procs[p.sandboxID]; sp != nil {
		delete(sp.byID, p.info.ID)
	}
	r.pmu.Unlock()
	if p.info.Stdin && p.info.PTY == nil {
		os.Remove(p.info.StdinPath)
	}
	return os.RemoveAll(p.dir)
}

// cancelProcesses stops the supervisors of a sandbox's processes.
func (r *Runtime) cancelProcesses(id string) {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if sp := r.procs[id]; sp != nil {
		for _, p := range sp.byID {
			if p.cancel != nil {
				p.cancel()
			}
		}
	}
}

// forgetProcesses drops a destroyed sandbox's processes (their tree died
// with the task) and removes their directories.
func (r *Runtime) forgetProcesses(id string) {
	r.pmu.Lock()
	sp := r.procs[id]
	delete(r.procs, id)
	r.pmu.Unlock()
	if sp != nil {
		for _, p := range sp.byID {
			if p.cancel != nil {
				p.cancel()
			}
		}
	}
	os.RemoveAll(r.processRoot(id))
}

// DiskUsage is the bytes the process's directory holds (its output).
func (p *Process) DiskUsage() int64 {
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

// OutputEnd is the offset just past the output written so far.
func (p *Process) OutputEnd() (int64, error) { return relay.EndOffset(p.dir) }
