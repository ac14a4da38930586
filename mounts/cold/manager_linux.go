package cold

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
	"golang.org/x/sys/unix"
)

// NewManager prepares cfg.Dir (see the package comment): it makes Dir/mnt a
// shared bind mount of itself, so that mounts made below it later propagate
// into sandboxes that bound a directory from it with rslave, and Dir/stage a
// private one. It detaches mounts a crashed daemon left on the stage and
// removes leftover credential files. Mounts left on mountpoints are kept
// (running sandboxes may still use them): Acquire stacks on them, Release
// and SweepStale remove them.
func NewManager(ctx context.Context, cfg ManagerConfig, opts ...ManagerOption) (*Manager, error) {
	if cfg.Driver == nil || cfg.Logger == nil {
		return nil, fmt.Errorf("cold: manager needs a driver and a logger: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Dir == "" || !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("cold: manager dir %q must be an absolute path: %w", cfg.Dir, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(cfg.Dir, 0o711); err != nil {
		return nil, fmt.Errorf("cold: create %s: %w: %w", cfg.Dir, err, errdefs.ErrUnavailable)
	}
	dir, err := filepath.EvalSymlinks(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("cold: %w: %w", err, errdefs.ErrUnavailable)
	}
	m := &Manager{
		driver:  cfg.Driver,
		log:     cfg.Logger.With("driver", cfg.Driver.Name()),
		uid:     1000,
		gid:     1000,
		dir:     dir,
		root:    filepath.Join(dir, "mnt"),
		stage:   filepath.Join(dir, "stage"),
		cache:   filepath.Join(dir, "cache"),
		secrets: filepath.Join(dir, "secrets"),
		users:   make(map[ids.UserID]*entry),
	}
	for _, opt := range opts {
		opt(m)
	}
	if m.shared {
		if _, ok := m.driver.(*Local); ok {
			return nil, fmt.Errorf("cold: a shared mount needs a FUSE driver (mount-s3 or s3fs), not %q: %w", DriverLocal, errdefs.ErrInvalidArgument)
		}
		m.allDir = filepath.Join(dir, "all")
	}
	if err := m.validateSpares(); err != nil {
		return nil, err
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{m.root, 0o711}, {m.stage, 0o700}, {m.cache, 0o700}, {m.secrets, 0o700}} {
		if err := ensureDir(d.path, d.mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("cold: chmod %s: %w: %w", d.path, err, errdefs.ErrUnavailable)
		}
	}
	if m.boundRoot, err = bindSelf(m.root, unix.MS_SHARED); err != nil {
		return nil, err
	}
	if m.boundStage, err = bindSelf(m.stage, unix.MS_PRIVATE); err != nil {
		return nil, errors.Join(err, m.unbindIfEmpty())
	}
	if m.shared {
		if err := ensureDir(m.allDir, 0o700); err != nil {
			return nil, errors.Join(err, m.unbindIfEmpty())
		}
		if err := os.Chmod(m.allDir, 0o700); err != nil {
			return nil, errors.Join(fmt.Errorf("cold: chmod %s: %w: %w", m.allDir, err, errdefs.ErrUnavailable), m.unbindIfEmpty())
		}
		if m.boundAll, err = bindSelf(m.allDir, unix.MS_PRIVATE); err != nil {
			return nil, errors.Join(err, m.unbindIfEmpty())
		}
	}
	if err := m.cleanStage(); err != nil {
		return nil, errors.Join(err, m.unbindIfEmpty())
	}
	if err := m.cleanSpares(); err != nil {
		return nil, errors.Join(err, m.unbindIfEmpty())
	}
	if m.spares.want > 0 {
		sd := m.spareDir()
		if err := ensureDir(sd, 0o700); err != nil {
			return nil, errors.Join(err, m.unbindIfEmpty())
		}
		if err := os.Chmod(sd, 0o700); err != nil {
			return nil, errors.Join(fmt.Errorf("cold: chmod %s: %w: %w", sd, err, errdefs.ErrUnavailable), m.unbindIfEmpty())
		}
		if m.boundSpare, err = bindSelf(sd, unix.MS_PRIVATE); err != nil {
			return nil, errors.Join(err, m.unbindIfEmpty())
		}
	}
	if err := removeDirContents(m.secrets); err != nil {
		return nil, errors.Join(err, m.unbindIfEmpty())
	}
	if m.spares.want > 0 {
		m.startSpareRefill()
	}
	m.log.Info("cold manager ready", "dir", dir, "spares", max(m.spares.want, 0))
	return m, nil
}

// validateSpares checks WithSpares against the driver and mode.
func (m *Manager) validateSpares() error {
	n := m.spares.want
	switch {
	case n < 0 || n > maxSpares:
		return fmt.Errorf("cold: %d spare daemons: want 0 to %d: %w", n, maxSpares, errdefs.ErrInvalidArgument)
	case n == 0:
		return nil
	case m.shared:
		return fmt.Errorf("cold: spare daemons are for per-user mounts, not the shared mount (which needs none): %w", errdefs.ErrInvalidArgument)
	}
	if _, ok := m.driver.(*Local); ok {
		return fmt.Errorf("cold: spare daemons need a FUSE driver (mount-s3 or s3fs), not %q: %w", DriverLocal, errdefs.ErrInvalidArgument)
	}
	return nil
}

// cleanSpares detaches the spares a previous run left and removes their
// directories (see "Spare daemons": one a user took keeps serving that
// user's binds). Their stages were detached by cleanStage.
func (m *Manager) cleanSpares() error {
	sd := m.spareDir()
	ents, err := os.ReadDir(sd)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cold: %w: %w", err, errdefs.ErrUnavailable)
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(sd, e.Name())
		if err := unmountStack(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cold: remove %s: %w: %w", p, err, errdefs.ErrUnavailable))
		}
		if err := os.Remove(filepath.Join(m.stage, "spares", e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cold: remove a spare's stage: %w: %w", err, errdefs.ErrUnavailable))
		}
	}
	if err := os.RemoveAll(filepath.Join(m.cache, "spares")); err != nil {
		errs = append(errs, fmt.Errorf("cold: remove the spares' caches: %w: %w", err, errdefs.ErrUnavailable))
	}
	return errors.Join(errs...)
}

// cleanStage detaches every mount below the stage (daemons of a crashed run
// that never got moved onto their mountpoint).
func (m *Manager) cleanStage() error {
	mounts, err := readMountinfo()
	if err != nil {
		return err
	}
	var errs []error
	for _, mi := range below(mounts, m.stage) {
		if err := unmountStack(mi.Mountpoint); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SweepStale removes mounts below Root that no live Acquire holds (left by a
// previous daemon) and their directories, and returns the users whose
// mounts it removed. Call it once the sandboxes that survived a restart
// have re-acquired their users' mounts.
func (m *Manager) SweepStale(ctx context.Context) ([]ids.UserID, error) {
	mounts, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	var swept []ids.UserID
	usersDir := filepath.Join(m.root, "users")
	seen := make(map[string]bool)
	var errs []error
	for _, mi := range below(mounts, usersDir) {
		rel := strings.TrimPrefix(mi.Mountpoint, usersDir+"/")
		name, rest, _ := strings.Cut(rel, "/")
		userID, err := ids.ParseUserID(name)
		if seen[mi.Mountpoint] || err != nil {
			continue
		}
		seen[mi.Mountpoint] = true
		m.mu.Lock()
		_, held := m.users[userID]
		m.mu.Unlock()
		if held {
			continue
		}
		m.log.Warn("cold sweeping stale mount", "user_id", userID, "mountpoint", mi.Mountpoint)
		if err := unmountStack(mi.Mountpoint); err != nil {
			errs = append(errs, err)
			continue
		}
		if !slices.Contains(swept, userID) {
			swept = append(swept, userID)
		}
		if rest == "cold" {
			if err := m.removeUserDirs(userID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := m.sweepShared(); err != nil {
		errs = append(errs, err)
	}
	return swept, errors.Join(errs...)
}

// unbindIfEmpty unmounts the bind mounts of Dir/stage and Dir/mnt that this
// manager made, when nothing is mounted below them. (Binds found in place,
// made by an earlier run, are left: they are harmless and reused.)
func (m *Manager) unbindIfEmpty() error {
	mounts, err := readMountinfo()
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range []struct {
		dir   string
		bound *bool
	}{{m.allDir, &m.boundAll}, {m.spareDir(), &m.boundSpare}, {m.stage, &m.boundStage}, {m.root, &m.boundRoot}} {
		if !*b.bound {
			continue
		}
		if len(below(mounts, b.dir)) > 0 {
			m.log.Warn("cold manager leaves its bind mount: mounts remain below it", "dir", b.dir)
			continue
		}
		if err := unix.Unmount(b.dir, 0); err != nil {
			if derr := unix.Unmount(b.dir, unix.MNT_DETACH); derr != nil {
				errs = append(errs, fmt.Errorf("cold: unmount %s: %w: %w", b.dir, derr, errdefs.ErrUnavailable))
				continue
			}
		}
		*b.bound = false
	}
	return errors.Join(errs...)
}

// removeDirContents removes the files directly in dir.
func removeDirContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("cold: %w: %w", err, errdefs.ErrUnavailable)
	}
	var errs []error
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cold: clean %s: %w: %w", dir, err, errdefs.ErrUnavailable)
	}
	return nil
}
