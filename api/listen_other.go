//go:build !linux

package api

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/containerd/errdefs"
)

// ListenUnix needs Linux (SO_PEERCRED, socket ownership semantics).
func ListenUnix(string, os.FileMode, int) (net.Listener, error) {
	return nil, fmt.Errorf("matrxd's socket is not supported on this OS: %w", errdefs.ErrNotImplemented)
}

func peerOf(net.Conn) Peer { return Peer{} }

func listenFreebind(netip.AddrPort) (net.Listener, error) {
	return nil, fmt.Errorf("the sandbox listener is not supported on this OS: %w", errdefs.ErrNotImplemented)
}
