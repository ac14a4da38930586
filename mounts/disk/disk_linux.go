package disk

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/mounts/mountinfo"
	"golang.org/x/sys/unix"
)

// Make creates a sparse ext4 image of size bytes at img, owned (root
// directory) by uid:gid, and mounts it at dir.
func Make(img, dir string, size int64, uid, gid int) error {
	if err := Format(img, size, uid, gid); err != nil {
		return err
	}
	return Attach(img, dir)
}

// Format creates a sparse ext4 image of size bytes at img whose root
// directory is owned by uid:gid. Nothing is left at img on failure.
func Format(img string, size int64, uid, gid int) error {
	if size < MinSize {
		return fmt.Errorf("disk size %d is below 16 MiB: %w", size, errdefs.ErrInvalidArgument)
	}
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		os.Remove(img)
		return fmt.Errorf("size disk image: %w", err)
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0",
		"-E", fmt.Sprintf("lazy_itable_init=1,lazy_journal_init=1,root_owner=%d:%d", uid, gid), img).CombinedOutput()
	if err != nil {
		os.Remove(img)
		return fmt.Errorf("mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Attach mounts a freshly formatted image (from Format, or taken from a
// Pool) at dir for a new sandbox. The image holds no data yet, so it is
// removed if the mount fails.
func Attach(img, dir string) error {
	if err := Mount(img, dir); err != nil {
		os.Remove(img)
		return err
	}
	// lost+found would show up in the agent's home; fsck recreates it
	// when it needs one.
	os.Remove(filepath.Join(dir, "lost+found"))
	return nil
}

// Mount loop-mounts img at dir. mount(8) sets up the loop device with
// autoclear, so unmounting frees it.
func Mount(img, dir string) error {
	out, err := exec.Command("mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", img, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount disk image: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Unmount unmounts dir if something is mounted there, lazily if busy.
func Unmount(dir string) error {
	if !IsMounted(dir) {
		return nil
	}
	if err := unix.Unmount(dir, 0); err != nil {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return nil
}

// IsMounted reports whether dir is a mount point.
func IsMounted(dir string) bool { return mountinfo.IsMountpoint(dir) }
