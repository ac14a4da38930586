package hotsync

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/objstore"
)

// hashLimit: files up to this size are hashed (MD5) on upload, which lets a
// later Up recognise a touched-but-unchanged file and a retried upload that
// had in fact succeeded. Larger files are compared by metadata only.
const hashLimit = 16 << 20

type upJob struct {
	rel  string
	fi   os.FileInfo // from the walk (lstat)
	prev *entry      // nil: not in the manifest
}

type upOutcome int

const (
	outUploaded upOutcome = iota
	outUnchanged
	outConflict
	outVanished
)

// Up uploads what changed in Dir since the last sync, deletes objects whose
// files are gone (only if unchanged since), saves conflicting versions as
// NAME.conflict-SANDBOXID, and updates the manifest. The returned error joins
// the failures of individual files; the manifest then records what did
// succeed, so the next Up retries only the rest.
func (s *Syncer) Up(ctx context.Context) (res Result, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	defer func() {
		s.logger.InfoContext(ctx, "hot sync up",
			"uploaded", len(res.Uploaded), "deleted", len(res.Deleted), "conflicts", len(res.Conflicts),
			"unchanged", res.Unchanged, "skipped", len(res.Skipped), "rejected", len(res.Rejected),
			"bytes", res.Bytes, "duration", time.Since(start), "error", err)
	}()

	m, found, err := loadManifest(s.manifest, s.prefix, s.sandboxID)
	if err != nil {
		return Result{}, fmt.Errorf("hotsync up: %w", err)
	}
	if !found {
		s.logger.InfoContext(ctx, "hot sync: no manifest, every file counts as new", "manifest", s.manifest)
	}
	// Dir must be there: an unmounted or missing Dir must not read as "the
	// user deleted everything".
	if err := s.checkMounted("up"); err != nil {
		return Result{}, err
	}
	if fi, err := os.Lstat(s.dir); err != nil {
		return Result{}, fmt.Errorf("hotsync up: %s: %w", s.dir, classify(err))
	} else if !fi.IsDir() {
		return Result{}, fmt.Errorf("hotsync up: %s is not a directory: %w", s.dir, errdefs.ErrFailedPrecondition)
	}
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return Result{}, fmt.Errorf("hotsync up: open %s: %w", s.dir, classify(err))
	}
	defer root.Close()

	var c collector
	jobs, seen, walkErr := s.walk(ctx, root, m, &c)
	if walkErr != nil {
		c.fail(walkErr)
	}
	jobs = s.dropAmplifiers(jobs, &c)

	var mmu sync.Mutex // guards m.Files
	parallel(ctx, s.concurrency, jobs, func(j upJob) {
		out, e, err := s.uploadOne(ctx, root, j)
		if err != nil {
			c.fail(err)
			return
		}
		if out == outVanished {
			return // the next Up sees it gone
		}
		mmu.Lock()
		m.Files[j.rel] = e
		mmu.Unlock()
		c.do(func(r *Result) {
			switch out {
			case outUploaded:
				r.Uploaded = append(r.Uploaded, j.rel)
				r.Bytes += e.Size
			case outConflict:
				r.Conflicts = append(r.Conflicts, j.rel)
				r.Bytes += e.Size
			case outUnchanged:
				r.Unchanged++
			}
		})
	})

	// Deletions, only after a complete walk: a directory that could not be
	// read must not look deleted.
	if walkErr == nil && ctx.Err() == nil {
		type goneFile struct {
			rel string
			e   *entry
		}
		var gone []goneFile
		for rel, e := range m.Files {
			if !seen[rel] && !s.exclude.excludedPath(rel) {
				gone = append(gone, goneFile{rel, e})
			}
		}
		parallel(ctx, s.concurrency, gone, func(g goneFile) {
			rel, e := g.rel, g.e
			if e.ETag == "" {
				// Never had an object of ours (a lost create race).
				mmu.Lock()
				delete(m.Files, rel)
				mmu.Unlock()
				return
			}
			key := s.prefix + rel
			err := retry(ctx, retryAttempts, noExtraTransient, func() error { return s.store.Delete(ctx, key, e.ETag) })
			switch {
			case err == nil:
				c.do(func(r *Result) { r.Deleted = append(r.Deleted, rel) })
			case errdefs.IsFailedPrecondition(err):
				// Someone else changed it since our last sync: theirs stays.
				s.logger.WarnContext(ctx, "hot sync: file deleted here but changed elsewhere, object kept", "key", key)
				c.do(func(r *Result) { r.Conflicts = append(r.Conflicts, rel) })
			default:
				c.fail(fmt.Errorf("hotsync up: delete %s: %w", rel, err))
				return
			}
			mmu.Lock()
			delete(m.Files, rel)
			mmu.Unlock()
		})
	}
	if err := ctx.Err(); err != nil {
		c.fail(fmt.Errorf("hotsync up: %w", err))
	}

	if err := m.save(s.manifest); err != nil {
		c.fail(fmt.Errorf("hotsync up: %w", classify(err)))
	}
	return c.finish("up")
}

// dropAmplifiers keeps a sandbox from turning its disk quota into an
// unbounded upload. A file's apparent size costs nothing on disk when it is
// sparse (truncate -s 5T) or another hard link of the same inode, yet
// every one of those bytes would be uploaded. Real data cannot claim more
// than the filesystem holding Dir can store (the sandbox's disk image), so
// only when the files to upload claim more than that are sparse files
// (over 1 MiB of holes) and all but the first path of a hard-linked inode
// reported as rejected and not uploaded. They still count as seen: their
// previous objects stay.
func (s *Syncer) dropAmplifiers(jobs []upJob, c *collector) []upJob {
	sp, ok := space(s.dir)
	if !ok {
		return jobs
	}
	capacity := sp.total
	var total int64
	for _, j := range jobs {
		total += j.fi.Size()
	}
	if total <= capacity {
		return jobs
	}
	s.logger.Warn("hot sync: files to upload claim more bytes than the disk holds; sparse and hard-linked copies are not uploaded",
		"claimed", total, "capacity", capacity)
	linked := map[uint64]string{}
	kept := jobs[:0]
	for _, j := range jobs { // walk order: lexical, so the first link wins deterministically
		st, ok := diskUsage(j.fi)
		if !ok {
			kept = append(kept, j)
			continue
		}
		if holes := j.fi.Size() - st.allocated; holes > 1<<20 {
			c.reject(j.rel, fmt.Sprintf("sparse file (%d bytes, %d on disk) while the files to upload claim more than the %d-byte disk holds; not uploaded",
				j.fi.Size(), st.allocated, capacity))
			continue
		}
		if st.links > 1 {
			if first, dup := linked[st.ino]; dup {
				c.reject(j.rel, fmt.Sprintf("hard link of %s while the files to upload claim more than the %d-byte disk holds; not uploaded", first, capacity))
				continue
			}
			linked[st.ino] = j.rel
		}
		kept = append(kept, j)
	}
	return kept
}

// walk lists Dir without following symlinks and returns the files to
// upload and the set of syncable files seen. The error is non-nil if any
// part of Dir could not be read.
func (s *Syncer) walk(ctx context.Context, root *os.Root, m *manifest, c *collector) ([]upJob, map[string]bool, error) {
	var (
		jobs    []upJob
		seen    = map[string]bool{}
		walkErr []error
	)
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if p == "." {
				return err
			}
			walkErr = append(walkErr, fmt.Errorf("read %s: %w", p, classify(err)))
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if p == "." {
			return nil
		}
		t := d.Type()
		switch {
		case t&fs.ModeSymlink != 0:
			c.reject(p, "symlink (not followed)")
			return nil
		case d.IsDir():
			if s.exclude.match(p, true) {
				c.res.Skipped = append(c.res.Skipped, p+"/")
				return fs.SkipDir
			}
			if reason := s.badName(p + "/"); reason != "" {
				c.reject(p+"/", reason)
				return fs.SkipDir
			}
			return nil
		case !t.IsRegular():
			c.reject(p, fmt.Sprintf("special file (%s), not synced", t))
			return nil
		case p == objstore.KeepMarker:
			c.res.Skipped = append(c.res.Skipped, p) // reserved for the prefix marker
			return nil
		case s.exclude.match(p, false):
			c.res.Skipped = append(c.res.Skipped, p)
			return nil
		}
		if reason := s.badName(p); reason != "" {
			c.reject(p, reason)
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while walking: treated as deleted
		}
		if err != nil {
			walkErr = append(walkErr, fmt.Errorf("stat %s: %w", p, classify(err)))
			return nil
		}
		seen[p] = true
		prev := m.Files[p]
		if prev != nil && prev.sameState(stateOf(fi)) {
			c.res.Unchanged++
			return nil
		}
		jobs = append(jobs, upJob{rel: p, fi: fi, prev: prev})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("hotsync up: walk %s: %w", s.dir, classify(err))
	}
	if len(walkErr) > 0 {
		return jobs, seen, fmt.Errorf("hotsync up: %s could not be read completely, no deletions: %w", s.dir, errors.Join(walkErr...))
	}
	return jobs, seen, nil
}

// badName says why the path rel (relative to Dir) cannot be an S3 key below
// the prefix, or "".
func (s *Syncer) badName(rel string) string {
	switch {
	case !utf8.ValidString(rel):
		return "name is not valid UTF-8, cannot be an S3 key"
	case len(s.prefix)+len(rel) > objstore.MaxKeyLen:
		return fmt.Sprintf("key would be %d bytes, longer than S3's %d", len(s.prefix)+len(rel), objstore.MaxKeyLen)
	}
	return ""
}

// uploadOne uploads one file and returns the manifest entry for it.
func (s *Syncer) uploadOne(ctx context.Context, root *os.Root, j upJob) (upOutcome, *entry, error) {
	key := s.prefix + j.rel
	fail := func(err error) (upOutcome, *entry, error) {
		return 0, nil, fmt.Errorf("hotsync up: %s: %w", j.rel, err)
	}
	f, err := root.OpenFile(filepath.FromSlash(j.rel), readFlags, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return outVanished, nil, nil
	}
	if err != nil {
		return fail(classify(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fail(classify(err))
	}
	if !fi.Mode().IsRegular() || !os.SameFile(fi, j.fi) {
		// Replaced (by a symlink, another file) since the walk: never read
		// what the walk did not see; the next Up looks again.
		s.logger.InfoContext(ctx, "hot sync: file replaced during sync, left for the next sync", "path", j.rel)
		return outVanished, nil, nil
	}
	st := stateOf(fi)
	size := st.Size

	var sum string
	if size <= hashLimit {
		h := md5.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
			return fail(classify(err))
		}
		sum = hex.EncodeToString(h.Sum(nil))
		if p := j.prev; p != nil && p.MD5 == sum && p.Size == size {
			e := *p // same content as last synced: only the metadata moved
			e.setState(st)
			return outUnchanged, &e, nil
		}
	}

	put := func(k string, cond objstore.Cond) (objstore.ObjectInfo, error) {
		release, err := s.gateLarge(ctx, size)
		if err != nil {
			return objstore.ObjectInfo{}, err
		}
		defer release()
		var info objstore.ObjectInfo
		err = retry(ctx, retryAttempts, noExtraTransient, func() error {
			var err error
			info, err = s.store.Put(ctx, k, io.NewSectionReader(f, 0, size), size, cond)
			return err
		})
		return info, err
	}

	cond := objstore.IfNoneMatch("*")
	if j.prev != nil && j.prev.ETag != "" {
		cond = objstore.IfMatch(j.prev.ETag)
	}
	info, err := put(key, cond)
	if errdefs.IsNotFound(err) && cond.IfMatch != "" {
		// Deleted elsewhere while we changed it: the change wins, but only
		// as a create, so that a third writer is not overwritten.
		info, err = put(key, objstore.IfNoneMatch("*"))
	}
	switch {
	case err == nil:
		e := &entry{ETag: info.ETag, MD5: sum}
		e.setState(st)
		return outUploaded, e, nil
	case !errdefs.IsFailedPrecondition(err):
		return fail(err)
	}

	// The object changed since our last sync. If it now holds exactly our
	// content (our own earlier attempt succeeded, or the same edit was made
	// elsewhere), there is nothing to resolve.
	if cur, herr := s.store.Head(ctx, key); herr == nil && sum != "" && cur.ETag == sum && cur.Size == size {
		e := &entry{ETag: cur.ETag, MD5: sum}
		e.setState(st)
		return outUnchanged, e, nil
	}
	ckey := s.ConflictName(key)
	if err := objstore.ValidateKey(ckey); err != nil {
		return fail(fmt.Errorf("changed elsewhere, and the conflict copy cannot be saved: %w", err))
	}
	if _, err := put(ckey, objstore.Cond{}); err != nil {
		return fail(fmt.Errorf("changed elsewhere, save conflict copy %s: %w", ckey, err))
	}
	s.logger.WarnContext(ctx, "hot sync: file changed here and elsewhere, saved ours as a conflict copy", "key", key, "conflict_key", ckey)
	e := &entry{MD5: sum, Conflict: true}
	if j.prev != nil {
		e.ETag = j.prev.ETag
	}
	e.setState(st)
	return outConflict, e, nil
}
