package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	goruntime "runtime"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// netNS is an open network namespace of a sandbox.
type netNS struct{ fd int }

// openNetNS opens the network namespace of pid and refuses the daemon's
// own (a sandbox always has its own; meeting ours means pid is not a
// sandbox process). The calling goroutine is not locked to a thread, and
// only locked threads ever join a sandbox's namespace, so its thread is in
// the daemon's namespace.
func openNetNS(pid int) (*netNS, error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("process %d is gone: %w", pid, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("open /proc/%d/ns/net: %w", pid, err)
	}
	var theirs, ours unix.Stat_t
	if err := unix.Fstat(fd, &theirs); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &ours); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if theirs.Ino == ours.Ino && theirs.Dev == ours.Dev {
		unix.Close(fd)
		return nil, fmt.Errorf("process %d shares the daemon's network namespace: %w", pid, errdefs.ErrFailedPrecondition)
	}
	return &netNS{fd: fd}, nil
}

func (n *netNS) Close() error { return unix.Close(n.fd) }

// dial connects to a TCP address from inside the namespace: the socket is
// made on an OS thread that joined the namespace, and belongs to it for
// its whole life. The thread goes back to the daemon's namespace before it
// is released; if it cannot, it stays locked and the Go runtime ends it
// with the goroutine instead of reusing it.
func (n *netNS) dial(ctx context.Context, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			goruntime.UnlockOSThread()
			res <- result{err: fmt.Errorf("open the daemon's network namespace: %w", err)}
			return
		}
		defer unix.Close(home)
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			res <- result{err: fmt.Errorf("join network namespace: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp4", addr)
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		}
		res <- result{c, err}
	}()
	r := <-res
	return r.c, r.err
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
