//go:build !linux

package doctor

import (
	"fmt"
	"os"

	"github.com/containerd/errdefs"
)

func diskSpace(string) (uint64, uint64, error) {
	return 0, 0, fmt.Errorf("measuring free space is not supported on this OS: %w", errdefs.ErrNotImplemented)
}

func ownerGID(os.FileInfo) (uint32, bool) { return 0, false }
