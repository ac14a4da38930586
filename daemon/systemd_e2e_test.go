//go:build linux

package daemon_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// TestSystemdIntegration runs matrxd the way matrxd.service and
// matrxd.socket do: the listening socket is inherited (LISTEN_FDS), and
// readiness, watchdog pings and shutdown are reported on NOTIFY_SOCKET.
func TestSystemdIntegration(t *testing.T) {
	env := containerdtest.Start(t, daemontest.Namespace)
	bin := daemontest.BuildMatrxd(t, env.Dir)

	notifyPath := filepath.Join(env.Dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := notify.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()

	actPath := filepath.Join(env.Dir, "activated.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: actPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	lf, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false) // the socket file belongs to "systemd" (us)
	l.Close()

	ownSocket := filepath.Join(env.Dir, "own.sock")
	// LISTEN_PID must be matrxd's own pid: the shell execs in place.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin,
		"--socket", ownSocket, "--containerd-address", env.Address, "--containerd-namespace", daemontest.Namespace, "--ssh-address=",
		"--state-dir", filepath.Join(env.Dir, "state"), "--lock-dir", filepath.Join(env.Dir, "locks"), "--init-path", env.InitPath, "--network", "off")
	// WatchdogSec=1s in unit terms: matrxd must ping at half of it.
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "NOTIFY_SOCKET="+notifyPath, "WATCHDOG_USEC=1000000")
	cmd.ExtraFiles = []*os.File{lf} // fd 3, SD_LISTEN_FDS_START
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("matrxd log:\n%s", logs.String())
		}
	}()

	waitMsg := func(want string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed before %q", want)
				}
				if strings.Contains(m, want) {
					return
				}
			case <-timeout:
				t.Fatalf("matrxd never sent %q", want)
			}
		}
	}
	waitMsg("READY=1")
	waitMsg("WATCHDOG=1")
	c := client.New(actPath)
	defer c.Close()
	h, err := c.Health(context.Background())
	if err != nil || h.Status != "healthy" {
		t.Fatalf("health over the inherited socket: %v %+v", err, h)
	}
	if _, err := os.Stat(ownSocket); !os.IsNotExist(err) {
		t.Fatalf("matrxd created its own socket although systemd passed one: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	waitMsg("STOPPING=1")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("matrxd exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("matrxd did not exit after SIGTERM")
	}
}
