//go:build !linux

package mounts

import (
	"fmt"

	"github.com/containerd/errdefs"
)

func makeDisk(string, string, int64, int, int) error {
	return fmt.Errorf("disk limits need Linux loop devices: not supported on this OS: %w", errdefs.ErrNotImplemented)
}
func mountDisk(string, string) error { return makeDisk("", "", 0, 0, 0) }
func unmountDisk(string) error       { return nil }
func isMountpoint(string) bool       { return false }
