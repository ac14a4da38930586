package fshelper

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"strings"

	"golang.org/x/sys/unix"
)

// Bounds of list.
const (
	DefaultListLimit = 1000
	MaxListLimit     = 10000
	MaxListDepth     = 32
)

// dirent is one record of getdents64.
type dirent struct {
	name string
	off  int64 // where the next record starts: resume here to skip this one
	typ  uint8
}

// parseDirents decodes getdents64 records (linux_dirent64: ino u64, off
// s64, reclen u16, type u8, name NUL-terminated).
func parseDirents(buf []byte, out []dirent) []dirent {
	for len(buf) >= 19 {
		reclen := int(binary.NativeEndian.Uint16(buf[16:18]))
		if reclen < 19 || reclen > len(buf) {
			break
		}
		off := int64(binary.NativeEndian.Uint64(buf[8:16]))
		name := buf[19:reclen]
		if i := strings.IndexByte(string(name), 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, dirent{name: string(name), off: off, typ: buf[18]})
		buf = buf[reclen:]
	}
	return out
}

// listFrame is one open directory of a list walk. A cursor is the stack of
// frames: each directory's path below the listed one and the getdents
// offset to resume at (the position before the next entry to report).
type listFrame struct {
	Rel string `json:"p"`
	Off int64  `json:"o"`
	fd  int
}

func encodeCursor(stack []listFrame) string {
	b, _ := json.Marshal(stack)
	return base64.RawURLEncoding.EncodeToString(b)
}

var errBadCursor = errorf(CodeInvalid, "cursor is not one a list of this path handed out")

// openRel opens a directory below root by plain names, never following a
// symlink.
func openRel(root int, rel string) (int, error) {
	elems, ok := cleanRel(rel)
	if !ok {
		return -1, errBadCursor
	}
	fd, err := unix.Openat(root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, e := range elems {
		next, err := unix.Openat(fd, e, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// list reports the entries of a directory (lstat: symlinks are reported,
// never followed), depth levels deep, in directory order, at most limit of
// them; a truncated answer carries a cursor to continue from.
func (h *helper) list() error {
	p := h.req.Path
	depth, limit := h.req.Depth, h.req.Limit
	if depth <= 0 {
		depth = 1
	}
	if limit <= 0 || limit > MaxListLimit {
		limit = DefaultListLimit
	}
	depth = min(depth, MaxListDepth)
	rootfd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(rootfd)
	var stack []listFrame
	defer func() {
		for _, f := range stack {
			unix.Close(f.fd)
		}
	}()
	if h.req.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(h.req.Cursor)
		var frames []listFrame
		if err != nil || json.Unmarshal(b, &frames) != nil || len(frames) == 0 || len(frames) > depth {
			return errBadCursor
		}
		for _, f := range frames {
			fd, err := openRel(rootfd, f.Rel)
			if err != nil {
				if err == errBadCursor {
					return err
				}
				break // that directory is gone: continue with its parents
			}
			stack = append(stack, listFrame{Rel: f.Rel, Off: f.Off, fd: fd})
		}
	} else {
		fd, err := unix.Dup(rootfd)
		if err != nil {
			return err
		}
		stack = append(stack, listFrame{fd: fd})
	}
	buf := make([]byte, 64<<10)
	var ents []dirent
	count := 0
	for len(stack) > 0 {
		top := len(stack) - 1
		f := &stack[top]
		if _, err := unix.Seek(f.fd, f.Off, 0); err != nil {
			return pathErr("seek", joinRel(p, f.Rel), err)
		}
		n, err := unix.Getdents(f.fd, buf)
		if err != nil {
			return pathErr("getdents", joinRel(p, f.Rel), err)
		}
		if n == 0 {
			unix.Close(f.fd)
			stack = stack[:top]
			continue
		}
		ents = parseDirents(buf[:n], ents[:0])
		for _, e := range ents {
			if e.name == "." || e.name == ".." {
				f.Off = e.off
				continue
			}
			if count == limit {
				return h.out.JSON(KindResult, Result{Truncated: true, Cursor: encodeCursor(stack), Count: int64(count)})
			}
			var st unix.Stat_t
			if err := unix.Fstatat(f.fd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				f.Off = e.off // removed meanwhile
				continue
			}
			rel := joinRel(f.Rel, e.name)
			if f.Rel == "" {
				rel = e.name
			}
			info := infoOf(joinRel(p, rel), &st)
			if info.Type == TypeSymlink {
				info.SymlinkTarget, _ = readlink(f.fd, e.name)
			}
			if err := h.out.JSON(KindEntry, info); err != nil {
				return err
			}
			count++
			f.Off = e.off
			if info.Type == TypeDir && len(stack) < depth {
				fd, err := unix.Openat(f.fd, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err == nil {
					// Its entries come next; this directory resumes
					// at f.Off afterwards.
					stack = append(stack, listFrame{Rel: rel, fd: fd})
					break
				}
			}
		}
	}
	return h.out.JSON(KindResult, Result{Count: int64(count)})
}
