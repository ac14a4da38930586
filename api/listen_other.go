//go:build !linux

package api

import (
	"fmt"
	"net"
	"os"

	"github.com/containerd/errdefs"
)

// ListenUnix needs Linux (SO_PEERCRED, socket ownership semantics).
func ListenUnix(string, os.FileMode, int) (net.Listener, error) {
	return nil, fmt.Errorf("matrxd's socket is not supported on this OS: %w", errdefs.ErrNotImplemented)
}

func peerOf(net.Conn) Peer { return Peer{} }
