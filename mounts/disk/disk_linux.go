package disk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Make creates a sparse ext4 image of size bytes with inodes inodes (0:
// mkfs's default) at img, owned (root directory) by uid:gid, and mounts it
// at dir.
func Make(img, dir string, size int64, uid, gid, inodes int) error {
	if err := Format(img, size, uid, gid, inodes); err != nil {
		return err
	}
	return Attach(img, dir)
}

// Format creates a sparse ext4 image of size bytes at img whose root
// directory is owned by uid:gid, with inodes inodes (0: mkfs's default of
// one per 16 KiB; see Inodes). Nothing is left at img on failure.
func Format(img string, size int64, uid, gid, inodes int) error {
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
	// No resize_inode (see the package doc: "What mkfs writes").
	args := []string{"-q", "-F", "-m", "0", "-O", "^resize_inode",
		"-E", fmt.Sprintf("lazy_itable_init=1,lazy_journal_init=1,root_owner=%d:%d", uid, gid)}
	if inodes > 0 {
		args = append(args, "-N", fmt.Sprint(inodes))
	}
	out, err := exec.Command("mkfs.ext4", append(args, img)...).CombinedOutput()
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

// Mount loop-mounts img at dir (nosuid, nodev, noatime). The loop device
// is set up here with LOOP_CONFIGURE rather than by mount(8), for two
// flags: autoclear (unmounting frees the device) and direct I/O (the
// sandbox's files are cached once, in its own filesystem, not a second
// time as pages of the image file, and a flush reaches the disk instead of
// the host's page cache). Kernels without LOOP_CONFIGURE (before 5.8) get
// mount(8) and a buffered loop device.
func Mount(img, dir string) error {
	dev, err := attachLoop(img)
	if errors.Is(err, errNoLoopConfigure) {
		return mountCmd(img, dir)
	}
	if err != nil {
		return err
	}
	// With autoclear the device detaches on its last close: ours, right
	// after mount(2) took its own reference, or the unmount.
	defer dev.Close()
	if err := unix.Mount(dev.Name(), dir, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount disk image %s (%s): %w", img, dev.Name(), err)
	}
	return nil
}

var errNoLoopConfigure = errors.New("LOOP_CONFIGURE not supported")

// attachLoop binds img to a free loop device and returns the device, open.
//
// Why not containerd's core/mount.SetupLoop: it binds with LOOP_SET_FD and
// sets the flags afterwards with LOOP_SET_STATUS64, two ioctls; between
// them a crash leaves a bound device without autoclear (it would stay
// bound forever), and direct I/O set that way needs a second status call
// that can fail after the bind. LOOP_CONFIGURE does both in one atomic
// ioctl, so a device is either fully configured or not ours.
func attachLoop(img string) (*os.File, error) {
	backing, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk image: %w", err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	for range 16 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img) // what losetup -l shows
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		switch {
		case err == nil:
			return dev, nil
		case errors.Is(err, unix.EBUSY): // someone else took it first
			dev.Close()
		case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EINVAL):
			dev.Close()
			return nil, errNoLoopConfigure
		default:
			dev.Close()
			return nil, fmt.Errorf("configure %s for %s: %w", path, img, err)
		}
	}
	return nil, fmt.Errorf("no free loop device after 16 tries: %w", errdefs.ErrUnavailable)
}

// mountCmd is Mount through mount(8), which sets up the loop device with
// autoclear.
func mountCmd(img, dir string) error {
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
func IsMounted(dir string) bool {
	ok, err := mountinfo.Mounted(dir)
	return ok && err == nil
}
