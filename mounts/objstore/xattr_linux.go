package objstore

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

func getXattr(f *os.File, name string) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 128)
	for {
		var n int
		var xerr error
		if err := rc.Control(func(fd uintptr) { n, xerr = unix.Fgetxattr(int(fd), name, buf) }); err != nil {
			return nil, err
		}
		if errors.Is(xerr, unix.ERANGE) && len(buf) < 64<<10 {
			buf = make([]byte, 4*len(buf))
			continue
		}
		if xerr != nil {
			return nil, xerr
		}
		return buf[:n], nil
	}
}

func setXattr(f *os.File, name string, value []byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var xerr error
	if err := rc.Control(func(fd uintptr) { xerr = unix.Fsetxattr(int(fd), name, value, 0) }); err != nil {
		return err
	}
	return xerr
}

// fileID returns the inode number, part of the ETag cache stamp.
func fileID(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

func removeXattr(fd int, name string) error { return unix.Fremovexattr(fd, name) }
