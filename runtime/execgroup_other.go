//go:build !linux

package runtime

import (
	"context"
	"fmt"
	"syscall"

	"github.com/containerd/errdefs"
)

// execGroup needs Linux cgroups; elsewhere the runtime cannot run sandboxes.
type execGroup struct {
	dir string
	v2  bool
}

func newExecGroup(int, string) (*execGroup, error) {
	return nil, fmt.Errorf("exec tracking needs Linux cgroups: not supported on this OS: %w", errdefs.ErrNotImplemented)
}
func (*execGroup) kill() error                 { return nil }
func (*execGroup) signal(syscall.Signal) error { return nil }
func (*execGroup) remove()                     {}
func detectShell(int) string                   { return "/bin/sh" }

func waitInitExeced(context.Context, int, string) error {
	return fmt.Errorf("sandboxes need Linux: not supported on this OS: %w", errdefs.ErrNotImplemented)
}

func mountControlDir(string) error {
	return fmt.Errorf("sandboxes need Linux: not supported on this OS: %w", errdefs.ErrNotImplemented)
}
func removeControlDir(dir string) error { return nil }

// setPipeSize is a no-op where pipes cannot be resized.
func setPipeSize(any) {}
