// Package initproc is the body of matrx-init, the sandbox's PID 1. It owns
// zombie reaping and the stop contract the runtime relies on:
//
//   - SIGCHLD: reap every exited child (orphans are re-parented to PID 1).
//   - SIGTERM/SIGINT: the runtime has sent the same signal to every process
//     in the sandbox. PID 1 waits until it is the last process in its PID
//     namespace and then exits, so workloads get their full grace period; the
//     runtime's SIGKILL after the shutdown timeout bounds the wait.
//
// It must stay tiny: no work beyond signals, wait and a directory listing.
//
// # Idle PID 1
//
// Most of a sandbox's life its PID 1 only waits, and hundreds of idle
// sandboxes make what it holds while waiting the cost that counts (issue
// 16's density guard). A Go program holds about 0.9 MiB of private memory
// and six threads from its first instruction (heap arenas, stacks, the
// runtime's own threads), so on linux/amd64 the waiting is not done in Go:
// matrx-init is linked with the entry point EntrySymbol
// (pid1_linux_amd64.s), which, when started without arguments, blocks every
// signal and waits for them with raw system calls (one thread, no heap,
// about 30 KiB of private memory), reaping children on each wake. At
// SIGTERM or SIGINT it re-executes the same file with StoppingArg, and the
// Go code below (Stopping) does the part that needs a directory listing:
// waiting to be the last process. With any argument, or on another
// architecture or a build without the entry point, everything runs in Go
// (Main) and behaves the same.
package initproc

import (
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EntrySymbol is the ELF entry point matrx-init is linked with on
// linux/amd64 (go build -ldflags=-E=matrx_pid1_entry): the idle PID 1 of
// pid1_linux_amd64.s.
const EntrySymbol = "matrx_pid1_entry"

// StoppingArg is the argument the idle PID 1 re-executes matrx-init with
// when it is asked to stop; matrx-init runs Stopping for it.
const StoppingArg = "pid1-stopping"

// Stopping is PID 1 after SIGTERM or SIGINT reached the idle PID 1: it
// reaps and exits once it is the last process of its namespace. Further
// stop signals change nothing (the runtime's SIGKILL ends the wait). The
// runtime signalled every process at once, and most exit within
// milliseconds, so it looks again after 1 ms, doubling to 50 ms: a
// graceful stop ends about when the last process does.
func Stopping() {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		reap()
		if alone() {
			os.Exit(0)
		}
		time.Sleep(delay)
	}
}

// Main runs until the sandbox is asked to stop and every other process in
// it has exited.
func Main() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD, syscall.SIGHUP)
	var tick <-chan time.Time
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGCHLD:
				reap()
			case syscall.SIGHUP:
				// Ignored: a sandbox has no controlling terminal to lose.
			default:
				if tick == nil {
					t := time.NewTicker(50 * time.Millisecond)
					tick = t.C
				}
				if alone() {
					os.Exit(0)
				}
			}
		case <-tick:
			reap()
			if alone() {
				os.Exit(0)
			}
		}
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// alone reports whether PID 1 is the only process left in its namespace,
// not counting the exec agent (package runtime/execagent): it is no
// workload of the sandbox, and PID 1 cannot signal it (it runs as the
// agent user), so waiting for it would keep a sandbox whose root sent
// PID 1 SIGTERM alive for good. When PID 1 exits, the agent goes with the
// PID namespace.
func alone() bool {
	d, err := os.Open("/proc")
	if err != nil {
		return true // no /proc: nothing to wait for that we could see
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return true
	}
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid != 1 && !isExecAgent(pid) {
			return false
		}
	}
	return true
}

// isExecAgent reports whether pid is the sandbox's exec agent: started from
// outside the sandbox (parent pid 0 as seen here: no process of the sandbox
// can make one) with the agent's command line. A process that matrxd
// started and that rewrote its own command line to look like the agent
// could only make PID 1 stop without waiting for it, which ends it too.
func isExecAgent(pid int) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || string(cmdline) != "/.matrx/init\x00exec-agent\x00" {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The fields after the command's name (which may hold spaces and
	// parentheses): state, then the parent pid.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(stat[i+1:]))
	return len(f) > 1 && f[1] == "0"
}
