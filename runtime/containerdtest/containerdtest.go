//go:build linux

// Package containerdtest starts a private containerd for integration tests:
// its own root, state, socket and config under a temp dir, never the host's
// daemon. It also builds matrx-init and locates the test image archive. It
// is test support only; production code must not import it.
//
// Tests that need it call Start and skip cleanly when the machine lacks
// root, containerd or the image archive, unless MATRX_REQUIRE_INTEGRATION=1
// (set by `make test`), which turns every such skip into a failure.
package containerdtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/matrx-dev/matrx/runtime/initproc"
	"github.com/matrx-dev/matrx/testenv"
	"golang.org/x/sys/unix"
)

// MinimalImage is the name inside build/images/minimal.tar.
const MinimalImage = "localhost/matrx/minimal:latest"

// Env is a running private containerd plus what sandboxes need.
type Env struct {
	Address   string // containerd socket
	Dir       string // everything lives below here
	InitPath  string // built matrx-init
	RelayPath string // built matrx-relay
	ImageTar  string // minimal image archive
	namespace []string
	bin       string // containerd
	altDir    string // MATRX_TEST_CONTAINERD_DIR

	mu  sync.Mutex
	cmd *exec.Cmd // nil while killed
}

// Skip skips t (or fails it under MATRX_REQUIRE_INTEGRATION=1): testenv.Skip.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.Skip(t, format, args...)
}

// RepoRoot finds the module root from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Start launches a private containerd for the calling test and registers its
// teardown, which kills every task in the namespaces the test used, stops
// containerd and its shims, and unmounts everything under the temp dir.
func Start(t testing.TB, nsToClean ...string) *Env {
	t.Helper()
	tar, bin, altDir := prerequisites(t)
	return start(t, tar, bin, altDir, nil, nsToClean)
}

// prerequisites skips t unless everything a private containerd needs is
// here, and returns the test image archive, containerd binary and
// MATRX_TEST_CONTAINERD_DIR.
func prerequisites(t testing.TB) (tar, bin, altDir string) {
	t.Helper()
	testenv.SkipUnlessSelected(t)
	if os.Geteuid() != 0 {
		Skip(t, "needs root")
	}
	// MATRX_TEST_CONTAINERD_DIR runs another containerd build (with its
	// shim and runc in that dir, found first on containerd's PATH), e.g. a
	// containerd 2 for the idmapped-mount path.
	altDir = os.Getenv("MATRX_TEST_CONTAINERD_DIR")
	bin, err := exec.LookPath("containerd")
	if altDir != "" {
		bin, err = filepath.Join(altDir, "containerd"), nil
	}
	if err != nil {
		Skip(t, "containerd not installed (run bootstrap/install.sh --packages-only)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		Skip(t, "runc not installed")
	}
	if rt := OCIRuntime(); rt != "runc" {
		if _, err := exec.LookPath(rt); err != nil {
			Skip(t, "%s not installed (MATRX_TEST_OCI_RUNTIME=%s; run bootstrap/install.sh --packages-only)", rt, rt)
		}
		// crun refuses a hybrid host whose cgroup2 holds controllers (this
		// kind of VM: hugetlb); the runtime refuses it at startup too.
		// make test runs the crun pass in a mount namespace without that
		// cgroup2 mount (a cgroup v1 host, as far as crun can tell).
		if b, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			Skip(t, "%s cannot run on this hybrid cgroup host (cgroup2 controllers: %s); run the tests as make test does: unshare -m sh -c 'umount /sys/fs/cgroup/unified && exec go test ...'",
				rt, strings.TrimSpace(string(b)))
		}
	}
	tar = os.Getenv("MATRX_TEST_IMAGE_ARCHIVE")
	if tar == "" {
		tar = filepath.Join(RepoRoot(), "build", "images", "minimal.tar")
	}
	if _, err := os.Stat(tar); err != nil {
		Skip(t, "test image %s missing (run make image-minimal)", tar)
	}
	return tar, bin, altDir
}

// start makes the Env's directory, fills containerd's root with seed when
// given (seed.go), and launches containerd.
func start(t testing.TB, tar, bin, altDir string, seed func(root string) error, nsToClean []string) *Env {
	t.Helper()
	// Short paths: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "mtx-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	// Traversable by others: with user namespaces, runc's init runs as an
	// unprivileged host uid and must reach the rootfs below this dir.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	e := &Env{Address: filepath.Join(dir, "c.sock"), Dir: dir, ImageTar: tar, namespace: nsToClean, bin: bin, altDir: altDir}
	cfg := filepath.Join(dir, "config.toml")
	conf := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), e.Address)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.stop(t) })
	if seed != nil {
		if err := seed(filepath.Join(dir, "root")); err != nil {
			t.Fatalf("seed containerd's root: %v", err)
		}
	}
	e.launch(t)
	e.InitPath = BuildInit(t, dir)
	e.RelayPath = BuildStatic(t, dir, "matrx-relay")
	return e
}

// OCIRuntime is the OCI runtime the tests run sandboxes with (passed to
// runtime.WithOCIRuntime and daemon.Config.OCIRuntime):
// MATRX_TEST_OCI_RUNTIME, default runc. The crun pass of `make test` sets
// it to crun.
func OCIRuntime() string {
	if v := os.Getenv("MATRX_TEST_OCI_RUNTIME"); v != "" {
		return v
	}
	return "runc"
}

// launch starts containerd on the Env's config and waits until it answers.
func (e *Env) launch(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(e.Dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(e.bin, "--config", filepath.Join(e.Dir, "config.toml"), "--log-level", "warn")
	if e.altDir != "" {
		cmd.Env = append(os.Environ(), "PATH="+e.altDir+":"+os.Getenv("PATH"))
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// No Pdeathsig: the kernel sends it when the forking OS *thread*
	// exits, and Go retires threads whenever a goroutine that called
	// LockOSThread ends (network code does), killing containerd mid-test.
	// Teardown kills the process group instead.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	e.mu.Lock()
	e.cmd = cmd
	e.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := containerd.New(e.Address, containerd.WithTimeout(time.Second))
		if err == nil {
			_, verr := c.Version(context.Background())
			c.Close()
			if verr == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("containerd did not come up: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill SIGKILLs containerd itself (not its shims, which outlive it by
// design, as with a crash or an upgrade) and waits for it to be gone.
func (e *Env) Kill(t testing.TB) {
	t.Helper()
	e.mu.Lock()
	cmd := e.cmd
	e.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Kill()
	cmd.Wait()
	e.mu.Lock()
	e.cmd = nil
	e.mu.Unlock()
}

// Restart starts containerd again after Kill, on the same root, state and
// socket, and waits until it answers.
func (e *Env) Restart(t testing.TB) {
	t.Helper()
	e.Kill(t)
	e.launch(t)
}

// TaskPID returns the host pid of a container's PID 1.
func (e *Env) TaskPID(t testing.TB, namespace, id string) int {
	t.Helper()
	c, err := containerd.New(e.Address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), namespace)
	ctr, err := c.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("container %s: %v", id, err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	return int(task.Pid())
}

// ShimPID returns the pid of the runc shim serving a container of this
// containerd (0 if there is none).
func (e *Env) ShimPID(id string) int {
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) == 0 || !strings.Contains(args[0], "containerd-shim") || !strings.Contains(string(b), e.Address) {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-id" && args[i+1] == id {
				var pid int
				fmt.Sscan(ent.Name(), &pid)
				return pid
			}
		}
	}
	return 0
}

// BuildStatic compiles cmd/NAME statically (CGO_ENABLED=0) into dir.
func BuildStatic(t testing.TB, dir, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, b)
	}
	return out
}

// BuildInit compiles cmd/matrx-init statically into dir, as the Makefile
// does: on amd64 with the idle PID 1's entry point (initproc.EntrySymbol).
func BuildInit(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "matrx-init")
	args := []string{"build", "-o", out}
	if runtime.GOARCH == "amd64" {
		args = append(args, "-ldflags=-E="+initproc.EntrySymbol)
	}
	cmd := exec.Command("go", append(args, "./cmd/matrx-init")...)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build matrx-init: %v\n%s", err, b)
	}
	return out
}

func (e *Env) stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c, err := containerd.New(e.Address, containerd.WithTimeout(time.Second)); err == nil {
		for _, ns := range e.namespace {
			nctx := namespaces.WithNamespace(ctx, ns)
			cs, _ := c.Containers(nctx)
			for _, ctr := range cs {
				if task, err := ctr.Task(nctx, nil); err == nil {
					task.Kill(nctx, syscall.SIGKILL, containerd.WithKillAll)
					task.Delete(nctx, containerd.WithProcessKill)
				}
				ctr.Delete(nctx, containerd.WithSnapshotCleanup)
			}
		}
		c.Close()
	}
	e.mu.Lock()
	cmd := e.cmd
	e.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	killShims(e.Address)
	if t.Failed() {
		if b, err := os.ReadFile(filepath.Join(e.Dir, "containerd.log")); err == nil {
			if len(b) > 8192 {
				b = b[len(b)-8192:]
			}
			t.Logf("containerd log (tail):\n%s", b)
		}
	}
	unmountUnder(e.Dir)
	if err := os.RemoveAll(e.Dir); err != nil {
		t.Logf("containerdtest: leftover %s: %v", e.Dir, err)
	}
}

// killShims kills runc shims started by this containerd (they outlive it by
// design).
func killShims(address string) {
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, "containerd-shim") && strings.Contains(cmd, address) {
			var pid int
			fmt.Sscan(ent.Name(), &pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mps = append(mps, fields[4])
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, mp := range mps {
		unix.Unmount(mp, unix.MNT_DETACH)
	}
}

// LockHostNetwork serializes tests, across test binaries, that put fixed
// addresses on the host (the 169.254.169.254 metadata stand-in, TEST-NET
// hosts): go test runs packages in parallel, and two such fixtures at once
// would fight over the same address and port. It blocks until the lock is
// free and returns the function that releases it.
func LockHostNetwork() (func(), error) {
	return lockFile(filepath.Join(os.TempDir(), "matrx-test-hostnet.lock"))
}

// subnetClaims holds one file per /24 that a running test process uses for
// a sandbox bridge, named by its second and third octets and holding the
// owner's pid: test binaries of this and of other checkouts run at the same
// time on one host, and two bridges with one subnet would break each other's
// routes.
var subnetClaims = filepath.Join(os.TempDir(), "matrx-test-subnets")

// Subnet claims a /24 in 10.214.0.0/15 that no other live test process
// holds and no host interface overlaps, for a test's own sandbox bridge. The
// claim is released when t ends; a claim whose owner died is taken over.
// (Production matrxd defaults to 10.213.0.0/16, outside this range.)
func Subnet(t testing.TB) netip.Prefix {
	t.Helper()
	if err := os.MkdirAll(subnetClaims, 0o700); err != nil {
		t.Fatalf("subnet claims: %v", err)
	}
	used := hostPrefixes()
	start := int(time.Now().UnixNano()/1000) % 512
	for i := 0; i < 512; i++ {
		n := (start + i) % 512
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(214 + n/256), byte(n % 256), 0}), 24)
		if overlapsAny(p, used) {
			continue
		}
		claim := filepath.Join(subnetClaims, fmt.Sprintf("%d.%d", p.Addr().As4()[1], p.Addr().As4()[2]))
		if !takeClaim(claim) {
			continue
		}
		t.Cleanup(func() { os.Remove(claim) })
		return p
	}
	t.Fatalf("no free test subnet in 10.214.0.0/15")
	return netip.Prefix{}
}

// takeClaim creates the claim file for this process, or takes over one
// whose owner is gone.
func takeClaim(path string) bool {
	me := []byte(fmt.Sprint(os.Getpid()))
	for try := 0; try < 2; try++ {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			f.Write(me)
			f.Close()
			return true
		}
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 && syscall.Kill(pid, 0) == nil {
			return false // a live owner (ours included: another test of this binary)
		}
		os.Remove(path)
	}
	return false
}

// hostPrefixes lists the IPv4 networks of the host's interfaces.
func hostPrefixes() []netip.Prefix {
	var out []netip.Prefix
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(n.String()); err == nil && p.Addr().Is4() {
				out = append(out, p.Masked())
			}
		}
	}
	return out
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}
