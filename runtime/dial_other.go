//go:build !linux

package runtime

import (
	"context"
	"fmt"
	"net"

	"github.com/containerd/errdefs"
)

type netNS struct{}

func openNetNS(int) (*netNS, error) {
	return nil, fmt.Errorf("sandbox network namespaces need Linux: %w", errdefs.ErrNotImplemented)
}
func (*netNS) Close() error                                   { return nil }
func (*netNS) dial(context.Context, string) (net.Conn, error) { return nil, errdefs.ErrNotImplemented }
func isRefused(error) bool                                    { return false }
