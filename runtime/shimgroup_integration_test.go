//go:build linux

package runtime_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/testenv"
)

// TestShimGroups: with a group size of 2, three sandboxes run in two
// shims; each works, and destroying one leaves its group's other sandbox
// running. Without the option every sandbox has its own shim (the other
// tests).
func TestShimGroups(t *testing.T) {
	testenv.BothContainerds(t)
	rt, env := newRuntime(t, runtime.WithShimGroupSize(2))
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, startSandbox(t, rt, env, runtime.Resources{}))
	}
	if n := shimsOf(env.Address); n != 2 {
		t.Fatalf("%d shims for 3 sandboxes in groups of 2, want 2", n)
	}
	for _, id := range ids {
		if r := run(t, rt, id, runtime.ExecRequest{Command: "hostname"}); string(r.Stdout) != id+"\n" {
			t.Fatalf("exec in %s: %+v", id, r)
		}
	}
	if err := rt.Destroy(context.Background(), ids[0], 0); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[1:] {
		if r := run(t, rt, id, runtime.ExecRequest{Command: "echo alive"}); string(r.Stdout) != "alive\n" {
			t.Fatalf("exec in %s after its group neighbour went: %+v", id, r)
		}
	}
	// A new sandbox fills the group that has room instead of a new shim.
	startSandbox(t, rt, env, runtime.Resources{})
	if n := shimsOf(env.Address); n != 2 {
		t.Fatalf("%d shims for 3 sandboxes after a replacement, want 2", n)
	}
}

// shimsOf counts the runc shims serving the containerd at address.
func shimsOf(address string) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(args[0], "containerd-shim") && strings.Contains(string(b), address) {
			n++
		}
	}
	return n
}
