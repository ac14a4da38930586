package cold

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
	"golang.org/x/sys/unix"
)

// BindMount is the local driver's mount: a bind of the user's storage
// directory onto the mountpoint.
type BindMount struct {
	src, mp string
	d       *Local
	userID  ids.UserID

	once sync.Once
	err  error
}

func bindCold(ctx context.Context, d *Local, req Request) (Mount, error) {
	src, err := userPath(d.dir, req.UserID, "cold")
	if err != nil {
		return nil, err
	}
	mp, err := existingDir("mountpoint", req.Mountpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, fmt.Errorf("cold: create %s: %w: %w", src, err, errdefs.ErrUnavailable)
	}
	// The store's tree belongs to root processes; still refuse a symlink
	// that would point the bind somewhere else.
	base, err := filepath.EvalSymlinks(d.dir)
	if err != nil {
		return nil, fmt.Errorf("cold: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	resolved, err := filepath.EvalSymlinks(src)
	if err != nil {
		return nil, fmt.Errorf("cold: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	if !strings.HasPrefix(resolved, base+string(filepath.Separator)) {
		return nil, fmt.Errorf("cold: %s resolves outside %s: %w", src, d.dir, errdefs.ErrFailedPrecondition)
	}
	if err := os.Lchown(resolved, int(req.UID), int(req.GID)); err != nil {
		return nil, fmt.Errorf("cold: chown %s: %w: %w", resolved, err, errdefs.ErrUnavailable)
	}
	if err := unix.Mount(resolved, mp, "", unix.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("cold: bind %s onto %s: %w: %w", resolved, mp, err, errdefs.ErrUnavailable)
	}
	d.log.Info("cold mount ready", "user_id", req.UserID, "driver", DriverLocal, "mountpoint", mp, "source", resolved)
	return &BindMount{src: resolved, mp: mp, d: d, userID: req.UserID}, nil
}

// Path returns the mountpoint.
func (b *BindMount) Path() string { return b.mp }

// Unmount removes every layer on the mountpoint. Safe to call more than once.
func (b *BindMount) Unmount(ctx context.Context) error {
	b.once.Do(func() {
		b.err = unmountStack(b.mp)
		if b.err == nil {
			b.d.log.Info("cold mount unmounted", "user_id", b.userID, "driver", DriverLocal, "mountpoint", b.mp)
		}
	})
	return b.err
}
