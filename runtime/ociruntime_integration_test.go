//go:build linux

package runtime_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/testenv"
)

// TestOCIRuntime proves the sandbox really runs under the selected OCI
// runtime (MATRX_TEST_OCI_RUNTIME: the crun pass of make test) and without
// a session keyring of its own: the shim options in containerd's record,
// and the runtime's own state, which only that runtime writes (runc:
// state.json, crun: status, below the shim's runtime root).
func TestOCIRuntime(t *testing.T) {
	testenv.BothContainerds(t)
	rt, env := newRuntime(t)
	want := containerdtest.OCIRuntime()
	if rt.OCIRuntime() != want {
		t.Fatalf("OCIRuntime() = %q, want %q", rt.OCIRuntime(), want)
	}
	id := startSandbox(t, rt, env, runtime.Resources{})
	opts := shimOptions(t, env, id)
	if !opts.NoNewKeyring {
		t.Error("shim options: NoNewKeyring is false")
	}
	switch want {
	case runtime.OCIRuntimeRunc:
		if opts.BinaryName != "" {
			t.Errorf("shim options: BinaryName %q, want empty (the shim's runc)", opts.BinaryName)
		}
	default:
		if filepath.Base(opts.BinaryName) != want || !filepath.IsAbs(opts.BinaryName) {
			t.Errorf("shim options: BinaryName %q, want an absolute path to %s", opts.BinaryName, want)
		}
	}
	root := opts.Root
	if root == "" {
		root = "/run/containerd/runc"
	}
	state := map[string]string{runtime.OCIRuntimeRunc: "state.json", runtime.OCIRuntimeCrun: "status"}[want]
	if _, err := os.Stat(filepath.Join(root, testNS, id, state)); err != nil {
		t.Errorf("%s's state for the sandbox: %v", want, err)
	}
	if res := run(t, rt, id, runtime.ExecRequest{Command: "true"}); res.ExitCode != 0 {
		t.Fatalf("exec under %s: %+v", want, res)
	}
}

// TestNoSessionKeyring: a sandbox gets no session keyring of its own, so
// sandboxes do not use up the key quota (kernel.keys.maxkeys, 200) of the
// one host uid their root maps to (the 198th sandbox failed to start).
// The sandbox's range is its own here, so /proc/key-users, which counts
// keys per host uid, counts only this test's keys: runc and crun without
// NoNewKeyring charge one keyring ("_ses.<id>") to sandbox root's host uid,
// crun joins one named after the sandbox as host root (charged to root,
// visible to root in /proc/keys): both checks fail without the option.
func TestNoSessionKeyring(t *testing.T) {
	testenv.BothContainerds(t)
	if ok, why := runtime.DetectUserNS(); !ok {
		containerdtest.Skip(t, "user namespaces unsupported: %s", why)
	}
	// A range of its own, away from the default one other tests share.
	base := uint32(1_500_000_000 + (os.Getpid()%1000)*65536)
	u, err := runtime.NewUserNS(base)
	if err != nil {
		t.Fatal(err)
	}
	rt, env := newRuntime(t, runtime.WithUserNS(u))
	id := startSandbox(t, rt, env, runtime.Resources{})
	for _, user := range []runtime.ExecUser{runtime.UserRoot, runtime.UserAgent} {
		if res := run(t, rt, id, runtime.ExecRequest{Command: "sleep 1 & true", User: user}); res.ExitCode != 0 {
			t.Fatalf("exec: %+v", res)
		}
	}
	if n := keysOfRange(t, base, base+65536); n != 0 {
		t.Fatalf("host uids %d..%d own %d keys: the sandbox got a session keyring", base, base+65535, n)
	}
	if k := keyringNamed(t, id, "_ses."+id); k != "" {
		t.Fatalf("a keyring was made for the sandbox: %s", k)
	}
	// That the sandbox cannot use the keyring it inherits instead (the
	// seccomp profile refuses the key syscalls): TestSpecRefusesKeySyscalls.
}

// keysOfRange sums the keys /proc/key-users charges to host uids in
// [lo, hi).
func keysOfRange(t *testing.T, lo, hi uint32) int {
	t.Helper()
	f, err := os.Open("/proc/key-users")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "<uid>: <usage> <nkeys>/<nikeys> <qnkeys>/<maxkeys> <qnbytes>/<maxbytes>"
		var uid uint32
		var usage, nkeys int
		if _, err := fmt.Sscanf(sc.Text(), "%d: %d %d/", &uid, &usage, &nkeys); err != nil {
			t.Fatalf("/proc/key-users line %q: %v", sc.Text(), err)
		}
		if uid >= lo && uid < hi {
			total += nkeys
		}
	}
	return total
}

// keyringNamed returns the /proc/keys line of a keyring described by one
// of names that the caller (host root) can view ("" if none).
func keyringNamed(t *testing.T, names ...string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/keys")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// "<serial> <flags> <usage> <expiry> <perm> <uid> <gid> <type> <description>: <summary>"
		f := strings.Fields(line)
		if len(f) < 9 || f[7] != "keyring" {
			continue
		}
		for _, n := range names {
			if strings.TrimSuffix(f[8], ":") == n {
				return line
			}
		}
	}
	return ""
}

// shimOptions reads the runc shim options from containerd's container
// record.
func shimOptions(t *testing.T, env *containerdtest.Env, id string) *options.Options {
	t.Helper()
	c, err := containerd.New(env.Address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), testNS)
	ctr, err := c.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ctr.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Runtime.Options == nil {
		t.Fatal("container record has no shim options")
	}
	v, err := typeurl.UnmarshalAny(info.Runtime.Options)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := v.(*options.Options)
	if !ok {
		t.Fatalf("shim options are a %T", v)
	}
	return o
}

// TestOCIRuntimeValidation: an unknown name is refused naming the flag,
// and changes nothing (no containerd is needed to refuse it).
func TestOCIRuntimeValidation(t *testing.T) {
	err := runtime.CheckOCIRuntime("kata")
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "--oci-runtime") || !strings.Contains(err.Error(), "crun") {
		t.Fatalf("CheckOCIRuntime(kata) = %v", err)
	}
	for _, ok := range []string{runtime.OCIRuntimeRunc, runtime.OCIRuntimeCrun} {
		if err := runtime.CheckOCIRuntime(ok); err != nil {
			t.Errorf("CheckOCIRuntime(%s) = %v", ok, err)
		}
	}
}

// TestExecRightAfterCreate: an exec the moment Create returns runs. With
// crun it failed ("fail startup") when it came before PID 1 had exec'd
// matrx-init; Create now returns only after that (waitInitExeced).
func TestExecRightAfterCreate(t *testing.T) {
	testenv.BothContainerds(t)
	u, err := runtime.NewUserNS(runtime.DefaultUserNSBase)
	if err != nil {
		t.Fatal(err)
	}
	rt, env := newRuntime(t, runtime.WithUserNS(u))
	for i := 0; i < 12; i++ {
		id := startSandbox(t, rt, env, runtime.Resources{})
		res, err := rt.Exec(context.Background(), id, runtime.ExecRequest{Command: "true", User: runtime.UserAgent, Cwd: "/home/agent", Timeout: 10 * time.Second})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("round %d: exec right after create: %v %+v", i, err, res)
		}
		if err := rt.Destroy(context.Background(), id, 0); err != nil {
			t.Fatal(err)
		}
	}
}
