package hotsync

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/objstore"
)

// relPath maps a key below the syncer's prefix to a path relative to Dir.
// It rejects anything that is not a plain relative file path (see
// objstore.KeyPath): such keys are reported and never written.
func relPath(prefix, key string) (string, error) {
	rel, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", fmt.Errorf("key %q is not below prefix %q: %w", key, prefix, errdefs.ErrInvalidArgument)
	}
	return objstore.KeyPath(rel)
}

type downJob struct {
	obj objstore.ObjectInfo
	key string // relative to the prefix (the escaped path)
	rel string // the real path, slash-separated
}

// dirJob is a directory to restore: from a marker object ("PATH/", with
// its mode and mtime) or implied by the keys below it.
type dirJob struct {
	key  string // "PATH/"
	rel  string
	meta *objectMeta // nil: implied (0755, mtime left as made)
	etag string
}

// linkJob is a symlink to create once every file is in place.
type linkJob struct {
	downJob
	target string
	meta   objectMeta
	etag   string
}

// Down materializes every object under the prefix into Dir and writes the
// manifest: files with their modes and mtimes, symlinks as symlinks (never
// followed), directories (empty ones too) with theirs, names that are not
// valid UTF-8 under their raw names. Invalid keys are reported in
// Result.Rejected and never written. The returned error joins the failures
// of individual files; the manifest then describes the entries that did
// come down.
func (s *Syncer) Down(ctx context.Context) (res Result, err error) {
	release, err := s.acquire(ctx, "down")
	if err != nil {
		return Result{}, err
	}
	defer release()
	start := time.Now()
	defer func() {
		s.logger.InfoContext(ctx, "hot sync down",
			"files", len(res.Downloaded), "dirs", res.Dirs, "bytes", res.Bytes, "skipped", len(res.Skipped),
			"rejected", len(res.Rejected), "duration", time.Since(start), "error", err)
	}()

	if err := s.checkMounted("down"); err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return Result{}, fmt.Errorf("hotsync down: create %s: %w", s.dir, classify(err))
	}
	if err := s.chown(os.Lchown, s.dir); err != nil {
		return Result{}, fmt.Errorf("hotsync down: %w", err)
	}
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return Result{}, fmt.Errorf("hotsync down: open %s: %w", s.dir, classify(err))
	}
	defer root.Close()

	var c collector
	jobs, markers, err := s.listDown(ctx, &c)
	if err != nil {
		return Result{}, err
	}
	realDirs := s.resolveNames(ctx, &c, jobs, markers)
	jobs, dirs := s.planDown(&c, jobs, realDirs)
	if err := checkRoom(s.dir, jobs); err != nil {
		return Result{}, err
	}
	if len(jobs) == 0 && len(dirs) == 0 && len(realDirs) == 0 && manifestMissing(s.manifest) {
		// Nothing to bring down (a new user) and no manifest yet: the
		// missing manifest already says what an empty one would (Up
		// counts every file as new and has nothing to delete), so the
		// sync and the manifest's two fsyncs are skipped. A manifest
		// that is there is always rewritten: left alone, its entries
		// would read as files the user deleted.
		return c.finish("down")
	}
	m := newManifest(s.prefix, s.sandboxID)
	s.materialize(ctx, root, &c, m, jobs, dirs, realDirs)
	// Everything written must be on disk before the manifest says so.
	if d, err := root.Open("."); err == nil {
		if err := syncFS(d); err != nil {
			c.fail(fmt.Errorf("hotsync down: sync %s: %w", s.dir, classify(err)))
		}
		d.Close()
	}
	if err := m.save(s.manifest); err != nil {
		c.fail(fmt.Errorf("hotsync down: %w", classify(err)))
	}
	return c.finish("down")
}

// listDown lists the prefix: the objects to download and the directory
// markers, up to the names cap; invalid keys are rejected into c.
func (s *Syncer) listDown(ctx context.Context, c *collector) (jobs []downJob, markers []dirJob, err error) {
	names := 0
	c.res.PrefixEmpty = true
	for obj, err := range s.store.List(ctx, s.prefix) {
		if err != nil {
			return nil, nil, fmt.Errorf("hotsync down: list %s: %w", s.prefix, err)
		}
		c.res.PrefixEmpty = false
		rel := strings.TrimPrefix(obj.Key, s.prefix)
		switch {
		case rel == "":
			continue // an object named like the prefix itself
		case rel == objstore.KeepMarker:
			continue
		}
		if names >= s.maxNames {
			c.reject(obj.Key, fmt.Sprintf("over the limit of %d names per sandbox; not written", s.maxNames))
			continue
		}
		if strings.HasSuffix(rel, "/") {
			// A directory marker (ours, s3fs's or another S3 tool's).
			if _, err := objstore.KeyPath(strings.TrimSuffix(rel, "/")); err != nil || obj.Size != 0 {
				c.reject(obj.Key, "not a valid directory marker")
				continue
			}
			names++
			markers = append(markers, dirJob{key: rel, rel: strings.TrimSuffix(rel, "/"), etag: obj.ETag})
			continue
		}
		if _, err := relPath(s.prefix, obj.Key); err != nil {
			c.reject(obj.Key, err.Error())
			s.logger.WarnContext(ctx, "hot sync: key is not a valid path, not written", "key", obj.Key, "error", err)
			continue
		}
		names++
		jobs = append(jobs, downJob{obj: obj, key: rel, rel: rel})
	}
	return jobs, markers, nil
}

// resolveNames reads what only a HEAD carries (directory markers' metadata,
// the raw names of keys that may be escaped) and returns the directories
// that really have markers, under their raw names. A job whose raw name
// is refused gets rel "" (planDown drops it).
func (s *Syncer) resolveNames(ctx context.Context, c *collector, jobs []downJob, markers []dirJob) []dirJob {
	// Markers carry their metadata only in a HEAD; so do the raw names of
	// keys that may be escaped (they hold a "%").
	var hmu sync.Mutex
	parallel(ctx, s.concurrency, markers, func(d dirJob) {
		info, err := s.store.Head(ctx, s.prefix+d.key)
		if err != nil {
			if !errdefs.IsNotFound(err) {
				c.fail(fmt.Errorf("hotsync down: directory %s: %w", d.key, err))
			}
			return
		}
		om := decodeMeta(info, true)
		hmu.Lock()
		for i := range markers {
			if markers[i].key == d.key {
				markers[i].meta = &om
			}
		}
		hmu.Unlock()
	})
	var escaped []int
	for i, j := range jobs {
		if strings.Contains(j.key, "%") {
			escaped = append(escaped, i)
		}
	}
	parallel(ctx, s.concurrency, escaped, func(i int) {
		info, err := s.store.Head(ctx, jobs[i].obj.Key)
		if err != nil {
			return // the download reports it
		}
		om := decodeMeta(info, false)
		hmu.Lock()
		defer hmu.Unlock()
		if raw, err := rawPath(om.raw, jobs[i].key); err == nil {
			jobs[i].rel = raw
		} else {
			c.reject(jobs[i].obj.Key, err.Error())
			jobs[i].rel = ""
		}
	})
	var realDirs []dirJob
	for _, d := range markers {
		if d.meta == nil {
			continue // vanished
		}
		raw, err := rawPath(d.meta.raw, d.rel)
		if err != nil {
			c.reject(s.prefix+d.key, err.Error())
			continue
		}
		d.rel = raw
		realDirs = append(realDirs, d)
	}
	return realDirs
}

// planDown applies the excludes and returns the jobs to download and every
// directory to make (marked, or implied by a job's path).
func (s *Syncer) planDown(c *collector, jobs []downJob, realDirs []dirJob) ([]downJob, map[string]bool) {
	// Excludes apply to real paths. A key that is also a directory of
	// other keys ("a" and "a/b") cannot be materialized: keep the
	// directory, report the file.
	dirs := map[string]bool{}
	for _, d := range realDirs {
		if !s.exclude.excludedPath(d.rel + "/x") {
			dirs[d.rel] = true
		}
	}
	kept := jobs[:0]
	for _, j := range jobs {
		switch {
		case j.rel == "":
			continue
		case s.exclude.excludedPath(j.rel):
			c.res.Skipped = append(c.res.Skipped, j.rel)
			continue
		}
		kept = append(kept, j)
		for _, d := range parentDirs(j.rel) {
			dirs[d] = true
		}
	}
	jobs = kept[:0]
	for _, j := range kept {
		if dirs[j.rel] {
			c.reject(j.obj.Key, "the key is also a directory of other keys")
			continue
		}
		jobs = append(jobs, j)
	}
	return jobs, dirs
}

// materialize makes the directories, downloads the files, then makes the
// symlinks and finishes the directories (deepest first), recording each
// entry in m and each failure in c.
func (s *Syncer) materialize(ctx context.Context, root *os.Root, c *collector, m *manifest, jobs []downJob, dirs map[string]bool, realDirs []dirJob) {
	var (
		mmu     sync.Mutex
		madeDir sync.Map // dirs made, relative
		links   []linkJob
	)
	for d := range dirs {
		if err := ensureDir(root, d, &madeDir); err != nil {
			c.reject(s.prefix+escapeName(d)+"/", err.Error())
		}
	}

	parallel(ctx, s.concurrency, jobs, func(j downJob) {
		var e *entry
		var link *linkJob
		err := retry(ctx, retryAttempts, downloadTransient, func() error {
			var err error
			e, link, err = s.downloadOne(ctx, root, j, &madeDir)
			return err
		})
		switch {
		case errors.Is(err, errVanished):
			s.logger.InfoContext(ctx, "hot sync: object deleted since it was listed, not written", "key", j.obj.Key)
			return
		case err != nil:
			c.fail(err)
			return
		}
		mmu.Lock()
		defer mmu.Unlock()
		if link != nil {
			links = append(links, *link)
			return
		}
		m.entries[j.key] = e
		c.do(func(r *Result) {
			r.Downloaded = append(r.Downloaded, j.rel)
			r.Bytes += e.Size
		})
	})
	if err := ctx.Err(); err != nil {
		c.fail(fmt.Errorf("hotsync down: %w", err))
	}

	// Symlinks, once every file and directory is in place: nothing below
	// writes through them.
	for _, l := range links {
		e, err := s.makeLink(root, l)
		if err != nil {
			c.reject(l.obj.Key, err.Error())
			continue
		}
		m.entries[l.key] = e
		c.res.Downloaded = append(c.res.Downloaded, l.rel)
	}

	// Directories last, deepest first: their modes, owners and mtimes
	// (writing into a directory moves its mtime).
	byRel := map[string]dirJob{}
	for _, d := range realDirs {
		byRel[d.rel] = d
	}
	all := slices.Sorted(maps.Keys(dirs))
	for _, rel := range slices.Backward(all) {
		d := byRel[rel]
		d.rel = rel
		if d.key == "" {
			d.key = dirKey(escapeName(rel))
		}
		e, err := s.finishDir(root, d)
		if err != nil {
			c.fail(err)
			continue
		}
		m.entries[d.key] = e
		if d.meta != nil {
			c.res.Dirs++
		}
	}
}

// finishDir gives a directory its owner, mode and mtime (from its marker;
// an implied one keeps 0755 and the time it was made) and returns its
// manifest entry. It is opened without following a symlink in its place.
func (s *Syncer) finishDir(root *os.Root, d dirJob) (*entry, error) {
	f, err := root.OpenFile(filepath.FromSlash(d.rel), dirFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("hotsync down: directory %s: %w", d.rel, classify(err))
	}
	defer f.Close()
	if !s.keepOwner {
		if err := f.Chown(s.uid, s.gid); err != nil {
			return nil, fmt.Errorf("hotsync down: chown %s: %w", d.rel, classify(err))
		}
	}
	mode := uint32(0o755)
	if d.meta != nil {
		mode = d.meta.mode & restorableBits
	}
	if err := f.Chmod(os.FileMode(mode&0o777) | stickyBit(mode)); err != nil {
		return nil, fmt.Errorf("hotsync down: chmod %s: %w", d.rel, classify(err))
	}
	if d.meta != nil && d.meta.mtimeNs != 0 {
		_ = setTimes(f, d.meta.mtimeNs)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("hotsync down: %s: %w", d.rel, classify(err))
	}
	e := &entry{ETag: d.etag, Kind: kindDir, Mode: mode, Raw: rawOf(d.rel, strings.TrimSuffix(d.key, "/"))}
	e.setState(stateOf(fi))
	return e, nil
}

func stickyBit(mode uint32) os.FileMode {
	if mode&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}

// makeLink creates a symlink object's link (never following anything) and
// returns its manifest entry.
func (s *Syncer) makeLink(root *os.Root, l linkJob) (*entry, error) {
	p := filepath.FromSlash(l.rel)
	if fi, err := root.Lstat(p); err == nil {
		if fi.IsDir() {
			return nil, fmt.Errorf("a directory is in the way of symlink %s: %w", l.rel, errdefs.ErrConflict)
		}
		if err := root.Remove(p); err != nil {
			return nil, fmt.Errorf("remove what is in the way of symlink %s: %w", l.rel, classify(err))
		}
	}
	if err := root.Symlink(l.target, p); err != nil {
		return nil, fmt.Errorf("create symlink %s: %w", l.rel, classify(err))
	}
	if err := s.chown(root.Lchown, p); err != nil {
		return nil, err
	}
	parent, err := root.OpenFile(filepath.Dir(p), dirFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("symlink %s: %w", l.rel, classify(err))
	}
	defer parent.Close()
	if l.meta.mtimeNs != 0 {
		_ = setTimesAt(parent, filepath.Base(p), l.meta.mtimeNs)
	}
	fi, err := root.Lstat(p)
	if err != nil {
		return nil, fmt.Errorf("symlink %s: %w", l.rel, classify(err))
	}
	e := &entry{ETag: l.etag, MD5: md5hex([]byte(l.target)), Kind: kindLink, Mode: 0o777, Raw: rawOf(l.rel, l.key)}
	e.setState(stateOf(fi))
	return e, nil
}

// checkRoom refuses a download that cannot fit the filesystem of dir
// (a sandbox's home is a disk image sized to its quota) before writing
// anything: failing up front is faster than filling the disk, and the
// error can say how much room is needed. Each file and directory is
// counted in whole blocks; the estimate ignores inodes and extent blocks, so
// ENOSPC half-way stays possible and is reported as the same kind of error.
func checkRoom(dir string, jobs []downJob) error {
	sp, ok := space(dir)
	if !ok || sp.block <= 0 {
		return nil
	}
	free, block := sp.free, sp.block
	var need int64
	dirs := map[string]bool{}
	for _, j := range jobs {
		need += (j.obj.Size + block - 1) / block * block
		for d := path.Dir(j.rel); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			need += block
		}
	}
	if need > free {
		return &NoRoomError{Files: len(jobs), Need: need, Free: free}
	}
	return nil
}

// NoRoomError is Down refusing files that do not fit: Need bytes (in whole
// blocks) for Files files against Free bytes available. It matches
// errdefs.ErrResourceExhausted.
type NoRoomError struct {
	Files      int
	Need, Free int64
}

func (e *NoRoomError) Error() string {
	return fmt.Sprintf("hotsync down: %d files need %.1f MiB, the target has %.1f MiB free",
		e.Files, float64(e.Need)/(1<<20), float64(e.Free)/(1<<20))
}

// Is makes errdefs.IsResourceExhausted (and errors.Is) recognise it.
func (e *NoRoomError) Is(target error) bool { return target == errdefs.ErrResourceExhausted }

// ensureDir makes the slash-separated directory dir (relative to root)
// exist as a real directory, component by component. A symlink or special
// file in the way is removed, never followed; a regular file in the way is a
// conflict (it may be the user's data). Directories already ensured during
// this Down are recorded in done (and chowned at the end).
func ensureDir(root *os.Root, dir string, done *sync.Map) error {
	if dir == "." || dir == "" {
		return nil
	}
	if _, ok := done.Load(dir); ok {
		return nil
	}
	if parent := path.Dir(dir); parent != "." {
		if err := ensureDir(root, parent, done); err != nil {
			return err
		}
	}
	p := filepath.FromSlash(dir)
	for range 3 { // a concurrent worker may be making the same directory
		fi, err := root.Lstat(p)
		switch {
		case err == nil && fi.IsDir():
			done.Store(dir, true)
			return nil
		case err == nil && fi.Mode().IsRegular():
			return fmt.Errorf("directory %s: a file is in the way: %w", dir, errdefs.ErrConflict)
		case err == nil:
			if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("directory %s: remove %s in the way: %w", dir, fi.Mode().Type(), classify(err))
			}
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("directory %s: %w", dir, classify(err))
		}
		if err := root.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create directory %s: %w", dir, classify(err))
		}
	}
	return fmt.Errorf("create directory %s: keeps changing: %w", dir, errdefs.ErrAborted)
}

// errVanished marks an object deleted between the listing and its download.
var errVanished = errors.New("object vanished")

// downloadTransient: a ranged download pinned with If-Match fails when the
// object is replaced mid-way; fetching it again is the fix.
func downloadTransient(err error) bool {
	return errdefs.IsFailedPrecondition(err) || errdefs.IsAborted(err)
}

// downloadOne writes one object into Dir and returns its manifest entry,
// with the object's mode and mtime applied. An object that holds a
// symlink comes back as a linkJob instead, to be made at the end; a file
// left half-written by a failed download is removed.
func (s *Syncer) downloadOne(ctx context.Context, root *os.Root, j downJob, ensured *sync.Map) (_ *entry, _ *linkJob, err error) {
	p := filepath.FromSlash(j.rel)
	if err := ensureDir(root, path.Dir(j.rel), ensured); err != nil {
		return nil, nil, fmt.Errorf("hotsync down: %s: %w", j.rel, err)
	}
	f, err := openForDownload(root, p)
	if err != nil {
		return nil, nil, fmt.Errorf("hotsync down: %s: %w", j.rel, err)
	}
	defer f.Close()
	defer func() {
		if err != nil {
			f.Close()
			_ = root.Remove(p) // never leave half a file for Up to take as the user's
		}
	}()
	w := &hashingWriterAt{f: f, h: md5.New(), seq: true}
	release, err := s.gateLarge(ctx, j.obj.Size)
	if err != nil {
		return nil, nil, fmt.Errorf("hotsync down: %s: %w", j.rel, err)
	}
	info, err := s.store.Download(ctx, j.obj.Key, j.obj.Size, w)
	release()
	if errdefs.IsNotFound(err) {
		return nil, nil, fmt.Errorf("hotsync down: %s: %w: %w", j.rel, errVanished, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("hotsync down: %s: %w", j.rel, err)
	}
	om := decodeMeta(info, false)
	if om.kind == kindLink {
		if info.Size > maxLinkTarget || info.Size == 0 {
			return nil, nil, fmt.Errorf("hotsync down: %s: a symlink object of %d bytes: %w", j.rel, info.Size, errdefs.ErrInvalidArgument)
		}
		target := make([]byte, info.Size)
		if _, err := f.ReadAt(target, 0); err != nil {
			return nil, nil, fmt.Errorf("hotsync down: %s: %w", j.rel, classify(err))
		}
		if strings.IndexByte(string(target), 0) >= 0 {
			return nil, nil, fmt.Errorf("hotsync down: %s: symlink target holds NUL: %w", j.rel, errdefs.ErrInvalidArgument)
		}
		f.Close()
		if err := root.Remove(p); err != nil {
			return nil, nil, fmt.Errorf("hotsync down: %s: %w", j.rel, classify(err))
		}
		return nil, &linkJob{downJob: j, target: string(target), meta: om, etag: info.ETag}, nil
	}
	if err := s.chown(func(_ string, uid, gid int) error { return f.Chown(uid, gid) }, j.rel); err != nil {
		return nil, nil, err
	}
	// Permissions and the sticky bit; never setuid or setgid.
	if err := f.Chmod(os.FileMode(om.mode&0o777) | stickyBit(om.mode)); err != nil {
		return nil, nil, fmt.Errorf("hotsync down: chmod %s: %w", j.rel, classify(err))
	}
	if om.mtimeNs != 0 {
		_ = setTimes(f, om.mtimeNs) // without metadata, like aws s3 sync: the object's date
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("hotsync down: %s: %w", j.rel, classify(err))
	}
	if fi.Size() != info.Size {
		return nil, nil, fmt.Errorf("hotsync down: %s: wrote %d of %d bytes: %w", j.rel, fi.Size(), info.Size, errdefs.ErrAborted)
	}
	e := &entry{ETag: info.ETag, Kind: kindFile, Mode: om.mode & restorableBits, Raw: rawOf(j.rel, j.key)}
	e.setState(stateOf(fi))
	if w.seq && w.next == info.Size {
		e.MD5 = hex.EncodeToString(w.h.Sum(nil))
	}
	return e, nil, nil
}

// openForDownload creates the file p (relative to root) for writing. The
// common case, a fresh Dir, is one create-exclusive open, which never follows
// a symlink. If something is in the way (a stale Dir): a regular file is
// truncated, a symlink or special file is removed (never written through),
// a directory is a conflict.
func openForDownload(root *os.Root, p string) (*os.File, error) {
	f, err := root.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if !errors.Is(err, fs.ErrExist) {
		if err != nil {
			return nil, classify(err)
		}
		return f, nil
	}
	fi, err := root.Lstat(p)
	if err != nil {
		return nil, classify(err)
	}
	switch {
	case fi.IsDir():
		return nil, fmt.Errorf("a directory is in the way: %w", errdefs.ErrConflict)
	case !fi.Mode().IsRegular():
		if err := root.Remove(p); err != nil {
			return nil, fmt.Errorf("remove %s in the way: %w", fi.Mode().Type(), classify(err))
		}
		f, err = root.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	default:
		f, err = root.OpenFile(p, os.O_RDWR|os.O_TRUNC, 0)
	}
	if err != nil {
		return nil, classify(err)
	}
	return f, nil
}

// hashingWriterAt writes to f and hashes the data while writes arrive in
// order (a plain GET); parallel ranged downloads turn hashing off.
type hashingWriterAt struct {
	f     *os.File
	mu    sync.Mutex
	h     hash.Hash
	seq   bool
	next  int64
	dirty int64 // written since the last writeback kick
}

// writebackEvery: a large download asks the kernel to start writing its
// pages out every this many bytes, so the flush that Down ends with (the
// manifest must never describe data a crash could lose) overlaps the
// download instead of following it.
const writebackEvery = 32 << 20

func (w *hashingWriterAt) WriteAt(p []byte, off int64) (int, error) {
	n, err := w.f.WriteAt(p, off)
	w.mu.Lock()
	if w.seq && off == w.next {
		w.h.Write(p[:n])
		w.next += int64(n)
	} else {
		w.seq = false
	}
	w.dirty += int64(n)
	kick := w.dirty >= writebackEvery
	if kick {
		w.dirty = 0
	}
	w.mu.Unlock()
	if kick {
		startWriteback(w.f)
	}
	return n, err
}

func (s *Syncer) chown(fn func(string, int, int) error, name string) error {
	if s.keepOwner {
		return nil
	}
	if err := fn(name, s.uid, s.gid); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", name, s.uid, s.gid, classify(err))
	}
	return nil
}

// classify wraps filesystem errors onto errdefs classes.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", errdefs.ErrPermissionDenied, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %w", errdefs.ErrConflict, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %w", errdefs.ErrResourceExhausted, err)
	}
	return fmt.Errorf("%w: %w", errdefs.ErrUnknown, err)
}
