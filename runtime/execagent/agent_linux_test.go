package execagent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/testenv"
)

// The test binary doubles as the agent: TestMain runs Main when asked to.
func TestMain(m *testing.M) {
	if os.Getenv("MATRX_EXECAGENT_TEST_AGENT") == "1" {
		os.Exit(Main(nil))
	}
	os.Exit(m.Run())
}

// needRoot skips (or, under MATRX_REQUIRE_INTEGRATION, fails) without the
// root and util-linux tools these tests use to make namespaces.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root to make namespaces")
	}
	for _, tool := range []string{"unshare", "nsenter", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skip(t, "needs %s", tool)
		}
	}
}

// startAgent runs the agent in new PID and network namespaces, as in a
// sandbox, and returns its host pid.
func startAgent(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "--net", os.Args[0])
	cmd.Env = append(os.Environ(), "MATRX_EXECAGENT_TEST_AGENT=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var pid int
	waitFor(t, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		_, err := fmt.Sscan(string(b), &pid)
		return err == nil
	})
	return pid
}

func TestAgentRunsACommand(t *testing.T) {
	needRoot(t)
	a, err := Open(startAgent(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	waitFor(t, func() bool { return a.Probe() == nil })

	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	cmd, err := a.Start(Request{Argv: []string{"/bin/sh", "-c", `read x; echo "got $x"; echo err >&2; kill -TERM $$`}, Env: []string{"A=b"}}, inR, outW, outW)
	inR.Close()
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer cmd.Close()
	// The shell is blocked on its stdin, so it is there to be found.
	host, err := a.ChildHostPid(cmd.NsPid)
	if err != nil {
		t.Fatal(err)
	}
	if ns, ok := nsPidOf(host); !ok || ns != cmd.NsPid || host == cmd.NsPid {
		t.Fatalf("host pid %d has sandbox pid %d (ok %v), agent said %d", host, ns, ok, cmd.NsPid)
	}
	if _, err := a.ChildHostPid(cmd.NsPid + 1000); err == nil {
		t.Fatal("a pid that is no child of the agent was accepted")
	}
	inW.Write([]byte("line\n"))
	inW.Close()
	out, _ := io.ReadAll(outR)
	if string(out) != "got line\nerr\n" {
		t.Fatalf("output %q", out)
	}
	select {
	case ex := <-cmd.Exited():
		if ex.Err != nil || ex.Code != 128+15 {
			t.Fatalf("exit %+v, want 143 (SIGTERM)", ex)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit reported")
	}
}

// A process that is not the pinned agent holding the agent's socket name
// (a squatter, after the agent died or while it lives elsewhere) never
// receives a request.
func TestSquatterIsNotTrusted(t *testing.T) {
	needRoot(t)
	// The "agent" matrxd pinned: a process in its own network namespace.
	pinned := exec.Command("unshare", "--net", "sleep", "60")
	if err := pinned.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pinned.Process.Kill(); pinned.Wait() }()
	log := filepath.Join(t.TempDir(), "squatter")
	waitFor(t, func() bool {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pinned.Process.Pid))
		h, _ := os.Readlink("/proc/self/ns/net")
		return l != "" && l != h
	})
	sq := exec.Command("nsenter", "-t", fmt.Sprint(pinned.Process.Pid), "-n", "--", "python3", "-c", `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0matrx-exec-agent"); s.listen(16)
open(sys.argv[1], "w").write("listening\n")
while True:
    c, _ = s.accept()
    open(sys.argv[1], "a").write("got %d bytes\n" % len(c.recv(100)))
`, log)
	if err := sq.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sq.Process.Kill(); sq.Wait() }()
	waitFor(t, func() bool { b, _ := os.ReadFile(log); return len(b) > 0 })

	a, err := Open(pinned.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	_, err = a.Start(Request{Argv: []string{"/bin/true"}}, f, f, f)
	if !errors.Is(err, ErrNotStarted) || !strings.Contains(err.Error(), "held by pid") {
		t.Fatalf("start against a squatter: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if b, _ := os.ReadFile(log); strings.Contains(string(b), "got") && !strings.Contains(string(b), "got 0 bytes") {
		t.Fatalf("the squatter received a request:\n%s", b)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
