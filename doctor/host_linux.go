package doctor

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// diskSpace returns the bytes available to unprivileged users and the size
// of the filesystem holding path.
func diskSpace(path string) (avail, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// ownerGID returns the group owning a file.
func ownerGID(fi os.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Gid, true
}
