package sandbox

import (
	"context"
	"fmt"
	"net"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
)

// Dial connects to TCP port on 127.0.0.1 inside a running sandbox (its
// own network namespace: it works in network mode none too, and opens
// nothing on the host). It is what the HTTP proxy, port forwarding and
// SSH local forwarding use.
func (m *Manager) Dial(ctx context.Context, id string, port int) (net.Conn, error) {
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	if port < 1 || port > 65535 {
		return nil, invalid("port %d is out of range [1, 65535]", port)
	}
	rec, err := m.userRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	if !rec.Status.AcceptsExec() {
		return nil, fmt.Errorf("sandbox %s is %s, not running: %w", id, rec.Status, errdefs.ErrFailedPrecondition)
	}
	c, err := m.rt.Dial(ctx, id, port)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("sandbox %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	m.Touch(ctx, id)
	return &activeConn{Conn: c, touch: func() { m.Touch(context.Background(), id) }}, nil
}

// activeConn is a connection into a sandbox (a proxied request, a port
// tunnel, an SSH forward): every byte it moves is activity (Touch).
type activeConn struct {
	net.Conn
	touch func()
}

func (c *activeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *activeConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.touch()
	}
	return n, err
}

// CloseWrite passes a half-close on (port tunnels need it).
func (c *activeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
