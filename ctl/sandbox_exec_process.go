package ctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/api/client/attach"
)

// runProcessExec is `matrx exec` with -d, -t or -i: the command runs as a
// background process. -d prints its id; -t attaches a terminal (raw mode,
// window size and its changes forwarded) over the attach WebSocket; -i
// without -t sends stdin through the stdin route and prints stdout and
// stderr from the output stream. The exit code passes through.
func runProcessExec(ctx context.Context, cl *client.Client, o execOptions, w, errw io.Writer) error {
	req := apitype.ProcessRequest{Command: o.req.Command, Cwd: o.req.Cwd, Env: o.req.Env, User: o.req.User, Timeout: o.req.Timeout}
	term := terminalOf(o.stdin)
	if o.tty {
		rows, cols := 24, 80
		if term != nil {
			rows, cols = term.size()
		}
		req.PTY = &apitype.PTYSize{Rows: rows, Cols: cols}
	} else if o.interactive {
		req.Stdin = true
	}
	p, err := cl.StartProcess(ctx, o.id, req)
	if err != nil {
		return err
	}
	if o.detach {
		if o.json {
			return printJSON(w, p)
		}
		fmt.Fprintln(w, p.ProcessID)
		return nil
	}
	if o.tty {
		return attachTerminal(ctx, cl, o.id, p.ProcessID, 0, o.interactive, true, o.stdin, term, w)
	}
	return followWithStdin(ctx, cl, o.id, p.ProcessID, o.stdin, w, errw)
}

// attachTerminal attaches to a process's terminal: this terminal in raw
// mode (restored on the way out), keystrokes sent as they come (^C too:
// the sandbox's terminal turns it into SIGINT), window changes forwarded.
//
// When stdin ends (it is not a terminal, or it was closed), the process
// gets end-of-input the terminal way (^D), so a shell reading it exits
// instead of waiting forever. On a terminal (pty) a ^D is an end only at
// the start of a line and once the shell reads its terminal: one that
// lands after a partial line, or while a login shell is still setting its
// terminal up, is not. So it is repeated each second (at most
// eofRepeats times) until the process ends, as a user would press it
// again.
func attachTerminal(ctx context.Context, cl *client.Client, id, proc string, offset int64, input, pty bool, stdin *os.File, term *terminal, w io.Writer) error {
	a, err := attach.Attach(ctx, cl, id, proc, offset)
	if err != nil {
		return err
	}
	defer a.Close()
	if term != nil && input {
		restore, err := term.makeRaw()
		if err == nil {
			defer restore()
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				rows, cols := term.size()
				a.Resize(ctx, rows, cols)
			}
		}()
	}
	if input {
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := stdin.Read(buf)
				if n > 0 && a.Send(ctx, buf[:n]) != nil {
					return
				}
				if err != nil {
					cl.WriteStdin(ctx, id, proc, nil, true)
					for i := 0; pty && i < eofRepeats; i++ {
						select {
						case <-ctx.Done():
							return
						case <-time.After(time.Second):
						}
						if a.Send(ctx, []byte{4}) != nil {
							return // the session ended
						}
					}
					return
				}
			}
		}()
	}
	for {
		out, end, err := a.Recv(ctx)
		if err != nil {
			return fmt.Errorf("attach: the connection ended before the process did (it keeps running; matrx attach %s %s): %w", id, proc, err)
		}
		if end != nil {
			if end.ExitCode != nil && *end.ExitCode != 0 {
				return cli.Exit("", *end.ExitCode)
			}
			return nil
		}
		w.Write(out)
	}
}

// eofRepeats bounds how often a terminal's end of input (^D) is repeated.
const eofRepeats = 30

// followWithStdin copies stdin to the process (then closes its input) and
// prints its output until it ends.
func followWithStdin(ctx context.Context, cl *client.Client, id, proc string, stdin *os.File, w, errw io.Writer) error {
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if cl.WriteStdin(ctx, id, proc, buf[:n], false) != nil {
					return
				}
			}
			if err != nil {
				cl.WriteStdin(ctx, id, proc, nil, true)
				return
			}
		}
	}()
	return printOutput(ctx, cl, id, proc, 0, true, w, errw)
}

// printOutput writes a process's output (stdout to w, stderr to errw) and
// returns its exit code as the command's.
func printOutput(ctx context.Context, cl *client.Client, id, proc string, offset int64, follow bool, w, errw io.Writer) error {
	s, err := cl.ProcessOutput(ctx, id, proc, offset, follow)
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		ev, err := s.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch ev.Type {
		case apitype.EventData:
			if ev.Stream == "stderr" {
				errw.Write(ev.Payload())
			} else {
				w.Write(ev.Payload())
			}
		case apitype.EventDropped:
			fmt.Fprintf(errw, "matrx: %d bytes of output were dropped (beyond the daemon's output limit)\n", ev.Bytes)
		case apitype.EventEnd:
			if ev.ExitCode != nil && *ev.ExitCode != 0 {
				return cli.Exit("", *ev.ExitCode)
			}
			return nil
		}
	}
}
