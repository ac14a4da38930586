package mounts

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

// Disk limits: a sandbox's home is a sparse ext4 image on a loop device,
// sized to the sandbox's disk quota. Writing past it fails with ENOSPC
// inside the sandbox and touches nothing outside. Why a loop image and not
// XFS project quotas: it works on any host filesystem (the state dir is
// ext4 on Debian/Ubuntu/AL2023 by default), a sparse image costs only what
// is written, and mkfs of a 20 GiB sparse image takes ~20 ms.

// makeDisk creates a sparse ext4 image of size bytes at img, owned (root
// directory) by uid:gid, and mounts it at dir.
func makeDisk(img, dir string, size int64, uid, gid int) error {
	if size < 16<<20 {
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
	if err := mountDisk(img, dir); err != nil {
		os.Remove(img)
		return err
	}
	// lost+found would show up in the agent's home; fsck recreates it
	// when it needs one.
	os.Remove(filepath.Join(dir, "lost+found"))
	return nil
}

// mountDisk loop-mounts img at dir. mount(8) sets up the loop device with
// autoclear, so unmounting frees it.
func mountDisk(img, dir string) error {
	out, err := exec.Command("mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", img, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount disk image: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// unmountDisk unmounts dir if something is mounted there, lazily if busy.
func unmountDisk(dir string) error {
	if !isMountpoint(dir) {
		return nil
	}
	if err := unix.Unmount(dir, 0); err != nil {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return nil
}

// isMountpoint reports whether dir is a mount point.
func isMountpoint(dir string) bool { return mountinfo.IsMountpoint(dir) }
