package hotsync

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// identity returns the inode and the ctime of a file, which catch changes
// that keep size and mtime (touch -r, mv of another file into place).
func identity(fi os.FileInfo) (ino uint64, ctimeNs int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino, st.Ctim.Nano()
	}
	return 0, 0
}

// syncFS flushes the filesystem holding f, so that a manifest written after
// it never describes files that a host crash could lose.
func syncFS(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Syncfs(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// readFlags open a file for upload without blocking on FIFOs.
const readFlags = os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOFOLLOW

// space reports the filesystem holding dir: its size, the bytes available
// to writers, and its block size.
func space(dir string) (fsSpace, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fsSpace{}, false
	}
	return fsSpace{total: int64(st.Blocks) * st.Bsize, free: int64(st.Bavail) * st.Bsize, block: st.Bsize}, true
}

// usage is what a file really takes on disk.
type usage struct {
	allocated int64 // bytes of allocated blocks
	links     uint64
	ino       uint64
}

func diskUsage(fi os.FileInfo) (usage, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return usage{}, false
	}
	return usage{allocated: st.Blocks * 512, links: uint64(st.Nlink), ino: st.Ino}, true
}

// startWriteback asks the kernel to start writing f's dirty pages now,
// without waiting for them; a failure only means the final flush does it.
func startWriteback(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE) })
	}
}

// Sentinel xattrs. trusted.* is readable and writable only with
// CAP_SYS_ADMIN in the host's user namespace: no process in a sandbox,
// root included, can read, copy or forge it. user.* serves only where the
// caller is not root (development without privileges).
const (
	sentinelXattr     = "trusted.matrx.sentinel"
	sentinelUserXattr = "user.matrx.sentinel"
)

// WriteSentinel marks dir (the root of a sandbox's home) with token, so
// that Up can later verify that the directory it walks is this one and not
// an empty mount point, a removed image or another filesystem mounted in
// its place (Config.Sentinel).
func WriteSentinel(dir, token string) error {
	err := unix.Lsetxattr(dir, sentinelXattr, []byte(token), 0)
	if err != nil && os.Geteuid() != 0 {
		err = unix.Lsetxattr(dir, sentinelUserXattr, []byte(token), 0)
	}
	if err != nil {
		return fmt.Errorf("hotsync: write sentinel on %s: %w", dir, classify(err))
	}
	return nil
}

// readSentinel reads the sentinel of the open directory f ("" if none).
func readSentinel(f *os.File) string {
	buf := make([]byte, 256)
	for _, name := range []string{sentinelXattr, sentinelUserXattr} {
		var n int
		var xerr error
		rc, err := f.SyscallConn()
		if err != nil {
			return ""
		}
		if err := rc.Control(func(fd uintptr) { n, xerr = unix.Fgetxattr(int(fd), name, buf) }); err == nil && xerr == nil {
			return string(buf[:n])
		}
	}
	return ""
}

// devOf returns the device of an open file, or of a path (not followed).
func devOf(f *os.File, p string) (uint64, bool) {
	var st unix.Stat_t
	var err error
	if f != nil {
		err = unix.Fstat(int(f.Fd()), &st)
	} else {
		err = unix.Lstat(p, &st)
	}
	return st.Dev, err == nil
}

// setTimesAt sets the mtime (and atime) of name in the open directory
// parent, never following a symlink (a symlink's own times are set).
func setTimesAt(parent *os.File, name string, ns int64) error {
	ts := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	return unix.UtimesNanoAt(int(parent.Fd()), name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// setTimes sets the mtime (and atime) of the open file f.
func setTimes(f *os.File, ns int64) error {
	ts := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	return unix.UtimesNanoAt(int(f.Fd()), "", ts, unix.AT_EMPTY_PATH)
}

// dirFlags open a directory without following a symlink in its place.
const dirFlags = os.O_RDONLY | syscall.O_DIRECTORY | syscall.O_NOFOLLOW
