package fshelper

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// crossMove moves from to another filesystem, as mv(1) does: it copies
// into a temporary name beside to, renames that into place (so to is the
// old thing or the whole new one), then removes from. overwrite allows
// replacing a file, or an empty directory with a directory.
func crossMove(from, to string, overwrite bool) error {
	var src, dst unix.Stat_t
	if err := unix.Lstat(from, &src); err != nil {
		return pathErr("lstat", from, err)
	}
	srcDir := src.Mode&unix.S_IFMT == unix.S_IFDIR
	if unix.Lstat(to, &dst) == nil {
		dstDir := dst.Mode&unix.S_IFMT == unix.S_IFDIR
		var err error
		switch {
		case !overwrite:
			err = unix.EEXIST
		case dstDir && !srcDir:
			err = unix.EISDIR
		case !dstDir && srcDir:
			err = unix.ENOTDIR
		case dstDir:
			err = unix.Rmdir(to) // ENOTEMPTY: mv refuses too
		}
		if err != nil {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
		}
	}
	dir, _ := splitPath(to)
	tmp := joinRel(dir, tempName("move"))
	if err := copyTree(from, tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := unix.Rename(tmp, to); err != nil {
		os.RemoveAll(tmp)
		return &os.LinkError{Op: "rename", Old: tmp, New: to, Err: err}
	}
	return os.RemoveAll(from)
}

// copyTree copies src to dst (which must not exist) keeping modes, mtimes
// and symlinks (never followed); as root, owners too. FIFOs are made
// again; sockets are skipped; a device fails (no CAP_MKNOD).
func copyTree(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return pathErr("lstat", src, err)
	}
	mode := st.Mode & 0o7777
	times := []unix.Timespec{st.Atim, st.Mtim}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if err := copyFile(src, dst, mode); err != nil {
			return err
		}
	case unix.S_IFLNK:
		t, err := readlink(unix.AT_FDCWD, src)
		if err != nil {
			return pathErr("readlink", src, err)
		}
		if err := unix.Symlink(t, dst); err != nil {
			return pathErr("symlink", dst, err)
		}
	case unix.S_IFDIR:
		// Writable while it is filled; its own mode at the end.
		if err := unix.Mkdir(dst, 0o700); err != nil {
			return pathErr("mkdir", dst, err)
		}
		d, err := os.OpenFile(src, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		for {
			names, err := d.Readdirnames(1024)
			for _, n := range names {
				if cerr := copyTree(src+"/"+n, dst+"/"+n); cerr != nil {
					d.Close()
					return cerr
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				d.Close()
				return err
			}
		}
		d.Close()
		if err := unix.Chmod(dst, mode); err != nil {
			return pathErr("chmod", dst, err)
		}
	case unix.S_IFIFO:
		if err := unix.Mkfifo(dst, mode); err != nil {
			return pathErr("mkfifo", dst, err)
		}
	case unix.S_IFSOCK:
		return nil
	default:
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return pathErr("mknod", dst, err)
		}
	}
	if unix.Geteuid() == 0 {
		unix.Lchown(dst, int(st.Uid), int(st.Gid))
		if st.Mode&unix.S_IFMT != unix.S_IFLNK && mode&0o6000 != 0 {
			unix.Chmod(dst, mode) // chown cleared setuid/setgid
		}
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathErr("utimes", dst, err)
	}
	return nil
}

// copyFile copies one regular file; src is opened without following a
// symlink and checked to be a regular file on the descriptor itself.
func copyFile(src, dst string, mode uint32) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil || !fi.Mode().IsRegular() {
		return pathErr("open", src, unix.EINVAL)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, os.FileMode(mode&0o777))
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return pathErr("chmod", dst, unix.Chmod(dst, mode))
}
