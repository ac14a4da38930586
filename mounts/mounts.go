// Package mounts owns host-side storage that sandboxes see through bind
// mounts: the home directory today, S3 hot sync (mounts/hotsync) and FUSE
// cold mounts (mounts/cold) as they land. It prepares directories on the
// host; it never talks to containerd and never decides lifecycle.
package mounts

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// HomeDir returns (creating if needed) the per-user home directory under
// root, owned by uid:gid with mode 0755. Until S3 hot sync is wired in, this
// directory IS the user's hot storage: it persists across that user's
// sandboxes and is bind-mounted read-write at /home/agent.
func HomeDir(root, userID string, uid, gid int) (string, error) {
	dir, err := UserPath(root, userID)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return "", fmt.Errorf("create homes root: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return "", fmt.Errorf("create home for %q: %w", userID, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("stat home for %q: %w", userID, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("home for %q is not a directory: %w", userID, errdefs.ErrFailedPrecondition)
	}
	if err := os.Lchown(dir, uid, gid); err != nil {
		return "", fmt.Errorf("chown home for %q: %w", userID, err)
	}
	return dir, nil
}

// UserPath joins a user id onto root, refusing anything that is not a single
// plain path element (".", "..", separators, NUL, empty).
func UserPath(root, userID string) (string, error) {
	if userID == "" || userID == "." || userID == ".." || strings.ContainsAny(userID, "/\x00") || len(userID) > 255 {
		return "", fmt.Errorf("user id %q cannot name a directory: %w", userID, errdefs.ErrInvalidArgument)
	}
	p := filepath.Join(root, userID)
	if filepath.Dir(p) != filepath.Clean(root) {
		return "", fmt.Errorf("user id %q escapes %s: %w", userID, root, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// fsFree returns the size and the bytes available to unprivileged
// writers of the filesystem holding dir.
func fsFree(dir string) (total, free int64, ok bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, false
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize, true
}

// fileSpace returns a file's apparent size and the bytes it holds on disk.
func fileSpace(p string) (apparent, allocated int64, ok bool) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, 0, false
	}
	return st.Size, st.Blocks * 512, true
}
