package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/errclass"
	"github.com/matrx-dev/matrx/runtime/execagent"
	"github.com/matrx-dev/matrx/runtime/fshelper"
)

// File operations run inside the sandbox, in the files helper
// (`/.matrx/init fs`, package runtime/fshelper), started through
// containerd's task exec with exactly an exec's hardening: execProcess for
// the user, capabilities, seccomp and no_new_privs, and a per-exec cgroup
// (newExecGroup) that a cancelled call kills. The kernel resolves every
// path as for any process of the sandbox and checks every permission as
// for its user; matrxd never opens a sandbox path on the host (see the
// package doc of runtime/fshelper for why that is race-free).
//
// matrxd only moves bytes: the request and an upload's body go to the
// helper's stdin as frames, and its answer comes back on stdout as frames.
// matrxd reads and writes the exec's FIFOs itself (cio.DirectIO, 1 MiB
// pipe buffers) rather than through cio's copying goroutines, so a byte
// crosses one FIFO and the shim's copy, and nothing is ever held whole in
// memory. The answer is hostile and read with strict bounds.

// filesStopGrace is how long a helper whose call is over (or abandoned)
// may take to exit by itself before its cgroup is killed: an aborted
// upload removes its temp file in that time.
const filesStopGrace = 2 * time.Second

// FilesCall is one run of the files helper. Read its answer with Next,
// Decode and Read, then Close it (always).
type FilesCall struct {
	id      string
	bg      context.Context // the call's context without its cancellation
	log     func(msg string, args ...any)
	group   *execGroup
	rd      *fshelper.Reader
	stdin   io.WriteCloser // the helper's stdin (a FIFO or, via the agent, a pipe)
	stdout  io.ReadCloser
	stderr  *cappedBuffer
	exited  chan struct{}
	status  int // the helper's exit status, once exited is closed
	cleanup []func(context.Context)
	stopCtx func() bool

	hasBody  bool // an upload: on Close it gets filesStopGrace to clean up
	viaAgent bool // started by the sandbox's exec agent

	mu      sync.Mutex
	bodyErr error // reading the caller's body failed: the real cause
	closed  bool
	final   bool // the result or error frame was read
}

// Files starts the files helper in sandbox id as user and sends it req;
// body, when not nil, is streamed to it as the upload's body. The call
// ends (the helper is told to stop, then killed) when ctx ends or Close
// is called.
func (r *Runtime) Files(ctx context.Context, id string, user ExecUser, req fshelper.Request, body io.Reader) (_ *FilesCall, err error) {
	ctx = r.nsCtx(ctx)
	st, err := r.sandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	pspec, err := execProcess(user, []string{InitPath, "fs"}, []string{})
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	bg := context.WithoutCancel(ctx)
	execID := newExecID()
	if user == UserAgent {
		if a := r.agentFor(st); a != nil {
			c, err := r.filesViaAgent(ctx, id, a, execID, req, body)
			if err == nil || !errors.Is(err, execagent.ErrNotStarted) {
				return c, err
			}
			r.log.Debug("exec agent did not start the files helper; using the OCI runtime", "sandbox_id", id, "error", err)
		}
		defer r.startAgentSoon(id, st)
	}
	fifos, err := cio.NewFIFOSetInDir(defaults.DefaultFIFODir, "files-"+execID, false)
	if err != nil {
		return nil, fmt.Errorf("files helper fifos: %w", err)
	}
	dio, err := cio.NewDirectIO(bg, fifos)
	if err != nil {
		return nil, fmt.Errorf("files helper fifos: %w", err)
	}
	c := &FilesCall{
		id: id, bg: bg, stdin: dio.Stdin, stdout: dio.Stdout, hasBody: body != nil,
		stderr: &cappedBuffer{limit: 4096}, exited: make(chan struct{}),
		log: func(msg string, args ...any) { r.log.Debug(msg, append([]any{"sandbox_id", id}, args...)...) },
	}
	c.rd = fshelper.NewReader(dio.Stdout, fshelper.KindHeader, fshelper.KindData, fshelper.KindHole, fshelper.KindEntry, fshelper.KindResult, fshelper.KindError)
	defer func() {
		if err != nil {
			dio.Cancel()
			dio.Close()
			c.release(bg)
		}
	}()
	proc, err := st.task.Exec(ctx, execID, pspec, func(string) (cio.IO, error) { return dio, nil })
	if err != nil {
		return nil, r.execError(ctx, id, st, "files helper exec in", err)
	}
	c.cleanup = append(c.cleanup, func(ctx context.Context) { proc.Delete(ctx, containerd.WithProcessKill) })
	go io.Copy(c.stderr, dio.Stderr)
	exited, err := proc.Wait(bg)
	if err != nil {
		return nil, fmt.Errorf("wait files helper in %s: %w", id, err)
	}
	if err := proc.Start(ctx); err != nil {
		return nil, r.execError(ctx, id, st, "start files helper in", err)
	}
	group, err := newExecGroup(int(proc.Pid()), "files-"+execID)
	if err != nil {
		kctx, cancel := context.WithTimeout(bg, 10*time.Second)
		proc.Kill(kctx, syscall.SIGKILL)
		cancel()
		<-exited
		return nil, fmt.Errorf("track files helper in %s: %w", id, err)
	}
	c.group = group
	c.cleanup = append(c.cleanup, func(context.Context) { group.remove() })
	// Bigger pipes, fewer wake-ups per MiB (best effort; the FIFOs are
	// open now that the shim started the process).
	setPipeSize(dio.Stdout)
	setPipeSize(dio.Stdin)
	// The shim holds the stdin FIFO open until told: without this, the
	// helper would not see the end of stdin when the feeder closes it.
	if err := proc.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
		r.log.Debug("close files helper stdin", "sandbox_id", id, "error", err)
	}
	go func() {
		st := <-exited
		c.status = int(st.ExitCode())
		// A helper that exited reads no more: unblock the feeder.
		dio.Stdin.Close()
		close(c.exited)
	}()
	// The request goes out only now that the helper is in its cgroup:
	// nothing runs before it can be killed as a whole.
	go c.feed(req, body)
	c.stopCtx = context.AfterFunc(ctx, func() { dio.Stdin.Close() })
	return c, nil
}

// feed writes the request and the body's frames to the helper's stdin.
// Without a body stdin stays open until Close (a watch stops when it
// closes). A body that fails to read ends stdin without the end frame:
// the helper discards what it got.
func (c *FilesCall) feed(req fshelper.Request, body io.Reader) {
	stdin := c.stdin
	w := fshelper.NewWriter(stdin)
	if err := w.JSON(fshelper.KindRequest, req); err != nil {
		stdin.Close()
		return
	}
	if body == nil {
		w.Flush()
		return
	}
	if _, err := w.ReadFrom(body); err != nil && !w.Failed() {
		// The body failed, not the helper's side.
		c.mu.Lock()
		c.bodyErr = err
		c.mu.Unlock()
	} else if err == nil {
		w.End()
	}
	w.Flush()
	stdin.Close()
}

// Next reads the next frame of the answer. An error frame comes back as
// the error it names (errdefs classes, see helperError); a broken answer
// as an error of its own.
func (c *FilesCall) Next() (byte, error) {
	k, err := c.rd.Next()
	if err != nil {
		return 0, c.broken(err)
	}
	if k == fshelper.KindResult || k == fshelper.KindError {
		c.mu.Lock()
		c.final = true
		c.mu.Unlock()
	}
	if k == fshelper.KindError {
		var e fshelper.Error
		if err := c.rd.Decode(&e); err != nil {
			return 0, c.broken(err)
		}
		e.Clean()
		return 0, c.helperError(&e)
	}
	return k, nil
}

// Decode decodes the current JSON frame.
func (c *FilesCall) Decode(v any) error {
	if err := c.rd.Decode(v); err != nil {
		return c.broken(err)
	}
	return nil
}

// FrameLen is the size of the current JSON frame (for callers that bound
// what they keep).
func (c *FilesCall) FrameLen() int { return c.rd.Len() }

// Read reads streamed bytes (the data frames in a row); io.EOF at the
// first frame of another kind.
func (c *FilesCall) Read(p []byte) (int, error) {
	n, err := c.rd.Read(p)
	if err != nil && err != io.EOF {
		return n, c.broken(err)
	}
	return n, err
}

// Result reads the final frame of an operation that sends nothing else.
func (c *FilesCall) Result() (fshelper.Result, error) {
	var res fshelper.Result
	k, err := c.Next()
	if err != nil {
		return res, err
	}
	if k != fshelper.KindResult {
		return res, c.broken(fmt.Errorf("%w: %q frame where the result was expected", fshelper.ErrProtocol, k))
	}
	return res, c.Decode(&res)
}

// broken explains an answer that ended or went wrong before its final
// frame: the body's own failure if there was one, else the helper's exit.
func (c *FilesCall) broken(err error) error {
	c.mu.Lock()
	bodyErr := c.bodyErr
	c.mu.Unlock()
	if bodyErr != nil {
		return bodyErr
	}
	select {
	case <-c.exited:
	case <-time.After(time.Second):
	}
	detail := ""
	select {
	case <-c.exited:
		detail = fmt.Sprintf(" (exit status %d)", c.status)
	default:
	}
	if b, _ := c.stderr.result(); len(b) > 0 {
		msg := fshelper.Error{Message: string(b)}
		msg.Clean()
		detail += ": " + msg.Message
	}
	if errors.Is(err, fshelper.ErrProtocol) {
		return fmt.Errorf("files helper in sandbox %s answered out of protocol%s: %v: %w", c.id, detail, err, errdefs.ErrUnknown)
	}
	return fmt.Errorf("files helper in sandbox %s ended without an answer%s: %v: %w", c.id, detail, err, errdefs.ErrUnknown)
}

// helperError is the one place where what the helper reports becomes an
// error class: errno or code → NotFound (404), AlreadyExists (409),
// PermissionDenied (403), InsufficientStorage (507), InvalidArgument
// (400), TooLarge (413), UnsatisfiableRange (416), ResourceExhausted
// (429), Unavailable (503) or Unknown (500).
func (c *FilesCall) helperError(e *fshelper.Error) error {
	var class error
	switch e.Code {
	case fshelper.CodeAborted:
		c.mu.Lock()
		bodyErr := c.bodyErr
		c.mu.Unlock()
		if bodyErr != nil {
			return bodyErr
		}
		class = errdefs.ErrUnavailable
	case fshelper.CodeIsDir:
		return fmt.Errorf("%s: download it as a tar (Accept: application/x-tar) or list it: %w", e.Message, errdefs.ErrInvalidArgument)
	case fshelper.CodeInvalid, fshelper.CodeNotRegular:
		class = errdefs.ErrInvalidArgument
	case fshelper.CodeRange:
		return &RangeError{Size: e.Size, err: fmt.Errorf("%s: %w", e.Message, errclass.ErrUnsatisfiableRange)}
	case fshelper.CodeTooLarge:
		class = errclass.ErrTooLarge
	case fshelper.CodeLimit:
		class = errdefs.ErrResourceExhausted
	case fshelper.CodeChanged:
		class = errdefs.ErrConflict
	default:
		class = errnoClass(unix.Errno(e.Errno))
	}
	return fmt.Errorf("%s: %w", e.Message, class)
}

// errnoClass classifies an errno from inside the sandbox.
func errnoClass(errno unix.Errno) error {
	switch errno {
	case unix.ENOENT, unix.ENOTDIR:
		return errdefs.ErrNotFound
	case unix.EEXIST, unix.ENOTEMPTY, unix.EISDIR, unix.EBUSY, unix.ETXTBSY:
		return errdefs.ErrAlreadyExists
	case unix.EACCES, unix.EPERM, unix.EROFS:
		return errdefs.ErrPermissionDenied
	case unix.ENOSPC, unix.EDQUOT, unix.EFBIG:
		return errclass.ErrInsufficientStorage
	case unix.EINVAL, unix.ENAMETOOLONG, unix.ELOOP, unix.ENXIO, unix.ENODEV, unix.EXDEV, unix.EMLINK, unix.EOPNOTSUPP:
		return errdefs.ErrInvalidArgument
	case unix.EMFILE, unix.ENFILE, unix.ENOMEM:
		return errdefs.ErrResourceExhausted
	case unix.EIO, unix.ENOTCONN, unix.ESTALE, unix.ECONNABORTED, unix.EAGAIN:
		return errdefs.ErrUnavailable
	default:
		return errdefs.ErrUnknown
	}
}

// RangeError is a byte range that starts past the end of the file; Size
// is the file's size (for Content-Range: bytes */Size).
type RangeError struct {
	Size int64
	err  error
}

func (e *RangeError) Error() string { return e.err.Error() }
func (e *RangeError) Unwrap() error { return e.err }

// Close ends the call: the helper's stdin closes (an upload without its end
// frame is discarded, a watch stops), the helper gets filesStopGrace to
// exit (an unfinished upload, to remove its temp file; anything else that
// has not answered is abandoned at once), then its cgroup is killed. It
// returns once the helper is gone; the exec's containerd entry and cgroup
// are released in the background.
func (c *FilesCall) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	grace := filesStopGrace
	if !c.final && !c.hasBody {
		grace = 0
	}
	c.mu.Unlock()
	c.stopCtx()
	c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(grace):
		if err := c.group.kill(); err != nil {
			c.log("files helper kill failed", "error", err)
		}
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			c.log("files helper did not exit after SIGKILL")
		}
	}
	// Whatever the helper still had in flight is not wanted; the FIFOs go
	// with the exec (Delete closes its IO).
	c.stdout.Close()
	go c.release(c.bg)
	return nil
}

// release frees the exec's containerd entry and cgroup.
func (c *FilesCall) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i := len(c.cleanup) - 1; i >= 0; i-- {
		c.cleanup[i](ctx)
	}
}

// filesViaAgent starts the files helper through the sandbox's exec agent
// (agentexec.go): the same helper as the same user with the same
// hardening, without a runtime exec. Its stdio are pipes matrxd made. As on
// the runtime path the helper is in its cgroup before the request goes
// out, and it does nothing until the request arrives. An error wrapping
// execagent.ErrNotStarted means no helper runs: the caller may take the
// runtime path.
func (r *Runtime) filesViaAgent(ctx context.Context, id string, a *execagent.Agent, execID string, req fshelper.Request, body io.Reader) (*FilesCall, error) {
	ch, err := startAgentChild(a, execagent.Request{Argv: []string{InitPath, "fs"}, Env: []string{}}, "files-"+execID, true)
	if err != nil {
		return nil, err
	}
	bg := context.WithoutCancel(ctx)
	c := &FilesCall{
		id: id, bg: bg, stdin: ch.stdin, stdout: ch.stdout, hasBody: body != nil, group: ch.group, viaAgent: true,
		stderr: &cappedBuffer{limit: 4096}, exited: make(chan struct{}),
		log: func(msg string, args ...any) { r.log.Debug(msg, append([]any{"sandbox_id", id}, args...)...) },
	}
	c.rd = fshelper.NewReader(ch.stdout, fshelper.KindHeader, fshelper.KindData, fshelper.KindHole, fshelper.KindEntry, fshelper.KindResult, fshelper.KindError)
	c.cleanup = append(c.cleanup, func(context.Context) { ch.group.remove(); ch.close() })
	go io.Copy(c.stderr, ch.stderr)
	go func() {
		ex, _ := ch.wait(nil)
		c.status = ex.Code
		// A helper that exited reads no more: unblock the feeder.
		ch.stdin.Close()
		close(c.exited)
	}()
	go c.feed(req, body)
	c.stopCtx = context.AfterFunc(ctx, func() { ch.stdin.Close() })
	return c, nil
}
