//go:build linux

package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/testenv"

	"github.com/matrx-dev/matrx/api/apitest"
	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/api/client/attach"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// realDaemon is a matrxd binary run as its own process, so that a test can
// kill -9 it and measure its memory.
type realDaemon struct {
	t         *testing.T
	bin, sock string
	args      []string
	cmd       *exec.Cmd
	logs      *daemontest.LogBuffer
	c         *client.Client
}

func startRealDaemon(t *testing.T, env *containerdtest.Env, extra ...string) *realDaemon {
	dir := filepath.Join(env.Dir, "real")
	os.MkdirAll(dir, 0o700)
	d := &realDaemon{t: t, bin: daemontest.BuildMatrxd(t, dir), sock: filepath.Join(dir, "matrxd.sock")}
	d.args = append([]string{
		"--socket", d.sock, "--containerd-address", env.Address, "--containerd-namespace", daemontest.Namespace, "--ssh-address=",
		"--state-dir", filepath.Join(dir, "state"), "--lock-dir", filepath.Join(dir, "locks"), "--init-path", env.InitPath, "--relay-path", env.RelayPath,
		"--network", "off", "--image", containerdtest.MinimalImage, "--log-format", "text", "--log-level", "debug",
		"--expiry-interval", "1s", "--checkpoint-interval", "0",
	}, extra...)
	d.start()
	f, err := os.Open(env.ImageTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := d.c.ImportImage(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd != nil {
			d.cmd.Process.Kill()
			d.cmd.Wait()
		}
		if t.Failed() {
			lines := strings.Split(d.logs.String(), "\n")
			t.Logf("matrxd log (last 60 lines):\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	return d
}

func (d *realDaemon) start() {
	d.t.Helper()
	d.cmd = exec.Command(d.bin, d.args...)
	if d.logs == nil {
		d.logs = &daemontest.LogBuffer{}
	}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	doc := apitest.Load(d.t)
	d.c = client.New(d.sock, client.WithRetries(100), client.WithBackoff(50*time.Millisecond),
		client.WithTransportWrapper(func(rt http.RoundTripper) http.RoundTripper { return doc.Transport(rt, d.t.Errorf) }))
	if _, err := d.c.Health(context.Background()); err != nil {
		d.t.Fatalf("matrxd did not come up: %v\n%s", err, d.logs.String())
	}
}

// kill9 kills matrxd the hard way (sandboxes, shims and relays stay).
func (d *realDaemon) kill9() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	d.cmd = nil
	d.c.Close()
}

func (d *realDaemon) rssKB() int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// TestProcessesSurviveKill9 kills matrxd with SIGKILL while processes run
// (a 1 MiB/s writer, an attached terminal shell, a process reading stdin,
// one that ends while the daemon is down), restarts it, and checks that
// every process and every byte of output is still there. Then it measures
// the daemon's memory while a process prints 1 GiB to a slow reader.
func TestProcessesSurviveKill9(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	testenv.BothContainerds(t)
	env := containerdtest.Start(t, daemontest.Namespace)
	d := startRealDaemon(t, env)
	ctx := context.Background()
	s, err := d.c.Create(ctx, "alice", &apitype.SandboxConfig{CPU: 1, MemoryMB: 256, Network: &apitype.NetworkConfig{Mode: "none"}})
	if err != nil {
		t.Fatal(err)
	}
	id := s.SandboxID

	// ~1 MiB/s for about 6 s: 64 numbered 128-byte lines every 8 ms.
	writer, err := d.c.StartProcess(ctx, id, apitype.ProcessRequest{Tag: "writer", Command: `i=0
while [ $i -lt 700 ]; do
  j=0
  while [ $j -lt 64 ]; do printf '%05d-%02d-abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl\n' $i $j; j=$((j+1)); done
  sleep 0.008; i=$((i+1))
done`})
	if err != nil {
		t.Fatal(err)
	}
	shell, err := d.c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "sh", PTY: &apitype.PTYSize{Rows: 24, Cols: 80}})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := d.c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "cat", Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	shortLived, err := d.c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "sleep 1; exit 9"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.c.WriteStdin(ctx, id, reader.ProcessID, []byte("before\n"), false); err != nil {
		t.Fatal(err)
	}
	shellPid := func(c *client.Client) string {
		t.Helper()
		a, err := attach.Attach(ctx, c, id, shell.ProcessID, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		a.Send(ctx, []byte("echo pid=$$.\n"))
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		var seen []byte
		for {
			out, end, err := a.Recv(rctx)
			if err != nil || end != nil {
				t.Fatalf("shell: saw %q: %v %+v", seen, err, end)
			}
			seen = append(seen, out...)
			// The echo of the typed line has "$$"; the answer has digits.
			if i := bytes.Index(seen, []byte("\r\npid=")); i >= 0 {
				if j := bytes.IndexByte(seen[i+6:], '.'); j >= 0 {
					return string(seen[i+6 : i+6+j])
				}
			}
		}
	}
	before := shellPid(d.c)
	time.Sleep(1500 * time.Millisecond)

	d.kill9()
	time.Sleep(2 * time.Second) // the writer keeps writing, the short one ends
	d.start()

	l, err := d.c.Processes(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]apitype.Process{}
	for _, p := range l.Processes {
		status[p.ProcessID] = p
	}
	if p := status[shortLived.ProcessID]; p.Status != "exited" || p.ExitCode == nil || *p.ExitCode != 9 {
		t.Errorf("process that ended while the daemon was down: %+v", p)
	}
	for _, p := range []*apitype.Process{writer, shell, reader} {
		if status[p.ProcessID].Status != "running" {
			t.Errorf("process %s after the restart: %+v", p.Command, status[p.ProcessID])
		}
	}
	if after := shellPid(d.c); after != before {
		t.Errorf("shell pid %s before the kill, %s after: not the same shell", before, after)
	}
	if err := d.c.WriteStdin(ctx, id, reader.ProcessID, []byte("after\n"), true); err != nil {
		t.Fatal(err)
	}
	out, end := follow(t, d.c, id, reader.ProcessID, 0, nil)
	if string(out) != "before\nafter\n" || *end.ExitCode != 0 {
		t.Errorf("stdin across the restart: %q %+v", out, end)
	}

	// The writer's whole output, in order, nothing lost and nothing twice
	// (unvalidated: 45,000 lines' worth of events).
	raw := client.New(d.sock)
	defer raw.Close()
	out, end = follow(t, raw, id, writer.ProcessID, 0, nil)
	sc := bufio.NewScanner(bytes.NewReader(out))
	n := 0
	for sc.Scan() {
		if want := fmt.Sprintf("%05d-%02d-abcdefghijklmnopqrstuvwxyz", n/64, n%64); !strings.HasPrefix(sc.Text(), want) || len(sc.Text()) != 125 {
			t.Fatalf("line %d is %q, want %s...", n, sc.Text(), want)
		}
		n++
	}
	if n != 700*64 || *end.ExitCode != 0 {
		t.Fatalf("%d lines, want %d; end %+v", n, 700*64, end)
	}
	t.Logf("writer: %d bytes across the kill, none lost", len(out))

	// The shell is alive and takes input to the end.
	a, err := attach.Attach(ctx, d.c, id, shell.ProcessID, -1)
	if err != nil {
		t.Fatal(err)
	}
	a.Send(ctx, []byte("exit 4\n"))
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		_, end, err := a.Recv(rctx)
		if err != nil {
			t.Fatalf("shell end: %v", err)
		}
		if end != nil {
			if *end.ExitCode != 4 {
				t.Fatalf("shell end %+v", end)
			}
			break
		}
	}
	a.Close()

	// 1 GiB to a reader that takes one event every 5 ms: the process is
	// never held back (it ends), matrxd's memory stays bounded, and the
	// reader is told what was dropped.
	base := d.rssKB()
	big, err := d.c.StartProcess(ctx, id, apitype.ProcessRequest{Command: "head -c 1073741824 /dev/zero"})
	if err != nil {
		t.Fatal(err)
	}
	bs, err := raw.ProcessOutput(ctx, id, big.ProcessID, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	peak, dropped, read := base, int64(0), int64(0)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ev, err := bs.Next()
		if err != nil {
			t.Fatalf("slow reader: %v", err)
		}
		if ev.Type == apitype.EventDropped {
			dropped += ev.Bytes
		}
		if ev.Type == apitype.EventData {
			read += int64(len(ev.Payload()))
		}
		if ev.Type == apitype.EventEnd {
			break
		}
		peak = max(peak, d.rssKB())
		if time.Now().After(deadline) {
			t.Fatal("1 GiB did not pass in 3 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("1 GiB to a slow reader: matrxd RSS %d kB before, peak %d kB; reader got %d bytes, %d dropped", base, peak, read, dropped)
	if read+dropped != 1<<30 || dropped == 0 {
		t.Fatalf("read %d + dropped %d != 1 GiB", read, dropped)
	}
	if peak-base > 64<<10 {
		t.Fatalf("matrxd grew by %d kB while a process printed 1 GiB to a slow reader", peak-base)
	}
}
