//go:build linux

package daemon_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// openPTY returns a pseudo-terminal's master and slave.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

// TestExecInteractiveTerminal runs the real matrx CLI on a terminal, as a
// user would: `matrx exec -it ID` opens a shell whose terminal has this
// terminal's size, follows its resizes (SIGWINCH), takes keystrokes in raw
// mode, and passes the shell's exit code through.
func TestExecInteractiveTerminal(t *testing.T) {
	h := daemontest.Start(t, func(c *daemon.Config) { c.Network.Mode = "off" })
	s := h.Create("alice", &apitype.SandboxConfig{Network: &apitype.NetworkConfig{Mode: "none"}})
	bin := filepath.Join(h.Env.Dir, "matrx")
	build := exec.Command("go", "build", "-o", bin, "./cmd/matrx")
	build.Dir = containerdtest.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build matrx: %v\n%s", err, out)
	}
	master, slave := openPTY(t)
	defer master.Close()
	unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 101})
	cmd := exec.Command(bin, "--socket", h.Config.Socket, "exec", "-it", s.SandboxID)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	defer cmd.Process.Kill()
	out := make(chan []byte, 64)
	go func() {
		for {
			b := make([]byte, 4096)
			n, err := master.Read(b)
			if n > 0 {
				out <- b[:n]
			}
			if err != nil {
				close(out)
				return
			}
		}
	}()
	var seen []byte
	expect := func(want string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			if i := bytes.Index(seen, []byte(want)); i >= 0 {
				seen = seen[i+len(want):]
				return
			}
			select {
			case b, ok := <-out:
				if !ok {
					t.Fatalf("terminal closed waiting for %q; saw %q", want, seen)
				}
				seen = append(seen, b...)
			case <-deadline:
				t.Fatalf("waiting for %q; saw %q", want, seen)
			}
		}
	}
	// Raw mode: the local terminal does not echo or turn \r into \n; the
	// sandbox's terminal does both.
	master.Write([]byte("stty size\r"))
	expect("33 101")
	unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120})
	time.Sleep(300 * time.Millisecond)
	master.Write([]byte("stty size\r"))
	expect("40 120")
	master.Write([]byte("exit 5\r"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
			t.Fatalf("matrx exec -it exited with %v, want 5", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("matrx exec -it did not exit after the shell did")
	}
}

// TestExecTerminalEndsWithItsInput: `matrx exec -it ID` whose stdin is not
// a terminal and already at its end (a script's `< /dev/null`, a CI job)
// ends: the login shell gets end-of-input the terminal way. A single ^D
// sent while the shell was still setting up its terminal used to be lost
// and the command waited forever (it hung CI); the CLI repeats it until
// the shell ends. Five in a row, each bounded by the harness's CLI timeout.
func TestExecTerminalEndsWithItsInput(t *testing.T) {
	h := daemontest.Start(t)
	id := h.Create("eve", nil).SandboxID
	for i := 0; i < 5; i++ {
		start := time.Now()
		out, errOut, code := h.CLI("exec", "-it", id)
		if code != 0 {
			t.Fatalf("run %d: exit %d\nstdout: %q\nstderr: %q", i, code, out, errOut)
		}
		t.Logf("run %d ended after %v", i, time.Since(start).Round(time.Millisecond))
	}
}
