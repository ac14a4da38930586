package fshelper

import (
	"errors"

	"golang.org/x/sys/unix"
)

// maxWalkDepth bounds how deep a walk goes (each level holds a descriptor).
const maxWalkDepth = 256

// errStop ends a walk early without an error.
var errStop = errors.New("stop walking")

// node is one entry a walk visits: its path below the walk's root, the
// descriptor of its directory, its name there and its lstat.
type node struct {
	rel   string
	dirfd int
	name  string
	st    unix.Stat_t
}

func (n *node) isDir() bool { return n.st.Mode&unix.S_IFMT == unix.S_IFDIR }

// walkFunc is called for each node; returning descend for a directory
// walks into it (right after it: preorder). errStop ends the walk.
type walkFunc func(n *node) (descend bool, err error)

// walkDir visits every entry below the directory dirfd (not dirfd
// itself), depth first in directory order, with lstat: a symlink is
// visited, never followed, and a directory is entered by its name in its
// parent with O_NOFOLLOW, so swapping a directory for a symlink makes the
// walk skip it, not leave the tree. Entries that vanish are skipped.
func walkDir(dirfd int, rel string, depth int, fn walkFunc) error {
	if depth > maxWalkDepth {
		return nil
	}
	buf := make([]byte, 32<<10)
	var ents []dirent
	for {
		n, err := unix.Getdents(dirfd, buf)
		if err != nil {
			return pathErr("getdents", rel, err)
		}
		if n == 0 {
			return nil
		}
		ents = parseDirents(buf[:n], ents[:0])
		for _, e := range ents {
			if e.name == "." || e.name == ".." {
				continue
			}
			nd := node{rel: joinRel(rel, e.name), dirfd: dirfd, name: e.name}
			if rel == "" {
				nd.rel = e.name
			}
			if err := unix.Fstatat(dirfd, e.name, &nd.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue
			}
			descend, err := fn(&nd)
			if err != nil {
				return err
			}
			if !descend || !nd.isDir() {
				continue
			}
			sub, err := unix.Openat(dirfd, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				continue // gone, swapped for a symlink, or not ours to read
			}
			err = walkDir(sub, nd.rel, depth+1, fn)
			unix.Close(sub)
			if err != nil {
				return err
			}
		}
	}
}
