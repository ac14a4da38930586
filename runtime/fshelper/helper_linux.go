package fshelper

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Main is `matrx-init fs`: it serves the one request that comes on stdin,
// answers on stdout, and returns the exit code. Failures of the operation
// are answers (an error frame), not exit codes; only a broken protocol
// exits non-zero.
func Main(args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(os.Stderr, "usage: matrx-init fs (the request comes on stdin, framed; see package fshelper)")
		return 2
	}
	// Modes are exactly what was asked for (the API says which).
	unix.Umask(0)
	// A bigger stdout pipe: fewer wake-ups per MiB sent (best effort).
	unix.FcntlInt(1, unix.F_SETPIPE_SZ, 1<<20)
	in := NewReader(os.Stdin, KindRequest, KindData, KindEnd)
	out := NewWriter(os.Stdout)
	kind, err := in.Next()
	if err != nil || kind != KindRequest {
		fmt.Fprintf(os.Stderr, "matrx-init fs: no request on stdin: %v\n", err)
		return 2
	}
	var req Request
	if err := in.Decode(&req); err != nil {
		fmt.Fprintf(os.Stderr, "matrx-init fs: %v\n", err)
		return 2
	}
	h := &helper{in: in, out: out, req: req}
	if err := h.serve(); err != nil {
		out.JSON(KindError, asError(err))
	}
	if err := out.Flush(); err != nil {
		return 1
	}
	return 0
}

// helper serves one request.
type helper struct {
	in  *Reader
	out *Writer
	req Request
}

func (h *helper) serve() error {
	if err := checkPath("path", h.req.Path); err != nil {
		return err
	}
	switch h.req.Op {
	case OpRead:
		return h.read()
	case OpReadTar:
		return h.readTar()
	case OpWrite:
		return h.write()
	case OpWriteTar:
		return h.writeTar()
	case OpStat:
		return h.stat()
	case OpList:
		return h.list()
	case OpMkdir:
		return h.mkdir()
	case OpMove:
		if err := checkPath("to", h.req.To); err != nil {
			return err
		}
		return h.move()
	case OpRemove:
		return h.remove()
	case OpWatch:
		return h.watch()
	case OpFind:
		return h.find()
	case OpGrep:
		return h.grep()
	default:
		return errorf(CodeInvalid, "unknown operation %q", h.req.Op)
	}
}

// checkPath is the helper's own check of what the daemon validated.
func checkPath(field, p string) error {
	if !strings.HasPrefix(p, "/") || strings.IndexByte(p, 0) >= 0 || len(p) > MaxPath {
		return errorf(CodeInvalid, "%s %q must be an absolute path without NUL", field, p)
	}
	return nil
}

// asError turns an operation's failure into its error frame.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	out := &Error{Message: err.Error()}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		out.Errno = int(errno)
	}
	return out
}

// pathErr wraps an errno with the operation and the path, as os does.
func pathErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: op, Path: p, Err: err}
}

// --- stat --------------------------------------------------------------

func typeOf(mode uint32) (string, string) {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return TypeFile, ""
	case unix.S_IFDIR:
		return TypeDir, ""
	case unix.S_IFLNK:
		return TypeSymlink, ""
	case unix.S_IFIFO:
		return TypeOther, "fifo"
	case unix.S_IFSOCK:
		return TypeOther, "socket"
	case unix.S_IFCHR:
		return TypeOther, "char_device"
	case unix.S_IFBLK:
		return TypeOther, "block_device"
	}
	return TypeOther, ""
}

func infoOf(p string, st *unix.Stat_t) Info {
	t, k := typeOf(st.Mode)
	return Info{
		Name: baseName(p), Path: p, Type: t, Kind: k, Size: st.Size,
		Mode: st.Mode & 0o7777, MtimeNS: st.Mtim.Nano(), UID: st.Uid, GID: st.Gid,
	}
}

// baseName is the last element of p, for display ("/" for the root).
func baseName(p string) string {
	p = strings.TrimRight(p, "/")
	if p == "" {
		return "/"
	}
	return p[strings.LastIndexByte(p, '/')+1:]
}

// lstatInfo describes p without following a final symlink.
func lstatInfo(p string) (Info, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return Info{}, pathErr("lstat", p, err)
	}
	info := infoOf(p, &st)
	if info.Type == TypeSymlink {
		info.SymlinkTarget, _ = readlink(unix.AT_FDCWD, p)
	}
	return info, nil
}

func readlink(dirfd int, name string) (string, error) {
	buf := make([]byte, MaxPath)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func (h *helper) stat() error {
	info, err := lstatInfo(h.req.Path)
	if err != nil {
		return err
	}
	return h.out.JSON(KindResult, Result{Info: &info})
}

// --- read --------------------------------------------------------------

// read streams a regular file. It opens with O_NONBLOCK (a FIFO's open
// does not wait for a writer) and O_NOCTTY, and fstats the descriptor it
// holds before reading anything: what is checked is what is read.
func (h *helper) read() error {
	p := h.req.Path
	fd, st, info, err := openForReading(p, "a regular file")
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	switch {
	case info.Type == TypeDir:
		return errorf(CodeIsDir, "%s is a directory", p)
	case info.Type != TypeFile:
		return errorf(CodeNotRegular, "%s is a %s, not a regular file", p, strings.ReplaceAll(info.Kind, "_", " "))
	}
	if st.Size == 0 {
		return h.readPseudo(fd, info)
	}
	off, n, rerr := resolveRange(h.req.Range, st.Size)
	if rerr != nil {
		return rerr
	}
	if err := h.out.JSON(KindHeader, Header{Info: info, Offset: off, Length: n}); err != nil {
		return err
	}
	if err := h.copyOut(fd, p, off, n); err != nil {
		return err
	}
	return h.out.JSON(KindResult, Result{})
}

// openForReading opens p to read it without blocking or taking a terminal
// (O_NONBLOCK: a FIFO's open does not wait for a writer; O_NOCTTY) and
// fstats the descriptor it holds: what is checked is what is read. want
// names what the caller reads, for the error about a socket or a device
// with nothing behind it (ENXIO).
func openForReading(p, want string) (int, unix.Stat_t, Info, error) {
	var st unix.Stat_t
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENXIO {
			return -1, st, Info{}, errorf(CodeNotRegular, "%s is not %s", p, want)
		}
		return -1, st, Info{}, pathErr("open", p, err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, Info{}, pathErr("fstat", p, err)
	}
	return fd, st, infoOf(p, &st), nil
}

// maxPseudo bounds what is read of a file that reports size 0 (/proc and
// /sys files have content but no size).
const maxPseudo = 1 << 20

// readPseudo reads a file that reports size 0 to its end (up to
// maxPseudo), so that its real length can be announced.
func (h *helper) readPseudo(fd int, info Info) error {
	buf := make([]byte, maxPseudo+1)
	n := 0
	for n < len(buf) {
		c, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return pathErr("read", info.Path, err)
		}
		if c == 0 {
			break
		}
		n += c
	}
	if n > maxPseudo {
		return errorf(CodeChanged, "%s reports size 0 but holds more than %d bytes", info.Path, maxPseudo)
	}
	info.Size = int64(n)
	off, length, err := resolveRange(h.req.Range, int64(n))
	if err != nil {
		return err
	}
	if err := h.out.JSON(KindHeader, Header{Info: info, Offset: off, Length: length}); err != nil {
		return err
	}
	if _, err := h.out.Write(buf[off : off+length]); err != nil {
		return err
	}
	return h.out.JSON(KindResult, Result{})
}

// copyOut sends exactly n bytes of fd from off as data frames.
func (h *helper) copyOut(fd int, p string, off, n int64) error {
	buf := make([]byte, MaxData)
	dataEnd := off // bytes before dataEnd are known to be data
	for n > 0 {
		if off >= dataEnd {
			// Where the next data is, and where it ends: what lies
			// between is a hole, sent as its length (a 10 GB sparse file
			// costs a few frames, not 10 GB through the pipe).
			data, hole, ok := nextData(fd, off)
			switch {
			case !ok: // no SEEK_DATA here: all data
				dataEnd = off + n
			case data > off:
				z := min(data-off, n)
				if err := h.out.Hole(z); err != nil {
					return err
				}
				off += z
				n -= z
				continue
			default:
				dataEnd = hole
			}
		}
		c, err := unix.Pread(fd, buf[:min(int64(len(buf)), n, max(dataEnd-off, 1))], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return pathErr("read", p, err)
		}
		if c == 0 {
			return errorf(CodeChanged, "%s shrank while it was read", p)
		}
		if _, err := h.out.Write(buf[:c]); err != nil {
			return err
		}
		off += int64(c)
		n -= int64(c)
	}
	return nil
}

// nextData returns where the data at or after off starts and where the
// hole after it starts (SEEK_DATA, SEEK_HOLE); past the last data, data is
// the end of the file. ok is false where the file system cannot say.
func nextData(fd int, off int64) (data, hole int64, ok bool) {
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if err == unix.ENXIO { // only a hole up to the end
		end, serr := unix.Seek(fd, 0, io.SeekEnd)
		if serr != nil {
			return 0, 0, false
		}
		return end, end, true
	}
	if err != nil {
		return 0, 0, false
	}
	hole, err = unix.Seek(fd, data, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, false
	}
	return data, hole, true
}

// resolveRange turns an HTTP byte range into an offset and a length.
func resolveRange(r *Range, size int64) (int64, int64, error) {
	if r == nil {
		return 0, size, nil
	}
	if r.Suffix > 0 {
		n := min(r.Suffix, size)
		return size - n, n, nil
	}
	if r.Start < 0 || r.Start >= size || (r.End >= 0 && r.End < r.Start) {
		return 0, 0, &Error{Code: CodeRange, Size: size, Message: fmt.Sprintf("range starts at %d, the file has %d bytes", r.Start, size)}
	}
	end := size - 1
	if r.End >= 0 && r.End < end {
		end = r.End
	}
	return r.Start, end - r.Start + 1, nil
}

// --- write -------------------------------------------------------------

// maxLinks bounds how many symlinks a write follows to find its target
// (the kernel's own limit).
const maxLinks = 40

// resolveTarget follows symlinks in the last element of p, as open(2)
// would for O_CREAT: a write to a symlink writes its target. Each readlink
// is the sandbox's own; a relative target is taken from the link's
// directory. Directories in the path are left to the kernel.
func resolveTarget(p string) (string, error) {
	for i := 0; i < maxLinks; i++ {
		var st unix.Stat_t
		err := unix.Lstat(p, &st)
		if err == unix.ENOENT {
			return p, nil
		}
		if err != nil {
			return "", pathErr("lstat", p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return p, nil
		}
		t, err := readlink(unix.AT_FDCWD, p)
		if err != nil {
			return "", pathErr("readlink", p, err)
		}
		if t == "" {
			return "", pathErr("readlink", p, unix.ENOENT)
		}
		if !strings.HasPrefix(t, "/") {
			dir, _ := splitPath(p)
			t = dir + "/" + t
		}
		p = t
	}
	return "", pathErr("open", p, unix.ELOOP)
}

// splitPath splits p at its last slash, without cleaning anything: the
// kernel resolves "..", not us.
func splitPath(p string) (dir, base string) {
	p = strings.TrimRight(p, "/")
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ".", p
	}
	dir, base = p[:i], p[i+1:]
	if dir == "" {
		dir = "/"
	}
	return dir, base
}

// tempName is a fresh name for a file that is renamed into place.
func tempName(what string) string {
	var b [8]byte
	rand.Read(b[:])
	return ".matrx-" + what + "-" + hex.EncodeToString(b[:])
}

// mkdirAll makes p and its missing parents (like mkdir -p): missing
// directories get mode; an existing one (a symlink to one included) is
// fine; anything else in the way is ENOTDIR. It reports whether p itself
// was made.
func mkdirAll(p string, mode uint32) (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return false, pathErr("mkdir", p, unix.ENOTDIR)
		}
		return false, nil
	}
	if dir, _ := splitPath(p); dir != p && dir != "/" && dir != "." {
		if _, err := mkdirAll(dir, 0o755); err != nil {
			return false, err
		}
	}
	if err := unix.Mkdir(p, mode); err != nil {
		if err == unix.EEXIST {
			if serr := unix.Stat(p, &st); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
				return false, nil
			}
		}
		return false, pathErr("mkdir", p, err)
	}
	return true, nil
}

// write stores the body at the path: into a temp file in the target's
// directory, renamed over the target once the body is complete, so
// readers in the sandbox see the old file or the new one, never half.
func (h *helper) write() error {
	target, err := resolveTarget(h.req.Path)
	if err != nil {
		return err
	}
	dir, base := splitPath(target)
	if base == "" || base == "." || base == ".." {
		return errorf(CodeInvalid, "path %q does not name a file", h.req.Path)
	}
	if h.req.Parents {
		if _, err := mkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pathErr("open", dir, err)
	}
	defer unix.Close(dfd)
	var old unix.Stat_t
	exists := unix.Fstatat(dfd, base, &old, unix.AT_SYMLINK_NOFOLLOW) == nil
	if exists && old.Mode&unix.S_IFMT == unix.S_IFDIR {
		return pathErr("write", target, unix.EISDIR)
	}
	mode := uint32(0o644)
	switch {
	case h.req.HasMode:
		mode = h.req.Mode & 0o1777
	case exists && old.Mode&unix.S_IFMT == unix.S_IFREG:
		mode = old.Mode & 0o777
	}
	tmp := tempName("upload")
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return pathErr("create", dir+"/"+tmp, err)
	}
	committed := false
	defer func() {
		if !committed {
			unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	body := &bodyReader{in: h.in}
	werr := copyBody(fdWriter{fd: fd, path: target}, body)
	cerr := unix.Close(fd) // FUSE and network filesystems report here
	if werr != nil {
		return werr
	}
	if cerr != nil {
		return pathErr("close", target, cerr)
	}
	if err := unix.Fchmodat(dfd, tmp, mode, 0); err != nil {
		return pathErr("chmod", target, err)
	}
	if err := unix.Renameat(dfd, tmp, dfd, base); err != nil {
		return pathErr("rename", target, err)
	}
	committed = true
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathErr("stat", target, err)
	}
	info := infoOf(target, &st)
	return h.out.JSON(KindResult, Result{Created: !exists, Info: &info})
}

// copyBody copies the whole upload body to w; a body that ends without
// its end frame is CodeAborted.
func copyBody(w io.Writer, body *bodyReader) error {
	buf := make([]byte, 256<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// fdWriter writes to a raw descriptor, retrying short writes.
type fdWriter struct {
	fd   int
	path string
}

func (w fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c, err := unix.Write(w.fd, p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, pathErr("write", w.path, err)
		}
		n += c
	}
	return n, nil
}

// bodyReader reads an upload's body: data frames up to the end frame.
// It reports io.EOF only after the end frame; a stream that stops before
// it is CodeAborted.
type bodyReader struct {
	in      *Reader
	inFrame bool
	done    bool
	err     error
}

var errAborted = errorf(CodeAborted, "the upload ended before its body was complete; nothing was written")

func (b *bodyReader) Read(p []byte) (int, error) {
	for {
		switch {
		case b.done:
			return 0, io.EOF
		case b.err != nil:
			return 0, b.err
		case !b.inFrame:
			k, err := b.in.Next()
			switch {
			case err != nil:
				b.err = errAborted
			case k == KindData:
				b.inFrame = true
			case k == KindEnd:
				b.done = true
			default:
				b.err = errorf(CodeInvalid, "unexpected %q frame in an upload body", k)
			}
			continue
		}
		n, err := b.in.Read(p)
		if n > 0 {
			return n, nil
		}
		if err == io.EOF {
			b.inFrame = false
			continue
		}
		if err != nil {
			b.err = errAborted
		}
	}
}

// --- mkdir, move, remove -----------------------------------------------

func (h *helper) mkdir() error {
	p := h.req.Path
	mode := uint32(0o755)
	if h.req.HasMode {
		mode = h.req.Mode & 0o1777
	}
	created := true
	if h.req.Parents {
		var err error
		if created, err = mkdirAll(p, mode); err != nil {
			return err
		}
	} else if err := unix.Mkdir(p, mode); err != nil {
		return pathErr("mkdir", p, err)
	}
	info, err := lstatInfo(p)
	if err != nil {
		return err
	}
	return h.out.JSON(KindResult, Result{Created: created, Info: &info})
}

// move renames From to To; across filesystems (EXDEV) it copies, then
// removes the source, as mv(1) does.
func (h *helper) move() error {
	from, to := h.req.Path, h.req.To
	var st unix.Stat_t
	existed := unix.Lstat(to, &st) == nil
	flags := uint(unix.RENAME_NOREPLACE)
	if h.req.Overwrite {
		flags = 0
	}
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, flags)
	if err == unix.EINVAL && flags != 0 {
		// The filesystem cannot refuse to replace by itself (FUSE, say).
		if existed {
			err = unix.EEXIST
		} else {
			err = unix.Rename(from, to)
		}
	}
	if err == unix.EXDEV {
		err = crossMove(from, to, h.req.Overwrite)
	} else if err != nil {
		err = &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	if err != nil {
		return err
	}
	info, err := lstatInfo(to)
	if err != nil {
		return err
	}
	return h.out.JSON(KindResult, Result{Created: !existed, Info: &info})
}

func (h *helper) remove() error {
	p := h.req.Path
	if strings.Trim(p, "/") == "" {
		return errorf(CodeInvalid, "refusing to remove /")
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return pathErr("lstat", p, err)
	}
	var err error
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		err = pathErr("unlink", p, unix.Unlink(p))
	case h.req.Recursive:
		// os.RemoveAll walks with openat and O_NOFOLLOW: a symlink in the
		// tree is removed, never followed.
		err = os.RemoveAll(p)
	default:
		err = pathErr("rmdir", p, unix.Rmdir(p))
	}
	if err != nil {
		return err
	}
	return h.out.JSON(KindResult, Result{})
}

// joinRel joins a path and a relative name for reporting.
func joinRel(base, rel string) string {
	if rel == "" {
		return base
	}
	if strings.HasSuffix(base, "/") {
		return base + rel
	}
	return base + "/" + rel
}

// cleanRel validates a relative path of plain names (tar entries, cursor
// frames) and returns its elements. Leading "./" and trailing "/" are
// dropped; "..", absolute names and empty names are refused.
func cleanRel(name string) ([]string, bool) {
	if strings.HasPrefix(name, "/") || strings.IndexByte(name, 0) >= 0 {
		return nil, false
	}
	var out []string
	for _, e := range strings.Split(name, "/") {
		switch e {
		case "", ".":
			continue
		case "..":
			return nil, false
		}
		out = append(out, e)
	}
	return out, true
}
