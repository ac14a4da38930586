package hotsync

import (
	"os"
	"syscall"
	"time"

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

// setMtime sets the access and modification times of the open file f.
func setMtime(f *os.File, t time.Time) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	tv := unix.NsecToTimeval(t.UnixNano())
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Futimes(int(fd), []unix.Timeval{tv, tv}) }); err != nil {
		return err
	}
	return serr
}

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
