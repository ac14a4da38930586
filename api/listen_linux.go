package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// ListenUnix creates the API socket at path with the given mode, owned by
// root and group gid (-1 keeps the process's group). A socket file left by a
// crashed daemon is replaced; a socket a live daemon still answers on is
// never stolen.
func ListenUnix(path string, mode os.FileMode, gid int) (net.Listener, error) {
	if path == "" || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("socket path %q must be absolute: %w", path, errdefs.ErrInvalidArgument)
	}
	if len(path) >= 108 {
		return nil, fmt.Errorf("socket path %q is longer than 107 bytes: %w", path, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it: %w", path, errdefs.ErrFailedPrecondition)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another daemon is serving on %s: %w", path, errdefs.ErrAlreadyExists)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("probe existing socket %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	l, err := bindPrivate(filepath.Dir(path), path, 0, gid, mode)
	if err != nil {
		return nil, err
	}
	return &unlinkOnClose{UnixListener: l, path: path}, nil
}

// bindPrivate listens on a unix socket at path owned by uid:gid with mode,
// with no window in which anyone else may connect to it: the socket is
// bound in a fresh directory under tmpParent that only its owner (root)
// can enter, given its owner and mode there, and renamed into place (the
// same filesystem as path). The classic way, umask(0777) around bind, is
// process-wide: any other goroutine creating a file meanwhile (a
// concurrent create's hot dir, a record) would get mode 0.
func bindPrivate(tmpParent, path string, uid, gid int, mode os.FileMode) (*net.UnixListener, error) {
	tmp, err := os.MkdirTemp(tmpParent, ".s")
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	if len(bound) >= 108 {
		return nil, fmt.Errorf("socket path %s (while binding) is longer than 107 bytes: %w", bound, errdefs.ErrInvalidArgument)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // its name moves; the owner unlinks path
	err = os.Chown(bound, uid, gid)
	if err == nil {
		err = os.Chmod(bound, mode)
	}
	if err == nil {
		err = os.Rename(bound, path)
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return l, nil
}

// unlinkOnClose removes the socket's final name when it closes (the
// listener only knows the name it was bound under).
type unlinkOnClose struct {
	*net.UnixListener
	path string
	once sync.Once
}

func (l *unlinkOnClose) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() { os.Remove(l.path) })
	return err
}

// listenFreebind listens on a TCP address that need not exist yet
// (IP_FREEBIND): the bridge gateway appears with the first sandbox.
func listenFreebind(addr netip.AddrPort) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	l, err := lc.Listen(context.Background(), "tcp4", addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, nil
}

// peerOf reads SO_PEERCRED from a Unix connection.
func peerOf(c net.Conn) Peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return Peer{}
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, Known: true}
}
