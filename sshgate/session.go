package sshgate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/relay"
	"github.com/matrx-dev/matrx/sandbox"
)

// loginShell is what "shell" runs: bash as a login shell where the image
// has it, sh otherwise.
const loginShell = `if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l`

// sftpCommand is what the "sftp" subsystem runs, inside the sandbox.
const sftpCommand = "exec /.matrx/init sftp"

// maxEnv bounds the env requests one session may make.
const maxEnv = 32

var envNameRe = regexp.MustCompile(`^(LANG|TERM|LC_[A-Z0-9_]{1,60})$`)

// signals are the SSH signal names (RFC 4254 6.10) a client may send.
var signals = map[ssh.Signal]syscall.Signal{
	ssh.SIGABRT: syscall.SIGABRT, ssh.SIGALRM: syscall.SIGALRM, ssh.SIGFPE: syscall.SIGFPE,
	ssh.SIGHUP: syscall.SIGHUP, ssh.SIGILL: syscall.SIGILL, ssh.SIGINT: syscall.SIGINT,
	ssh.SIGKILL: syscall.SIGKILL, ssh.SIGPIPE: syscall.SIGPIPE, ssh.SIGQUIT: syscall.SIGQUIT,
	ssh.SIGSEGV: syscall.SIGSEGV, ssh.SIGTERM: syscall.SIGTERM, ssh.SIGUSR1: syscall.SIGUSR1,
	ssh.SIGUSR2: syscall.SIGUSR2,
}

// session is one "session" channel: at most one shell, command or
// subsystem, run as a process of the sandbox.
type session struct {
	g     *Gateway
	login *sandbox.Login
	ch    ssh.Channel
	log   *slog.Logger

	pty  *runtime.WinSize
	term string
	env  map[string]string
	proc *runtime.Process
	done chan struct{} // closed once the exit status is sent
}

func (s *session) serve(ctx context.Context, reqs <-chan *ssh.Request) {
	defer s.ch.Close()
	s.done = make(chan struct{})
	for {
		select {
		case r, ok := <-reqs:
			if !ok { // the client closed the channel (or the connection went)
				s.finish(ctx, true)
				return
			}
			s.request(ctx, r)
		case <-s.done:
			s.finish(ctx, false)
			return
		}
	}
}

// finish releases the session's process: a hangup (SIGHUP, then SIGKILL)
// when the client left first, and the process is forgotten either way.
func (s *session) finish(ctx context.Context, hangup bool) {
	p := s.proc
	if p == nil {
		return
	}
	if hangup {
		select {
		case <-p.Done():
		default:
			p.Signal(ctx, syscall.SIGHUP)
			select {
			case <-p.Done():
			case <-time.After(hangupGrace):
			}
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := s.g.mgr.ForgetProcess(cctx, p); err != nil {
		s.log.Warn("ssh session: forget its process", "process_id", p.Info().ID, "error", err)
	}
}

func (s *session) request(ctx context.Context, r *ssh.Request) {
	ok := false
	switch r.Type {
	case "pty-req":
		var p struct {
			Term          string
			Cols, Rows    uint32
			Width, Height uint32
			Modes         string
		}
		if s.proc == nil && ssh.Unmarshal(r.Payload, &p) == nil && printable(p.Term, 64) {
			s.pty, s.term, ok = winSize(p.Rows, p.Cols), p.Term, true
		}
	case "env":
		var p struct{ Name, Value string }
		if s.proc == nil && ssh.Unmarshal(r.Payload, &p) == nil && envNameRe.MatchString(p.Name) &&
			len(s.env) < maxEnv && len(p.Value) <= 1024 && utf8.ValidString(p.Value) && !strings.ContainsRune(p.Value, 0) {
			if s.env == nil {
				s.env = map[string]string{}
			}
			s.env[p.Name], ok = p.Value, true
		} else {
			s.log.Debug("ssh env request refused", "name", p.Name)
		}
	case "shell":
		s.start(ctx, r, "shell", loginShell)
		return
	case "exec":
		var p struct{ Command string }
		if ssh.Unmarshal(r.Payload, &p) == nil {
			s.start(ctx, r, "exec", p.Command)
			return
		}
	case "subsystem":
		var p struct{ Name string }
		if ssh.Unmarshal(r.Payload, &p) == nil && p.Name == "sftp" {
			s.start(ctx, r, "sftp", sftpCommand)
			return
		}
		s.log.Warn("ssh subsystem refused", "subsystem", p.Name)
	case "window-change":
		var p struct{ Cols, Rows, Width, Height uint32 }
		if s.proc != nil && s.pty != nil && ssh.Unmarshal(r.Payload, &p) == nil {
			ok = s.proc.Resize(ctx, *winSize(p.Rows, p.Cols)) == nil
		}
	case "signal":
		var p struct{ Signal string }
		if ssh.Unmarshal(r.Payload, &p) == nil && s.proc != nil {
			if sig, known := signals[ssh.Signal(p.Signal)]; known {
				ok = s.proc.Signal(ctx, sig) == nil
			}
		}
	case "x11-req", "auth-agent-req@openssh.com":
		s.log.Warn("ssh request refused", "request", r.Type)
	}
	if r.WantReply {
		r.Reply(ok, nil)
	}
}

// start runs the session's process and relays it; it answers r.
func (s *session) start(ctx context.Context, r *ssh.Request, kind, command string) {
	if s.proc != nil {
		if r.WantReply {
			r.Reply(false, nil)
		}
		return
	}
	env := map[string]string{}
	for k, v := range s.env {
		env[k] = v
	}
	if s.pty != nil && s.term != "" {
		env["TERM"] = s.term
	}
	home := sandbox.HotPath
	if s.login.User == string(runtime.UserRoot) {
		home = "/root"
	}
	in := sandbox.ProcessInput{Command: command, User: s.login.User, Env: env, PTY: s.pty, Stdin: s.pty == nil, Cwd: home}
	p, err := s.g.mgr.StartProcess(ctx, s.login.SandboxID, in)
	if err != nil {
		s.log.Warn("ssh session could not start", "kind", kind, "error", err)
		fmt.Fprintf(s.ch.Stderr(), "matrx: %v\r\n", err)
		if r.WantReply {
			r.Reply(false, nil)
		}
		return
	}
	s.proc = p
	if r.WantReply {
		r.Reply(true, nil)
	}
	s.log.Info("ssh session started", "kind", kind, "process_id", p.Info().ID, "pty", s.pty != nil)
	go s.feed(ctx, p)
	go s.pump(ctx, p)
}

// feed copies the client's input to the process: its stdin with EOF, or
// its terminal.
func (s *session) feed(ctx context.Context, p *runtime.Process) {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.ch.Read(buf)
		if n > 0 {
			if werr := p.WriteStdin(ctx, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && s.pty == nil {
				p.CloseStdin(ctx)
			}
			return
		}
	}
}

// pump copies the process's output to the client (stdout, stderr apart
// without a terminal), then sends its exit status.
func (s *session) pump(ctx context.Context, p *runtime.Process) {
	defer close(s.done)
	code := 255
	defer func() {
		s.ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(code)))
		s.ch.CloseWrite()
	}()
	out, err := p.OpenOutput(0, true)
	if err != nil {
		fmt.Fprintf(s.ch.Stderr(), "matrx: %v\r\n", err)
		return
	}
	defer out.Close()
	for {
		c, err := out.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return
		}
		var werr error
		switch c.Kind {
		case relay.KindStdout, relay.KindPTY:
			_, werr = s.ch.Write(c.Data)
		case relay.KindStderr:
			_, werr = s.ch.Stderr().Write(c.Data)
		case relay.KindGap:
			if s.pty != nil {
				_, werr = fmt.Fprintf(s.ch, "\r\n[matrx: %d bytes of output dropped: this client fell behind]\r\n", c.Lost)
				break
			}
			// A byte stream with a hole is worse than none.
			fmt.Fprintf(s.ch.Stderr(), "matrx: %d bytes of output were dropped (the client fell more than the process output limit behind); the session is ended\n", c.Lost)
			p.Signal(ctx, syscall.SIGKILL)
			s.log.Warn("ssh session ended: output dropped", "process_id", p.Info().ID, "lost", c.Lost)
			return
		}
		if werr != nil {
			return // the client is gone; finish hangs the process up
		}
	}
	info, err := p.Wait(ctx)
	if err != nil {
		return
	}
	if info.ExitCode >= 0 && info.ExitCode <= 255 {
		code = info.ExitCode
	}
	s.log.Info("ssh session ended", "process_id", info.ID, "exit_code", code)
}

// winSize is a terminal size within what processes accept (1-1000; a
// client that sends 0 gets 24x80).
func winSize(rows, cols uint32) *runtime.WinSize {
	clamp := func(v uint32, def uint16) uint16 {
		switch {
		case v == 0:
			return def
		case v > 1000:
			return 1000
		}
		return uint16(v)
	}
	return &runtime.WinSize{Rows: clamp(rows, 24), Cols: clamp(cols, 80)}
}

// printable reports whether s is at most n printable ASCII characters.
func printable(s string, n int) bool {
	if len(s) > n {
		return false
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// copyAll copies src to dst until either ends.
func copyAll(dst io.Writer, src io.Reader) { io.Copy(dst, src) }
