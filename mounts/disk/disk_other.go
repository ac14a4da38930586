//go:build !linux

package disk

import (
	"fmt"

	"github.com/containerd/errdefs"
)

func Make(string, string, int64, int, int, int) error {
	return fmt.Errorf("disk limits need Linux loop devices: not supported on this OS: %w", errdefs.ErrNotImplemented)
}
func Format(string, int64, int, int, int) error { return Make("", "", 0, 0, 0, 0) }
func Attach(string, string) error               { return Make("", "", 0, 0, 0, 0) }
func Mount(string, string) error                { return Make("", "", 0, 0, 0, 0) }
func Unmount(string) error                      { return nil }
func IsMounted(string) bool                     { return false }
