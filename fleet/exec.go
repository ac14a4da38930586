package fleet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	vkerrdefs "github.com/virtual-kubelet/virtual-kubelet/errdefs"
	vkapi "github.com/virtual-kubelet/virtual-kubelet/node/api"
	utilexec "k8s.io/utils/exec"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client/attach"
)

// mainTag tags the Pod's main process: its container's command and args.
const mainTag = "main"

// RunInContainer is `kubectl exec`: the command runs in the Pod's sandbox
// as a background process of matrxd's process API (as agent, in the
// sandbox's remembered directory, without exec's timeout), with a terminal
// for -t (its size follows the client's) and input for -i; its output
// streams back and its exit code reaches kubectl. A client that goes away
// kills the process's whole tree.
func (p *Provider) RunInContainer(ctx context.Context, namespace, name, container string, cmd []string, streams vkapi.AttachIO) error {
	sb, err := p.running(namespace, name, container)
	if err != nil {
		return err
	}
	if len(cmd) == 0 {
		return vkerrdefs.InvalidInput("no command")
	}
	req := apitype.ProcessRequest{Command: quoteArgv(cmd), Stdin: streams.Stdin() != nil}
	if streams.TTY() {
		req.PTY = initialSize(ctx, streams)
	}
	proc, err := p.mx.StartProcess(ctx, sb.SandboxID, req)
	if err != nil {
		return fmt.Errorf("start the command in sandbox %s: %w", sb.SandboxID, err)
	}
	code, err := p.relay(ctx, sb.SandboxID, proc.ProcessID, streams)
	if err != nil {
		if ctx.Err() != nil { // the client went away: the process goes too
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			p.mx.SignalProcess(kctx, sb.SandboxID, proc.ProcessID, "KILL")
			cancel()
		}
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command exited with %d", code), Code: code}
	}
	return nil
}

// AttachToContainer is `kubectl attach`: the Pod's main process, with its
// output from now on, and its input when it has a terminal.
func (p *Provider) AttachToContainer(ctx context.Context, namespace, name, container string, streams vkapi.AttachIO) error {
	sb, err := p.running(namespace, name, container)
	if err != nil {
		return err
	}
	main, err := p.mx.Process(ctx, sb.SandboxID, mainTag)
	if err != nil {
		return vkerrdefs.InvalidInputf("pod %s/%s has no main process to attach to (its container has no command): %v", namespace, name, err)
	}
	if main.PTY == nil && !main.Stdin && streams.Stdin() != nil {
		return vkerrdefs.InvalidInput("the main process takes no input")
	}
	code, err := p.attach(ctx, sb.SandboxID, main.ProcessID, -1, streams)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("main process exited with %d", code), Code: code}
	}
	return nil
}

// relay carries a process's streams to and from a kubelet API client until
// it ends, and returns its exit code.
func (p *Provider) relay(ctx context.Context, id, proc string, streams vkapi.AttachIO) (int, error) {
	if streams.TTY() {
		return p.attach(ctx, id, proc, 0, streams)
	}
	if in := streams.Stdin(); in != nil {
		go p.pumpStdin(ctx, id, proc, in)
	}
	events, err := p.mx.ProcessOutput(ctx, id, proc, 0, true)
	if err != nil {
		return 0, err
	}
	defer events.Close()
	for {
		ev, err := events.Next()
		if err != nil {
			return 0, fmt.Errorf("output of process %s: %w", proc, err)
		}
		switch ev.Type {
		case apitype.EventData:
			w := streams.Stdout()
			if ev.Stream == "stderr" {
				w = streams.Stderr()
			}
			if w != nil {
				w.Write(ev.Payload())
			}
		case apitype.EventEnd:
			return exitCode(ev), nil
		}
	}
}

// pumpStdin writes a client's input to a process until the client closes
// it, then closes the process's input (so that `kubectl exec -i ... cat`
// ends).
func (p *Provider) pumpStdin(ctx context.Context, id, proc string, in io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if werr := p.mx.WriteStdin(ctx, id, proc, buf[:n], false); werr != nil {
				p.log.Warn("input to a process failed", "sandbox_id", id, "process_id", proc, "error", werr)
				err = werr
			}
		}
		if err != nil {
			// matrxd keeps input written before the process opened its
			// end, and closing waits for that (runtime.CloseStdin).
			if werr := p.mx.WriteStdin(ctx, id, proc, nil, true); werr != nil && ctx.Err() == nil {
				p.log.Warn("closing a process's input failed", "sandbox_id", id, "process_id", proc, "error", werr)
			}
			return
		}
	}
}

// attach relays a terminal (or a process's merged output and input) over
// matrxd's WebSocket attach, following the client's resizes.
func (p *Provider) attach(ctx context.Context, id, proc string, offset int64, streams vkapi.AttachIO) (int, error) {
	a, err := attach.Attach(ctx, p.mx, id, proc, offset)
	if err != nil {
		return 0, fmt.Errorf("attach to process %s: %w", proc, err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if in := streams.Stdin(); in != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := in.Read(buf)
				if n > 0 && a.Send(ctx, append([]byte(nil), buf[:n]...)) != nil {
					return
				}
				if err != nil {
					if streams.TTY() {
						a.Send(ctx, []byte{4}) // ^D: the terminal's end of input
					}
					return
				}
			}
		}()
	}
	if resize := streams.Resize(); resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case s, ok := <-resize:
					if !ok {
						return
					}
					a.Resize(ctx, int(s.Height), int(s.Width))
				}
			}
		}()
	}
	for {
		out, end, err := a.Recv(ctx)
		switch {
		case err != nil:
			return 0, fmt.Errorf("attached to process %s: %w", proc, err)
		case end != nil:
			return exitCode(*end), nil
		}
		if w := streams.Stdout(); w != nil {
			w.Write(out)
		}
	}
}

// initialSize is the client's terminal size, which kubectl sends as soon
// as the stream is up, so that the command starts with it (80x24 if none
// comes within a second).
func initialSize(ctx context.Context, streams vkapi.AttachIO) *apitype.PTYSize {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case s, ok := <-streams.Resize():
		if ok && s.Height > 0 && s.Width > 0 {
			return &apitype.PTYSize{Rows: int(s.Height), Cols: int(s.Width)}
		}
	case <-t.C:
	case <-ctx.Done():
	}
	return &apitype.PTYSize{Rows: 24, Cols: 80}
}

func exitCode(ev apitype.OutputEvent) int {
	if ev.ExitCode != nil {
		return *ev.ExitCode
	}
	return 0
}

// quoteArgv makes a shell command line that runs argv exactly (matrxd runs
// one command string with the sandbox's shell).
func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// GetContainerLogs is `kubectl logs`: the output of the Pod's main process
// (its container's command and args; stdout and stderr interleaved as
// written), with --follow, --tail and --limit-bytes. A Pod without a
// command has no logs. matrxd keeps an ended process's output for its
// retention period (--process-retention, 10 minutes by default).
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, name, container string, opts vkapi.ContainerLogOpts) (io.ReadCloser, error) {
	key := podKey(namespace, name)
	p.mu.Lock()
	st := p.pods[key]
	var v podView
	if st != nil {
		v = st.view
	}
	p.mu.Unlock()
	switch {
	case st == nil:
		return nil, vkerrdefs.NotFoundf("pod %s is not on this node", key)
	case opts.Previous:
		return nil, vkerrdefs.InvalidInput("a sandbox is never restarted: there is no previous container")
	case len(v.Main) == 0 || v.Sandbox == nil:
		return io.NopCloser(strings.NewReader("")), nil
	}
	id := v.Sandbox.SandboxID
	if _, err := p.mx.Process(ctx, id, mainTag); err != nil {
		return io.NopCloser(strings.NewReader("")), nil // not started yet, or forgotten
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(p.copyLogs(ctx, id, opts, pw)) }()
	return pr, nil
}

// copyLogs writes the main process's output to w as kubectl logs asked.
func (p *Provider) copyLogs(ctx context.Context, id string, opts vkapi.ContainerLogOpts, w io.Writer) error {
	if opts.LimitBytes > 0 {
		w = &limitWriter{w: w, n: int64(opts.LimitBytes)}
	}
	offset := int64(0)
	if opts.Tail > 0 {
		// What is there now, cut to its last lines; then follow on.
		var all bytes.Buffer
		end, err := p.readOutput(ctx, id, 0, false, &all)
		if err != nil {
			return err
		}
		if _, err := w.Write(lastLines(all.Bytes(), opts.Tail)); err != nil {
			return ignoreLimit(err)
		}
		if !opts.Follow {
			return nil
		}
		offset = end
	}
	_, err := p.readOutput(ctx, id, offset, opts.Follow, w)
	return ignoreLimit(err)
}

// readOutput copies the main process's output from offset to w and
// returns the offset after it.
func (p *Provider) readOutput(ctx context.Context, id string, offset int64, follow bool, w io.Writer) (int64, error) {
	events, err := p.mx.ProcessOutput(ctx, id, mainTag, offset, follow)
	if err != nil {
		return offset, err
	}
	defer events.Close()
	for {
		ev, err := events.Next()
		if errors.Is(err, io.EOF) {
			return offset, nil
		}
		if err != nil {
			return offset, err
		}
		switch ev.Type {
		case apitype.EventData:
			b := ev.Payload()
			if ev.Offset != nil {
				offset = *ev.Offset
			}
			offset += int64(len(b))
			if _, err := w.Write(b); err != nil {
				return offset, err
			}
		case apitype.EventEnd:
			return offset, nil
		}
	}
}

// lastLines is the last n lines of b.
func lastLines(b []byte, n int) []byte {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), len(b)+1)
	var lines [][]byte
	for sc.Scan() {
		lines = append(lines, append(append([]byte(nil), sc.Bytes()...), '\n'))
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	out := bytes.Join(lines, nil)
	if len(b) > 0 && b[len(b)-1] != '\n' && len(out) > 0 {
		out = out[:len(out)-1] // the output did not end with a newline
	}
	return out
}

// errLimit ends a log stream at --limit-bytes.
var errLimit = errors.New("limit reached")

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(b []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLimit
	}
	cut := b
	if int64(len(cut)) > l.n {
		cut = cut[:l.n]
	}
	n, err := l.w.Write(cut)
	l.n -= int64(n)
	if err == nil && len(cut) < len(b) {
		err = errLimit
	}
	return n, err
}

func ignoreLimit(err error) error {
	if errors.Is(err, errLimit) {
		return nil
	}
	return err
}

// PortForward is refused: sandboxes accept no connections from outside
// their host's bridge (docs/security.md), and the provider does not tunnel
// around that.
func (p *Provider) PortForward(ctx context.Context, namespace, name string, port int32, stream io.ReadWriteCloser) error {
	stream.Close()
	return vkerrdefs.InvalidInput("port-forward is not supported: sandboxes accept no inbound connections")
}
