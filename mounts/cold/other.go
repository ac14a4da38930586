//go:build !linux

package cold

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
)

// errNotSupported is returned by everything that mounts: FUSE and bind
// mounts with Linux propagation semantics exist only on Linux.
var errNotSupported = fmt.Errorf("cold: mounts are not supported on this OS: %w", errdefs.ErrNotImplemented)

func startFUSE(context.Context, fuseDriver, Request) (Mount, error) { return nil, errNotSupported }

func bindCold(context.Context, *Local, Request) (Mount, error) { return nil, errNotSupported }

func ensureDir(string, os.FileMode) error { return errNotSupported }

// NewManager is not supported on this OS.
func NewManager(context.Context, ManagerConfig, ...ManagerOption) (*Manager, error) {
	return nil, errNotSupported
}

// SweepStale is not supported on this OS.
func (m *Manager) SweepStale(context.Context) ([]ids.UserID, error) { return nil, errNotSupported }

func (m *Manager) unbindIfEmpty() error { return errNotSupported }

// SlotPath is not supported on this OS.
func (m *Manager) SlotPath(string) (string, error) { return "", errNotSupported }

// MakeSlot is not supported on this OS.
func (m *Manager) MakeSlot(string) (string, error) { return "", errNotSupported }

// BindSlot is not supported on this OS.
func (m *Manager) BindSlot(ids.UserID, string) error { return errNotSupported }

// SlotBound is not supported on this OS.
func (m *Manager) SlotBound(string) bool { return false }

// RemoveSlot is not supported on this OS.
func (m *Manager) RemoveSlot(string) error { return errNotSupported }

// Slots is not supported on this OS.
func (m *Manager) Slots() ([]string, error) { return nil, errNotSupported }

func bindBeneath(string, ids.UserID, string) error { return errNotSupported }
func unmountStack(string) error                    { return errNotSupported }
