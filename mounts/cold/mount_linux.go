package cold

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// unmountStack removes every mount on path, top first: a clean unmount, or a
// lazy one when busy (a sandbox still uses it) or the clean one fails.
func unmountStack(path string) error {
	for i := 0; i < 256; i++ {
		// One lookup, not the mount table (hundreds of lines with many
		// sandboxes, 2-7 ms to read and parse here): most calls find
		// nothing mounted (a fresh stage) or one layer.
		mounted, err := mountedAt(path)
		if err != nil {
			return err
		}
		if !mounted {
			return nil
		}
		err = unix.Unmount(path, 0)
		if err == nil || errors.Is(err, unix.EINVAL) {
			continue
		}
		if derr := unix.Unmount(path, unix.MNT_DETACH); derr != nil && !errors.Is(derr, unix.EINVAL) {
			return fmt.Errorf("cold: unmount %s: %w: %w", path, errors.Join(err, derr), errdefs.ErrUnavailable)
		}
	}
	return fmt.Errorf("cold: %s still mounted after 256 unmounts: %w", path, errdefs.ErrInternal)
}

func readMountinfo() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cold: %w: %w", err, errdefs.ErrUnavailable)
	}
	defer f.Close()
	return parseMountinfo(f)
}

// existingDir resolves symlinks in dir (mountinfo shows resolved paths) and
// checks it is a directory. A dead FUSE mount on dir (ENOTCONN) is accepted:
// a new mount is stacked on it.
func existingDir(what, dir string) (string, error) {
	if dir == "" || !filepath.IsAbs(dir) {
		return "", fmt.Errorf("cold: %s %q must be an absolute path: %w", what, dir, errdefs.ErrInvalidArgument)
	}
	dir = filepath.Clean(dir)
	parent, err := filepath.EvalSymlinks(filepath.Dir(dir))
	if err != nil {
		return "", fmt.Errorf("cold: %s: %w: %w", what, err, errdefs.ErrFailedPrecondition)
	}
	resolved := filepath.Join(parent, filepath.Base(dir))
	fi, err := os.Lstat(resolved)
	switch {
	case isDisconnected(err):
		return resolved, nil
	case err != nil:
		return "", fmt.Errorf("cold: %s: %w: %w", what, err, errdefs.ErrFailedPrecondition)
	case fi.Mode()&os.ModeSymlink != 0:
		return existingDir(what, filepath.Join(parent, mustReadlink(resolved)))
	case !fi.IsDir():
		return "", fmt.Errorf("cold: %s %s is not a directory: %w", what, dir, errdefs.ErrFailedPrecondition)
	}
	return resolved, nil
}

func mustReadlink(p string) string {
	t, err := os.Readlink(p)
	if err != nil {
		return p
	}
	return t
}

// isDisconnected reports the errors a dead FUSE mount answers with.
func isDisconnected(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ECONNABORTED)
}

func removeFiles(paths []string) {
	for _, p := range paths {
		_ = os.Remove(p)
	}
}

// bindSelf makes dir a mount point (a bind of itself, unless it already is
// one) and sets its propagation (unix.MS_SHARED or unix.MS_PRIVATE). It
// reports whether it made the bind.
func bindSelf(dir string, propagation uintptr) (bool, error) {
	mounts, err := readMountinfo()
	if err != nil {
		return false, err
	}
	created := false
	if len(stackAt(mounts, dir)) == 0 {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return false, fmt.Errorf("cold: bind %s onto itself: %w: %w", dir, err, errdefs.ErrUnavailable)
		}
		created = true
	}
	if err := unix.Mount("", dir, "", propagation, ""); err != nil {
		if created {
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
		return false, fmt.Errorf("cold: set propagation of %s: %w: %w", dir, err, errdefs.ErrUnavailable)
	}
	return created, nil
}

// ensureDir creates dir (not its parents) with mode, or accepts an existing
// directory or a dead FUSE mount on it.
func ensureDir(dir string, mode os.FileMode) error {
	err := os.Mkdir(dir, mode)
	if err == nil {
		return os.Chmod(dir, mode) // umask
	}
	if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cold: create %s: %w: %w", dir, err, errdefs.ErrUnavailable)
	}
	fi, err := os.Lstat(dir)
	switch {
	case isDisconnected(err):
		return nil
	case err != nil:
		return fmt.Errorf("cold: %w: %w", err, errdefs.ErrUnavailable)
	case !fi.IsDir():
		return fmt.Errorf("cold: %s is not a directory: %w", dir, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// mountedAt reports whether anything is mounted on path, an absolute path
// with no symlink in it (every path this package mounts on is resolved
// when made). It asks the kernel in one lookup rather than reading the
// mount table: with a warm pool the table holds several mounts per
// sandbox, and each claim checked its slot and its user's mount against
// a fresh read and parse of all of it (2026-12-02, a burst of 50 pooled
// claims: parsing mountinfo was 32 % of matrxd's CPU). Opening the last
// element with RESOLVE_NO_XDEV fails with EXDEV exactly when a mount sits
// on it; as an O_PATH open of a name in its parent it never calls into a
// FUSE daemon mounted there (a stat would), so a hung or dead daemon
// cannot stall it. Any other failure (no openat2, a dead mount's
// ENOTCONN, a missing parent) falls back to the table.
func mountedAt(path string) (bool, error) {
	if mounted, ok := mountedByLookup(path); ok {
		return mounted, nil
	}
	mounts, err := readMountinfo()
	if err != nil {
		return false, err
	}
	return len(stackAt(mounts, path)) > 0, nil
}

// mountedByLookup is mountedAt's one lookup; ok is false when it could not
// tell.
func mountedByLookup(path string) (mounted, ok bool) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
		return false, false
	}
	parent, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, false
	}
	defer unix.Close(parent)
	fd, err := unix.Openat2(parent, filepath.Base(path), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_SYMLINKS,
	})
	switch {
	case err == nil:
		unix.Close(fd)
		return false, true
	case errors.Is(err, unix.EXDEV):
		return true, true
	default:
		return false, false
	}
}
