package sandbox

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/fshelper"
)

// File access: every operation runs inside the sandbox, in the files
// helper, as the requesting sandbox user (runtime.Files). This layer
// validates what the client sent, checks that the sandbox is running,
// bounds what comes back, and keeps the per-sandbox watch budget.

// Watch budget. inotify watches are kernel memory charged to the host's
// user of the sandbox (all sandboxes share one id range), so a sandbox
// gets at most MaxWatches concurrent watch streams of WatchDescriptors
// inotify descriptors each (MaxWatches × WatchDescriptors in total).
const (
	MaxWatches       = 4
	WatchDescriptors = 2048
)

// maxAnswerBytes bounds what one list, find or grep answer may hold in the
// daemon (entries are counted too, but a hostile helper could send each
// at the frame bound).
const maxAnswerBytes = 32 << 20

// FileInfo is one file as the helper saw it (lstat inside the sandbox).
type FileInfo = fshelper.Info

// validateFilePath checks a path a client sent: absolute as the sandbox
// sees it, no NUL, at most PATH_MAX. Nothing is cleaned: ".." and
// symlinks are the kernel's to resolve, inside the sandbox.
func validateFilePath(field, p string) error {
	switch {
	case p == "":
		return invalid("%s is required (an absolute path in the sandbox)", field)
	case strings.IndexByte(p, 0) >= 0:
		return invalid("%s must not contain NUL", field)
	case !strings.HasPrefix(p, "/"):
		return invalid("%s %q must be an absolute path (as the sandbox sees it, e.g. /home/agent/x)", field, p)
	case len(p) > fshelper.MaxPath:
		return invalid("%s is %d bytes, at most %d allowed", field, len(p), fshelper.MaxPath)
	}
	return nil
}

func fileUser(user string) (runtime.ExecUser, error) {
	switch u := runtime.ExecUser(user); u {
	case "":
		return runtime.UserAgent, nil
	case runtime.UserAgent, runtime.UserRoot:
		return u, nil
	}
	return "", invalid("user %q is invalid: want agent or root", user)
}

// filesCall starts the helper for req in a running sandbox.
func (m *Manager) filesCall(ctx context.Context, id, user string, req fshelper.Request, body io.Reader) (*runtime.FilesCall, error) {
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	u, err := fileUser(user)
	if err != nil {
		return nil, err
	}
	if err := validateFilePath("path", req.Path); err != nil {
		return nil, err
	}
	if req.Op == fshelper.OpMove {
		if err := validateFilePath("to", req.To); err != nil {
			return nil, err
		}
	}
	rec, err := m.userRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	if !rec.Status.AcceptsExec() {
		return nil, fmt.Errorf("sandbox %s is %s, not running: %w", id, rec.Status, errdefs.ErrFailedPrecondition)
	}
	c, err := m.rt.Files(ctx, id, u, req, body)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("sandbox %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	return c, err
}

// simple runs an operation whose whole answer is its result.
func (m *Manager) simple(ctx context.Context, id, user string, req fshelper.Request) (fshelper.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, m.limits.MaxCmdTimeout)
	defer cancel()
	c, err := m.filesCall(ctx, id, user, req, nil)
	if err != nil {
		return fshelper.Result{}, err
	}
	defer c.Close()
	res, err := c.Result()
	if err != nil {
		return res, err
	}
	if res.Info != nil {
		if err := res.Info.Check(); err != nil {
			return res, fmt.Errorf("files helper in sandbox %s: %v: %w", id, err, errdefs.ErrUnknown)
		}
	}
	return res, nil
}

// StatFile describes path without following a final symlink.
func (m *Manager) StatFile(ctx context.Context, id, user, path string) (FileInfo, error) {
	res, err := m.simple(ctx, id, user, fshelper.Request{Op: fshelper.OpStat, Path: path})
	if err != nil {
		return FileInfo{}, err
	}
	if res.Info == nil {
		return FileInfo{}, fmt.Errorf("files helper in sandbox %s sent no file: %w", id, errdefs.ErrUnknown)
	}
	return *res.Info, nil
}

// MkdirFile makes a directory (with parents, missing ones too; an
// existing directory is then no error). Created is false when it existed.
func (m *Manager) MkdirFile(ctx context.Context, id, user, path string, parents bool, mode *uint32) (FileInfo, bool, error) {
	req := fshelper.Request{Op: fshelper.OpMkdir, Path: path, Parents: parents}
	if err := setMode(&req, mode); err != nil {
		return FileInfo{}, false, err
	}
	res, err := m.simple(ctx, id, user, req)
	if err != nil || res.Info == nil {
		return FileInfo{}, false, noInfo(id, err)
	}
	return *res.Info, res.Created, nil
}

// MoveFile renames from to to (copy then remove across filesystems).
// Replaced is true when to existed (only with overwrite).
func (m *Manager) MoveFile(ctx context.Context, id, user, from, to string, overwrite bool) (FileInfo, error) {
	res, err := m.simple(ctx, id, user, fshelper.Request{Op: fshelper.OpMove, Path: from, To: to, Overwrite: overwrite})
	if err != nil || res.Info == nil {
		return FileInfo{}, noInfo(id, err)
	}
	return *res.Info, nil
}

// RemoveFile removes a file, a symlink (never its target) or an empty
// directory; with recursive, a whole tree.
func (m *Manager) RemoveFile(ctx context.Context, id, user, path string, recursive bool) error {
	if strings.Trim(path, "/") == "" && path != "" {
		return invalid("path / cannot be removed")
	}
	_, err := m.simple(ctx, id, user, fshelper.Request{Op: fshelper.OpRemove, Path: path, Recursive: recursive})
	return err
}

func noInfo(id string, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("files helper in sandbox %s sent no file: %w", id, errdefs.ErrUnknown)
}

func setMode(req *fshelper.Request, mode *uint32) error {
	if mode == nil {
		return nil
	}
	if *mode > 0o1777 {
		return invalid("mode %#o is invalid: permission bits and the sticky bit only (at most 1777), never setuid or setgid", *mode)
	}
	req.Mode, req.HasMode = *mode, true
	return nil
}

// FileStream is a download: the header (the file and the bytes that
// follow) and the bytes.
type FileStream struct {
	Header fshelper.Header
	id     string
	call   *runtime.FilesCall
	left   int64 // bytes still announced (-1: a tar, unbounded)
	done   bool
	result fshelper.Result
}

// Read reads the streamed bytes. It fails if the helper sends more or
// fewer than it announced.
func (s *FileStream) Read(p []byte) (int, error) {
	if s.done {
		return 0, io.EOF
	}
	if s.left >= 0 && int64(len(p)) > s.left+1 {
		p = p[:s.left+1]
	}
	n, err := s.call.Read(p)
	if s.left >= 0 {
		if int64(n) > s.left {
			return 0, fmt.Errorf("files helper in sandbox %s sent more bytes than it announced: %w", s.id, errdefs.ErrUnknown)
		}
		s.left -= int64(n)
	}
	if err == io.EOF {
		if s.left > 0 {
			return n, fmt.Errorf("files helper in sandbox %s sent %d bytes fewer than it announced: %w", s.id, s.left, errdefs.ErrUnknown)
		}
		res, rerr := s.call.Result()
		if rerr != nil {
			return n, rerr
		}
		s.result, s.done = res, true
	}
	return n, err
}

// Result is the helper's final word, once Read reported io.EOF (a tar's
// entry and skipped counts).
func (s *FileStream) Result() fshelper.Result { return s.result }

// Close ends the download (an unfinished one is abandoned).
func (s *FileStream) Close() error { return s.call.Close() }

// OpenFile starts a download of a regular file (rng: nil for all of it).
// A directory is InvalidArgument naming the alternatives; a FIFO, socket
// or device is InvalidArgument, answered without blocking.
func (m *Manager) OpenFile(ctx context.Context, id, user, path string, rng *fshelper.Range) (*FileStream, error) {
	return m.open(ctx, id, user, fshelper.Request{Op: fshelper.OpRead, Path: path, Range: rng})
}

// OpenTar starts a download of a file or a directory tree as a tar.
func (m *Manager) OpenTar(ctx context.Context, id, user, path string) (*FileStream, error) {
	return m.open(ctx, id, user, fshelper.Request{Op: fshelper.OpReadTar, Path: path})
}

func (m *Manager) open(ctx context.Context, id, user string, req fshelper.Request) (_ *FileStream, err error) {
	c, err := m.filesCall(ctx, id, user, req, nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	s := &FileStream{id: id, call: c}
	k, err := c.Next()
	if err != nil {
		return nil, err
	}
	if k != fshelper.KindHeader {
		return nil, fmt.Errorf("files helper in sandbox %s: %q frame before the header: %w", id, k, errdefs.ErrUnknown)
	}
	if err := c.Decode(&s.Header); err != nil {
		return nil, err
	}
	h := s.Header
	if err := h.Info.Check(); err != nil {
		return nil, fmt.Errorf("files helper in sandbox %s: %v: %w", id, err, errdefs.ErrUnknown)
	}
	switch {
	case req.Op == fshelper.OpReadTar && h.Length == -1:
	case req.Op == fshelper.OpRead && h.Offset >= 0 && h.Length >= 0 && h.Offset+h.Length <= h.Info.Size:
	default:
		return nil, fmt.Errorf("files helper in sandbox %s announced bytes %d+%d of %d: %w", id, h.Offset, h.Length, h.Info.Size, errdefs.ErrUnknown)
	}
	s.left = h.Length
	// The first frame after the header: data, or the result at once.
	k, err = c.Next()
	if err != nil {
		return nil, err
	}
	switch k {
	case fshelper.KindData, fshelper.KindHole:
	case fshelper.KindResult:
		if s.left > 0 {
			return nil, fmt.Errorf("files helper in sandbox %s sent no data: %w", id, errdefs.ErrUnknown)
		}
		if err := c.Decode(&s.result); err != nil {
			return nil, err
		}
		s.done = true
	default:
		return nil, fmt.Errorf("files helper in sandbox %s: %q frame after the header: %w", id, k, errdefs.ErrUnknown)
	}
	return s, nil
}

// WriteOptions are the knobs of an upload.
type WriteOptions struct {
	Mode    *uint32 // nil: a replaced file keeps its mode, a new one gets 0644
	Parents bool    // make missing parent directories
	// MaxBytes bounds what a tar may unpack to (its holes included).
	MaxBytes int64
}

// WriteFile stores body at path atomically (temp file and rename in the
// target's directory; a symlink's target is written). Created is false
// when a file was replaced.
func (m *Manager) WriteFile(ctx context.Context, id, user, path string, o WriteOptions, body io.Reader) (FileInfo, bool, error) {
	req := fshelper.Request{Op: fshelper.OpWrite, Path: path, Parents: o.Parents}
	return m.upload(ctx, id, user, req, o, body)
}

// WriteTar unpacks a tar into the directory at path (see fshelper's
// tarIn for what it refuses). Created is true when it made the directory.
func (m *Manager) WriteTar(ctx context.Context, id, user, path string, o WriteOptions, body io.Reader) (FileInfo, bool, error) {
	if o.MaxBytes <= 0 {
		return FileInfo{}, false, invalid("tar uploads need a size bound")
	}
	req := fshelper.Request{Op: fshelper.OpWriteTar, Path: path, Parents: o.Parents, MaxBytes: o.MaxBytes}
	return m.upload(ctx, id, user, req, o, body)
}

func (m *Manager) upload(ctx context.Context, id, user string, req fshelper.Request, o WriteOptions, body io.Reader) (FileInfo, bool, error) {
	if err := setMode(&req, o.Mode); err != nil {
		return FileInfo{}, false, err
	}
	c, err := m.filesCall(ctx, id, user, req, body)
	if err != nil {
		return FileInfo{}, false, err
	}
	defer c.Close()
	res, err := c.Result()
	if err != nil {
		return FileInfo{}, false, err
	}
	if res.Info == nil || res.Info.Check() != nil {
		return FileInfo{}, false, noInfo(id, nil)
	}
	return *res.Info, res.Created, nil
}

// ListOptions page a directory listing.
type ListOptions struct {
	Depth  int    // 1 (default): the directory's own entries
	Limit  int    // entries per answer (default 1000, at most 10000)
	Cursor string // a previous answer's cursor
}

// FileList is one answer of a list, find or grep.
type FileList struct {
	Entries   []FileInfo
	Matches   []fshelper.Match
	Truncated bool
	Cursor    string
}

// ListFiles lists a directory (symlinks reported, never followed), in
// directory order, Limit entries at a time.
func (m *Manager) ListFiles(ctx context.Context, id, user, path string, o ListOptions) (*FileList, error) {
	if o.Depth == 0 {
		o.Depth = 1
	}
	if o.Depth < 1 || o.Depth > fshelper.MaxListDepth {
		return nil, invalid("depth %d is out of range [1, %d]", o.Depth, fshelper.MaxListDepth)
	}
	if o.Limit == 0 {
		o.Limit = fshelper.DefaultListLimit
	}
	if o.Limit < 1 || o.Limit > fshelper.MaxListLimit {
		return nil, invalid("limit %d is out of range [1, %d]", o.Limit, fshelper.MaxListLimit)
	}
	if len(o.Cursor) > 64<<10 {
		return nil, invalid("cursor is not one a list handed out")
	}
	return m.stream(ctx, id, user, fshelper.Request{Op: fshelper.OpList, Path: path, Depth: o.Depth, Limit: o.Limit, Cursor: o.Cursor}, o.Limit)
}

// SearchOptions bound a find or a grep.
type SearchOptions struct {
	Limit int    // results (default 1000, at most 10000)
	Glob  string // grep: only files whose path matches
}

// FindFiles lists the entries below path whose relative path matches glob
// (fshelper.MatchGlob).
func (m *Manager) FindFiles(ctx context.Context, id, user, path, glob string, o SearchOptions) (*FileList, error) {
	if err := checkSearch(glob, "glob", &o); err != nil {
		return nil, err
	}
	if err := fshelper.CheckGlob(glob); err != nil {
		return nil, invalid("%v", err)
	}
	return m.stream(ctx, id, user, fshelper.Request{Op: fshelper.OpFind, Path: path, Pattern: glob, Limit: o.Limit}, o.Limit)
}

// GrepFiles reports the lines matching pattern (RE2) in the file at path
// or the text files below it.
func (m *Manager) GrepFiles(ctx context.Context, id, user, path, pattern string, o SearchOptions) (*FileList, error) {
	if err := checkSearch(pattern, "pattern", &o); err != nil {
		return nil, err
	}
	if o.Glob != "" {
		if err := fshelper.CheckGlob(o.Glob); err != nil {
			return nil, invalid("%v", err)
		}
	}
	return m.stream(ctx, id, user, fshelper.Request{Op: fshelper.OpGrep, Path: path, Pattern: pattern, Glob: o.Glob, Limit: o.Limit}, o.Limit)
}

func checkSearch(pattern, field string, o *SearchOptions) error {
	if pattern == "" || len(pattern) > fshelper.MaxPath || strings.IndexByte(pattern, 0) >= 0 {
		return invalid("%s is required: 1-%d bytes without NUL", field, fshelper.MaxPath)
	}
	if o.Limit == 0 {
		o.Limit = fshelper.DefaultSearchLimit
	}
	if o.Limit < 1 || o.Limit > fshelper.MaxSearchLimit {
		return invalid("limit %d is out of range [1, %d]", o.Limit, fshelper.MaxSearchLimit)
	}
	return nil
}

// stream collects the entries of a list, find or grep, at most limit of
// them and maxAnswerBytes in all.
func (m *Manager) stream(ctx context.Context, id, user string, req fshelper.Request, limit int) (*FileList, error) {
	ctx, cancel := context.WithTimeout(ctx, m.limits.MaxCmdTimeout)
	defer cancel()
	c, err := m.filesCall(ctx, id, user, req, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := &FileList{Entries: []FileInfo{}, Matches: []fshelper.Match{}}
	size := 0
	bad := func(why string) error {
		return fmt.Errorf("files helper in sandbox %s: %s: %w", id, why, errdefs.ErrUnknown)
	}
	for {
		k, err := c.Next()
		if err != nil {
			return nil, err
		}
		switch k {
		case fshelper.KindEntry:
			if len(out.Entries)+len(out.Matches) >= limit {
				return nil, bad("more entries than the limit")
			}
			if size += c.FrameLen(); size > maxAnswerBytes {
				return nil, bad(fmt.Sprintf("answer over %d bytes", maxAnswerBytes))
			}
			if req.Op == fshelper.OpGrep {
				var mt fshelper.Match
				if err := c.Decode(&mt); err != nil {
					return nil, err
				}
				if mt.Check() != nil {
					return nil, bad("malformed match")
				}
				out.Matches = append(out.Matches, mt)
				continue
			}
			var info FileInfo
			if err := c.Decode(&info); err != nil {
				return nil, err
			}
			if info.Check() != nil {
				return nil, bad("malformed entry")
			}
			out.Entries = append(out.Entries, info)
		case fshelper.KindResult:
			var res fshelper.Result
			if err := c.Decode(&res); err != nil {
				return nil, err
			}
			if len(res.Cursor) > 64<<10 || res.Truncated && req.Op == fshelper.OpList && res.Cursor == "" {
				return nil, bad("bad cursor")
			}
			out.Truncated, out.Cursor = res.Truncated, res.Cursor
			return out, nil
		default:
			return nil, bad(fmt.Sprintf("unexpected %q frame", k))
		}
	}
}

// Watch is a stream of changes under a path.
type Watch struct {
	call    *runtime.FilesCall
	id      string
	release func()
}

// Next returns the next event; io.EOF when the watched path is gone.
func (w *Watch) Next() (fshelper.Event, error) {
	var ev fshelper.Event
	k, err := w.call.Next()
	if err != nil {
		return ev, err
	}
	switch k {
	case fshelper.KindEntry:
		if err := w.call.Decode(&ev); err != nil {
			return ev, err
		}
		if err := ev.Check(); err != nil {
			return ev, fmt.Errorf("files helper in sandbox %s: %v: %w", w.id, err, errdefs.ErrUnknown)
		}
		return ev, nil
	case fshelper.KindResult:
		return ev, io.EOF
	}
	return ev, fmt.Errorf("files helper in sandbox %s: unexpected %q frame in a watch: %w", w.id, k, errdefs.ErrUnknown)
}

// Close stops the watch and frees its slot.
func (w *Watch) Close() error {
	err := w.call.Close()
	w.release()
	return err
}

// WatchFiles watches path (recursively: every directory below it, up to
// WatchDescriptors) with inotify inside the sandbox. It returns once the
// watches are in place. At most MaxWatches run per sandbox at once.
// FUSE paths (/data/cold) report only changes made through the sandbox's
// own mount, and may report none.
func (m *Manager) WatchFiles(ctx context.Context, id, user, path string, recursive bool) (_ *Watch, err error) {
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	// Only a running sandbox gets a slot (filesCall checks again).
	if rec, err := m.userRecord(ctx, id); err != nil {
		return nil, err
	} else if !rec.Status.AcceptsExec() {
		return nil, fmt.Errorf("sandbox %s is %s, not running: %w", id, rec.Status, errdefs.ErrFailedPrecondition)
	}
	st := m.state(id)
	m.mu.Lock()
	if st.watches >= MaxWatches {
		m.mu.Unlock()
		return nil, fmt.Errorf("sandbox %s already has %d watches, the most it may have at once: %w", id, MaxWatches, errdefs.ErrResourceExhausted)
	}
	st.watches++
	m.mu.Unlock()
	release := func() {
		m.mu.Lock()
		st.watches--
		m.mu.Unlock()
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	c, err := m.filesCall(ctx, id, user, fshelper.Request{Op: fshelper.OpWatch, Path: path, Recursive: recursive, MaxWatches: WatchDescriptors}, nil)
	if err != nil {
		return nil, err
	}
	k, err := c.Next()
	if err == nil && k != fshelper.KindHeader {
		err = fmt.Errorf("files helper in sandbox %s: %q frame before the watch header: %w", id, k, errdefs.ErrUnknown)
	}
	if err == nil {
		var h fshelper.Header
		err = c.Decode(&h)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Watch{call: c, id: id, release: release}, nil
}
