//go:build !linux

package runtime

import (
	"context"
	"fmt"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/errdefs"
)

func (r *Runtime) withRemappedSnapshot(string, containerd.Image) containerd.NewContainerOpts {
	return func(context.Context, *containerd.Client, *containers.Container) error {
		return fmt.Errorf("user namespaces are not supported on this OS: %w", errdefs.ErrNotImplemented)
	}
}
