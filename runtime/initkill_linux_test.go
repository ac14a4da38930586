package runtime

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestOpenInit: the pidfd handle a destroy kills PID 1 through is taken
// only on a process running the host's init binary; anything else makes
// the caller fall back to the OCI runtime's kill.
func TestOpenInit(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if h := openInit(uint32(os.Getpid()), "/bin/sh"); h != nil {
		h.close()
		t.Fatal("opened a process that does not run the init binary")
	}
	if h := openInit(0, self); h != nil {
		t.Fatal("opened pid 0")
	}
	// A child running the "init binary" (sleep, as far as this test is
	// concerned) is opened and killed through its pidfd.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	cmd := exec.Command(sleep, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	h := openInit(uint32(cmd.Process.Pid), sleep)
	if h == nil {
		t.Fatal("did not open a process running the init binary")
	}
	defer h.close()
	if !h.kill() {
		t.Fatal("kill through the pidfd failed")
	}
	cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child after the kill: %v", cmd.ProcessState)
	}
	if !h.kill() {
		t.Fatal("a second kill of an exited process must count as done (ESRCH)")
	}
}
