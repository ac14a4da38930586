package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// fileStat is the part of stat(2) the layer records.
type fileStat struct {
	uid, gid uint32
	perm     uint32 // permission bits plus setuid, setgid, sticky
	dev, ino uint64
	nlink    uint64
}

func statOf(fi os.FileInfo) (fileStat, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStat{}, fmt.Errorf("no stat data for %s", fi.Name())
	}
	return fileStat{
		uid:   st.Uid,
		gid:   st.Gid,
		perm:  st.Mode & 0o7777,
		dev:   uint64(st.Dev),
		ino:   st.Ino,
		nlink: uint64(st.Nlink),
	}, nil
}

// readXattrs returns the extended attributes of path (not following
// symlinks) that are carried into the layer. File capabilities are the only
// ones Debian packages rely on; SELinux labels, ACLs and trusted.* belong to
// the host, not the image.
func readXattrs(path string) (map[string]string, error) {
	var out map[string]string
	for _, name := range [...]string{"security.capability"} {
		val, err := lgetxattr(path, name)
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		if val == nil {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(val)
	}
	return out, nil
}

// lgetxattr returns nil, nil when the attribute is absent or the file
// system does not support extended attributes.
func lgetxattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := lgetxattrRaw(path, name, buf)
		switch {
		case err == nil:
			return buf[:n], nil
		case errors.Is(err, syscall.ENODATA), errors.Is(err, syscall.ENOTSUP):
			return nil, nil
		case errors.Is(err, syscall.ERANGE) && len(buf) < 1<<16:
			buf = make([]byte, 2*len(buf))
		default:
			return nil, err
		}
	}
}

// lgetxattrRaw is lgetxattr(2); package syscall has only the link-following
// getxattr.
func lgetxattrRaw(path, name string, buf []byte) (int, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	n, err := syscall.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	r, _, errno := syscall.Syscall6(syscall.SYS_LGETXATTR,
		uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(n)),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}
