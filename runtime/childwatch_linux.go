package runtime

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/runtime/execagent"
)

// childWatch is the host's own handle on an exec's shell: a pidfd, which
// says when it exited whatever happens to the agent, and (on kernels with
// PIDFD_GET_INFO exit information, 6.15 and later) how.
type childWatch struct {
	fd     int
	exited chan struct{}
	once   sync.Once
}

func watchChild(pid int) (*childWatch, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd of exec %d: %w", pid, err)
	}
	c := &childWatch{fd: fd, exited: make(chan struct{})}
	go func() {
		// Returns once the process has exited: every exec ends (killed at
		// its timeout if not sooner), so this goroutine does too.
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if n, err := unix.Poll(fds, -1); n > 0 || (err != nil && !errors.Is(err, unix.EINTR)) {
				break
			}
		}
		close(c.exited)
	}()
	return c, nil
}

// status reads how the exited process ended, waiting briefly for it to be
// reaped (PID 1 does that), which is when the kernel records it.
func (c *childWatch) status() execagent.ExitResult {
	for i := 0; i < 100; i++ {
		info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
		if err := unix.IoctlPidfdInfo(c.fd, &info); err != nil {
			return execagent.ExitResult{Err: fmt.Errorf("the exec agent went away and this kernel cannot tell the command's exit status (%v)", err)}
		}
		if info.Mask&unix.PIDFD_INFO_EXIT != 0 {
			ws := syscall.WaitStatus(info.Exit_code)
			if ws.Signaled() {
				return execagent.ExitResult{Code: 128 + int(ws.Signal())}
			}
			return execagent.ExitResult{Code: ws.ExitStatus()}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return execagent.ExitResult{Err: errors.New("the exec agent went away and the command's exit status was not recorded")}
}

// close releases the pidfd once the watcher is done with it.
func (c *childWatch) close() {
	c.once.Do(func() {
		go func() { <-c.exited; unix.Close(c.fd) }()
	})
}
