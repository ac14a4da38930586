//go:build linux

// Package daemontest is the one test harness for a whole matrxd: Start runs
// an in-process daemon (daemon.Run) on a private containerd, its own state
// dir, socket, bridge and subnet, imports the minimal test image, and
// returns a Harness whose Client validates every request and response
// against api/openapi.yaml. Tests of any package (daemon e2e, bench,
// provider tests) use it instead of building daemon.Config by hand. It is
// test support only; production code must not import it.
//
// Everything it makes is its own and is removed when the test ends: the
// daemon is stopped, the test's network (bridge, rules) uninstalled, and
// containerdtest tears down containerd, its shims and mounts.
package daemontest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitest"
	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/ctl"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/runtime/network"
	"github.com/matrx-dev/matrx/sandbox"
	"github.com/matrx-dev/matrx/testenv"
)

// Namespace is the containerd namespace of harness daemons.
const Namespace = "matrx-e2e"

// Option changes the daemon's configuration before it starts.
type Option func(*daemon.Config)

// Harness is one in-process matrxd on a private containerd.
type Harness struct {
	T      testing.TB
	Env    *containerdtest.Env
	Config daemon.Config

	cancel context.CancelFunc
	done   chan error
	c      *client.Client
	logs   *LogBuffer
	ended  atomic.Bool // the test is over: validation reports are dropped
}

// Start builds the default test configuration (minimal image, 256 MiB and
// one CPU per sandbox, 2 s shutdown timeout, bolt store, user namespaces
// and networking as the host allows, checkpoints off, the sandbox listener
// on its default port), applies opts, starts
// the daemon, waits until it answers, and imports the minimal image.
func Start(t testing.TB, opts ...Option) *Harness {
	t.Helper()
	return StartIn(t, containerdtest.Start(t, Namespace), opts...)
}

// StartIn is Start on a private containerd the caller started (with
// containerdtest.Start(t, Namespace, otherNamespaces...)), for tests that
// also use containerd directly, such as the bare-containerd benchmarks.
func StartIn(t testing.TB, env *containerdtest.Env, opts ...Option) *Harness {
	t.Helper()
	h := &Harness{T: t, Env: env}
	limits := sandbox.DefaultLimits()
	limits.DefaultImage = containerdtest.MinimalImage
	limits.DefaultMemoryMB = 256
	limits.DefaultCPU = 1
	limits.ShutdownTimeout = 2 * time.Second
	h.Config = daemon.Config{
		Socket: filepath.Join(env.Dir, "matrxd.sock"), ContainerdAddress: env.Address,
		ContainerdNamespace: Namespace, StateDir: filepath.Join(env.Dir, "state"), InitPath: env.InitPath, RelayPath: env.RelayPath,
		Store: "bolt", LogFormat: "json", ExpiryInterval: time.Second, Limits: limits,
		// Overcommit: tests share this machine's disk, and their
		// sandboxes write little of their 20 GiB quotas.
		Storage:    daemon.StorageConfig{ColdDriver: "auto", CheckpointInterval: time.Hour, DiskOvercommit: 8},
		LockDir:    filepath.Join(env.Dir, "locks"),
		UserNS:     daemon.UserNSConfig{Mode: "auto", Base: 1_000_000},
		OCIRuntime: containerdtest.OCIRuntime(),
		Network:    Network(t),
		// Each harness has its own bridge, so its own gateway address:
		// the default port does not collide between harnesses.
		SandboxAPIPort: daemon.DefaultSandboxAPIPort,
	}
	for _, o := range opts {
		o(&h.Config)
	}
	t.Cleanup(func() { h.ended.Store(true) })
	h.Start()
	UninstallNetworkAtEnd(t, h.Config.StateDir, h.Config.Network)
	f, err := os.Open(env.ImageTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := h.c.ImportImage(context.Background(), f)
	if err != nil || len(res.Images) != 1 || res.Images[0] != containerdtest.MinimalImage {
		t.Fatalf("import: %v %+v", err, res)
	}
	return h
}

// Network gives a harness its own bridge and a /24 no other test process
// holds. The daemon never tears the shared network down (sandboxes outlive
// it), so the harness does when the test ends.
func Network(t testing.TB) daemon.NetworkConfig {
	return daemon.NetworkConfig{
		Mode:   "on",
		Bridge: fmt.Sprintf("mxe%d-%d", os.Getpid()%10000, bridgeSeq.Add(1)),
		Subnet: containerdtest.Subnet(t),
	}
}

var bridgeSeq atomic.Int32

// UninstallNetworkAtEnd removes the bridge and every rule of a test
// daemon's network (nc, state under stateDir) when t ends.
func UninstallNetworkAtEnd(t testing.TB, stateDir string, nc daemon.NetworkConfig) {
	t.Cleanup(func() {
		if nc.Mode == "off" {
			return
		}
		ctx := context.Background()
		m, err := network.New(ctx, network.Config{StateDir: filepath.Join(stateDir, "network")},
			network.WithBridge(nc.Bridge), network.WithSubnet(nc.Subnet))
		if err != nil {
			t.Logf("network cleanup: %v", err)
			return
		}
		if err := m.Uninstall(ctx); err != nil {
			t.Logf("network cleanup: %v", err)
		}
	})
}

// BuildMatrxd builds the real matrxd binary into dir, for tests that must
// kill -9 a daemon process or run it the way systemd does. Build tags
// select test-only code (matrxfault: the crash-injection points).
func BuildMatrxd(t testing.TB, dir string, tags ...string) string {
	t.Helper()
	bin := filepath.Join(dir, "matrxd")
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		bin += "-" + strings.Join(tags, "-")
		args = []string{"build", "-tags", strings.Join(tags, ","), "-o", bin}
	}
	build := exec.Command("go", append(args, "./cmd/matrxd")...)
	build.Dir = containerdtest.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build matrxd: %v\n%s", err, out)
	}
	return bin
}

// Start (re)starts the daemon with h.Config and waits until it answers.
func (h *Harness) Start() {
	h.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	h.logs = &LogBuffer{}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { h.done <- daemon.Run(ctx, h.Config, log) }()
	h.c = h.NewClient(client.WithRetries(50), client.WithBackoff(20*time.Millisecond))
	up := make(chan error, 1)
	go func() { _, err := h.c.Health(ctx); up <- err }()
	select {
	case err := <-h.done: // a config error ends Run at once: say so
		cancel()
		h.T.Fatalf("daemon exited before serving: %v", err)
	case err := <-up:
		if err != nil {
			h.T.Fatalf("daemon did not come up: %v", err)
		}
	}
	h.T.Cleanup(h.Stop)
}

// stopBudget bounds a daemon's shutdown in Stop (a stop waits for the
// operations in flight, each bounded far below this).
const stopBudget = 3 * time.Minute

// Stop stops the daemon (sandboxes keep running, as in production) and,
// if the test failed, prints the daemon's last log lines.
func (h *Harness) Stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.T.Errorf("daemon exited with %v", err)
		}
	case <-time.After(stopBudget):
		// A daemon that does not stop is a defect (systemd would kill
		// it); say where it waits instead of hanging the test binary.
		h.T.Errorf("daemon did not stop within %v of its context ending:\n%s", stopBudget, testenv.HangSummary(1))
	}
	h.c.Close()
	if h.T.Failed() {
		// What the daemon saw is usually the explanation.
		lines := strings.Split(strings.TrimSpace(h.logs.String()), "\n")
		h.T.Logf("daemon log (last %d of %d lines):\n%s", min(len(lines), 80), len(lines),
			strings.Join(lines[max(0, len(lines)-80):], "\n"))
	}
}

// Client is the harness's client; every exchange is validated against
// api/openapi.yaml.
func (h *Harness) Client() *client.Client { return h.c }

// UnvalidatedClient returns a client of this daemon whose exchanges are not
// validated, for benchmarks (validation would add to what they measure).
func (h *Harness) UnvalidatedClient(opts ...client.Option) *client.Client {
	return client.New(h.Config.Socket, opts...)
}

// NewClient returns another client of this daemon, validated the same way.
func (h *Harness) NewClient(opts ...client.Option) *client.Client {
	doc := apitest.Load(h.T)
	validate := client.WithTransportWrapper(func(rt http.RoundTripper) http.RoundTripper {
		return doc.Transport(rt, h.report)
	})
	return client.New(h.Config.Socket, append([]client.Option{validate}, opts...)...)
}

func (h *Harness) report(format string, args ...any) {
	if h.ended.Load() {
		return
	}
	h.T.Errorf(format, args...)
}

// Logs is everything the daemon logged since it last started.
func (h *Harness) Logs() string { return h.logs.String() }

// Create makes a sandbox or fails the test.
func (h *Harness) Create(user string, cfg *apitype.SandboxConfig) *apitype.Sandbox {
	h.T.Helper()
	s, err := h.c.Create(context.Background(), user, cfg)
	if err != nil {
		h.T.Fatalf("create: %v", err)
	}
	return s
}

// Exec runs a command as agent or fails the test.
func (h *Harness) Exec(id, cmd string) *apitype.ExecResponse {
	h.T.Helper()
	r, err := h.c.Exec(context.Background(), id, apitype.ExecRequest{Command: cmd})
	if err != nil {
		h.T.Fatalf("exec %q: %v", cmd, err)
	}
	return r
}

// CLI runs the matrx CLI against this daemon and returns stdout, stderr and
// the exit code.
func (h *Harness) CLI(args ...string) (string, string, int) {
	// The test binary's own stdin (a terminal, or a pipe in CI) is not
	// the command's: it reads /dev/null, like a script with < /dev/null.
	null, err := os.Open(os.DevNull)
	if err != nil {
		h.T.Fatal(err)
	}
	defer null.Close()
	return h.CLIWithStdin(null, args...)
}

// CLITimeout bounds one CLI call: a command that would wait forever (an
// attach or a follow whose process never ends) fails the test with what
// it printed instead of hanging the suite until go test's own timeout.
const CLITimeout = 3 * time.Minute

// CLIWithStdin is CLI with the command reading stdin.
func (h *Harness) CLIWithStdin(stdin *os.File, args ...string) (string, string, int) {
	h.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CLITimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	app := ctl.App()
	app.Writer, app.ErrWriter = &out, &errOut
	app.Reader = stdin
	code := 0
	app.ExitErrHandler = func(*cli.Context, error) {}
	err := ctl.RunContext(ctx, app, append([]string{"matrx", "--socket", h.Config.Socket}, args...))
	if ctx.Err() != nil {
		h.T.Errorf("matrx %s: still running after %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), CLITimeout, &out, &errOut)
	}
	if ec, ok := err.(interface{ ExitCode() int }); ok {
		code = ec.ExitCode()
	} else if err != nil {
		code = 1
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

// LogBuffer keeps the daemon's log lines for a test, safe for the daemon's
// goroutines to write while the test reads.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// ProductionImage is the name of the image in build/images/sandbox.tar.
const ProductionImage = "localhost/matrx/sandbox:latest"

// ProductionArchive is build/images/sandbox.tar (make image); it skips t
// (or fails it under MATRX_REQUIRE_INTEGRATION) when the archive is missing.
func ProductionArchive(t testing.TB) string {
	t.Helper()
	prod := filepath.Join(containerdtest.RepoRoot(), "build", "images", "sandbox.tar")
	if _, err := os.Stat(prod); err != nil {
		containerdtest.Skip(t, "production image %s missing (run make image)", prod)
	}
	return prod
}

// StartProduction is Start for a test of the production image: its
// containerd starts from a seed that already holds the image imported and,
// on containerd 1.6, its user-namespace copy (containerdtest.Seed says why
// and why this changes nothing a test checks). The test still imports the
// image itself (ImportProduction), which then takes a second or two
// instead of about 80.
func StartProduction(t testing.TB, opts ...Option) *Harness {
	t.Helper()
	prod := ProductionArchive(t)
	env := containerdtest.StartSeeded(t, containerdtest.Seed{
		Name: "production-image", Inputs: []string{prod}, Namespaces: []string{Namespace},
		Prepare: func(t testing.TB, e *containerdtest.Env) {
			h := StartIn(t, e)
			h.ImportProduction()
			// A sandbox of it makes the user-namespace copy (containerd 1.6).
			s := h.Create("seed", &apitype.SandboxConfig{Image: ProductionImage})
			if err := h.Client().Delete(context.Background(), s.SandboxID, false); err != nil {
				t.Fatal(err)
			}
			h.Stop()
		},
	}, Namespace)
	return StartIn(t, env, opts...)
}

// ImportProduction imports build/images/sandbox.tar through the API.
func (h *Harness) ImportProduction() {
	h.T.Helper()
	f, err := os.Open(ProductionArchive(h.T))
	if err != nil {
		h.T.Fatal(err)
	}
	defer f.Close()
	res, err := h.c.ImportImage(context.Background(), f)
	if err != nil || len(res.Images) != 1 || res.Images[0] != ProductionImage {
		h.T.Fatalf("import the production image: %v %+v", err, res)
	}
}
