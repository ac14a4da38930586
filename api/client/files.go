package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
)

// The files API. Paths are absolute as the sandbox sees them; user is
// "agent" (default) or "root". Downloads return a streaming io.ReadCloser
// and uploads take an io.Reader: nothing is held whole in memory. Streams
// are never retried.

func filesPath(id, sub string) string {
	return "/sandboxes/" + url.PathEscape(id) + "/files" + sub
}

func fileQuery(path, user string) url.Values {
	q := url.Values{"path": {path}}
	if user != "" {
		q.Set("user", user)
	}
	return q
}

// stream sends one streaming request and returns the response if its
// status is one of want; otherwise the error it carries.
func (c *Client) stream(ctx context.Context, method, path string, q url.Values, header http.Header, body io.Reader, size int64, want ...int) (*http.Response, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := c.newRequest(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if body != nil && size >= 0 {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("matrxd %s %s: %v: %w", method, path, err, errdefs.ErrUnavailable)
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	return nil, c.decode(resp, want[0], nil)
}

// ReadOptions select what ReadFile downloads.
type ReadOptions struct {
	User string
	// Offset and Length select a byte range (Length 0: to the end).
	Offset, Length int64
}

// FileReader is a download in progress.
type FileReader struct {
	io.ReadCloser
	// Length is the number of bytes that follow; Size the whole file's.
	Length, Size int64
	ModTime      time.Time
}

// ReadFile downloads a regular file: GET /sandboxes/{id}/files.
func (c *Client) ReadFile(ctx context.Context, id, path string, o ReadOptions) (*FileReader, error) {
	h := http.Header{}
	if o.Offset > 0 || o.Length > 0 {
		end := ""
		if o.Length > 0 {
			end = strconv.FormatInt(o.Offset+o.Length-1, 10)
		}
		h.Set("Range", fmt.Sprintf("bytes=%d-%s", o.Offset, end))
	}
	resp, err := c.stream(ctx, http.MethodGet, filesPath(id, ""), fileQuery(path, o.User), h, nil, -1, http.StatusOK, http.StatusPartialContent)
	if err != nil {
		return nil, err
	}
	fr := &FileReader{ReadCloser: resp.Body, Length: resp.ContentLength, Size: resp.ContentLength}
	fr.ModTime, _ = http.ParseTime(resp.Header.Get("Last-Modified"))
	if cr := resp.Header.Get("Content-Range"); cr != "" {
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			fr.Size, _ = strconv.ParseInt(cr[i+1:], 10, 64)
		}
	}
	return fr, nil
}

// ReadTar downloads a file or a directory tree as a tar stream (entries
// relative to the directory; a file is one entry of its own name).
func (c *Client) ReadTar(ctx context.Context, id, path, user string) (io.ReadCloser, error) {
	h := http.Header{"Accept": {apitype.ContentTypeTar}}
	resp, err := c.stream(ctx, http.MethodGet, filesPath(id, ""), fileQuery(path, user), h, nil, -1, http.StatusOK)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteOptions are the knobs of an upload.
type WriteOptions struct {
	User string
	// Mode is octal ("0644"); empty keeps a replaced file's mode (0644 for
	// a new one).
	Mode    string
	Parents bool
	// Size is the body's length when known (sent as Content-Length, so
	// an oversized upload is refused before it is sent); -1 if unknown.
	Size int64
}

// WriteFile uploads body to path: PUT /sandboxes/{id}/files. The file is
// replaced atomically; info is nil when an existing file was replaced.
func (c *Client) WriteFile(ctx context.Context, id, path string, body io.Reader, o WriteOptions) (info *apitype.FileInfo, err error) {
	return c.upload(ctx, id, path, body, o, apitype.ContentTypeBinary)
}

// WriteTar unpacks a tar stream into the directory at path (made, with
// parents, when o.Parents is set). info is nil when the directory existed.
func (c *Client) WriteTar(ctx context.Context, id, path string, tarStream io.Reader, o WriteOptions) (*apitype.FileInfo, error) {
	return c.upload(ctx, id, path, tarStream, o, apitype.ContentTypeTar)
}

func (c *Client) upload(ctx context.Context, id, path string, body io.Reader, o WriteOptions, contentType string) (*apitype.FileInfo, error) {
	q := fileQuery(path, o.User)
	if o.Mode != "" {
		q.Set("mode", o.Mode)
	}
	if o.Parents {
		q.Set("parents", "true")
	}
	if body == nil {
		body, o.Size = http.NoBody, 0
	}
	resp, err := c.stream(ctx, http.MethodPut, filesPath(id, ""), q, http.Header{"Content-Type": {contentType}}, body, o.Size, http.StatusCreated, http.StatusNoContent)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	var info apitype.FileInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("decode response: %v: %w", err, errdefs.ErrUnknown)
	}
	return &info, nil
}

// StatFile describes path (a symlink itself, not its target).
func (c *Client) StatFile(ctx context.Context, id, path, user string) (*apitype.FileInfo, error) {
	var info apitype.FileInfo
	return &info, c.do(ctx, http.MethodGet, filesPath(id, "/stat"), fileQuery(path, user), nil, http.StatusOK, &info)
}

// ListFilesOptions page a directory listing.
type ListFilesOptions struct {
	User   string
	Depth  int
	Limit  int
	Cursor string
}

// ListFiles lists one page of a directory: GET /sandboxes/{id}/files/list.
func (c *Client) ListFiles(ctx context.Context, id, path string, o ListFilesOptions) (*apitype.FileList, error) {
	q := fileQuery(path, o.User)
	if o.Depth > 0 {
		q.Set("depth", strconv.Itoa(o.Depth))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	var l apitype.FileList
	return &l, c.do(ctx, http.MethodGet, filesPath(id, "/list"), q, nil, http.StatusOK, &l)
}

// Mkdir makes a directory: POST /sandboxes/{id}/files/mkdir. With
// parents, an existing directory is no error (the daemon answers 200
// instead of 201).
func (c *Client) Mkdir(ctx context.Context, id, user string, req apitype.MkdirRequest) (*apitype.FileInfo, error) {
	var q url.Values
	if user != "" {
		q = url.Values{"user": {user}}
	}
	resp, err := c.stream(ctx, http.MethodPost, filesPath(id, "/mkdir"), q, http.Header{"Content-Type": {"application/json"}},
		jsonBody(req), -1, http.StatusCreated, http.StatusOK)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var info apitype.FileInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("decode response: %v: %w", err, errdefs.ErrUnknown)
	}
	return &info, nil
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return strings.NewReader(string(b))
}

// MoveFile renames from to to: POST /sandboxes/{id}/files/move.
func (c *Client) MoveFile(ctx context.Context, id, user string, req apitype.MoveRequest) (*apitype.FileInfo, error) {
	var info apitype.FileInfo
	var q url.Values
	if user != "" {
		q = url.Values{"user": {user}}
	}
	return &info, c.do(ctx, http.MethodPost, filesPath(id, "/move"), q, req, http.StatusOK, &info)
}

// RemoveFile removes path: DELETE /sandboxes/{id}/files.
func (c *Client) RemoveFile(ctx context.Context, id, path, user string, recursive bool) error {
	q := fileQuery(path, user)
	if recursive {
		q.Set("recursive", "true")
	}
	return c.do(ctx, http.MethodDelete, filesPath(id, ""), q, nil, http.StatusNoContent, nil)
}

// FindFiles lists entries below path whose relative path matches glob.
func (c *Client) FindFiles(ctx context.Context, id, path, glob, user string, limit int) (*apitype.FileList, error) {
	q := fileQuery(path, user)
	q.Set("glob", glob)
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var l apitype.FileList
	return &l, c.do(ctx, http.MethodGet, filesPath(id, "/find"), q, nil, http.StatusOK, &l)
}

// GrepOptions narrow a grep.
type GrepOptions struct {
	User  string
	Glob  string // only files whose path matches
	Limit int
}

// GrepFiles reports lines matching pattern (RE2) below path.
func (c *Client) GrepFiles(ctx context.Context, id, path, pattern string, o GrepOptions) (*apitype.GrepResult, error) {
	q := fileQuery(path, o.User)
	q.Set("pattern", pattern)
	if o.Glob != "" {
		q.Set("glob", o.Glob)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var g apitype.GrepResult
	return &g, c.do(ctx, http.MethodGet, filesPath(id, "/grep"), q, nil, http.StatusOK, &g)
}

// FileWatch is a stream of file events.
type FileWatch struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// WatchFiles watches path (and, with recursive, the directories below it).
// It returns once the watch is in place: changes after it are reported.
func (c *Client) WatchFiles(ctx context.Context, id, path, user string, recursive bool) (*FileWatch, error) {
	q := fileQuery(path, user)
	if recursive {
		q.Set("recursive", "true")
	}
	resp, err := c.stream(ctx, http.MethodGet, filesPath(id, "/watch"), q, nil, nil, -1, http.StatusOK)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &FileWatch{body: resp.Body, sc: sc}, nil
}

// Next blocks for the next event; io.EOF when the stream ended (the path
// was removed, the daemon stopped, or Close was called).
func (w *FileWatch) Next() (apitype.FileEvent, error) {
	var ev apitype.FileEvent
	if !w.sc.Scan() {
		if err := w.sc.Err(); err != nil {
			return ev, err
		}
		return ev, io.EOF
	}
	if err := json.Unmarshal(w.sc.Bytes(), &ev); err != nil {
		return ev, fmt.Errorf("decode event: %v: %w", err, errdefs.ErrUnknown)
	}
	return ev, nil
}

// Close ends the watch.
func (w *FileWatch) Close() error { return w.body.Close() }
