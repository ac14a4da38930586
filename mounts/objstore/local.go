package objstore

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// localMetaDir is the reserved top-level directory of a Local store: temp
// files live there so that a rename into place stays on one filesystem. Keys
// whose first segment is this name are rejected.
const localMetaDir = ".objstore"

// etagXattr caches a file's ETag: "1 SIZE MTIME_NS INODE MD5HEX".
const etagXattr = "user.matrx.etag"

// metaXattr holds an object's user metadata, JSON-encoded.
const metaXattr = "user.matrx.meta"

// markerXattr makes a directory a directory marker object ("a/b/", zero
// bytes, as s3fs and the S3 console make them): key "a/b/" is the
// directory a/b carrying this attribute (its value is the metadata, JSON).
const markerXattr = "user.matrx.marker"

// emptyETag is the MD5 of nothing: every marker's ETag.
const emptyETag = "d41d8cd98f00b204e9800998ecf8427e"

// markerDir returns the directory of a marker key ("a/b/" -> a/b).
func (l *Local) markerDir(key string) (string, bool, error) {
	if !strings.HasSuffix(key, "/") || len(key) < 2 {
		return "", false, nil
	}
	p, err := l.path(strings.TrimSuffix(key, "/"))
	return p, true, err
}

// marker returns the marker object at key, errdefs.ErrNotFound if the
// directory is missing or no marker.
func (l *Local) marker(key, p string) (ObjectInfo, error) {
	d, err := l.root.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: %w", l.op("head", key), classifyFS(err))
	}
	defer d.Close()
	v, err := getXattr(d, markerXattr)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: no directory marker: %w", l.op("head", key), errdefs.ErrNotFound)
	}
	info := ObjectInfo{Key: key, ETag: emptyETag}
	if fi, err := d.Stat(); err == nil {
		info.LastModified = fi.ModTime()
	}
	if len(v) > 0 {
		_ = json.Unmarshal(v, &info.Meta)
	}
	return info, nil
}

// putMarker makes the directory of a marker key and marks it.
func (l *Local) putMarker(key, p string, size int64, cond Cond, meta Metadata) (ObjectInfo, error) {
	if size != 0 {
		return ObjectInfo{}, fmt.Errorf("%s: a key ending in \"/\" must be empty: %w", l.op("put", key), errdefs.ErrInvalidArgument)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, err := l.marker(key, p)
	switch {
	case err == nil && cond.IfNoneMatch != "":
		return ObjectInfo{}, fmt.Errorf("%s (%s): object exists: precondition failed: %w", l.op("put", key), cond, errdefs.ErrFailedPrecondition)
	case err == nil && cond.IfMatch != "" && cur.ETag != cond.IfMatch:
		return ObjectInfo{}, fmt.Errorf("%s (%s): precondition failed: %w", l.op("put", key), cond, errdefs.ErrFailedPrecondition)
	case err != nil && cond.IfMatch != "":
		return ObjectInfo{}, err
	}
	if fi, err := l.root.Lstat(p); err == nil && !fi.IsDir() {
		return ObjectInfo{}, fmt.Errorf("%s: an object of that name (without \"/\") exists: %w", l.op("put", key), errdefs.ErrConflict)
	}
	if err := l.root.MkdirAll(p, 0o755); err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: %w", l.op("put", key), classifyFS(err))
	}
	d, err := l.root.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: %w", l.op("put", key), classifyFS(err))
	}
	defer d.Close()
	b := []byte("{}")
	if len(meta) > 0 {
		b, _ = json.Marshal(meta)
	}
	if err := setXattr(d, markerXattr, b); err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: %w", l.op("put", key), classifyFS(err))
	}
	return ObjectInfo{Key: key, ETag: emptyETag, Meta: meta}, nil
}

// deleteMarker removes a marker, and the directory if that left it empty.
func (l *Local) deleteMarker(key, p, ifMatch string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, err := l.marker(key, p)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ifMatch != "" && cur.ETag != trimETag(ifMatch) {
		return fmt.Errorf("%s (If-Match: %s): precondition failed: %w", l.op("delete", key), ifMatch, errdefs.ErrFailedPrecondition)
	}
	d, err := l.root.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", l.op("delete", key), classifyFS(err))
	}
	rc, err := d.SyscallConn()
	if err == nil {
		rc.Control(func(fd uintptr) { _ = removeXattr(int(fd), markerXattr) })
	}
	d.Close()
	l.pruneEmpty(p)
	return nil
}

// Local is a Store on a directory tree: key "a/b/c" is the file DIR/a/b/c.
// It is safe for concurrent use within one process; two processes must not
// write the same Local store.
type Local struct {
	dir    string
	root   *os.Root
	logger *slog.Logger

	// mu makes "check the condition, then rename into place" atomic, and
	// keeps directory pruning after deletes from racing with creation of
	// parent directories.
	mu sync.Mutex
}

type localOptions struct {
	logger *slog.Logger
}

// LocalOption configures optional knobs of NewLocal.
type LocalOption func(*localOptions)

// WithLocalLogger sets the logger (default: slog.Default()).
func WithLocalLogger(l *slog.Logger) LocalOption {
	return func(o *localOptions) { o.logger = l }
}

// NewLocal opens (creating it if needed) the directory dir as a store.
func NewLocal(dir string, opts ...LocalOption) (*Local, error) {
	var o localOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if dir == "" {
		return nil, fmt.Errorf("local store: empty directory: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("local store: create %s: %w", dir, classifyFS(err))
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("local store: open %s: %w", dir, classifyFS(err))
	}
	// Temp files left by a crashed process are garbage: one process owns a
	// Local store.
	tmp := path.Join(localMetaDir, "tmp")
	if err := root.RemoveAll(tmp); err != nil {
		o.logger.Warn("local store: cannot clear temp files", "dir", dir, "error", err)
	}
	if err := root.MkdirAll(tmp, 0o700); err != nil {
		root.Close()
		return nil, fmt.Errorf("local store: create %s/%s: %w", dir, tmp, classifyFS(err))
	}
	return &Local{dir: dir, root: root, logger: o.logger}, nil
}

// Check verifies that the store's directory is still there and writable
// (the counterpart of S3.Check).
func (l *Local) Check(ctx context.Context) error {
	tmp := path.Join(localMetaDir, "tmp", "check-"+randomName())
	f, err := l.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("local store %s is not writable: %w", l.dir, classifyFS(err))
	}
	f.Close()
	return classifyFS(l.root.Remove(tmp))
}

// Dir returns the store's directory.
func (l *Local) Dir() string { return l.dir }

// Close releases the directory handle.
func (l *Local) Close() error { return l.root.Close() }

// path validates key and returns its path relative to the root.
func (l *Local) path(key string) (string, error) {
	p, err := KeyPath(key)
	if err != nil {
		return "", err
	}
	if first, _, _ := strings.Cut(key, "/"); first == localMetaDir {
		return "", fmt.Errorf("object key %q is in the reserved %s/ directory: %w", key, localMetaDir, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

func (l *Local) op(verb, key string) string {
	return fmt.Sprintf("%s %s", verb, filepath.Join(l.dir, filepath.FromSlash(key)))
}

// open opens the regular file holding key. A missing file, a directory, a
// symlink or a special file is errdefs.ErrNotFound.
func (l *Local) open(key string) (*os.File, os.FileInfo, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, nil, err
	}
	if fi, err := l.root.Lstat(p); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", l.op("open", key), classifyFS(err))
	} else if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: not a regular file: %w", l.op("open", key), errdefs.ErrNotFound)
	}
	f, err := l.root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", l.op("open", key), classifyFS(err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", l.op("stat", key), classifyFS(err))
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: not a regular file: %w", l.op("open", key), errdefs.ErrNotFound)
	}
	return f, fi, nil
}

// info returns key's metadata from an open file, computing (and caching) the
// ETag if the cached one is missing or stale.
func (l *Local) info(key string, f *os.File, fi os.FileInfo) (ObjectInfo, error) {
	etag, err := l.etag(f, fi)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: %w", l.op("hash", key), classifyFS(err))
	}
	info := ObjectInfo{Key: key, Size: fi.Size(), ETag: etag, LastModified: fi.ModTime()}
	if v, err := getXattr(f, metaXattr); err == nil && len(v) > 0 {
		_ = json.Unmarshal(v, &info.Meta)
	}
	return info, nil
}

func etagStamp(fi os.FileInfo) string {
	return fmt.Sprintf("1 %d %d %d", fi.Size(), fi.ModTime().UnixNano(), fileID(fi))
}

func (l *Local) etag(f *os.File, fi os.FileInfo) (string, error) {
	stamp := etagStamp(fi)
	if v, err := getXattr(f, etagXattr); err == nil {
		if cached, ok := strings.CutPrefix(string(v), stamp+" "); ok && len(cached) == 2*md5.Size {
			return cached, nil
		}
	}
	h := md5.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return "", err
	}
	etag := hex.EncodeToString(h.Sum(nil))
	// Best effort: without xattr support the hash is recomputed next time.
	_ = setXattr(f, etagXattr, []byte(stamp+" "+etag))
	return etag, nil
}

// List implements Store. Only regular files are objects: symlinks, special
// files and files whose names are not valid keys are left out.
func (l *Local) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		for key, err := range l.walk(ctx, prefix) {
			if err != nil {
				yield(ObjectInfo{}, err)
				return
			}
			if strings.HasSuffix(key, "/") {
				info, err := l.Head(ctx, key)
				if errdefs.IsNotFound(err) {
					continue
				}
				if !yield(info, err) || err != nil {
					return
				}
				continue
			}
			f, fi, err := l.open(key)
			if errdefs.IsNotFound(err) {
				continue // removed or replaced since the directory was read
			}
			var info ObjectInfo
			if err == nil {
				info, err = l.info(key, f, fi)
				f.Close()
			}
			if !yield(info, err) || err != nil {
				return
			}
		}
	}
}

// walk yields, in ascending key order, the keys of regular files whose key
// starts with prefix.
func (l *Local) walk(ctx context.Context, prefix string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		// Start at the deepest directory that the prefix fully names.
		start := "."
		if i := strings.LastIndexByte(prefix, '/'); i > 0 {
			start = prefix[:i]
			if _, err := KeyPath(start); err != nil {
				return // no valid key lives below an invalid directory
			}
		}
		var rec func(dir string) bool
		rec = func(dir string) bool {
			if err := ctx.Err(); err != nil {
				return yield("", err)
			}
			f, err := l.root.Open(filepath.FromSlash(dir))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
					return true
				}
				return yield("", fmt.Errorf("%s: %w", l.op("list", dir), classifyFS(err)))
			}
			entries, err := f.ReadDir(-1)
			f.Close()
			if err != nil {
				return yield("", fmt.Errorf("%s: %w", l.op("list", dir), classifyFS(err)))
			}
			// Sort as S3 sorts keys: a directory "a" holds keys "a/...", so
			// it sorts as "a/".
			sortName := func(e fs.DirEntry) string {
				if e.IsDir() {
					return e.Name() + "/"
				}
				return e.Name()
			}
			slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(sortName(a), sortName(b)) })
			for _, e := range entries {
				key := e.Name()
				if dir != "." {
					key = dir + "/" + e.Name()
				}
				if dir == "." && e.Name() == localMetaDir {
					continue
				}
				switch {
				case e.IsDir():
					if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
						continue
					}
					if strings.HasPrefix(key+"/", prefix) && l.isMarker(key) && !yield(key+"/", nil) {
						return false
					}
					if !rec(key) {
						return false
					}
				case e.Type().IsRegular():
					if !strings.HasPrefix(key, prefix) {
						continue
					}
					if _, err := KeyPath(key); err != nil {
						l.logger.Debug("local store: file name is not a valid key, not listed", "path", filepath.Join(l.dir, key), "error", err)
						continue
					}
					if !yield(key, nil) {
						return false
					}
				}
			}
			return true
		}
		rec(start)
	}
}

// isMarker reports whether the directory at key carries a marker.
func (l *Local) isMarker(key string) bool {
	if _, err := KeyPath(key); err != nil {
		return false
	}
	d, err := l.root.OpenFile(filepath.FromSlash(key), os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer d.Close()
	_, err = getXattr(d, markerXattr)
	return err == nil
}

// Usage returns the objects and bytes under prefix without hashing (Stats
// uses it).
func (l *Local) Usage(ctx context.Context, prefix string) (Usage, error) {
	var u Usage
	for key, err := range l.walk(ctx, prefix) {
		if err != nil {
			return Usage{}, err
		}
		fi, err := l.root.Lstat(filepath.FromSlash(strings.TrimSuffix(key, "/")))
		if err != nil {
			continue
		}
		u.Objects++
		if !strings.HasSuffix(key, "/") {
			u.Bytes += fi.Size()
		}
	}
	return u, nil
}

// Head implements Store.
func (l *Local) Head(ctx context.Context, key string) (ObjectInfo, error) {
	if p, ok, err := l.markerDir(key); ok {
		if err != nil {
			return ObjectInfo{}, err
		}
		return l.marker(key, p)
	}
	f, fi, err := l.open(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer f.Close()
	return l.info(key, f, fi)
}

// Get implements Store.
func (l *Local) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	f, fi, err := l.open(key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	info, err := l.info(key, f, fi)
	if err != nil {
		f.Close()
		return nil, ObjectInfo{}, err
	}
	return f, info, nil
}

// Download implements Store.
func (l *Local) Download(ctx context.Context, key string, _ int64, w io.WriterAt) (ObjectInfo, error) {
	r, info, err := l.Get(ctx, key)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer r.Close()
	n, err := io.Copy(io.NewOffsetWriter(w, 0), &ctxReader{ctx: ctx, r: r})
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: %w", l.op("download", key), classifyFS(err))
	}
	if n != info.Size {
		return ObjectInfo{}, fmt.Errorf("%s: object changed while read (%d of %d bytes): %w", l.op("download", key), n, info.Size, errdefs.ErrAborted)
	}
	return info, nil
}

// Put implements Store: the body is written to a temp file (hashed on the
// way), synced, and renamed into place under the store's lock after the
// condition was checked.
func (l *Local) Put(ctx context.Context, key string, body io.Reader, size int64, cond Cond, meta Metadata) (ObjectInfo, error) {
	if p, ok, err := l.markerDir(key); ok {
		if err == nil {
			err = cond.validate()
		}
		if err == nil {
			err = meta.validate()
		}
		if err != nil {
			return ObjectInfo{}, err
		}
		return l.putMarker(key, p, size, cond, meta)
	}
	p, err := l.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	if err := cond.validate(); err != nil {
		return ObjectInfo{}, err
	}
	if err := meta.validate(); err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: %w", l.op("put", key), err)
	}
	if size < 0 {
		return ObjectInfo{}, fmt.Errorf("%s: size must be known: %w", l.op("put", key), errdefs.ErrInvalidArgument)
	}
	if body == nil {
		body = strings.NewReader("")
	}
	if ra, ok := body.(io.ReaderAt); ok {
		body = io.NewSectionReader(ra, 0, size) // same contract as S3.Put
	}

	tmp := path.Join(localMetaDir, "tmp", randomName())
	f, err := l.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: create temp file: %w", l.op("put", key), classifyFS(err))
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			_ = l.root.Remove(tmp)
		}
	}()
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(&ctxReader{ctx: ctx, r: body}, size+1))
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: write: %w", l.op("put", key), classifyFS(err))
	}
	if n != size {
		return ObjectInfo{}, fmt.Errorf("%s: body has %d bytes, want %d: %w", l.op("put", key), n, size, errdefs.ErrInvalidArgument)
	}
	if err := f.Sync(); err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: sync: %w", l.op("put", key), classifyFS(err))
	}
	fi, err := f.Stat()
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: stat: %w", l.op("put", key), classifyFS(err))
	}
	etag := hex.EncodeToString(h.Sum(nil))
	_ = setXattr(f, etagXattr, []byte(etagStamp(fi)+" "+etag))
	if len(meta) > 0 {
		b, _ := json.Marshal(meta)
		if err := setXattr(f, metaXattr, b); err != nil {
			return ObjectInfo{}, fmt.Errorf("%s: store metadata: %w", l.op("put", key), classifyFS(err))
		}
	}
	if err := f.Close(); err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: close: %w", l.op("put", key), classifyFS(err))
	}

	if err := l.commit(key, p, tmp, cond); err != nil {
		return ObjectInfo{}, err
	}
	committed = true
	// The rename's durability needs no lock: a burst of creates (each
	// putting two prefix markers) queued behind this fsync.
	l.syncDir(filepath.Dir(p))
	return ObjectInfo{Key: key, Size: size, ETag: etag, LastModified: fi.ModTime(), Meta: meta}, nil
}

// commit renames a complete temp file to p if cond holds, atomically
// under l.mu.
func (l *Local) commit(key, p, tmp string, cond Cond) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkCond(key, cond); err != nil {
		return err
	}
	if dir := filepath.Dir(p); dir != "." {
		if err := l.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("%s: create parent directories: %w", l.op("put", key), classifyFS(err))
		}
	}
	if st, err := l.root.Lstat(p); err == nil && st.IsDir() {
		return fmt.Errorf("%s: a directory of that name holds other keys: %w", l.op("put", key), errdefs.ErrConflict)
	}
	if err := l.root.Rename(tmp, p); err != nil {
		return fmt.Errorf("%s: rename into place: %w", l.op("put", key), classifyFS(err))
	}
	return nil
}

// Copy implements Store: the source is read (pinned to srcIfMatch when
// given) and written to dst with its metadata.
func (l *Local) Copy(ctx context.Context, src, dst, srcIfMatch string) (ObjectInfo, error) {
	f, fi, err := l.open(src)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer f.Close()
	info, err := l.info(src, f, fi)
	if err != nil {
		return ObjectInfo{}, err
	}
	if srcIfMatch != "" && info.ETag != trimETag(srcIfMatch) {
		return ObjectInfo{}, fmt.Errorf("%s (If-Match: %s): object has ETag %s: precondition failed: %w",
			l.op("copy", src), srcIfMatch, info.ETag, errdefs.ErrFailedPrecondition)
	}
	return l.Put(ctx, dst, io.NewSectionReader(f, 0, fi.Size()), fi.Size(), Cond{}, info.Meta)
}

// checkCond evaluates cond against the current object. Callers hold l.mu.
func (l *Local) checkCond(key string, cond Cond) error {
	if cond == (Cond{}) {
		return nil
	}
	cur, err := l.Head(context.Background(), key)
	switch {
	case errdefs.IsNotFound(err) && cond.IfNoneMatch != "":
		return nil
	case errdefs.IsNotFound(err):
		return fmt.Errorf("%s (%s): %w", l.op("put", key), cond, err)
	case err != nil:
		return err
	case cond.IfNoneMatch != "":
		return fmt.Errorf("%s (%s): object exists: precondition failed: %w", l.op("put", key), cond, errdefs.ErrFailedPrecondition)
	case cur.ETag != cond.IfMatch:
		return fmt.Errorf("%s (%s): object has ETag %s: precondition failed: %w", l.op("put", key), cond, cur.ETag, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Delete implements Store. Directories left empty are removed up to the
// store's root (S3 has no empty directories either).
func (l *Local) Delete(ctx context.Context, key string, ifMatch string) error {
	if p, ok, err := l.markerDir(key); ok {
		if err != nil {
			return err
		}
		return l.deleteMarker(key, p, ifMatch)
	}
	p, err := l.path(key)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if ifMatch != "" {
		cur, err := l.Head(ctx, key)
		if errdefs.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.ETag != trimETag(ifMatch) {
			return fmt.Errorf("%s (If-Match: %s): object has ETag %s: precondition failed: %w",
				l.op("delete", key), ifMatch, cur.ETag, errdefs.ErrFailedPrecondition)
		}
	}
	fi, err := l.root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", l.op("delete", key), classifyFS(err))
	}
	if fi.IsDir() {
		return nil // "a/b" exists as a directory of keys: no object "a/b"
	}
	if err := l.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", l.op("delete", key), classifyFS(err))
	}
	l.pruneEmpty(filepath.Dir(p))
	return nil
}

// pruneEmpty removes dir and its parents while they are empty. Callers hold
// l.mu. Errors (not empty, a mount point) end it quietly.
func (l *Local) pruneEmpty(dir string) {
	for dir != "." && dir != string(filepath.Separator) {
		if fi, err := l.root.Lstat(dir); err != nil || !fi.IsDir() {
			return // never unlink a symlink that stands for a directory
		}
		if l.isMarker(filepath.ToSlash(dir)) {
			return // a directory marker object: it stays until deleted
		}
		if err := l.root.Remove(dir); err != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

// DeletePrefix removes every object under prefix (see the package-level
// DeletePrefix, which calls it).
func (l *Local) DeletePrefix(ctx context.Context, prefix string) (int64, error) {
	if err := checkDirPrefix(prefix); err != nil {
		return 0, err
	}
	var keys []string
	for key, err := range l.walk(ctx, prefix) {
		if err != nil {
			return 0, err
		}
		keys = append(keys, key)
	}
	// Only objects (regular files) go; symlinks and special files that are
	// not objects stay, and nothing is removed recursively, so a mount
	// point below the prefix is never descended into by a RemoveAll.
	var deleted int64
	for _, key := range keys {
		if err := l.Delete(ctx, key, ""); err != nil {
			return deleted, err
		}
		deleted++
	}
	return deleted, nil
}

func (l *Local) syncDir(dir string) {
	d, err := l.root.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	d.Close()
}

func randomName() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + hex.EncodeToString(b)
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// classifyFS wraps filesystem errors onto errdefs classes.
func classifyFS(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", errdefs.ErrPermissionDenied, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %w", errdefs.ErrResourceExhausted, err)
	case errors.Is(err, syscall.ENAMETOOLONG), errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	case errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENOTEMPTY), errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %w", errdefs.ErrConflict, err)
	case errdefs.IsNotFound(err), errdefs.IsInvalidArgument(err):
		return err
	}
	return fmt.Errorf("%w: %w", errdefs.ErrUnknown, err)
}
