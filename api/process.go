package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/relay"
	"github.com/matrx-dev/matrx/sandbox"
)

// Background processes over HTTP. Output is application/x-ndjson (one
// apitype.OutputEvent per line), flushed per event; attach is a WebSocket
// (github.com/coder/websocket: maintained, standard library only, context
// aware, safe for concurrent writers, RFC 6455 conformant per the Autobahn
// suite; gorilla/websocket, the other candidate, needs a write lock per
// connection and has no context support).

// keepaliveEvery is how often an idle follow gets a keepalive line by
// default, so proxies do not cut it.
const keepaliveEvery = 15 * time.Second

func (s *Server) processRoutes() []route {
	return []route{
		// Every call about a sandbox's processes is activity (Touch);
		// follows and attaches also touch per chunk and keystroke.
		{"POST /sandboxes/{id}/processes", s.touching(s.startProcess)},
		{"GET /sandboxes/{id}/processes", s.touching(s.listProcesses)},
		{"GET /sandboxes/{id}/processes/{process}", s.touching(s.getProcess)},
		{"GET /sandboxes/{id}/processes/{process}/output", s.touching(s.processOutput)},
		{"POST /sandboxes/{id}/processes/{process}/stdin", s.touching(s.processStdin)},
		{"POST /sandboxes/{id}/processes/{process}/signal", s.touching(s.processSignal)},
		{"POST /sandboxes/{id}/processes/{process}/resize", s.touching(s.processResize)},
		{"GET /sandboxes/{id}/processes/{process}/attach", s.touching(s.processAttach)},
	}
}

func processJSON(p *runtime.Process) apitype.Process {
	info := p.Info()
	out := apitype.Process{
		ProcessID: info.ID, Tag: info.Tag, Status: "running", Pid: info.Pid, StartedAt: info.StartedAt,
		Command: info.Command, User: string(info.User), Stdin: info.Stdin, TimedOut: info.TimedOut, EndedAt: info.EndedAt,
	}
	if info.PTY != nil {
		out.PTY = &apitype.PTYSize{Rows: int(info.PTY.Rows), Cols: int(info.PTY.Cols)}
	}
	if info.Exited {
		out.Status = "exited"
		code := info.ExitCode
		out.ExitCode = &code
	}
	return out
}

func (s *Server) startProcess(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	var req apitype.ProcessRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	in := sandbox.ProcessInput{Command: req.Command, User: req.User, Env: req.Env, Tag: req.Tag, Stdin: req.Stdin}
	if req.Cwd != nil {
		if *req.Cwd == "" {
			s.fail(w, r, fmt.Errorf("cwd is empty: leave it out for the remembered directory: %w", errdefs.ErrInvalidArgument))
			return
		}
		in.Cwd = *req.Cwd
	}
	if req.Timeout != nil {
		max := int(s.mgr.Limits().MaxProcessTimeout / time.Second)
		if *req.Timeout < 0 || *req.Timeout > max {
			s.fail(w, r, fmt.Errorf("timeout %d is out of range [0 (none), %d] seconds: %w", *req.Timeout, max, errdefs.ErrInvalidArgument))
			return
		}
		in.Timeout = time.Duration(*req.Timeout) * time.Second
	}
	if req.PTY != nil {
		if req.PTY.Rows < 1 || req.PTY.Rows > 1000 || req.PTY.Cols < 1 || req.PTY.Cols > 1000 {
			s.fail(w, r, fmt.Errorf("pty.rows and pty.cols must be in [1, 1000], got %dx%d: %w", req.PTY.Rows, req.PTY.Cols, errdefs.ErrInvalidArgument))
			return
		}
		in.PTY = &runtime.WinSize{Rows: uint16(req.PTY.Rows), Cols: uint16(req.PTY.Cols)}
	}
	p, err := s.mgr.StartProcess(r.Context(), id, in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, processJSON(p))
}

func (s *Server) listProcesses(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	ps, err := s.mgr.Processes(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := apitype.ProcessList{Processes: []apitype.Process{}}
	for _, p := range ps {
		out.Processes = append(out.Processes, processJSON(p))
	}
	writeJSON(w, http.StatusOK, out)
}

// process resolves {id} and {process} (a process id or a unique tag).
func (s *Server) process(w http.ResponseWriter, r *http.Request) (*runtime.Process, bool) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return nil, false
	}
	p, err := s.mgr.Process(r.Context(), id, r.PathValue("process"))
	if err != nil {
		s.fail(w, r, err)
		return nil, false
	}
	return p, true
}

func (s *Server) getProcess(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.process(w, r); ok {
		writeJSON(w, http.StatusOK, processJSON(p))
	}
}

func offsetParam(r *http.Request) (int64, bool, error) {
	v := r.URL.Query().Get("offset")
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("query parameter offset=%q: want a byte offset >= 0: %w", v, errdefs.ErrInvalidArgument)
	}
	return n, true, nil
}

func streamName(kind byte) string {
	switch kind {
	case relay.KindStderr:
		return "stderr"
	case relay.KindPTY:
		return "pty"
	}
	return "stdout"
}

// dataEvent is one data line: exactly one of data (valid UTF-8) or data_b64.
func dataEvent(stream string, offset int64, b []byte) apitype.OutputEvent {
	ev := apitype.OutputEvent{Type: apitype.EventData, Stream: stream, Offset: &offset}
	if utf8.Valid(b) {
		ev.Data = string(b)
	} else {
		ev.DataB64 = base64.StdEncoding.EncodeToString(b)
	}
	return ev
}

func endEvent(info runtime.ProcessInfo) apitype.OutputEvent {
	code, to := info.ExitCode, info.TimedOut
	return apitype.OutputEvent{Type: apitype.EventEnd, ExitCode: &code, TimedOut: &to}
}

// ndjson writes events, one per line, flushing each.
type ndjson struct {
	w   http.ResponseWriter
	enc *json.Encoder
	rc  *http.ResponseController
}

func newNDJSON(w http.ResponseWriter) *ndjson {
	w.Header().Set("Content-Type", apitype.NDJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	n := &ndjson{w: w, enc: json.NewEncoder(w), rc: http.NewResponseController(w)}
	n.rc.Flush()
	return n
}

func (n *ndjson) send(ev apitype.OutputEvent) error {
	if err := n.enc.Encode(ev); err != nil {
		return err
	}
	return n.rc.Flush()
}

func (s *Server) processOutput(w http.ResponseWriter, r *http.Request) {
	if err := knownParams(r.URL.Query(), "offset", "follow"); err != nil {
		s.fail(w, r, err)
		return
	}
	offset, _, err := offsetParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	follow, err := boolParam(r.URL.Query(), "follow", false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, ok := s.process(w, r)
	if !ok {
		return
	}
	out, err := p.OpenOutput(offset, follow)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer out.Close()
	n := newNDJSON(w)
	ctx, done := s.streamContext(r)
	defer done()
	for {
		c, err := nextWithin(ctx, out, s.keepalive)
		switch {
		case err == nil && c.Kind == relay.KindGap:
			off := c.Offset
			err = n.send(apitype.OutputEvent{Type: apitype.EventDropped, Offset: &off, Bytes: c.Lost})
		case err == nil:
			s.mgr.Touch(ctx, p.SandboxID())
			err = n.send(dataEvent(streamName(c.Kind), c.Offset, c.Data))
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			err = n.send(apitype.OutputEvent{Type: apitype.EventKeepalive})
		case errors.Is(err, io.EOF):
			info, werr := p.Wait(ctx)
			if werr == nil {
				n.send(endEvent(info))
			}
			return
		default: // no more for now (no follow), the client left, or a bad log
			if !errors.Is(err, relay.ErrNoData) && ctx.Err() == nil {
				s.log.Warn("process output", "process_id", p.Info().ID, "error", err)
			}
			return
		}
		if err != nil {
			return // the client went away; the process is not affected
		}
	}
}

// nextWithin waits at most d for the next chunk.
func nextWithin(ctx context.Context, out *runtime.Output, d time.Duration) (relay.Chunk, error) {
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return out.Next(c)
}

func (s *Server) processStdin(w http.ResponseWriter, r *http.Request) {
	if err := knownParams(r.URL.Query(), "eof"); err != nil {
		s.fail(w, r, err)
		return
	}
	eof, err := boolParam(r.URL.Query(), "eof", false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, ok := s.process(w, r)
	if !ok {
		return
	}
	info := p.Info()
	if !info.Stdin {
		s.fail(w, r, fmt.Errorf("process %s was started without stdin (and has no pty): %w", info.ID, errdefs.ErrFailedPrecondition))
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := r.Body.Read(buf)
		if n > 0 {
			if err := p.WriteStdin(r.Context(), buf[:n]); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			s.fail(w, r, fmt.Errorf("read stdin body: %v: %w", rerr, errdefs.ErrInvalidArgument))
			return
		}
	}
	if eof {
		if err := p.CloseStdin(r.Context()); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// Signals a client may send, by name.
var signals = map[string]syscall.Signal{
	"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "HUP": syscall.SIGHUP,
	"QUIT": syscall.SIGQUIT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
}

// SignalNames lists the accepted signal names.
func signalNames() string { return "INT, TERM, KILL, HUP, QUIT, USR1 or USR2" }

func (s *Server) processSignal(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	var req apitype.ProcessSignalRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	sig, known := signals[strings.TrimPrefix(strings.ToUpper(req.Signal), "SIG")]
	if !known {
		s.fail(w, r, fmt.Errorf("signal %q: want %s: %w", req.Signal, signalNames(), errdefs.ErrInvalidArgument))
		return
	}
	p, err := s.mgr.Process(r.Context(), id, r.PathValue("process"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := p.Signal(r.Context(), sig); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) processResize(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	var req apitype.ResizeRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Rows < 1 || req.Rows > 1000 || req.Cols < 1 || req.Cols > 1000 {
		s.fail(w, r, fmt.Errorf("rows and cols must be in [1, 1000], got %dx%d: %w", req.Rows, req.Cols, errdefs.ErrInvalidArgument))
		return
	}
	p, err := s.mgr.Process(r.Context(), id, r.PathValue("process"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := p.Resize(r.Context(), runtime.WinSize{Rows: uint16(req.Rows), Cols: uint16(req.Cols)}); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// processAttach is the WebSocket: binary frames carry output to the client
// (from ?offset=N, default: from now) and input from it; text frames carry
// control: {"type":"resize","rows","cols"} from the client, and
// {"type":"end","exit_code","timed_out"} from the server before it closes.
func (s *Server) processAttach(w http.ResponseWriter, r *http.Request) {
	if err := knownParams(r.URL.Query(), "offset"); err != nil {
		s.fail(w, r, err)
		return
	}
	offset, set, err := offsetParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, ok := s.process(w, r)
	if !ok {
		return
	}
	if !set {
		if offset, err = p.OutputEnd(); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	out, err := p.OpenOutput(offset, true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer out.Close()
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the client
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	ctx, cancel := s.streamContext(r)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // input
		defer wg.Done()
		defer cancel()
		for {
			typ, b, err := conn.Read(ctx)
			if err != nil {
				return
			}
			s.mgr.Touch(ctx, p.SandboxID())
			if typ == websocket.MessageBinary {
				if err := p.WriteStdin(ctx, b); err != nil && ctx.Err() == nil {
					conn.Close(websocket.StatusPolicyViolation, truncate(err.Error(), 120))
					return
				}
				continue
			}
			var ev apitype.OutputEvent
			if json.Unmarshal(b, &ev) == nil && ev.Type == apitype.EventResize {
				p.Resize(ctx, runtime.WinSize{Rows: uint16(min(max(ev.Rows, 1), 1000)), Cols: uint16(min(max(ev.Cols, 1), 1000))})
			}
		}
	}()
	for {
		c, err := out.Next(ctx)
		if errors.Is(err, io.EOF) {
			info, werr := p.Wait(ctx)
			if werr == nil {
				b, _ := json.Marshal(endEvent(info))
				conn.Write(ctx, websocket.MessageText, b)
				conn.Close(websocket.StatusNormalClosure, "")
			}
			break
		}
		if err != nil {
			break
		}
		if c.Kind == relay.KindGap {
			continue
		}
		s.mgr.Touch(ctx, p.SandboxID())
		if err := conn.Write(ctx, websocket.MessageBinary, c.Data); err != nil {
			break
		}
	}
	cancel()
	wg.Wait()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// streamExec is POST /sandboxes/{id}/exec with Accept: application/x-ndjson:
// the exec's output as data events while it runs, then an end event with
// exit_code, cwd and timed_out. The lines are written as the output comes;
// a slow reader slows the command (its pipes fill), never the daemon's
// memory.
func (s *Server) streamExec(w http.ResponseWriter, r *http.Request, id string, in sandbox.ExecInput) {
	sw := &execStream{w: w}
	in.Stdout = sw.stream("stdout")
	in.Stderr = sw.stream("stderr")
	res, err := s.mgr.Exec(r.Context(), id, in)
	sw.mu.Lock()
	defer sw.mu.Unlock()
	// A copy loop cut off at the exec's end may still deliver a chunk: it
	// must not reach the response once the handler is done with it.
	sw.bad = true
	if err != nil {
		if sw.n == nil {
			s.fail(w, r, err)
		}
		return // the stream just ends: the client sees no end event
	}
	if sw.n == nil {
		sw.n = newNDJSON(w)
	}
	code, to, cwd := res.ExitCode, res.TimedOut, res.Cwd
	sw.n.send(apitype.OutputEvent{Type: apitype.EventEnd, ExitCode: &code, TimedOut: &to, Cwd: &cwd})
}

// execStream turns an exec's two output streams into data events with one
// offset across both.
type execStream struct {
	mu  sync.Mutex
	w   http.ResponseWriter
	n   *ndjson
	off int64
	bad bool // the client went away, or the exec ended: drain, write nothing
}

type execStreamWriter struct {
	s    *execStream
	name string
}

func (e *execStream) stream(name string) io.Writer { return &execStreamWriter{s: e, name: name} }

func (w *execStreamWriter) Write(b []byte) (int, error) {
	e := w.s
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.bad {
		return len(b), nil
	}
	if e.n == nil {
		e.n = newNDJSON(e.w)
	}
	off := e.off
	e.off += int64(len(b))
	if e.n.send(dataEvent(w.name, off, b)) != nil {
		e.bad = true
	}
	return len(b), nil
}

func wantsNDJSON(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), apitype.NDJSON) {
				return true
			}
		}
	}
	return false
}
