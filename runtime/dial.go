package runtime

import (
	"context"
	"fmt"
	"net"
	"strconv"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// Dial connects to TCP port on 127.0.0.1 inside sandbox id's network
// namespace, whatever its network mode: the socket is created in that
// namespace (from an OS thread that joined it and is then thrown away),
// so nothing is routed, nothing on the host is opened, and a sandbox
// without any network (mode none) is reached all the same. The namespace
// is taken from the sandbox's PID 1, and used only once the task is seen
// running after it was opened: a PID that a stopped sandbox released
// cannot lead into another process's namespace.
//
// A port nothing listens on fails with an error that wraps both
// errdefs.ErrUnavailable and the ECONNREFUSED the kernel answered.
func (r *Runtime) Dial(ctx context.Context, id string, port int) (net.Conn, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("port %d is out of range [1, 65535]: %w", port, errdefs.ErrInvalidArgument)
	}
	ctx = r.nsCtx(ctx)
	st, err := r.sandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	ns, err := openNetNS(int(st.task.Pid()))
	if err != nil {
		return nil, fmt.Errorf("network namespace of %s: %w", id, err)
	}
	defer ns.Close()
	status, err := st.task.Status(ctx)
	if errdefs.IsNotFound(err) || err == nil && status.Status != containerd.Running {
		return nil, fmt.Errorf("sandbox %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, fmt.Errorf("task status %s: %w", id, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c, err := ns.dial(ctx, addr)
	if err != nil {
		if isRefused(err) {
			return nil, fmt.Errorf("nothing listens on port %d in sandbox %s: %w: %w", port, id, errdefs.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("connect to port %d in sandbox %s: %w: %w", port, id, errdefs.ErrUnavailable, err)
	}
	return c, nil
}
