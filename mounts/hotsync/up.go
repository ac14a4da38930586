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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/fault"
	"github.com/matrx-dev/matrx/mounts/objstore"
)

// hashLimit: files up to this size are hashed (MD5) on upload, which lets a
// later Up recognise a touched-but-unchanged file. Larger files are
// compared by metadata only. (Our own earlier uploads are recognised at
// every size by the matrx-writer metadata.)
const hashLimit = 16 << 20

type upJob struct {
	key  string // manifest key: the escaped path, "PATH/" for a directory
	rel  string // the real path relative to Dir, slash-separated
	kind string
	fi   os.FileInfo // from the walk (lstat)
	prev *entry      // nil: not in the manifest
}

// keyRel is the job's key without a directory's trailing "/".
func (j upJob) keyRel() string { return strings.TrimSuffix(j.key, "/") }

type upOutcome int

const (
	outUploaded upOutcome = iota
	outUnchanged
	outConflict
	outVanished
	outDir
)

// Up uploads what changed in Dir since the last sync (contents, modes,
// mtimes, symlinks, directories), deletes objects whose entries are gone
// (only if unchanged since, only when Dir is verified), saves conflicting
// versions as NAME.conflict-SANDBOXID, and updates the manifest. The
// returned error joins the failures of individual files; the manifest then
// records what did succeed, so the next Up retries only the rest. A
// *HeldError says the pass was incomplete by design (deletions held back,
// or over the names cap): Result.Held and Result.OverLimit say why.
func (s *Syncer) Up(ctx context.Context) (Result, error) {
	release, err := s.acquire(ctx, "up")
	if err != nil {
		return Result{}, err
	}
	defer release()
	return s.up(ctx)
}

func (s *Syncer) up(ctx context.Context) (res Result, err error) {
	start := time.Now()
	defer func() {
		s.logger.InfoContext(ctx, "hot sync up",
			"uploaded", len(res.Uploaded), "deleted", len(res.Deleted), "conflicts", len(res.Conflicts),
			"unchanged", res.Unchanged, "dirs", res.Dirs, "skipped", len(res.Skipped), "rejected", len(res.Rejected),
			"bytes", res.Bytes, "held", res.Held, "duration", time.Since(start), "error", err)
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
	verified, unverified := s.verify(root)

	var c collector
	w := s.walk(ctx, root, m, &c)
	if w.err != nil {
		c.fail(w.err)
	}
	jobs := s.dropAmplifiers(w.jobs, &c)

	var mmu sync.Mutex // guards m.entries
	s.uploadAll(ctx, root, m, &mmu, &c, jobs)
	held := s.deletions(ctx, m, &mmu, &c, &w, verified, unverified)
	if err := ctx.Err(); err != nil {
		c.fail(fmt.Errorf("hotsync up: %w", err))
	}

	if err := m.save(s.manifest); err != nil {
		c.fail(fmt.Errorf("hotsync up: %w", classify(err)))
	}
	fault.At(ctx, "manifest-saved")
	res, err = c.finish("up")
	res.Held, res.OverLimit = held, w.limit
	if err == nil && held != "" {
		err = &HeldError{Reason: held}
	}
	return res, err
}

// uploadAll uploads the walk's jobs, recording each entry in m (under mmu)
// and each outcome in c.
func (s *Syncer) uploadAll(ctx context.Context, root *os.Root, m *manifest, mmu *sync.Mutex, c *collector, jobs []upJob) {
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
		m.entries[j.key] = e
		mmu.Unlock()
		if out == outUploaded {
			fault.At(ctx, "uploaded-file")
		}
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
			case outDir:
				r.Dirs++
			}
		})
	})
}

// deletions propagates what the walk no longer saw, or returns why it is
// held back ("" when nothing was held).
func (s *Syncer) deletions(ctx context.Context, m *manifest, mmu *sync.Mutex, c *collector, w *walkResult, verified bool, unverified string) string {
	// Deletions. Never after an incomplete walk (a directory that could
	// not be read must not look deleted), never over the names cap (names
	// past it were not looked at), never when Dir cannot be verified, and
	// not on the first pass that finds an emptied tree (mass-deletion
	// guard; the next verified pass applies them).
	type goneEntry struct {
		key string
		e   *entry
	}
	var gone []goneEntry
	for key, e := range m.entries {
		if !w.seen[key] && !s.exclude.excludedPath(entryRel(key, e)) {
			gone = append(gone, goneEntry{key, e})
		}
	}
	var held string
	switch {
	case w.limit != nil:
		// Incomplete whether or not anything looks deleted: names past
		// the cap were not synced.
		held = w.limit.String()
	case w.err != nil || ctx.Err() != nil || len(gone) == 0:
	case !verified:
		held = unverified
	case w.names == 0 && len(gone) >= MassDeletionMin && !m.EmptyHeld:
		m.EmptyHeld = true
		held = fmt.Sprintf("the walk found no files while %d were synced before; deletions held back for one pass (mass-deletion guard)", len(gone))
	}
	if w.names > 0 {
		m.EmptyHeld = false
	}
	if held != "" {
		s.logger.WarnContext(ctx, "hot sync: deletions held back", "deletions", len(gone), "reason", held)
	}
	if held == "" && w.err == nil && ctx.Err() == nil {
		m.EmptyHeld = false
		parallel(ctx, s.concurrency, gone, func(g goneEntry) {
			ok, conflict, err := s.deleteOne(ctx, g.key, g.e)
			switch {
			case err != nil:
				c.fail(err)
				return
			case conflict:
				c.do(func(r *Result) { r.Conflicts = append(r.Conflicts, entryRel(g.key, g.e)) })
			case ok && g.e.Kind != kindDir:
				c.do(func(r *Result) { r.Deleted = append(r.Deleted, entryRel(g.key, g.e)) })
			}
			mmu.Lock()
			delete(m.entries, g.key)
			mmu.Unlock()
		})
	}
	return held
}

// entryRel is the real relative path of a manifest entry.
func entryRel(key string, e *entry) string {
	rel := strings.TrimSuffix(key, "/")
	if e.Raw != "" {
		if raw, err := decodeRaw(e.Raw); err == nil {
			rel = raw
		}
	}
	return rel
}

// verify says whether the directory Up walks is provably the sandbox's
// home, and if not, why.
func (s *Syncer) verify(root *os.Root) (bool, string) {
	if s.sentinel == "" {
		return false, "the hot directory has no sentinel to verify it by (made by an older matrxd?); deletions are not sent"
	}
	d, err := root.Open(".")
	if err != nil {
		return false, fmt.Sprintf("cannot open %s to verify it: %v", s.dir, err)
	}
	defer d.Close()
	if readSentinel(d) != s.sentinel {
		return false, fmt.Sprintf("%s is not the sandbox's home (its sentinel is missing or different: an unmounted, removed or replaced disk); deletions held back", s.dir)
	}
	if s.dirIsMount {
		dev, ok1 := devOf(d, "")
		parent, ok2 := devOf(nil, filepath.Dir(s.dir))
		if !ok1 || !ok2 || dev == parent {
			return false, fmt.Sprintf("%s is not on the sandbox's own disk; deletions held back", s.dir)
		}
	}
	return true, ""
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
		if j.kind == kindFile {
			total += j.fi.Size()
		}
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
		if !ok || j.kind != kindFile {
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

// walkResult is what one walk of Dir found.
type walkResult struct {
	jobs  []upJob
	seen  map[string]bool // manifest keys of the syncable entries seen
	names int             // syncable names counted
	limit *Limit          // set when the walk stopped at the names cap
	err   error           // some part of Dir could not be read
}

// walk lists Dir without following symlinks and returns the entries to
// upload and the keys of every syncable entry seen, stopping at the names
// cap.
func (s *Syncer) walk(ctx context.Context, root *os.Root, m *manifest, c *collector) walkResult {
	w := walkResult{seen: map[string]bool{}}
	var walkErr []error
	err := walkRoot(root, func(p string, d fs.DirEntry, err error) error {
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
		isDir := d.IsDir()
		skip := func() error {
			if isDir {
				return fs.SkipDir
			}
			return nil
		}
		kind := kindFile
		switch {
		case isDir:
			kind = kindDir
		case t&fs.ModeSymlink != 0:
			kind = kindLink
		case !t.IsRegular():
			c.reject(p, fmt.Sprintf("special file (%s) cannot be stored; not synced", t))
			return nil
		case p == objstore.KeepMarker:
			c.res.Skipped = append(c.res.Skipped, p) // reserved for the prefix marker
			return nil
		}
		if s.exclude.match(p, isDir) {
			if isDir {
				c.res.Skipped = append(c.res.Skipped, p+"/")
			} else {
				c.res.Skipped = append(c.res.Skipped, p)
			}
			return skip()
		}
		key := escapeName(p)
		if isDir {
			key = dirKey(key)
		}
		if reason := s.badKey(key); reason != "" {
			c.reject(p, reason)
			return skip()
		}
		if w.seen[key] {
			c.reject(p, fmt.Sprintf("its name, escaped to be an S3 key, collides with another entry's (%s)", key))
			return skip()
		}
		if w.names >= s.maxNames {
			w.limit = &Limit{Names: w.names + 1, AtLeast: true, MaxNames: s.maxNames}
			return fs.SkipAll
		}
		w.names++
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return skip() // removed while walking: treated as deleted
		}
		if err != nil {
			walkErr = append(walkErr, fmt.Errorf("stat %s: %w", p, classify(err)))
			return skip()
		}
		w.seen[key] = true
		prev := m.entries[key]
		if prev != nil && prev.Kind == kind && prev.sameState(stateOf(fi)) {
			if kind != kindDir {
				c.res.Unchanged++
			}
			return nil
		}
		w.jobs = append(w.jobs, upJob{key: key, rel: p, kind: kind, fi: fi, prev: prev})
		return nil
	})
	if err != nil {
		w.err = fmt.Errorf("hotsync up: walk %s: %w", s.dir, classify(err))
		return w
	}
	if len(walkErr) > 0 {
		w.err = fmt.Errorf("hotsync up: %s could not be read completely, no deletions: %w", s.dir, errors.Join(walkErr...))
	}
	return w
}

// badKey says why key (relative to the prefix) cannot be an S3 key, or "".
func (s *Syncer) badKey(key string) string {
	if n := len(s.prefix) + len(key); n > objstore.MaxKeyLen {
		return fmt.Sprintf("key would be %d bytes, longer than S3's %d; cannot be stored", n, objstore.MaxKeyLen)
	}
	return ""
}

// uploadOne uploads one entry and returns its manifest entry.
func (s *Syncer) uploadOne(ctx context.Context, root *os.Root, j upJob) (upOutcome, *entry, error) {
	fail := func(err error) (upOutcome, *entry, error) {
		return 0, nil, fmt.Errorf("hotsync up: %s: %w", j.rel, err)
	}
	p := filepath.FromSlash(j.rel)
	switch j.kind {
	case kindDir:
		return s.uploadDir(ctx, root, j)
	case kindLink:
		target, err := root.Readlink(p)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) {
			return outVanished, nil, nil
		}
		if err != nil {
			return fail(classify(err))
		}
		fi, err := root.Lstat(p)
		if err != nil || !os.SameFile(fi, j.fi) || fi.Mode()&fs.ModeSymlink == 0 {
			return outVanished, nil, nil
		}
		st := stateOf(fi)
		body := strings.NewReader(target)
		sum := md5hex([]byte(target))
		if pr := j.prev; pr != nil && pr.MD5 == sum && pr.Kind == kindLink && pr.MtimeNs == st.MtimeNs {
			e := *pr
			e.setState(st)
			return outUnchanged, &e, nil
		}
		return s.putVersion(ctx, j, body, int64(len(target)), st, 0o777, sum)
	}
	f, err := root.OpenFile(p, readFlags, 0)
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
	mode := modeOf(fi)
	var sum string
	if st.Size <= hashLimit {
		h := md5.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size)); err != nil {
			return fail(classify(err))
		}
		sum = hex.EncodeToString(h.Sum(nil))
		if pr := j.prev; pr != nil && pr.MD5 == sum && pr.Size == st.Size && pr.Mode == mode && pr.MtimeNs == st.MtimeNs && pr.Kind == kindFile {
			e := *pr // same content, mode and mtime as last synced: only the ctime moved
			e.setState(st)
			return outUnchanged, &e, nil
		}
	}
	return s.putVersion(ctx, j, f, st.Size, st, mode, sum)
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// uploadDir writes a directory's marker object ("PATH/", zero bytes) with
// its mode and mtime. Markers are written unconditionally: two sandboxes
// disagreeing about a directory's mtime lose nothing.
func (s *Syncer) uploadDir(ctx context.Context, root *os.Root, j upJob) (upOutcome, *entry, error) {
	st := stateOf(j.fi)
	mode := modeOf(j.fi)
	meta := encodeMeta(kindDir, mode, st.MtimeNs, j.rel, j.keyRel(), s.sandboxID, "")
	var info objstore.ObjectInfo
	err := retry(ctx, retryAttempts, noExtraTransient, func() error {
		var err error
		info, err = s.store.Put(ctx, s.prefix+j.key, strings.NewReader(""), 0, objstore.Cond{}, meta)
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("hotsync up: directory %s: %w", j.rel, err)
	}
	e := &entry{ETag: info.ETag, Kind: kindDir, Mode: mode, Raw: rawOf(j.rel, j.keyRel())}
	e.setState(st)
	return outDir, e, nil
}

func rawOf(rel, keyRel string) string {
	if rel == keyRel {
		return ""
	}
	return encodeRaw(rel)
}

// putVersion uploads a new version of a file or symlink under the
// conditions that keep other sandboxes' writes: create-only for a new
// entry, If-Match the synced version for a changed one. The version it
// replaces goes to the trash first. A refused write that turns out to be
// our own earlier write (a lost response, a crash before the manifest was
// saved) is recognised by its matrx-writer metadata and replaced; any other
// refused write leaves theirs and saves ours as NAME.conflict-SANDBOX.
func (s *Syncer) putVersion(ctx context.Context, j upJob, body io.ReaderAt, size int64, st fileState, mode uint32, sum string) (upOutcome, *entry, error) {
	key := s.prefix + j.key
	fail := func(err error) (upOutcome, *entry, error) {
		return 0, nil, fmt.Errorf("hotsync up: %s: %w", j.rel, err)
	}
	put := func(k string, cond objstore.Cond, meta objstore.Metadata) (objstore.ObjectInfo, error) {
		release, err := s.gateLarge(ctx, size)
		if err != nil {
			return objstore.ObjectInfo{}, err
		}
		defer release()
		var info objstore.ObjectInfo
		err = retry(ctx, retryAttempts, noExtraTransient, func() error {
			var err error
			info, err = s.store.Put(ctx, k, io.NewSectionReader(body, 0, size), size, cond, meta)
			return err
		})
		return info, err
	}
	newEntry := func(etag string, conflict bool) *entry {
		e := &entry{ETag: etag, MD5: sum, Kind: j.kind, Mode: mode, Raw: rawOf(j.rel, j.keyRel()), Conflict: conflict}
		e.setState(st)
		return e
	}
	base := ""
	cond := objstore.IfNoneMatch("*")
	if j.prev != nil && j.prev.ETag != "" {
		base = j.prev.ETag
		cond = objstore.IfMatch(base)
		if err := s.toTrash(ctx, key, j.keyRel(), base); err != nil {
			return fail(err)
		}
	}
	meta := func(base string) objstore.Metadata {
		return encodeMeta(j.kind, mode, st.MtimeNs, j.rel, j.keyRel(), s.sandboxID, base)
	}
	info, err := put(key, cond, meta(base))
	if errdefs.IsNotFound(err) && cond.IfMatch != "" {
		// Deleted elsewhere while we changed it: the change wins, but only
		// as a create, so that a third writer is not overwritten.
		base = ""
		info, err = put(key, objstore.IfNoneMatch("*"), meta(base))
	}
	switch {
	case err == nil:
		return outUploaded, newEntry(info.ETag, false), nil
	case !errdefs.IsFailedPrecondition(err):
		return fail(err)
	}

	// The object changed since our last sync.
	cur, herr := s.store.Head(ctx, key)
	if herr == nil {
		om := decodeMeta(cur, false)
		if om.writer == s.sandboxID && om.base == base {
			// Our own earlier write of this entry, made on top of the
			// version we know: replace it.
			if sum != "" && cur.ETag == sum && cur.Size == size {
				return outUnchanged, newEntry(cur.ETag, false), nil // it already holds this content
			}
			info, err := put(key, objstore.IfMatch(cur.ETag), meta(base))
			if err == nil {
				return outUploaded, newEntry(info.ETag, false), nil
			}
			if !errdefs.IsFailedPrecondition(err) {
				return fail(err)
			}
			cur, herr = s.store.Head(ctx, key) // someone else got in between
		}
	}
	if herr == nil && sum != "" && cur.ETag == sum && cur.Size == size {
		// It already holds exactly our content (the same edit was made
		// elsewhere): nothing to resolve.
		return outUnchanged, newEntry(cur.ETag, false), nil
	}
	ckey := s.ConflictName(key)
	if err := objstore.ValidateKey(ckey); err != nil {
		return fail(fmt.Errorf("changed elsewhere, and the conflict copy cannot be saved: %w", err))
	}
	if _, err := put(ckey, objstore.Cond{}, meta("")); err != nil {
		return fail(fmt.Errorf("changed elsewhere, save conflict copy %s: %w", ckey, err))
	}
	s.logger.WarnContext(ctx, "hot sync: file changed here and elsewhere, saved ours as a conflict copy", "key", key, "conflict_key", ckey)
	return outConflict, newEntry(base, true), nil
}

// toTrash copies the version etag of key to the trash before it is
// overwritten or deleted. A version that is already gone or replaced needs
// no copy (the write or delete that follows fails its condition the same
// way); one that cannot be copied at all (over 5 GiB, or a key too long
// for the trash) is logged and not kept. Any other failure stops the write
// or delete: nothing is removed that could not be kept.
func (s *Syncer) toTrash(ctx context.Context, key, keyRel, etag string) error {
	if s.trash == "" {
		return nil
	}
	tk := TrashKey(s.trash, time.Now(), s.sandboxID, keyRel)
	if err := objstore.ValidateKey(tk); err != nil {
		s.logger.WarnContext(ctx, "hot sync: version not kept in the trash", "key", key, "error", err)
		return nil
	}
	err := retry(ctx, retryAttempts, noExtraTransient, func() error {
		_, err := s.store.Copy(ctx, key, tk, etag)
		return err
	})
	switch {
	case err == nil, errdefs.IsFailedPrecondition(err), errdefs.IsNotFound(err):
		return nil
	case errdefs.IsNotImplemented(err):
		s.logger.WarnContext(ctx, "hot sync: version not kept in the trash", "key", key, "error", err)
		return nil
	}
	return fmt.Errorf("keep the previous version in the trash: %w", err)
}

// deleteOne deletes the object of a gone entry if it is still the version
// synced (or our own later write of it); conflict reports that someone
// else changed it, so theirs stays.
func (s *Syncer) deleteOne(ctx context.Context, mkey string, e *entry) (ok, conflict bool, err error) {
	if e.ETag == "" {
		return false, false, nil // never had an object of ours (a lost create race)
	}
	key := s.prefix + mkey
	keyRel := strings.TrimSuffix(mkey, "/")
	del := func(etag string) error {
		if e.Kind != kindDir {
			if err := s.toTrash(ctx, key, keyRel, etag); err != nil {
				return err
			}
		}
		return retry(ctx, retryAttempts, noExtraTransient, func() error { return s.store.Delete(ctx, key, etag) })
	}
	err = del(e.ETag)
	if errdefs.IsFailedPrecondition(err) {
		if cur, herr := s.store.Head(ctx, key); herr == nil {
			if om := decodeMeta(cur, e.Kind == kindDir); om.writer == s.sandboxID && om.base == e.ETag {
				err = del(cur.ETag) // our own later write of it
			}
		}
	}
	switch {
	case err == nil:
		return true, false, nil
	case errdefs.IsFailedPrecondition(err):
		if e.Kind == kindDir {
			return false, false, nil // a directory marker rewritten elsewhere: theirs stays
		}
		s.logger.WarnContext(ctx, "hot sync: file deleted here but changed elsewhere, object kept", "key", key)
		return false, true, nil
	}
	return false, false, fmt.Errorf("hotsync up: delete %s: %w", keyRel, err)
}

// walkRoot is fs.WalkDir over an os.Root, for names io/fs refuses (not
// valid UTF-8): entries in lexical order, directories opened without
// following a symlink in their place, fn's fs.SkipDir and fs.SkipAll as
// in fs.WalkDir.
func walkRoot(root *os.Root, fn fs.WalkDirFunc) error {
	err := walkRootDir(root, ".", fn)
	if errors.Is(err, fs.SkipAll) || errors.Is(err, fs.SkipDir) {
		return nil
	}
	return err
}

func walkRootDir(root *os.Root, dir string, fn fs.WalkDirFunc) error {
	f, err := root.OpenFile(filepath.FromSlash(dir), dirFlags, 0)
	var ents []fs.DirEntry
	if err == nil {
		ents, err = f.ReadDir(-1)
		f.Close()
	}
	if dir == "." {
		if err != nil {
			return fn(dir, nil, err)
		}
		if err := fn(dir, rootEntry{}, nil); err != nil {
			return err
		}
	} else if err != nil {
		if err := fn(dir, nil, err); err != nil && !errors.Is(err, fs.SkipDir) {
			return err
		}
		return nil
	}
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	for _, e := range ents {
		p := e.Name()
		if dir != "." {
			p = dir + "/" + p
		}
		err := fn(p, rootDirEntry{e, root, p}, nil)
		switch {
		case errors.Is(err, fs.SkipDir):
			continue
		case err != nil:
			return err
		}
		if e.IsDir() {
			if err := walkRootDir(root, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// rootEntry stands for the walk's root.
type rootEntry struct{}

func (rootEntry) Name() string               { return "." }
func (rootEntry) IsDir() bool                { return true }
func (rootEntry) Type() fs.FileMode          { return fs.ModeDir }
func (rootEntry) Info() (fs.FileInfo, error) { return nil, fs.ErrInvalid }

// rootDirEntry's Info is an Lstat through the root (os.DirEntry's would be
// by the name alone).
type rootDirEntry struct {
	fs.DirEntry
	root *os.Root
	rel  string
}

func (e rootDirEntry) Info() (fs.FileInfo, error) { return e.root.Lstat(filepath.FromSlash(e.rel)) }
