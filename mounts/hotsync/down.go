package hotsync

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path"
	"path/filepath"
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
	rel string // slash-separated
}

// Down materializes every object under the prefix into Dir and writes the
// manifest. Invalid keys are reported in Result.Rejected and never written.
// The returned error joins the failures of individual files; the manifest
// then describes the files that did come down.
func (s *Syncer) Down(ctx context.Context) (res Result, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	defer func() {
		s.logger.InfoContext(ctx, "hot sync down",
			"files", len(res.Downloaded), "bytes", res.Bytes, "skipped", len(res.Skipped),
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
	var jobs []downJob
	dirMarkers := map[string]bool{}
	for obj, err := range s.store.List(ctx, s.prefix) {
		if err != nil {
			return Result{}, fmt.Errorf("hotsync down: list %s: %w", s.prefix, err)
		}
		rel := strings.TrimPrefix(obj.Key, s.prefix)
		switch {
		case rel == "":
			continue // an object named like the prefix itself
		case rel == objstore.KeepMarker:
			continue
		case strings.HasSuffix(rel, "/") && obj.Size == 0:
			// A "directory" object made by some S3 tools.
			if p, err := objstore.KeyPath(strings.TrimSuffix(rel, "/")); err == nil {
				dirMarkers[filepath.ToSlash(p)] = true
			} else {
				c.reject(obj.Key, err.Error())
			}
			continue
		}
		if _, err := relPath(s.prefix, obj.Key); err != nil {
			c.reject(obj.Key, err.Error())
			s.logger.WarnContext(ctx, "hot sync: key is not a valid path, not written", "key", obj.Key, "error", err)
			continue
		}
		if s.exclude.excludedPath(rel) {
			c.res.Skipped = append(c.res.Skipped, rel)
			continue
		}
		jobs = append(jobs, downJob{obj: obj, rel: rel})
	}

	// A key that is also a directory of other keys ("a" and "a/b") cannot
	// be materialized: keep the directory, report the file.
	dirs := map[string]bool{}
	for _, j := range jobs {
		for d := path.Dir(j.rel); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	kept := jobs[:0]
	for _, j := range jobs {
		if dirs[j.rel] {
			c.reject(j.obj.Key, "the key is also a directory of other keys")
			continue
		}
		kept = append(kept, j)
	}
	jobs = kept
	if err := checkRoom(s.dir, jobs); err != nil {
		return Result{}, err
	}

	m := newManifest(s.prefix, s.sandboxID)
	var (
		mmu     sync.Mutex
		madeDir sync.Map // dirs to chown, relative
	)
	for d := range dirMarkers {
		if err := ensureDir(root, d, &madeDir); err != nil {
			c.reject(s.prefix+d+"/", err.Error())
		}
	}

	parallel(ctx, s.concurrency, jobs, func(j downJob) {
		var e *entry
		err := retry(ctx, retryAttempts, downloadTransient, func() error {
			var err error
			e, err = s.downloadOne(ctx, root, j, &madeDir)
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
		m.Files[j.rel] = e
		mmu.Unlock()
		c.do(func(r *Result) {
			r.Downloaded = append(r.Downloaded, j.rel)
			r.Bytes += e.Size
		})
	})
	if err := ctx.Err(); err != nil {
		c.fail(fmt.Errorf("hotsync down: %w", err))
	}

	// Directories: owned by the sandbox user too.
	madeDir.Range(func(k, _ any) bool {
		if err := s.chown(root.Lchown, filepath.FromSlash(k.(string))); err != nil {
			c.fail(err)
		}
		return true
	})

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

// downloadOne writes one object into Dir and returns its manifest entry.
func (s *Syncer) downloadOne(ctx context.Context, root *os.Root, j downJob, ensured *sync.Map) (*entry, error) {
	p := filepath.FromSlash(j.rel)
	if err := ensureDir(root, path.Dir(j.rel), ensured); err != nil {
		return nil, fmt.Errorf("hotsync down: %s: %w", j.rel, err)
	}
	f, err := openForDownload(root, p)
	if err != nil {
		return nil, fmt.Errorf("hotsync down: %s: %w", j.rel, err)
	}
	defer f.Close()
	w := &hashingWriterAt{f: f, h: md5.New(), seq: true}
	release, err := s.gateLarge(ctx, j.obj.Size)
	if err != nil {
		return nil, fmt.Errorf("hotsync down: %s: %w", j.rel, err)
	}
	info, err := s.store.Download(ctx, j.obj.Key, j.obj.Size, w)
	release()
	if errdefs.IsNotFound(err) {
		f.Close()
		_ = root.Remove(p)
		return nil, fmt.Errorf("hotsync down: %s: %w: %w", j.rel, errVanished, err)
	}
	if err != nil {
		return nil, fmt.Errorf("hotsync down: %s: %w", j.rel, err)
	}
	if err := s.chown(func(_ string, uid, gid int) error { return f.Chown(uid, gid) }, j.rel); err != nil {
		return nil, err
	}
	if mt := info.LastModified; !mt.IsZero() {
		_ = setMtime(f, mt) // like aws s3 sync: the file's mtime is the object's
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("hotsync down: %s: %w", j.rel, classify(err))
	}
	if fi.Size() != info.Size {
		return nil, fmt.Errorf("hotsync down: %s: wrote %d of %d bytes: %w", j.rel, fi.Size(), info.Size, errdefs.ErrAborted)
	}
	e := &entry{ETag: info.ETag}
	e.setState(stateOf(fi))
	if w.seq && w.next == info.Size {
		e.MD5 = hex.EncodeToString(w.h.Sum(nil))
	}
	return e, nil
}

// openForDownload creates the file p (relative to root) for writing. The
// common case, a fresh Dir, is one create-exclusive open, which never follows
// a symlink. If something is in the way (a stale Dir): a regular file is
// truncated, a symlink or special file is removed (never written through),
// a directory is a conflict.
func openForDownload(root *os.Root, p string) (*os.File, error) {
	f, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
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
		f, err = root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	default:
		f, err = root.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
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
