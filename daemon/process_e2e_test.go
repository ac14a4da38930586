//go:build linux

package daemon_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/api/client/attach"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// follow reads a process's output from offset until the end event (or
// until fn returns false) and returns the bytes and the end event.
func follow(t *testing.T, c *client.Client, id, proc string, offset int64, fn func(out []byte) bool) ([]byte, *apitype.OutputEvent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := c.ProcessOutput(ctx, id, proc, offset, true)
	if err != nil {
		t.Fatalf("output: %v", err)
	}
	defer s.Close()
	var out []byte
	next := offset
	for {
		ev, err := s.Next()
		if err != nil {
			t.Fatalf("output after %d bytes (%q...): %v", len(out), truncateTail(out), err)
		}
		switch ev.Type {
		case apitype.EventData:
			if *ev.Offset != next {
				t.Fatalf("data at offset %d, want %d", *ev.Offset, next)
			}
			b := ev.Payload()
			out = append(out, b...)
			next += int64(len(b))
			if fn != nil && !fn(out) {
				return out, nil
			}
		case apitype.EventDropped:
			t.Fatalf("dropped %d bytes at %d", ev.Bytes, *ev.Offset)
		case apitype.EventEnd:
			return out, &ev
		}
	}
}

func truncateTail(b []byte) string {
	if len(b) > 200 {
		b = b[len(b)-200:]
	}
	return string(b)
}

func untilContains(s string) func([]byte) bool {
	return func(b []byte) bool { return !bytes.Contains(b, []byte(s)) }
}

func TestProcessAPI(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	h := daemontest.Start(t, func(c *daemon.Config) {
		c.Limits.MaxProcesses = 4
		c.Limits.ProcessRetainCount = 3
		c.Limits.ProcessOutputCap = 64 << 20
		c.Network.Mode = "off"
		c.StreamKeepalive = 300 * time.Millisecond
	})
	c := h.Client()
	ctx := context.Background()
	s := h.Create("alice", &apitype.SandboxConfig{Network: &apitype.NetworkConfig{Mode: "none"}, MemoryMB: 512})
	id := s.SandboxID

	t.Run("background server reached from a later exec, its log followed", func(t *testing.T) {
		p, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Tag: "server",
			Command: `while :; do echo "hello from server" | nc -l -p 8080 >/dev/null; echo served; done`})
		if err != nil || p.Status != "running" || p.Tag != "server" || p.Pid <= 1 || p.PTY != nil {
			t.Fatalf("start: %v %+v", err, p)
		}
		var r *apitype.ExecResponse
		for i := 0; i < 50; i++ {
			if r = h.Exec(id, "nc 127.0.0.1 8080 </dev/null"); strings.Contains(r.Stdout, "hello") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(r.Stdout, "hello from server") {
			t.Fatalf("exec did not reach the server: %+v", r)
		}
		follow(t, c, id, "server", 0, untilContains("served"))
		got, err := c.Process(ctx, id, "server")
		if err != nil || got.ProcessID != p.ProcessID {
			t.Fatalf("by tag: %v %+v", err, got)
		}
		if _, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Tag: "server", Command: "true"}); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("second running process with the same tag: %v, want 409", err)
		}
		if err := c.SignalProcess(ctx, id, "server", "KILL"); err != nil {
			t.Fatal(err)
		}
		_, end := follow(t, c, id, "server", 0, nil)
		if end == nil || *end.ExitCode == 0 {
			t.Fatalf("end %+v", end)
		}
	})

	t.Run("an idle follow gets keepalives", func(t *testing.T) {
		p, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "echo once; sleep 300"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.SignalProcess(ctx, id, p.ProcessID, "KILL")
		s, err := c.ProcessOutput(ctx, id, p.ProcessID, 0, true)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var types []string
		for len(types) < 3 {
			ev, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			types = append(types, ev.Type)
		}
		if strings.Join(types, " ") != "data keepalive keepalive" {
			t.Fatalf("events %v", types)
		}
	})

	t.Run("bad input, unknown process, wrong state, cap", func(t *testing.T) {
		bad := []apitype.ProcessRequest{
			{Command: ""},
			{Command: "true", PTY: &apitype.PTYSize{Rows: 0, Cols: 80}},
			{Command: "true", Timeout: ptr(-1)},
			{Command: "true", Timeout: ptr(10 << 20)},
			{Command: "true", Tag: "bad tag"},
			{Command: "true", User: "nobody"},
			{Command: "true", Cwd: ptr("relative")},
		}
		for _, req := range bad {
			if _, err := c.StartProcess(ctx, id, req); !errdefs.IsInvalidArgument(err) {
				t.Errorf("%+v: %v, want 400", req, err)
			}
		}
		if _, err := c.Process(ctx, id, "p-000000000000"); !errdefs.IsNotFound(err) {
			t.Errorf("unknown process: %v", err)
		}
		if _, err := c.Processes(ctx, "sbx-doesnotexist"); !errdefs.IsNotFound(err) {
			t.Errorf("unknown sandbox: %v", err)
		}
		p, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "sleep 60"})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WriteStdin(ctx, id, p.ProcessID, []byte("x"), false); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("stdin to a process without stdin: %v, want 409", err)
		}
		if err := c.ResizeProcess(ctx, id, p.ProcessID, 10, 10); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("resize without a pty: %v, want 409", err)
		}
		if err := c.SignalProcess(ctx, id, p.ProcessID, "STOPALL"); !errdefs.IsInvalidArgument(err) {
			t.Errorf("unknown signal: %v, want 400", err)
		}
		code, _, err := c.Raw(ctx, http.MethodGet, "/sandboxes/"+id+"/processes/"+p.ProcessID+"/output?offset=-3", nil)
		if err != nil || code != 400 {
			t.Errorf("negative offset: %d %v", code, err)
		}
		var started []string
		for {
			q, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "sleep 60"})
			if err != nil {
				if !errdefs.IsResourceExhausted(err) {
					t.Fatalf("over the cap: %v, want 429", err)
				}
				break
			}
			started = append(started, q.ProcessID)
			if len(started) > 10 {
				t.Fatal("no cap")
			}
		}
		// Blocking execs do not count toward the cap.
		if r := h.Exec(id, "echo still"); r.Stdout != "still\n" {
			t.Fatalf("exec at the cap: %+v", r)
		}
		for _, q := range append(started, p.ProcessID) {
			c.SignalProcess(ctx, id, q, "KILL")
		}
	})

	t.Run("resume from an offset after a disconnect, checksummed over 50 MiB", func(t *testing.T) {
		// Unvalidated: this test is about bytes, and validating 50 MiB of
		// events line by line would be most of its time.
		c := h.UnvalidatedClient()
		defer c.Close()
		r := h.Exec(id, "head -c 52428800 /dev/urandom >/tmp/data && sha256sum /tmp/data")
		want, _, _ := strings.Cut(r.Stdout, " ")
		if r.ExitCode != 0 || len(want) != 64 {
			t.Fatalf("make data: %+v", r)
		}
		p, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "cat /tmp/data; rm /tmp/data"})
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.New()
		var offset int64
		var end *apitype.OutputEvent
		for reconnects := 0; end == nil; reconnects++ {
			if reconnects > 100 {
				t.Fatal("too many reconnects")
			}
			// Read about 7 MiB, then hang up mid-stream and resume.
			var got []byte
			got, end = follow(t, c, id, p.ProcessID, offset, func(b []byte) bool { return len(b) < 7<<20 })
			sum.Write(got)
			offset += int64(len(got))
		}
		if offset != 52428800 || hex.EncodeToString(sum.Sum(nil)) != want || *end.ExitCode != 0 {
			t.Fatalf("read %d bytes, sha256 %x, want %s; end %+v", offset, sum.Sum(nil), want, end)
		}
	})

	t.Run("streamed exec: events in order, byte-exact, end with cwd", func(t *testing.T) {
		s, err := c.ExecStream(ctx, id, apitype.ExecRequest{Command: `cd /tmp; printf 'out1\n'; printf 'err1\n' >&2; printf '\377\376'; exit 3`})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var out, errOut []byte
		var next int64
		for {
			ev, err := s.Next()
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if ev.Type == apitype.EventEnd {
				if *ev.ExitCode != 3 || *ev.Cwd != "/tmp" || *ev.TimedOut {
					t.Fatalf("end %+v", ev)
				}
				break
			}
			if *ev.Offset != next {
				t.Fatalf("offset %d, want %d", *ev.Offset, next)
			}
			next += int64(len(ev.Payload()))
			if ev.Stream == "stderr" {
				errOut = append(errOut, ev.Payload()...)
			} else {
				out = append(out, ev.Payload()...)
			}
		}
		if string(out) != "out1\n\xff\xfe" || string(errOut) != "err1\n" {
			t.Fatalf("stdout %q stderr %q", out, errOut)
		}
		// Without the header, exec is the blocking exec.
		if r := h.Exec(id, "printf x"); r.Stdout != "x" {
			t.Fatalf("blocking exec: %+v", r)
		}
		if _, err := c.ExecStream(ctx, id, apitype.ExecRequest{Command: ""}); !errdefs.IsInvalidArgument(err) {
			t.Fatalf("bad streamed exec: %v, want 400", err)
		}
	})

	t.Run("100 concurrent streaming execs, byte-exact", func(t *testing.T) {
		c := h.UnvalidatedClient()
		defer c.Close()
		start := time.Now()
		defer func() { t.Logf("100 concurrent streamed execs took %v", time.Since(start)) }()
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				want := strings.Repeat(fmt.Sprintf("line-%03d\n", i), 2000)
				s, err := c.ExecStream(ctx, id, apitype.ExecRequest{Command: fmt.Sprintf("yes line-%03d | head -n 2000", i), Timeout: ptr(120)})
				if err != nil {
					errs <- err
					return
				}
				defer s.Close()
				var got []byte
				for {
					ev, err := s.Next()
					if err != nil {
						errs <- fmt.Errorf("exec %d: %w", i, err)
						return
					}
					if ev.Type == apitype.EventEnd {
						break
					}
					got = append(got, ev.Payload()...)
				}
				if string(got) != want {
					errs <- fmt.Errorf("exec %d: %d bytes, want %d exact", i, len(got), len(want))
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("attach: terminal size, resize, ctrl-c, several clients, end", func(t *testing.T) {
		p, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "sh", PTY: &apitype.PTYSize{Rows: 24, Cols: 80}})
		if err != nil {
			t.Fatal(err)
		}
		a, err := attach.Attach(ctx, c, id, p.ProcessID, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := attach.Attach(ctx, c, id, p.ProcessID, -1) // a second client
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		seen := map[*attach.Attachment][]byte{}
		expect := func(a *attach.Attachment, want string) {
			t.Helper()
			rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			for {
				if i := bytes.Index(seen[a], []byte(want)); i >= 0 {
					seen[a] = seen[a][i+len(want):]
					return
				}
				out, end, err := a.Recv(rctx)
				if err != nil || end != nil {
					t.Fatalf("waiting for %q, saw %q: %v %+v", want, seen[a], err, end)
				}
				seen[a] = append(seen[a], out...)
			}
		}
		a.Send(ctx, []byte("tty; stty size\n"))
		expect(a, "/dev/pts/")
		expect(a, "24 80")
		a.Resize(ctx, 50, 132)
		time.Sleep(200 * time.Millisecond)
		a.Send(ctx, []byte("stty size\n"))
		expect(a, "50 132")
		expect(b, "50 132")
		a.Send(ctx, []byte("sleep 100\n"))
		time.Sleep(300 * time.Millisecond)
		a.Send(ctx, []byte{3}) // ^C: the terminal interrupts the foreground job
		a.Send(ctx, []byte("echo rc=$?\n"))
		expect(a, "rc=130")
		a.Send(ctx, []byte("exit 6\n"))
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		for {
			_, end, err := b.Recv(rctx)
			if err != nil {
				t.Fatalf("no end event: %v", err)
			}
			if end != nil {
				if *end.ExitCode != 6 {
					t.Fatalf("end %+v", end)
				}
				break
			}
		}
	})

	t.Run("stdin over HTTP, EOF", func(t *testing.T) {
		p, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "wc -c", Stdin: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WriteStdin(ctx, id, p.ProcessID, bytes.Repeat([]byte("z"), 300000), true); err != nil {
			t.Fatal(err)
		}
		out, end := follow(t, c, id, p.ProcessID, 0, nil)
		if strings.TrimSpace(string(out)) != "300000" || *end.ExitCode != 0 {
			t.Fatalf("out %q end %+v", out, end)
		}
		if err := c.WriteStdin(ctx, id, p.ProcessID, []byte("late"), false); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("stdin after exit: %v, want 409", err)
		}
	})

	t.Run("cli: exec -d, ps, logs, kill, exec -t", func(t *testing.T) {
		out, errOut, code := h.CLI("exec", "-d", id, "--", "trap 'exit 7' TERM; echo out; sleep 0.2; echo err >&2; while :; do sleep 0.1; done")
		proc := strings.TrimSpace(out)
		if code != 0 || !strings.HasPrefix(proc, "p-") {
			t.Fatalf("exec -d: %q %q %d", out, errOut, code)
		}
		if out, _, code := h.CLI("ps", id); code != 0 || !strings.Contains(out, proc) || !strings.Contains(out, "running") {
			t.Fatalf("ps: %q %d", out, code)
		}
		follow(t, c, id, proc, 0, untilContains("err"))
		if _, errOut, code := h.CLI("kill", id, proc); code != 0 {
			t.Fatalf("kill: %q %d", errOut, code)
		}
		out, errOut, code = h.CLI("logs", "-f", id, proc)
		if out != "out\n" || !strings.HasPrefix(errOut, "err\n") || code != 7 {
			t.Fatalf("logs -f: %q %q %d", out, errOut, code)
		}
		if out, _, code := h.CLI("logs", "--offset", "2", id, proc); out != "t\n" || code != 7 {
			t.Fatalf("logs --offset: %q %d", out, code)
		}
		out, errOut, code = h.CLI("exec", "-t", id, "--", "stty size; exit 3")
		if !strings.Contains(out, "24 80") || code != 3 {
			t.Fatalf("exec -t: %q %q %d", out, errOut, code)
		}
	})

	t.Run("a daemon shutdown ends open follows; the process stays", func(t *testing.T) {
		p, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "echo up; sleep 300"})
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.ProcessOutput(ctx, id, p.ProcessID, 0, true)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if ev, err := s.Next(); err != nil || ev.Type != apitype.EventData {
			t.Fatalf("%+v %v", ev, err)
		}
		t0 := time.Now()
		h.Stop()
		if d := time.Since(t0); d > 20*time.Second {
			t.Fatalf("shutdown took %v with a follow open", d)
		}
		h.Start()
		c = h.Client()
		if got, err := c.Process(ctx, id, p.ProcessID); err != nil || got.Status != "running" {
			t.Fatalf("after the restart: %v %+v", err, got)
		}
		c.SignalProcess(ctx, id, p.ProcessID, "KILL")
	})

	t.Run("ended processes are kept up to the retained count; a stop kills them all", func(t *testing.T) {
		for i := 0; i < 5; i++ {
			p, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "true"})
			if err != nil {
				t.Fatal(err)
			}
			follow(t, c, id, p.ProcessID, 0, nil)
		}
		l, err := c.Processes(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		ended := 0
		for _, p := range l.Processes {
			if p.Status == "exited" {
				ended++
				if p.ExitCode == nil || p.EndedAt == nil {
					t.Fatalf("ended process without exit: %+v", p)
				}
			}
		}
		if ended != 3 {
			t.Fatalf("%d ended processes listed, want the retained 3", ended)
		}
		p, err := c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "sleep 300"})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(h.Config.StateDir, "runtime", "processes", id)
		if err := c.Delete(ctx, id, false); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("process dirs left after the sandbox stopped: %v", err)
		}
		if _, err := c.Process(ctx, id, p.ProcessID); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("process of a stopped sandbox: %v, want 409", err)
		}
	})
}

func ptr[T any](v T) *T { return &v }
