package cold

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/containerd/errdefs"
)

// LocalConfig configures the local driver.
type LocalConfig struct {
	// StorageDir is the local object store's root (<state>/storage): key
	// users/USER/cold/x is the file StorageDir/users/USER/cold/x. Required.
	StorageDir string
	// Logger is required.
	Logger *slog.Logger
}

// Local serves cold files from a local directory store: the user's
// StorageDir/users/USER/cold (created, owned by Request.UID:GID) is
// bind-mounted onto the mountpoint. There is no process to supervise.
type Local struct {
	dir string
	log *slog.Logger
}

// NewLocal returns the local driver.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if cfg.Logger == nil {
		return nil, fmt.Errorf("cold: logger is required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.StorageDir == "" || !filepath.IsAbs(cfg.StorageDir) {
		return nil, fmt.Errorf("cold: local storage dir %q must be an absolute path: %w", cfg.StorageDir, errdefs.ErrInvalidArgument)
	}
	return &Local{dir: filepath.Clean(cfg.StorageDir), log: cfg.Logger}, nil
}

// Name returns "local".
func (d *Local) Name() string { return DriverLocal }

// Mount bind-mounts the user's cold directory onto req.Mountpoint.
func (d *Local) Mount(ctx context.Context, req Request) (Mount, error) {
	return bindCold(ctx, d, req)
}
