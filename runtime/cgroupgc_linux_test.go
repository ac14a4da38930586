package runtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/testenv"
)

// TestOrphanCgroupsKillsWhatContainerdForgot: a process left in an
// orphan sandbox's cgroup (as a runc init is when containerd dies in the
// middle of a create) is killed and its cgroup removed, when its parent is
// ours; a kept sandbox's cgroup is not touched.
func TestOrphanCgroupsKillsWhatContainerdForgot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root to make cgroups")
	}
	hier := filepath.Join(cgroupRoot, "pids")
	if exists(filepath.Join(cgroupRoot, "cgroup.controllers")) {
		hier = cgroupRoot
	}
	start := func(id string) (*exec.Cmd, string) {
		dir := filepath.Join(hier, "matrx", id)
		if err := os.MkdirAll(filepath.Join(dir, "exec-x"), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); os.Remove(filepath.Join(dir, "exec-x")); os.Remove(dir) })
		if err := os.WriteFile(filepath.Join(dir, "exec-x", "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		return cmd, dir
	}
	orphanCmd, orphanDir := start("sbx-00000c0ffee0")
	keptCmd, _ := start("sbx-00000c0ffee1")
	exited := make(chan error, 1)
	go func() { exited <- orphanCmd.Wait() }()
	isOrphan := func(id string) bool { return id == "sbx-00000c0ffee0" }
	// Not this daemon's (its parent is no shim of ours): left alone, as
	// another matrxd's sandboxes on the same host must be.
	if left, err := orphanCgroups(isOrphan, func(int) bool { return false }); err != nil || len(left) != 0 {
		t.Fatalf("a cgroup whose processes are not ours: %+v %v", left, err)
	}
	if err := orphanCmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("a process that is not ours was killed: %v", err)
	}
	left, err := orphanCgroups(isOrphan, func(ppid int) bool { return ppid == os.Getpid() })
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].SandboxID != "sbx-00000c0ffee0" || left[0].Kind != LeftoverProcesses {
		t.Fatalf("leftovers %+v", left)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the orphan's process was not killed")
	}
	if _, err := os.Stat(orphanDir); !os.IsNotExist(err) {
		t.Fatalf("the orphan's cgroup is still there: %v", err)
	}
	if err := keptCmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("a kept sandbox's process was killed: %v", err)
	}
}

// onlyInSandboxCgroup decides from a process's own cgroup file; the first
// case is the live pooled sandbox's PID 1 a dead sandbox's cgroup2
// cgroup.procs listed on the development VM (which the GC then killed).
func TestOnlyInSandboxCgroup(t *testing.T) {
	const other = "9:name=systemd:/matrx/sbx-629925229f22\n8:pids:/matrx/sbx-629925229f22\n4:memory:/matrx/sbx-629925229f22\n1:cpu:/matrx/sbx-629925229f22\n0::/\n"
	const own = "9:name=systemd:/matrx/sbx-15d12c7d755c\n8:pids:/matrx/sbx-15d12c7d755c/exec-1\n0::/matrx/sbx-15d12c7d755c\n"
	for _, c := range []struct {
		content, id string
		want        bool
	}{
		{other, "sbx-15d12c7d755c", false},
		{other, "sbx-629925229f22", true},
		{own, "sbx-15d12c7d755c", true},
		{"8:pids:/matrx/sbx-15d12c7d755c\n4:memory:/matrx/sbx-aaaaaaaaaaaa\n", "sbx-15d12c7d755c", false},
		{"0::/user.slice\n1:cpu:/\n", "sbx-15d12c7d755c", false},
		{"", "sbx-15d12c7d755c", false},
	} {
		if got := onlyInSandboxCgroup(c.content, c.id); got != c.want {
			t.Errorf("onlyInSandboxCgroup(%q, %s) = %v, want %v", c.content, c.id, got, c.want)
		}
	}
}
