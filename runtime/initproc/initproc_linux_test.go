package initproc_test

import (
	"debug/elf"
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/runtime/initproc"
	"github.com/matrx-dev/matrx/testenv"
)

// TestIdlePID1: matrx-init as built for sandboxes, run as PID 1 of a new
// PID namespace (its own /proc, as in a sandbox), waits in one thread with
// almost no memory (the entry point of pid1_linux_amd64.s, not the Go
// runtime), reaps orphans, and on SIGTERM becomes the Go stopping code,
// which exits 0 only once it is the last process.
func TestIdlePID1(t *testing.T) {
	if goruntime.GOARCH != "amd64" {
		t.Skip("the idle PID 1 is amd64 assembly; elsewhere PID 1 is Go (Main)")
	}
	testenv.NeedRoot(t, "a PID namespace")
	bin := containerdtest.BuildInit(t, t.TempDir())

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	entryIsOurs := false
	for _, s := range syms {
		if s.Name == initproc.EntrySymbol {
			entryIsOurs = s.Value == f.Entry
		}
	}
	if !entryIsOurs {
		t.Fatalf("the built matrx-init's entry point %#x is not %s", f.Entry, initproc.EntrySymbol)
	}

	// unshare forks PID 1 after mounting the namespace's /proc and waits
	// for it, so its exit status is PID 1's.
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	pid1 := waitChild(t, cmd.Process.Pid)
	defer syscall.Kill(pid1, syscall.SIGKILL)

	if n := statusField(t, pid1, "Threads"); n != "1" {
		t.Fatalf("idle PID 1 has %s threads: the Go runtime started", n)
	}
	if kb := anonKiB(t, pid1); kb > 256 {
		t.Fatalf("idle PID 1 holds %d KiB of anonymous memory", kb)
	}

	// An orphan that exits is reaped; one that lives keeps PID 1 up after
	// SIGTERM.
	enter := func(script string) {
		t.Helper()
		if out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid1), "-p", "-m", "sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("nsenter: %v: %s", err, out)
		}
	}
	enter("(true &); (exec sleep 300 </dev/null >/dev/null 2>&1 &); true")
	var sleeper int
	for deadline := time.Now().Add(10 * time.Second); ; {
		kids := children(pid1)
		zombies := 0
		sleeper = 0
		for _, k := range kids {
			switch state(k) {
			case "Z":
				zombies++
			case "S", "R":
				sleeper = k
			}
		}
		if zombies == 0 && sleeper != 0 && len(kids) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PID 1's children after an orphan exited and one sleeps: %v (zombies %d)", kids, zombies)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := syscall.Kill(pid1, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid1) + "/cmdline")
		if strings.HasSuffix(string(cmdline), "\x00"+initproc.StoppingArg+"\x00") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGTERM PID 1 did not become %q: %q", initproc.StoppingArg, cmdline)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Stopping, but not alone: PID 1 stays (it polls every 50 ms).
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-exited:
		t.Fatalf("PID 1 exited while a process of its namespace lived: %v", err)
	default:
	}
	if err := syscall.Kill(sleeper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("PID 1's exit once alone: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PID 1 did not exit once it was alone")
	}
}

// waitChild returns the first child of pid.
func waitChild(t *testing.T, pid int) int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if kids := children(pid); len(kids) > 0 {
			// Until it has executed matrx-init it is unshare's fork.
			if exe, _ := os.Readlink("/proc/" + strconv.Itoa(kids[0]) + "/exe"); strings.HasSuffix(exe, "/matrx-init") {
				return kids[0]
			}
		}
	}
	t.Fatalf("unshare (pid %d) started no matrx-init", pid)
	return 0
}

func children(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// state is the one-letter state of /proc/PID/stat ("" when gone).
func state(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(b), ')')
	if f := strings.Fields(string(b[i+1:])); i >= 0 && len(f) > 0 {
		return f[0]
	}
	return ""
}

func statusField(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", name, pid)
	return ""
}

func anonKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Anonymous:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no Anonymous in /proc/%d/smaps_rollup", pid)
	return 0
}
