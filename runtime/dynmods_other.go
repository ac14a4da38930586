//go:build !linux

package runtime

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// FavorCgroupDynMods is Linux-only (see dynmods_linux.go).
func FavorCgroupDynMods() (mountpoint string, changed bool, err error) {
	return "", false, fmt.Errorf("cgroups are Linux-only: %w", errdefs.ErrNotImplemented)
}
