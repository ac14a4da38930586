//go:build linux

package runtime_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/matrx-dev/matrx/testenv"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/runtime/relay"
)

// collect follows a process's output until it ends (or the deadline) and
// returns it.
func collect(t *testing.T, p *runtime.Process, until string, d time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	o, err := p.OpenOutput(0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var out bytes.Buffer
	for {
		c, err := o.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out.String()
		}
		if err != nil {
			t.Fatalf("output so far %q: %v", out.String(), err)
		}
		out.Write(c.Data)
		if until != "" && strings.Contains(out.String(), until) {
			return out.String()
		}
	}
}

func startProc(t *testing.T, rt *runtime.Runtime, id string, spec runtime.ProcessSpec) *runtime.Process {
	t.Helper()
	spec.ID = runtime.NewProcessID()
	if spec.User == "" {
		spec.User = runtime.UserAgent
	}
	if spec.Cwd == "" {
		spec.Cwd = "/home/agent"
	}
	if spec.OutputCap == 0 {
		spec.OutputCap = 16 << 20
	}
	p, err := rt.StartProcess(context.Background(), id, spec)
	if err != nil {
		t.Fatalf("start %q: %v", spec.Command, err)
	}
	return p
}

func waitExit(t *testing.T, p *runtime.Process) runtime.ProcessInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("process %s did not end: %v", info.ID, err)
	}
	return info
}

// TestProcesses covers background processes against a real containerd:
// a server reached from a later exec, stdin, signals, terminals, timeouts,
// adoption by a second runtime (a restarted daemon) and the relay's cost.
func TestProcesses(t *testing.T) {
	testenv.BothContainerds(t)
	rt, env := newRuntime(t)
	id := startSandbox(t, rt, env, runtime.Resources{})
	ctx := context.Background()

	t.Run("server reached from a later exec, its log followed", func(t *testing.T) {
		p := startProc(t, rt, id, runtime.ProcessSpec{
			Command: `while :; do echo "hello from server" | nc -l -p 8080 >/dev/null; echo served; done`,
		})
		var res *runtime.ExecResult
		for i := 0; i < 50; i++ {
			res = run(t, rt, id, runtime.ExecRequest{Command: "nc 127.0.0.1 8080 </dev/null"})
			if strings.Contains(string(res.Stdout), "hello from server") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(string(res.Stdout), "hello from server") {
			t.Fatalf("later exec did not reach the server: %q %q", res.Stdout, res.Stderr)
		}
		collect(t, p, "served", 10*time.Second)
		if err := p.Signal(ctx, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if info := waitExit(t, p); !info.Exited {
			t.Fatalf("%+v", info)
		}
	})

	t.Run("stdin round trip and EOF", func(t *testing.T) {
		p := startProc(t, rt, id, runtime.ProcessSpec{Command: "cat; echo after-eof", Stdin: true})
		if err := p.WriteStdin(ctx, []byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		collect(t, p, "ping\n", 10*time.Second)
		if err := p.CloseStdin(ctx); err != nil {
			t.Fatal(err)
		}
		if out := collect(t, p, "", 10*time.Second); out != "ping\nafter-eof\n" {
			t.Fatalf("output %q", out)
		}
		if info := waitExit(t, p); info.ExitCode != 0 {
			t.Fatalf("exit %d", info.ExitCode)
		}
		if err := p.WriteStdin(ctx, []byte("x")); err == nil {
			t.Fatal("stdin accepted after close")
		}
		q := startProc(t, rt, id, runtime.ProcessSpec{Command: "cat"})
		if err := q.WriteStdin(ctx, []byte("x")); err == nil {
			t.Fatal("stdin accepted by a process started without it")
		}
		q.Signal(ctx, syscall.SIGKILL)
	})

	t.Run("INT reaches a trap in the whole tree", func(t *testing.T) {
		p := startProc(t, rt, id, runtime.ProcessSpec{Command: `trap 'echo got-int; exit 3' INT; echo ready; while :; do sleep 0.1; done`})
		collect(t, p, "ready", 10*time.Second)
		if err := p.Signal(ctx, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		info := waitExit(t, p)
		if out := collect(t, p, "", 5*time.Second); !strings.Contains(out, "got-int") || info.ExitCode != 3 {
			t.Fatalf("exit %d output %q", info.ExitCode, out)
		}
	})

	t.Run("terminal: tty, size, resize, ctrl-c, EOF", func(t *testing.T) {
		p := startProc(t, rt, id, runtime.ProcessSpec{
			PTY: &runtime.WinSize{Rows: 30, Cols: 100},
			// A ^C may land before `read y` starts or interrupt it (a
			// shell's read returns >128 then): the loop reads y again
			// either way, so the next line is y's and ^D is z's.
			Command: `tty; stty size; read x; stty size; trap 'echo caught-int' INT; echo armed; until read y; do :; done; echo got-$y; read z; echo end-$z`,
		})
		out := collect(t, p, "30 100", 10*time.Second)
		if !strings.Contains(out, "/dev/pts/") {
			t.Fatalf("tty: %q", out)
		}
		if err := p.Resize(ctx, runtime.WinSize{Rows: 40, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		p.WriteStdin(ctx, []byte("\n"))
		collect(t, p, "40 120", 10*time.Second)
		collect(t, p, "armed", 10*time.Second)
		p.WriteStdin(ctx, []byte{3}) // ^C: the terminal sends SIGINT
		collect(t, p, "caught-int", 10*time.Second)
		p.WriteStdin(ctx, []byte("yy\n"))
		collect(t, p, "got-yy", 10*time.Second)
		if err := p.CloseStdin(ctx); err != nil { // ^D: read z gets EOF
			t.Fatal(err)
		}
		waitExit(t, p)
		if out := collect(t, p, "", 5*time.Second); !strings.Contains(out, "end-\r\n") && !strings.Contains(out, "end-\n") {
			t.Fatalf("output %q", out)
		}
	})

	t.Run("timeout kills the tree with 124", func(t *testing.T) {
		p := startProc(t, rt, id, runtime.ProcessSpec{Command: "sleep 300 & sleep 300", Timeout: time.Second})
		info := waitExit(t, p)
		if !info.TimedOut || info.ExitCode != runtime.ExitTimedOut {
			t.Fatalf("%+v", info)
		}
		res := run(t, rt, id, runtime.ExecRequest{Command: "ps -o comm | grep -c '^sleep' || true"})
		if strings.TrimSpace(string(res.Stdout)) != "0" {
			t.Fatalf("sleeps left after the timeout: %q", res.Stdout)
		}
	})

	t.Run("a missing working directory is refused", func(t *testing.T) {
		_, err := rt.StartProcess(ctx, id, runtime.ProcessSpec{ID: runtime.NewProcessID(), Command: "true", User: runtime.UserAgent, Cwd: "/nonexistent", OutputCap: 1 << 20})
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("err %v", err)
		}
	})

	t.Run("a second runtime adopts running and ended processes", func(t *testing.T) {
		running := startProc(t, rt, id, runtime.ProcessSpec{Command: `echo started; trap 'echo bye; exit 5' TERM; while :; do sleep 0.1; done`})
		ended := startProc(t, rt, id, runtime.ProcessSpec{Command: "echo done; exit 7"})
		collect(t, running, "started", 10*time.Second)
		waitExit(t, ended)
		rt2, err := runtime.New(ctx, runtime.Config{Address: env.Address, Namespace: testNS,
			StateDir: filepath.Join(env.Dir, "matrx"), InitPath: env.InitPath, RelayPath: env.RelayPath},
			runtime.WithOCIRuntime(containerdtest.OCIRuntime()))
		if err != nil {
			t.Fatal(err)
		}
		defer rt2.Close()
		p2, err := rt2.Process(ctx, id, running.Info().ID)
		if err != nil {
			t.Fatal(err)
		}
		e2, err := rt2.Process(ctx, id, ended.Info().ID)
		if err != nil || !e2.Info().Exited || e2.Info().ExitCode != 7 {
			t.Fatalf("ended process after adoption: %v %+v", err, e2.Info())
		}
		if p2.Info().Exited || p2.Info().Pid != running.Info().Pid {
			t.Fatalf("adopted %+v", p2.Info())
		}
		if err := p2.Signal(ctx, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if info := waitExit(t, p2); info.ExitCode != 5 {
			t.Fatalf("exit %+v", info)
		}
		// (busybox sh may also report the sleep it was waiting for as
		// "Terminated", before or after the trap's output.)
		if out := collect(t, p2, "", 5*time.Second); !strings.HasPrefix(out, "started\n") || !strings.Contains(out, "bye\n") {
			t.Fatalf("output %q", out)
		}
	})

	t.Run("output beyond the cap is dropped oldest first", func(t *testing.T) {
		p := startProc(t, rt, id, runtime.ProcessSpec{Command: "head -c 3000000 /dev/zero; echo tail-marker", OutputCap: 1 << 20})
		waitExit(t, p)
		o, err := p.OpenOutput(0, true)
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		c, err := o.Next(ctx)
		if err != nil || c.Kind != relay.KindGap || c.Lost < 1900000 {
			t.Fatalf("first chunk %+v %v, want a gap of most of 3 MB", c, err)
		}
		var kept int64
		var last []byte
		for {
			c, err := o.Next(ctx)
			if err != nil {
				break
			}
			kept += int64(len(c.Data))
			last = append([]byte(nil), c.Data...)
		}
		if !bytes.HasSuffix(last, []byte("tail-marker\n")) || kept > 1<<20 {
			t.Fatalf("kept %d bytes, last %q", kept, last[max(0, len(last)-20):])
		}
	})

	t.Run("relay memory", func(t *testing.T) {
		var ps []*runtime.Process
		for i := 0; i < 5; i++ {
			ps = append(ps, startProc(t, rt, id, runtime.ProcessSpec{Command: "while :; do echo tick; sleep 1; done"}))
		}
		time.Sleep(500 * time.Millisecond)
		var rss, anon []string
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil || !strings.HasPrefix(string(b), env.RelayPath+"\x00") {
				continue
			}
			st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
			for _, l := range strings.Split(string(st), "\n") {
				if f := strings.Fields(l); len(f) > 1 && f[0] == "VmRSS:" {
					rss = append(rss, f[1])
				} else if len(f) > 1 && f[0] == "RssAnon:" {
					anon = append(anon, f[1])
				}
			}
		}
		t.Logf("relays running: %d; VmRSS kB %v; RssAnon kB (private) %v", len(rss), rss, anon)
		if len(rss) < 5 {
			t.Fatalf("found %d relays for 5 processes", len(rss))
		}
		for _, p := range ps {
			p.Signal(ctx, syscall.SIGKILL)
		}
	})
}
