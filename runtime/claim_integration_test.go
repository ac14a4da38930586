//go:build linux

package runtime_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/testenv"
)

// TestClaim: a claim gives a running sandbox new limits on its live cgroup
// and a new environment for every exec, and a restarted runtime (a new
// client, as after a daemon restart) still sees that environment.
func TestClaim(t *testing.T) {
	testenv.BothContainerds(t)
	rt, env := newRuntime(t)
	id := startSandbox(t, rt, env, runtime.Resources{CPU: 2, MemoryBytes: 512 << 20, Pids: 512})
	limits := "echo \"$SANDBOX_ID $USER_ID\""
	if got, want := cgroupLimits(t, id), "536870912 512 200000"; got != want {
		t.Fatalf("limits before the claim: %s, want %s", got, want)
	}
	if got := run(t, rt, id, runtime.ExecRequest{Command: limits}); string(got.Stdout) != id+" \n" {
		t.Fatalf("env before the claim: %q", got.Stdout)
	}
	err := rt.Claim(context.Background(), runtime.ClaimRequest{
		ID: id, UserID: "u2", Env: map[string]string{"USER_ID": "u2", "SANDBOX_ID": id},
		Resources: runtime.Resources{CPU: 0.5, MemoryBytes: 128 << 20, Pids: 64},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cgroupLimits(t, id), "134217728 64 50000"; got != want {
		t.Fatalf("limits after the claim: %s, want %s", got, want)
	}
	want := id + " u2\n"
	if got := run(t, rt, id, runtime.ExecRequest{Command: limits}); string(got.Stdout) != want {
		t.Fatalf("after the claim: %q, want %q", got.Stdout, want)
	}
	// A new runtime reads the claimed environment back from containerd.
	rt2, err := runtime.New(context.Background(), runtime.Config{
		Address: env.Address, Namespace: testNS, StateDir: env.Dir + "/matrx", InitPath: env.InitPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	if got := run(t, rt2, id, runtime.ExecRequest{Command: limits}); string(got.Stdout) != want {
		t.Fatalf("after a restart: %q, want %q", got.Stdout, want)
	}
	infos, err := rt2.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, in := range infos {
		if in.ID != id {
			continue
		}
		found = true
		if in.UserID != "u2" {
			t.Fatalf("container label user = %q, want u2", in.UserID)
		}
		// The claim's write is masked to the user label and the spec: the
		// record's other labels stay.
		if in.CreatedAt.IsZero() {
			t.Fatal("the claim dropped the container's created-at label")
		}
	}
	if !found {
		t.Fatalf("sandbox %s not listed after the claim", id)
	}
	// A claim that asks for the limits the sandbox already has skips the
	// live update; one that asks for the sandbox's first limits again must
	// not be mistaken for that (the record holds what the claim set).
	for _, c := range []struct {
		res  runtime.Resources
		want string
	}{
		{runtime.Resources{CPU: 0.5, MemoryBytes: 128 << 20, Pids: 64}, "134217728 64 50000"},
		{runtime.Resources{CPU: 2, MemoryBytes: 512 << 20, Pids: 512}, "536870912 512 200000"},
	} {
		if err := rt.Claim(context.Background(), runtime.ClaimRequest{ID: id, UserID: "u2", Resources: c.res}); err != nil {
			t.Fatal(err)
		}
		if got := cgroupLimits(t, id); got != c.want {
			t.Fatalf("limits after a claim of %+v: %s, want %s", c.res, got, c.want)
		}
	}
	if err := rt.Claim(context.Background(), runtime.ClaimRequest{ID: "sbx-0000deadbeef", Resources: runtime.Resources{CPU: 1, MemoryBytes: 64 << 20, Pids: 16}}); err == nil {
		t.Fatal("claim of a sandbox that does not exist succeeded")
	}
}

// cgroupLimits reads a sandbox's memory, pids and CPU quota from the host's
// cgroup files (sandboxes do not see their own: /sys/fs/cgroup is not
// mounted inside), on cgroup v1 or v2.
func cgroupLimits(t *testing.T, id string) string {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		d := "/sys/fs/cgroup/matrx/" + id
		cpu, _, _ := strings.Cut(read(d+"/cpu.max"), " ")
		return read(d+"/memory.max") + " " + read(d+"/pids.max") + " " + cpu
	}
	return read("/sys/fs/cgroup/memory/matrx/"+id+"/memory.limit_in_bytes") + " " +
		read("/sys/fs/cgroup/pids/matrx/"+id+"/pids.max") + " " +
		read("/sys/fs/cgroup/cpu/matrx/"+id+"/cpu.cfs_quota_us")
}
