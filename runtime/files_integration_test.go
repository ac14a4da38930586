//go:build linux

package runtime_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/runtime/fshelper"
	"github.com/matrx-dev/matrx/testenv"
)

// readFile runs a read of p as user through the files helper.
func readFile(t *testing.T, rt *runtime.Runtime, id string, user runtime.ExecUser, p string) ([]byte, error) {
	t.Helper()
	c, err := rt.Files(context.Background(), id, user, fshelper.Request{Op: fshelper.OpRead, Path: p}, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	k, err := c.Next()
	if err != nil {
		return nil, err
	}
	if k != fshelper.KindHeader {
		t.Fatalf("first frame %q", k)
	}
	var h fshelper.Header
	if err := c.Decode(&h); err != nil {
		return nil, err
	}
	if _, err := c.Next(); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != h.Length {
		t.Fatalf("read %d bytes, header said %d", len(b), h.Length)
	}
	if _, err := c.Result(); err != nil {
		return nil, err
	}
	return b, nil
}

// TestFilesHelperHardening: the files helper is a process of the sandbox
// with exactly an exec's identity and confinement, in a cgroup of its own.
// It reads its own /proc/self files through the files API path.
func TestFilesHelperHardening(t *testing.T) {
	testenv.BothContainerds(t)
	var opts []runtime.Option
	if ok, _ := runtime.DetectUserNS(); ok {
		u, err := runtime.NewUserNS(runtime.DefaultUserNSBase)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, runtime.WithUserNS(u))
	}
	rt, env := newRuntime(t, opts...)
	id := startSandbox(t, rt, env, runtime.Resources{})
	bothPaths(t, rt, id, func(t *testing.T, viaAgent bool) { testFilesHelperHardening(t, rt, id, viaAgent) })
}

func testFilesHelperHardening(t *testing.T, rt *runtime.Runtime, id string, viaAgent bool) {
	field := func(status []byte, name string) string {
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, name+":"); ok {
				return strings.Join(strings.Fields(v), " ")
			}
		}
		return "?"
	}
	for _, c := range []struct {
		user             runtime.ExecUser
		uid, capEff, bnd string
	}{
		{runtime.UserAgent, "1000 1000 1000 1000", "0000000000000000", "0000000000000000"},
		{runtime.UserRoot, "0 0 0 0", "00000000000004eb", "00000000000004eb"},
	} {
		// Only the agent user's helper can come from the agent.
		fc, err := rt.Files(context.Background(), id, c.user, fshelper.Request{Op: fshelper.OpStat, Path: "/"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := runtime.FilesViaAgent(fc); got != (viaAgent && c.user == runtime.UserAgent) {
			t.Errorf("%s helper via agent %v", c.user, got)
		}
		fc.Close()
		st, err := readFile(t, rt, id, c.user, "/proc/self/status")
		if err != nil {
			t.Fatalf("%s: %v", c.user, err)
		}
		for name, want := range map[string]string{"Uid": c.uid, "CapEff": c.capEff, "CapBnd": c.bnd, "NoNewPrivs": "1", "Seccomp": "2"} {
			if got := field(st, name); got != want {
				t.Errorf("%s helper %s = %q, want %q", c.user, name, got, want)
			}
		}
		cg, err := readFile(t, rt, id, c.user, "/proc/self/cgroup")
		if err != nil || !bytes.Contains(cg, []byte("/files-")) {
			t.Errorf("%s helper is not in its own cgroup: %v\n%s", c.user, err, cg)
		}
		// Its root is the sandbox's: the hostname file is the sandbox's.
		host, err := readFile(t, rt, id, c.user, "/proc/sys/kernel/hostname")
		if err != nil || strings.TrimSpace(string(host)) != id {
			t.Errorf("%s helper hostname %q (%v), want %s", c.user, host, err, id)
		}
	}
}

// TestFilesHelperStreams moves 64 MiB in and out byte-exact, through the
// runtime and through the exec agent, and a stopped sandbox answers
// FailedPrecondition.
func TestFilesHelperStreams(t *testing.T) {
	rt, env := newRuntime(t)
	id := startSandbox(t, rt, env, runtime.Resources{})
	ctx := context.Background()
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	bothPaths(t, rt, id, func(t *testing.T, viaAgent bool) { testFilesStream(t, rt, id, data, viaAgent) })
	if err := rt.Destroy(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	_, err := rt.Files(ctx, id, runtime.UserAgent, fshelper.Request{Op: fshelper.OpStat, Path: "/"}, nil)
	if !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("stopped sandbox: %v", err)
	}
	_ = containerdtest.MinimalImage
}

func testFilesStream(t *testing.T, rt *runtime.Runtime, id string, data []byte, viaAgent bool) {
	ctx := context.Background()
	start := time.Now()
	c, err := rt.Files(ctx, id, runtime.UserAgent, fshelper.Request{Op: fshelper.OpWrite, Path: "/home/agent/big"}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.FilesViaAgent(c) != viaAgent {
		t.Fatalf("via agent %v, want %v", runtime.FilesViaAgent(c), viaAgent)
	}
	res, err := c.Result()
	c.Close()
	if err != nil || (!res.Created && !viaAgent) || res.Info.Size != int64(len(data)) || res.Info.UID != runtime.AgentUID {
		t.Fatalf("write: %v %+v", err, res)
	}
	up := time.Since(start)
	start = time.Now()
	got, err := readFile(t, rt, id, runtime.UserAgent, "/home/agent/big")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("64 MiB up %v, down %v", up, time.Since(start))
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("download differs from upload")
	}
	if _, err := readFile(t, rt, id, runtime.UserAgent, "/home/agent/missing"); !errdefs.IsNotFound(err) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := readFile(t, rt, id, runtime.UserAgent, "/etc/shadow"); err == nil {
		t.Log("(the minimal image's /etc/shadow is readable)")
	}
}
