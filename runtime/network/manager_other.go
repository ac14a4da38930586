//go:build !linux

package network

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"

	"github.com/containerd/errdefs"
)

type platformState struct{}

func errNotSupported() error {
	return fmt.Errorf("sandbox networking is not supported on %s (Linux only): %w", runtime.GOOS, errdefs.ErrNotImplemented)
}

// New fails: sandbox networking needs Linux network namespaces.
func New(ctx context.Context, cfg Config, opts ...Option) (*Manager, error) {
	if _, err := buildManager(cfg, opts); err != nil {
		return nil, err
	}
	return nil, errNotSupported()
}

// Teardown is not supported on this OS.
func (m *Manager) Teardown(ctx context.Context, id string) error { return errNotSupported() }

// GC is not supported on this OS.
func (m *Manager) GC(ctx context.Context, keep func(id string) bool) error { return errNotSupported() }

// Uninstall is not supported on this OS.
func (m *Manager) Uninstall(ctx context.Context) error { return errNotSupported() }

// SetupIn is not supported on this OS.
func (m *Manager) SetupIn(ctx context.Context, id string, p Policy, nsSrc string) (*Attachment, error) {
	return nil, errNotSupported()
}

// Files is not supported on this OS.
func (m *Manager) Files(id string) (string, string) { return "", "" }

// PrepareFiles is not supported on this OS.
func (m *Manager) PrepareFiles(id string, p Policy) error { return errNotSupported() }

// SetPolicy is not supported on this platform.
func (m *Manager) SetPolicy(ctx context.Context, id string, ip netip.Addr, p Policy) error {
	return errNotSupported()
}
