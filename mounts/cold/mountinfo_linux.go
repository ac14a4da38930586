package cold

import (
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
)

// parseMountinfo reads a mountinfo table; a malformed line is an error
// wrapping errdefs.ErrDataLoss.
func parseMountinfo(r io.Reader) ([]mountInfo, error) {
	infos, err := mountinfo.GetMountsFromReader(r, nil)
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w: %w", errdefs.ErrDataLoss, err)
	}
	out := make([]mountInfo, len(infos))
	for i, info := range infos {
		out[i] = mountInfo{*info}
	}
	return out, nil
}
