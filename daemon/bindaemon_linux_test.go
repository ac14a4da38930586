package daemon_test

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/api/apitest"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// binDaemon runs the real matrxd binary on a private containerd, for
// tests that kill -9 it: its own socket, state dir, lock dir, bridge and
// subnet, and the minimal test image.
type binDaemon struct {
	t     *testing.T
	bin   string
	env   *containerdtest.Env
	sock  string
	state string
	nc    daemon.NetworkConfig
	flags []string // extra flags
	cmd   *exec.Cmd
	done  chan struct{}
	logs  *daemontest.LogBuffer
	all   *daemontest.LogBuffer // every run's log, for failures
}

func newBinDaemon(t *testing.T, env *containerdtest.Env, bin string, flags ...string) *binDaemon {
	t.Helper()
	d := &binDaemon{t: t, bin: bin, env: env, sock: filepath.Join(env.Dir, "d.sock"), state: filepath.Join(env.Dir, "state"),
		nc: daemontest.Network(t), flags: flags, all: &daemontest.LogBuffer{}}
	daemontest.UninstallNetworkAtEnd(t, d.state, d.nc)
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(d.all.String()), "\n")
			t.Logf("matrxd log (last %d of %d lines):\n%s", min(len(lines), 60), len(lines), strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	return d
}

func (d *binDaemon) args() []string {
	return append([]string{"--socket", d.sock, "--containerd-address", d.env.Address, "--containerd-namespace", daemontest.Namespace, "--ssh-address=",
		"--state-dir", d.state, "--lock-dir", filepath.Join(d.env.Dir, "locks"), "--init-path", d.env.InitPath,
		"--relay-path", d.env.RelayPath, "--disk-overcommit", "8", // tests share the machine's disk
		"--image", containerdtest.MinimalImage, "--default-memory-mb", "128", "--default-cpu", "1", "--shutdown-timeout", "2",
		"--expiry-interval", "1s", "--network", "on", "--network-bridge", d.nc.Bridge, "--network-subnet", d.nc.Subnet.String()},
		d.flags...)
}

// start runs matrxd with extra environment variables, without waiting.
func (d *binDaemon) start(environ ...string) {
	d.t.Helper()
	d.cmd = exec.Command(d.bin, d.args()...)
	d.logs = &daemontest.LogBuffer{}
	w := binTee{d.logs, d.all}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	d.cmd.Env = append(d.cmd.Environ(), environ...)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(d.cmd, d.done)
}

// up waits until matrxd answers (or fails t if it exited).
func (d *binDaemon) up(c *client.Client) {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Health(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-d.done:
			d.t.Fatalf("matrxd exited: %v\n%s", d.cmd.ProcessState, d.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("matrxd did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exited waits up to d for the process to end by itself.
func (d *binDaemon) exited(timeout time.Duration) bool {
	select {
	case <-d.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// kill9 SIGKILLs matrxd (its FUSE processes and sandboxes live on).
func (d *binDaemon) kill9() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	d.cmd = nil
}

func (d *binDaemon) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
	}
	d.cmd = nil
}

// client returns a client of the daemon whose exchanges are validated
// against api/openapi.yaml.
func (d *binDaemon) client(opts ...client.Option) *client.Client {
	doc := apitest.Load(d.t)
	validate := client.WithTransportWrapper(func(rt http.RoundTripper) http.RoundTripper {
		return doc.Transport(rt, d.t.Errorf)
	})
	return client.New(d.sock, append([]client.Option{validate}, opts...)...)
}

type binTee [2]*daemontest.LogBuffer

func (w binTee) Write(p []byte) (int, error) {
	w[0].Write(p)
	return w[1].Write(p)
}
