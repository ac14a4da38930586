package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/errclass"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/fshelper"
	"github.com/matrx-dev/matrx/sandbox"
)

// The files API: handlers decode the query and body, call the manager
// (which runs the operation inside the sandbox as the requested user), and
// stream the answer. Bodies are never held whole: uploads stream from the
// request to the sandbox, downloads from the sandbox to the response.

// mtimeFormat is RFC 3339 with all nine digits of nanoseconds.
const mtimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

func fileInfoJSON(i sandbox.FileInfo) apitype.FileInfo {
	out := apitype.FileInfo{
		Name: i.Name, Path: i.Path, Type: i.Type, Kind: i.Kind, Size: i.Size,
		Mode: fmt.Sprintf("%04o", i.Mode), Mtime: time.Unix(0, i.MtimeNS).UTC().Format(mtimeFormat),
		UID: i.UID, GID: i.GID,
	}
	if i.Type == fshelper.TypeSymlink {
		t := i.SymlinkTarget
		out.SymlinkTarget = &t
	}
	return out
}

func fileListJSON(l *sandbox.FileList) apitype.FileList {
	out := apitype.FileList{Entries: make([]apitype.FileInfo, 0, len(l.Entries)), Truncated: l.Truncated, Cursor: l.Cursor}
	for _, e := range l.Entries {
		out.Entries = append(out.Entries, fileInfoJSON(e))
	}
	return out
}

// fileRequest reads what every files route starts with: the sandbox id
// and the query, which may hold only the known parameters. When it
// reports false it has answered the client.
func (s *Server) fileRequest(w http.ResponseWriter, r *http.Request, known ...string) (string, url.Values, bool) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return "", nil, false
	}
	q := r.URL.Query()
	if err := knownParams(q, known...); err != nil {
		s.fail(w, r, err)
		return "", nil, false
	}
	return id, q, true
}

// intParam reads an optional whole-number query parameter (0 if absent).
func intParam(q url.Values, name string) (int, error) {
	v := q.Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("query parameter %s=%q: want a positive whole number: %w", name, v, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// parseMode reads an octal mode ("0644", "644"); "" is none.
func parseMode(field, v string) (*uint32, error) {
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || len(v) > 5 {
		return nil, fmt.Errorf("%s %q: want octal permission bits such as 0644: %w", field, v, errdefs.ErrInvalidArgument)
	}
	m := uint32(n)
	return &m, nil
}

// parseRange reads a single byte range ("bytes=0-99", "bytes=100-",
// "bytes=-500"). Anything else (several ranges, another unit, garbage) is
// ignored and the whole file sent, as RFC 9110 allows.
func parseRange(h string) *fshelper.Range {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return nil
	}
	a, b, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return nil
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return nil
		}
		return &fshelper.Range{Suffix: n}
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return nil
	}
	r := &fshelper.Range{Start: start, End: -1}
	if b != "" {
		end, err := strconv.ParseInt(b, 10, 64)
		if err != nil || end < start {
			return nil
		}
		r.End = end
	}
	return r
}

// acceptsTar reports whether the client asked for a tar.
func acceptsTar(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && mt == apitype.ContentTypeTar {
			return true
		}
	}
	return false
}

// abort ends a response whose status is already sent, so that the client
// sees a broken stream rather than a short one that looks complete.
func (s *Server) abort(r *http.Request, err error) {
	rid, _ := r.Context().Value(keyRequestID).(string)
	s.log.Warn("stream aborted", "request_id", rid, "path", r.URL.Path, "error", err)
	panic(http.ErrAbortHandler)
}

func (s *Server) readFile(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "path", "user")
	if !ok {
		return
	}
	if acceptsTar(r) {
		s.readTar(w, r, id, q)
		return
	}
	rng := parseRange(r.Header.Get("Range"))
	st, err := s.mgr.OpenFile(r.Context(), id, q.Get("user"), q.Get("path"), rng)
	if err != nil {
		var re *runtime.RangeError
		if errors.As(err, &re) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", re.Size))
		}
		s.fail(w, r, err)
		return
	}
	defer st.Close()
	h := st.Header
	w.Header().Set("Content-Type", apitype.ContentTypeBinary)
	w.Header().Set("Content-Length", strconv.FormatInt(h.Length, 10))
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Last-Modified", time.Unix(0, h.Info.MtimeNS).UTC().Format(http.TimeFormat))
	code := http.StatusOK
	if rng != nil {
		code = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", h.Offset, h.Offset+h.Length-1, h.Info.Size))
		if h.Length == 0 {
			code = http.StatusOK
			w.Header().Del("Content-Range")
		}
	}
	w.WriteHeader(code)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.CopyBuffer(w, st, make([]byte, 256<<10)); err != nil {
		s.abort(r, err)
	}
}

func (s *Server) readTar(w http.ResponseWriter, r *http.Request, id string, q url.Values) {
	st, err := s.mgr.OpenTar(r.Context(), id, q.Get("user"), q.Get("path"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer st.Close()
	w.Header().Set("Content-Type", apitype.ContentTypeTar)
	w.Header().Set("Trailer", "Matrx-Tar-Entries, Matrx-Tar-Skipped")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.CopyBuffer(w, st, make([]byte, 256<<10)); err != nil {
		s.abort(r, err)
	}
	res := st.Result()
	w.Header().Set("Matrx-Tar-Entries", strconv.FormatInt(res.Count, 10))
	w.Header().Set("Matrx-Tar-Skipped", strconv.FormatInt(res.Skipped, 10))
}

// limitedBody reads a request body up to limit bytes; one more is
// ErrTooLarge.
type limitedBody struct {
	r     io.Reader
	left  int64
	limit int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, b.err()
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, b.err()
	}
	return n, err
}

func (b *limitedBody) err() error {
	return fmt.Errorf("request body exceeds %d bytes (the daemon's --max-upload-mb): %w", b.limit, errclass.ErrTooLarge)
}

func (s *Server) writeFile(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "path", "user", "mode", "parents")
	if !ok {
		return
	}
	o := sandbox.WriteOptions{MaxBytes: s.maxUpload}
	var err error
	if o.Mode, err = parseMode("query parameter mode", q.Get("mode")); err != nil {
		s.fail(w, r, err)
		return
	}
	if o.Parents, err = boolParam(q, "parents", false); err != nil {
		s.fail(w, r, err)
		return
	}
	if r.ContentLength > s.maxUpload {
		s.fail(w, r, (&limitedBody{limit: s.maxUpload}).err())
		return
	}
	body := &limitedBody{r: r.Body, left: s.maxUpload, limit: s.maxUpload}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var info sandbox.FileInfo
	var created bool
	if mt == apitype.ContentTypeTar {
		info, created, err = s.mgr.WriteTar(r.Context(), id, q.Get("user"), q.Get("path"), o, body)
	} else {
		info, created, err = s.mgr.WriteFile(r.Context(), id, q.Get("user"), q.Get("path"), o, body)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !created {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusCreated, fileInfoJSON(info))
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "path", "user", "recursive")
	if !ok {
		return
	}
	recursive, err := boolParam(q, "recursive", false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.mgr.RemoveFile(r.Context(), id, q.Get("user"), q.Get("path"), recursive); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) statFile(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "path", "user")
	if !ok {
		return
	}
	info, err := s.mgr.StatFile(r.Context(), id, q.Get("user"), q.Get("path"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fileInfoJSON(info))
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "path", "user", "depth", "limit", "cursor")
	if !ok {
		return
	}
	o := sandbox.ListOptions{Cursor: q.Get("cursor")}
	var err error
	if o.Depth, err = intParam(q, "depth"); err == nil {
		o.Limit, err = intParam(q, "limit")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l, err := s.mgr.ListFiles(r.Context(), id, q.Get("user"), q.Get("path"), o)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fileListJSON(l))
}

func (s *Server) mkdirFile(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "user")
	if !ok {
		return
	}
	var req apitype.MkdirRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	mode, err := parseMode("mode", req.Mode)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	info, created, err := s.mgr.MkdirFile(r.Context(), id, q.Get("user"), req.Path, req.Parents, mode)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	code := http.StatusCreated
	if !created {
		code = http.StatusOK
	}
	writeJSON(w, code, fileInfoJSON(info))
}

func (s *Server) moveFile(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "user")
	if !ok {
		return
	}
	var req apitype.MoveRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.From == "" || req.To == "" {
		s.fail(w, r, fmt.Errorf("from and to are required: %w", errdefs.ErrInvalidArgument))
		return
	}
	info, err := s.mgr.MoveFile(r.Context(), id, q.Get("user"), req.From, req.To, req.Overwrite)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fileInfoJSON(info))
}

func (s *Server) findFiles(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "path", "user", "glob", "limit")
	if !ok {
		return
	}
	limit, err := intParam(q, "limit")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l, err := s.mgr.FindFiles(r.Context(), id, q.Get("user"), q.Get("path"), q.Get("glob"), sandbox.SearchOptions{Limit: limit})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fileListJSON(l))
}

func (s *Server) grepFiles(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "path", "user", "pattern", "glob", "limit")
	if !ok {
		return
	}
	limit, err := intParam(q, "limit")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l, err := s.mgr.GrepFiles(r.Context(), id, q.Get("user"), q.Get("path"), q.Get("pattern"), sandbox.SearchOptions{Limit: limit, Glob: q.Get("glob")})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := apitype.GrepResult{Matches: make([]apitype.GrepMatch, 0, len(l.Matches)), Truncated: l.Truncated}
	for _, m := range l.Matches {
		out.Matches = append(out.Matches, apitype.GrepMatch{Path: m.Path, Line: m.Line, Text: m.Text})
	}
	writeJSON(w, http.StatusOK, out)
}

// watchFiles streams events as NDJSON until the client goes away, the
// watched path is removed, or the daemon shuts down.
func (s *Server) watchFiles(w http.ResponseWriter, r *http.Request) {
	id, q, ok := s.fileRequest(w, r, "path", "user", "recursive")
	if !ok {
		return
	}
	recursive, err := boolParam(q, "recursive", false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	wt, err := s.mgr.WatchFiles(ctx, id, q.Get("user"), q.Get("path"), recursive)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer wt.Close()
	w.Header().Set("Content-Type", apitype.ContentTypeNDJSON)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	enc := json.NewEncoder(w)
	for {
		ev, err := wt.Next()
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return
		}
		if err != nil {
			s.abort(r, err)
		}
		if err := enc.Encode(apitype.FileEvent{Type: ev.Type, Path: ev.Path}); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
