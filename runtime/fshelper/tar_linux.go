package fshelper

import (
	"archive/tar"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MaxTarEntries bounds the entries one tar upload may hold.
const MaxTarEntries = 1_000_000

// --- tar out -------------------------------------------------------------

// tarOut writes a tree as a PAX tar (nanosecond mtimes), entries relative
// to the tree's root. Symlinks are stored, never followed; hard links
// within the tree are stored once; special files, unreadable entries and
// other filesystems' contents (as tar --one-file-system) are skipped and
// counted.
type tarOut struct {
	tw      *tar.Writer
	dev     uint64
	links   map[[2]uint64]string
	buf     []byte
	count   int64
	skipped int64
}

func (h *helper) readTar() error {
	p := h.req.Path
	fd, st, info, err := openForReading(p, "a regular file or a directory")
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if info.Type != TypeFile && info.Type != TypeDir {
		return errorf(CodeNotRegular, "%s is a %s, not a regular file or a directory", p, strings.ReplaceAll(info.Kind, "_", " "))
	}
	if err := h.out.JSON(KindHeader, Header{Info: info, Length: -1}); err != nil {
		return err
	}
	t := &tarOut{tw: tar.NewWriter(h.out), dev: st.Dev, links: map[[2]uint64]string{}, buf: make([]byte, MaxData)}
	if info.Type == TypeFile {
		err = t.file(fd, baseName(p), &st)
	} else {
		err = walkDir(fd, "", 0, t.visit)
	}
	if err != nil {
		return err
	}
	if err := t.tw.Close(); err != nil {
		return err
	}
	return h.out.JSON(KindResult, Result{Count: t.count, Skipped: t.skipped})
}

func tarHeader(name string, st *unix.Stat_t) *tar.Header {
	return &tar.Header{
		Name: name, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid),
		ModTime: time.Unix(0, st.Mtim.Nano()), Format: tar.FormatPAX,
	}
}

func (t *tarOut) visit(n *node) (bool, error) {
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr := tarHeader(n.rel+"/", &n.st)
		hdr.Typeflag = tar.TypeDir
		if err := t.tw.WriteHeader(hdr); err != nil {
			return false, err
		}
		t.count++
		return n.st.Dev == t.dev, nil
	case unix.S_IFLNK:
		target, err := readlink(n.dirfd, n.name)
		if err != nil {
			t.skipped++
			return false, nil
		}
		hdr := tarHeader(n.rel, &n.st)
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		t.count++
		return false, t.tw.WriteHeader(hdr)
	case unix.S_IFREG:
		fd, err := unix.Openat(n.dirfd, n.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.skipped++
			return false, nil
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Ino != n.st.Ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
			t.skipped++ // swapped since it was listed
			return false, nil
		}
		return false, t.file(fd, n.rel, &st)
	default:
		t.skipped++
		return false, nil
	}
}

// file writes one regular file: exactly the size its header says (a file
// that shrinks is padded with zeros, one that grows is cut, as tar does).
func (t *tarOut) file(fd int, name string, st *unix.Stat_t) error {
	hdr := tarHeader(name, st)
	key := [2]uint64{st.Dev, st.Ino}
	if st.Nlink > 1 {
		if first, ok := t.links[key]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			t.count++
			return t.tw.WriteHeader(hdr)
		}
		t.links[key] = name
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	if err := t.tw.WriteHeader(hdr); err != nil {
		return err
	}
	t.count++
	var off int64
	for off < st.Size {
		c, err := unix.Pread(fd, t.buf[:min(int64(len(t.buf)), st.Size-off)], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil || c == 0 {
			clear(t.buf)
			for off < st.Size {
				z := min(int64(len(t.buf)), st.Size-off)
				if _, err := t.tw.Write(t.buf[:z]); err != nil {
					return err
				}
				off += z
			}
			return nil
		}
		if _, err := t.tw.Write(t.buf[:c]); err != nil {
			return err
		}
		off += int64(c)
	}
	return nil
}

// --- tar in --------------------------------------------------------------

// tarIn unpacks a tar into a directory, all or nothing as far as it can:
// files and symlinks are written under temporary names and renamed into
// place only once the whole archive has been read and checked; on any
// failure the temporary names and the directories it made are removed.
//
// It refuses, naming the entry: absolute names and names with "..";
// entries whose path goes through a symlink (already on disk, or made by
// this archive: the "symlink, then write through it" trick) or through a
// file; hard links to anything but a regular file earlier in the same
// archive; devices, FIFOs and other special entries; more than MaxBytes of
// content (sparse holes counted) or MaxTarEntries entries. Modes keep
// their permission and sticky bits, never setuid or setgid; owners are
// the requesting user's (the helper runs as that user).
type tarIn struct {
	root    int // the target directory (O_PATH)
	rootP   string
	pending map[string]*pendingEntry
	order   []*pendingEntry
	dirs    map[string]dirMeta
	made    []string // directories this upload made, in order
}

type pendingEntry struct {
	rel     string
	parent  []string
	base    string
	tmp     string
	regular bool // a regular file (a hard link may point at it)
}

type dirMeta struct {
	mode  uint32
	mtime time.Time
}

func (h *helper) writeTar() error {
	p := h.req.Path
	created := false
	if h.req.Parents {
		var err error
		if created, err = mkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	root, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(root)
	t := &tarIn{root: root, rootP: p, pending: map[string]*pendingEntry{}, dirs: map[string]dirMeta{}}
	body := &bodyReader{in: h.in}
	n, err := t.unpack(tar.NewReader(body), h.req.MaxBytes)
	if err == nil {
		// Past the archive's end marker: the rest of the body (padding).
		if _, derr := io.Copy(io.Discard, body); derr != nil {
			err = derr
		}
	}
	if body.err != nil {
		err = body.err
	}
	if err == nil {
		err = t.commit()
	}
	if err != nil {
		t.abort()
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(root, &st); err != nil {
		return pathErr("fstat", p, err)
	}
	info := infoOf(p, &st)
	return h.out.JSON(KindResult, Result{Created: created, Info: &info, Count: n})
}

func (t *tarIn) bad(name, format string, args ...any) error {
	return errorf(CodeInvalid, "tar entry %q: %s", name, fmt.Sprintf(format, args...))
}

// dir opens the directory at elems below the root, never following a
// symlink; with create, missing directories are made (0755; a
// directory's own entry sets its mode at the end).
func (t *tarIn) dir(name string, elems []string, create bool) (int, error) {
	fd, err := unix.Openat(t.root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for i, e := range elems {
		next, err := unix.Openat(fd, e, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT && create {
			if err = unix.Mkdirat(fd, e, 0o755); err == nil {
				t.made = append(t.made, strings.Join(elems[:i+1], "/"))
				next, err = unix.Openat(fd, e, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		unix.Close(fd)
		switch {
		case err == unix.ENOTDIR || err == unix.ELOOP:
			return -1, t.bad(name, "%q is a symlink or a file, not a directory: nothing is written through it", strings.Join(elems[:i+1], "/"))
		case err != nil:
			return -1, pathErr("open", joinRel(t.rootP, strings.Join(elems[:i+1], "/")), err)
		}
		fd = next
	}
	return fd, nil
}

// unpack reads every entry into place under temporary names.
func (t *tarIn) unpack(tr *tar.Reader, maxBytes int64) (int64, error) {
	var total, count int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return count, nil
		}
		if err != nil {
			return count, errorf(CodeInvalid, "tar: %v", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		elems, ok := cleanRel(hdr.Name)
		if !ok {
			return count, t.bad(hdr.Name, "absolute names and names with .. would land outside %s", t.rootP)
		}
		if len(elems) == 0 {
			continue // "./": the target directory itself is left as it is
		}
		if count++; count > MaxTarEntries {
			return count, errorf(CodeTooLarge, "tar holds more than %d entries", MaxTarEntries)
		}
		rel := strings.Join(elems, "/")
		for i := 1; i < len(elems); i++ {
			if _, ok := t.pending[strings.Join(elems[:i], "/")]; ok {
				return count, t.bad(hdr.Name, "%q is a symlink or a file earlier in this archive: nothing is written through it", strings.Join(elems[:i], "/"))
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if _, ok := t.pending[rel]; ok {
				return count, t.bad(hdr.Name, "is a file earlier in this archive")
			}
			fd, err := t.dir(hdr.Name, elems, true)
			if err != nil {
				return count, err
			}
			unix.Close(fd)
			t.dirs[rel] = dirMeta{mode: uint32(hdr.Mode) & 0o1777, mtime: hdr.ModTime}
		case tar.TypeReg, tar.TypeGNUSparse:
			if total += hdr.Size; hdr.Size < 0 || total > maxBytes {
				return count, errorf(CodeTooLarge, "tar unpacks to more than %d bytes (entry %q)", maxBytes, hdr.Name)
			}
			if err := t.file(hdr, elems, tr); err != nil {
				return count, err
			}
		case tar.TypeSymlink:
			if strings.IndexByte(hdr.Linkname, 0) >= 0 || hdr.Linkname == "" {
				return count, t.bad(hdr.Name, "bad symlink target")
			}
			if err := t.symlink(hdr, elems); err != nil {
				return count, err
			}
		case tar.TypeLink:
			if err := t.link(hdr, elems); err != nil {
				return count, err
			}
		default:
			return count, t.bad(hdr.Name, "type %q entries (devices, FIFOs, ...) are never unpacked", hdr.Typeflag)
		}
	}
}

// place opens the entry's parent and checks that no directory is in the
// way of a non-directory entry.
func (t *tarIn) place(name string, elems []string) (int, *pendingEntry, error) {
	pe := &pendingEntry{rel: strings.Join(elems, "/"), parent: elems[:len(elems)-1], base: elems[len(elems)-1], tmp: tempName("tar")}
	if _, ok := t.dirs[pe.rel]; ok {
		return -1, nil, t.bad(name, "is a directory earlier in this archive")
	}
	pfd, err := t.dir(name, pe.parent, true)
	if err != nil {
		return -1, nil, err
	}
	var st unix.Stat_t
	if unix.Fstatat(pfd, pe.base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		unix.Close(pfd)
		return -1, nil, pathErr("replace", joinRel(t.rootP, pe.rel), unix.EISDIR)
	}
	return pfd, pe, nil
}

// keep records a staged entry; a later entry of the same name replaces it.
func (t *tarIn) keep(pfd int, pe *pendingEntry) {
	if old, ok := t.pending[pe.rel]; ok {
		unix.Unlinkat(pfd, old.tmp, 0)
	}
	t.pending[pe.rel] = pe
	t.order = append(t.order, pe)
}

func times(mtime time.Time) []unix.Timespec {
	ts := unix.NsecToTimespec(mtime.UnixNano())
	return []unix.Timespec{ts, ts}
}

func (t *tarIn) file(hdr *tar.Header, elems []string, tr io.Reader) error {
	pfd, pe, err := t.place(hdr.Name, elems)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	mode := uint32(hdr.Mode) & 0o1777
	fd, err := unix.Openat(pfd, pe.tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return pathErr("create", joinRel(t.rootP, pe.rel), err)
	}
	pe.regular = true
	t.keep(pfd, pe)
	_, err = io.CopyBuffer(fdWriter{fd: fd, path: joinRel(t.rootP, pe.rel)}, io.LimitReader(tr, hdr.Size), make([]byte, 256<<10))
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = pathErr("close", joinRel(t.rootP, pe.rel), cerr)
	}
	if err != nil {
		return err
	}
	if err := unix.Fchmodat(pfd, pe.tmp, mode, 0); err != nil {
		return pathErr("chmod", joinRel(t.rootP, pe.rel), err)
	}
	return pathErr("utimes", joinRel(t.rootP, pe.rel), unix.UtimesNanoAt(pfd, pe.tmp, times(hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW))
}

func (t *tarIn) symlink(hdr *tar.Header, elems []string) error {
	pfd, pe, err := t.place(hdr.Name, elems)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Symlinkat(hdr.Linkname, pfd, pe.tmp); err != nil {
		return pathErr("symlink", joinRel(t.rootP, pe.rel), err)
	}
	t.keep(pfd, pe)
	return pathErr("utimes", joinRel(t.rootP, pe.rel), unix.UtimesNanoAt(pfd, pe.tmp, times(hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW))
}

func (t *tarIn) link(hdr *tar.Header, elems []string) error {
	target, ok := cleanRel(hdr.Linkname)
	if !ok || len(target) == 0 {
		return t.bad(hdr.Name, "hard link to %q would reach outside %s", hdr.Linkname, t.rootP)
	}
	src, ok := t.pending[strings.Join(target, "/")]
	if !ok || !src.regular {
		return t.bad(hdr.Name, "hard link to %q: only links to a regular file earlier in this archive are unpacked", hdr.Linkname)
	}
	sfd, err := t.dir(hdr.Name, src.parent, false)
	if err != nil {
		return err
	}
	defer unix.Close(sfd)
	pfd, pe, err := t.place(hdr.Name, elems)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Linkat(sfd, src.tmp, pfd, pe.tmp, 0); err != nil {
		return pathErr("link", joinRel(t.rootP, pe.rel), err)
	}
	pe.regular = true
	t.keep(pfd, pe)
	return nil
}

// commit renames every staged entry into place, then sets the modes and
// mtimes of the archive's directories, deepest first (their contents
// changed their mtimes meanwhile).
func (t *tarIn) commit() error {
	for _, pe := range t.order {
		if t.pending[pe.rel] != pe {
			continue // replaced by a later entry of the same name
		}
		pfd, err := t.dir(pe.rel, pe.parent, false)
		if err != nil {
			return err
		}
		err = unix.Renameat(pfd, pe.tmp, pfd, pe.base)
		unix.Close(pfd)
		if err != nil {
			return pathErr("rename", joinRel(t.rootP, pe.rel), err)
		}
		delete(t.pending, pe.rel)
	}
	rels := make([]string, 0, len(t.dirs))
	for rel := range t.dirs {
		rels = append(rels, rel)
	}
	sort.Slice(rels, func(i, j int) bool { return strings.Count(rels[i], "/") > strings.Count(rels[j], "/") })
	for _, rel := range rels {
		elems := strings.Split(rel, "/")
		pfd, err := t.dir(rel, elems[:len(elems)-1], false)
		if err != nil {
			return err
		}
		m := t.dirs[rel]
		fd, err := unix.Openat(pfd, elems[len(elems)-1], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Fchmod(fd, m.mode)
			unix.Close(fd)
		}
		if err == nil {
			err = unix.UtimesNanoAt(pfd, elems[len(elems)-1], times(m.mtime), unix.AT_SYMLINK_NOFOLLOW)
		}
		unix.Close(pfd)
		if err != nil {
			return pathErr("chmod", joinRel(t.rootP, rel), err)
		}
	}
	t.made = nil
	return nil
}

// abort removes what a failed upload staged and the directories it made.
func (t *tarIn) abort() {
	for rel, pe := range t.pending {
		if pfd, err := t.dir(rel, pe.parent, false); err == nil {
			unix.Unlinkat(pfd, pe.tmp, 0)
			unix.Close(pfd)
		}
	}
	for i := len(t.made) - 1; i >= 0; i-- {
		elems := strings.Split(t.made[i], "/")
		if pfd, err := t.dir(t.made[i], elems[:len(elems)-1], false); err == nil {
			unix.Unlinkat(pfd, elems[len(elems)-1], unix.AT_REMOVEDIR)
			unix.Close(pfd)
		}
	}
}
