package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/fault"
	"github.com/matrx-dev/matrx/runtime/execagent"
	"github.com/matrx-dev/matrx/undo"
)

// ExitTimedOut is the exit code reported for an exec killed at its deadline
// (the coreutils timeout(1) convention).
const ExitTimedOut = 124

// ioDrainGrace is how long an exec waits, after its shell exited, for
// stdout/stderr to reach EOF. A background job that keeps the pipes open
// ("server &") does not hold the call hostage: its later output is dropped,
// and the job keeps running.
const ioDrainGrace = 200 * time.Millisecond

// ExecRequest is one command to run in a sandbox.
type ExecRequest struct {
	Command string
	User    ExecUser
	// Cwd is where the command starts. If it does not exist the exec fails
	// with InvalidArgument, unless FallbackCwd is set, which is tried next
	// (used for a remembered cwd that the agent has since deleted).
	Cwd         string
	FallbackCwd string
	Env         map[string]string
	Timeout     time.Duration
	// OutputLimit caps stdout and stderr each; bytes beyond it are read and
	// discarded, never buffered.
	OutputLimit int64
	// Stdout and Stderr, when set, receive the output as it comes instead
	// of the result (streamed exec; no cap, nothing buffered). A slow
	// writer slows the command down (its pipe fills), never the daemon's
	// memory. They may be called concurrently with each other.
	Stdout, Stderr io.Writer
}

// ExecResult is what came back.
type ExecResult struct {
	ExitCode        int
	Stdout, Stderr  []byte
	StdoutTruncated bool
	StderrTruncated bool
	TimedOut        bool
	// Cwd is the shell's working directory when the command finished, or ""
	// if it could not be learned (the command replaced the shell, say).
	Cwd      string
	Duration time.Duration

	viaAgent bool // run by the sandbox's exec agent (agentexec.go)
}

// The wrapper runs the user's command in the shell that the cwd is learned
// from. Positional parameters: $1 cwd file, $2 cwd, $3 fallback cwd, $4 the
// command. It first waits for one line on stdin: the daemon sends it once
// the shell has been moved into its exec cgroup, so no child can escape the
// timeout kill by forking early; without the line (the daemon gave up on
// the exec before releasing it) the shell exits without running anything.
// Then stdin becomes /dev/null: the command
// reads EOF at once. The final directory is written to the cwd file by an
// EXIT trap, out of band: stdout stays byte-exact.
//
// Why /dev/null and not the shim's CloseIO (which this once used to give
// the command EOF): about one exec in 6,000 then lost the gate line and
// its EOF and sat until its timeout. The stdin FIFO opens lazily on both
// sides, and CloseIO closes a shim writer that has not opened yet by
// opening the FIFO for reading and closing it again; when that came before
// the shim's own reader had opened, our writer could open against that
// momentary reader, write the line into a FIFO about to have no reader,
// and leave the shim's reader blocked in open(2) with no writer left
// (reasoned from containerd's fifo package and runc shim; gone in 9,600
// execs once CloseIO was no longer sent right after the gate). Waiting for
// the line to reach the FIFO before CloseIO hung CloseIO under 100
// concurrent execs on containerd 1.6 instead. So: no CloseIO; the shim's
// end of the FIFO closes when the exec is deleted, right after it ends.
const execWrapper = `__matrx_f=$1; __matrx_d=$2; __matrx_b=$3; __matrx_c=$4; shift 4
IFS= read -r __matrx_g || exit 125
unset __matrx_g
exec 0</dev/null
if ! cd -- "$__matrx_d" 2>/dev/null; then
  if [ -z "$__matrx_b" ] || ! cd -- "$__matrx_b" 2>/dev/null; then
    printf '!nocwd' >"$__matrx_f"; exit 125
  fi
fi
trap '__matrx_s=$?; pwd >"$__matrx_f" 2>/dev/null; exit $__matrx_s' EXIT
unset __matrx_d __matrx_b
eval "$__matrx_c"`

// agentHome is the agent's home directory in every sandbox.
const agentHome = "/home/agent"

// execEnv is one exec's environment: PID 1's (the image's environment
// plus the sandbox's variables), HOME for the user, then the request's
// variables. For root, the image's PATH loses every entry under the
// agent's home (the production image appends ~/.local/bin for pip and npm
// installs): a root exec must never run a program the agent planted. A
// PATH the request itself sets is the caller's choice and kept.
func execEnv(base []string, user ExecUser, req []string) []string {
	home := "HOME=" + agentHome
	if user == UserRoot {
		home = "HOME=/root"
	}
	env := mergeEnv(base, []string{home})
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		env = mergeEnv(env, []string{"PATH=" + defaultPath})
	}
	if user == UserRoot {
		for i, kv := range env {
			if p, ok := strings.CutPrefix(kv, "PATH="); ok {
				env[i] = "PATH=" + withoutAgentDirs(p)
			}
		}
	}
	return mergeEnv(env, req)
}

// withoutAgentDirs drops PATH entries at or below the agent's home, and
// relative ones (they resolve against a cwd the agent may control).
func withoutAgentDirs(path string) string {
	var kept []string
	for _, d := range strings.Split(path, ":") {
		clean := filepath.Clean(d)
		if d == "" || !filepath.IsAbs(d) || clean == agentHome || strings.HasPrefix(clean, agentHome+"/") {
			continue
		}
		kept = append(kept, d)
	}
	return strings.Join(kept, ":")
}

// Exec runs req in sandbox id and waits for it, up to req.Timeout.
func (r *Runtime) Exec(ctx context.Context, id string, req ExecRequest) (*ExecResult, error) {
	start := time.Now()
	ctx = r.nsCtx(ctx)
	st, err := r.sandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	// Releasing what an exec made (its containerd process entry, cgroup and
	// cwd file) runs after the result is returned, whether the exec worked
	// or not: it is off the latency path, and nothing later depends on it.
	var release undo.Stack
	defer func() { go release.Run(ctx, r.log) }()

	execID := newExecID()
	cwdFile := filepath.Join(ControlDir, execID+".cwd")
	hostCwdFile := filepath.Join(r.controlDir(id), execID+".cwd")
	release.Push("cwd file", func(context.Context) error {
		if err := os.Remove(hostCwdFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	})

	env := execEnv(st.env, req.User, envList(req.Env))
	args := []string{st.shell, "-c", execWrapper, "matrx-exec", cwdFile, req.Cwd, req.FallbackCwd, req.Command}
	pspec, err := execProcess(req.User, args, env)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}

	stdout := &cappedBuffer{limit: req.OutputLimit}
	stderr := &cappedBuffer{limit: req.OutputLimit}
	var outW, errW io.Writer = stdout, stderr
	if req.Stdout != nil {
		outW = req.Stdout
	}
	if req.Stderr != nil {
		errW = req.Stderr
	}
	res := &ExecResult{}
	var out execOutcome
	if req.User == UserAgent {
		if a := r.agentFor(st); a != nil {
			out, err = r.execViaAgent(ctx, id, a, execID, args, env, req.Timeout, outW, errW, &release)
			switch {
			case err == nil:
				res.viaAgent = true
			case !errors.Is(err, execagent.ErrNotStarted):
				return nil, err
			default:
				r.log.Debug("exec agent did not run the command; using the OCI runtime", "sandbox_id", id, "error", err)
			}
		}
	}
	if !res.viaAgent {
		if out, err = r.execViaRuntime(ctx, id, st, execID, pspec, req.Timeout, outW, errW, &release); err != nil {
			return nil, err
		}
		if req.User == UserAgent {
			r.startAgentSoon(id, st)
		}
	}
	res.ExitCode, res.TimedOut = out.code, out.timedOut
	res.Stdout, res.StdoutTruncated = stdout.result()
	res.Stderr, res.StderrTruncated = stderr.result()
	cwd, cwdErr := readCwdFile(hostCwdFile)
	if cwdErr == nil && cwd == "!nocwd" {
		return nil, fmt.Errorf("working directory %q does not exist in sandbox %s: %w", req.Cwd, id, errdefs.ErrInvalidArgument)
	}
	if cwdErr == nil && strings.HasPrefix(cwd, "/") {
		res.Cwd = cwd
	}
	res.Duration = time.Since(start)
	return res, nil
}

// execViaRuntime runs the wrapper as a containerd exec (the OCI runtime's
// exec: the path for root, and for the agent user when the sandbox's exec
// agent is not there).
func (r *Runtime) execViaRuntime(ctx context.Context, id string, st *sandboxTask, execID string, pspec *specs.Process, timeout time.Duration, outW, errW io.Writer, release *undo.Stack) (execOutcome, error) {
	var out execOutcome
	gateR, gateW := io.Pipe()
	defer gateW.Close()
	// No separate "is it running" check first: the exec request itself is
	// that check, atomically. Only when it fails is the task's state asked,
	// to tell "not running" (409) from a runtime failure.
	proc, err := st.task.Exec(ctx, execID, pspec, cio.NewCreator(cio.WithStreams(gateR, outW, errW)))
	if err != nil {
		return out, r.execError(ctx, id, st, "exec in", err)
	}
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	}
	release.Push("exec process", func(c context.Context) error {
		_, err := proc.Delete(c, containerd.WithProcessKill)
		return err
	})
	exited, err := proc.Wait(ctx)
	if err != nil {
		return out, fmt.Errorf("wait exec in %s: %w", id, err)
	}
	if err := proc.Start(ctx); err != nil {
		return out, r.execError(ctx, id, st, "start exec in", err)
	}
	group, err := newExecGroup(int(proc.Pid()), "exec-"+execID)
	if err != nil {
		// Without its cgroup a timeout could not kill the whole tree: refuse
		// to run the command at all.
		c, cancel := cleanupCtx()
		proc.Kill(c, syscall.SIGKILL)
		cancel()
		return out, fmt.Errorf("track exec in %s: %w", id, err)
	}
	release.Push("exec cgroup", func(context.Context) error { group.remove(); return nil })
	// Release the gate: the shell is in its cgroup now.
	gateW.Write([]byte("\n"))
	gateW.Close()
	fault.At(ctx, "exec/started")

	exit, timedOut := awaitExec(ctx, r.log, id, timeout, exited, group, func() {
		c, cancel := cleanupCtx()
		proc.Kill(c, syscall.SIGKILL)
		cancel()
	})
	out.timedOut = timedOut
	if err := exit.Error(); err != nil {
		return out, fmt.Errorf("exec in %s: %w", id, err)
	}
	fault.At(ctx, "exec/exited")
	drainOutput(func() { proc.IO().Wait() }, proc.IO().Cancel)

	out.code = int(exit.ExitCode())
	if out.timedOut {
		out.code = ExitTimedOut
	}
	return out, nil
}

// execError classifies a failed exec: a task that is gone or not running
// is the caller's problem (FailedPrecondition, HTTP 409), anything else the
// runtime's (Unavailable).
func (r *Runtime) execError(ctx context.Context, id string, st *sandboxTask, what string, err error) error {
	status, serr := st.task.Status(context.WithoutCancel(ctx))
	if errdefs.IsNotFound(serr) {
		r.forget(id)
		return fmt.Errorf("sandbox %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if serr == nil && status.Status != containerd.Running {
		return fmt.Errorf("sandbox %s is %s, not running: %w", id, status.Status, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("%s %s: %v: %w", what, id, err, errdefs.ErrUnavailable)
}

// readCwdFile reads the cwd the wrapper left. The control directory is
// writable from inside the sandbox, so the file is opened without following
// symlinks, must be a regular file, and is read up to PATH_MAX only.
func readCwdFile(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", errors.New("cwd file is not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", err
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return "", errors.New("cwd file holds a NUL byte")
	}
	return trimNewline(string(b)), nil
}

// cappedBuffer keeps the first limit bytes written to it and counts the
// rest away, so a chatty command cannot grow the daemon's memory.
type cappedBuffer struct {
	mu        sync.Mutex
	limit     int64
	buf       bytes.Buffer
	truncated bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.limit - int64(c.buf.Len())
	if room <= 0 {
		if len(p) > 0 {
			c.truncated = true
		}
		return len(p), nil
	}
	if int64(len(p)) > room {
		c.buf.Write(p[:room])
		c.truncated = true
		return len(p), nil
	}
	return c.buf.Write(p)
}

func (c *cappedBuffer) result() ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte{}, c.buf.Bytes()...), c.truncated
}

// newExecID names an exec. crypto/rand.Read never returns an error (since
// Go 1.24 it aborts the process instead), so there is nothing to handle.
func newExecID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
