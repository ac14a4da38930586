package runtime

import (
	"os"

	"golang.org/x/sys/unix"
)

// initHandle is matrxd's own handle on a sandbox's PID 1: a pidfd, so that
// a destroy's SIGKILL is one system call instead of a `runc kill` process
// (~10 ms here). Killing PID 1 is enough: every process of a sandbox is in
// its PID namespace, and the kernel kills the rest when the namespace's
// init dies.
type initHandle struct{ fd int }

// openInit opens a pidfd on pid, the task's PID 1 as containerd reported
// it, if that process runs the host's matrx-init (initPath). The caller
// must then see the task still running before relying on it: a pid is
// reused only once its process has been reaped, which the shim reports as
// the task's exit, so a task still running after the pidfd was opened
// means the pidfd is its PID 1. Nil when it cannot tell (the caller then
// kills through the runtime).
func openInit(pid uint32, initPath string) *initHandle {
	if pid == 0 {
		return nil
	}
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return nil
	}
	want, err := os.Stat(initPath)
	if err != nil {
		unix.Close(fd)
		return nil
	}
	if ok, _ := runsFile(int(pid), want); !ok {
		unix.Close(fd)
		return nil
	}
	return &initHandle{fd: fd}
}

// kill sends SIGKILL; false if it could not (the caller falls back).
func (h *initHandle) kill() bool {
	if h == nil {
		return false
	}
	err := unix.PidfdSendSignal(h.fd, unix.SIGKILL, nil, 0)
	return err == nil || err == unix.ESRCH // ESRCH: it has exited already
}

func (h *initHandle) close() {
	if h != nil {
		unix.Close(h.fd)
	}
}
