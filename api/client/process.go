package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
)

func processPath(id, proc string) string {
	return "/sandboxes/" + url.PathEscape(id) + "/processes/" + url.PathEscape(proc)
}

// StartProcess calls POST /sandboxes/{id}/processes (never retried).
func (c *Client) StartProcess(ctx context.Context, id string, req apitype.ProcessRequest) (*apitype.Process, error) {
	var p apitype.Process
	return &p, c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/processes", nil, req, http.StatusCreated, &p)
}

// Processes calls GET /sandboxes/{id}/processes.
func (c *Client) Processes(ctx context.Context, id string) (*apitype.ProcessList, error) {
	var l apitype.ProcessList
	return &l, c.do(ctx, http.MethodGet, "/sandboxes/"+url.PathEscape(id)+"/processes", nil, nil, http.StatusOK, &l)
}

// Process calls GET /sandboxes/{id}/processes/{proc} (an id or a tag).
func (c *Client) Process(ctx context.Context, id, proc string) (*apitype.Process, error) {
	var p apitype.Process
	return &p, c.do(ctx, http.MethodGet, processPath(id, proc), nil, nil, http.StatusOK, &p)
}

// SignalProcess calls POST .../signal with a signal name (INT, TERM, ...).
func (c *Client) SignalProcess(ctx context.Context, id, proc, signal string) error {
	return c.do(ctx, http.MethodPost, processPath(id, proc)+"/signal", nil, apitype.ProcessSignalRequest{Signal: signal}, http.StatusNoContent, nil)
}

// ResizeProcess calls POST .../resize.
func (c *Client) ResizeProcess(ctx context.Context, id, proc string, rows, cols int) error {
	return c.do(ctx, http.MethodPost, processPath(id, proc)+"/resize", nil, apitype.ResizeRequest{Rows: rows, Cols: cols}, http.StatusNoContent, nil)
}

// WriteStdin calls POST .../stdin with data as the body, then closes the
// process's input if eof is set. Never retried (input is not idempotent).
func (c *Client) WriteStdin(ctx context.Context, id, proc string, data []byte, eof bool) error {
	u := c.base + processPath(id, proc) + "/stdin"
	if eof {
		u += "?eof=true"
	}
	req, err := c.newRequest(ctx, http.MethodPost, u, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("matrxd stdin: %v: %w", err, errdefs.ErrUnavailable)
	}
	return c.decode(resp, http.StatusNoContent, nil)
}

// EventStream reads an NDJSON stream of output events.
type EventStream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// Next returns the next event; io.EOF when the stream ended.
func (s *EventStream) Next() (apitype.OutputEvent, error) {
	var ev apitype.OutputEvent
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil {
			return ev, fmt.Errorf("read event stream: %v: %w", err, errdefs.ErrUnavailable)
		}
		return ev, io.EOF
	}
	if err := json.Unmarshal(s.sc.Bytes(), &ev); err != nil {
		return ev, fmt.Errorf("decode event: %v: %w", err, errdefs.ErrUnknown)
	}
	return ev, nil
}

// Close ends the stream (the process is not affected).
func (s *EventStream) Close() error { return s.body.Close() }

func (c *Client) openStream(ctx context.Context, method, path string, query url.Values, body []byte) (*EventStream, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := c.newRequest(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", apitype.NDJSON)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("matrxd %s %s: %v: %w", method, path, err, errdefs.ErrUnavailable)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.decode(resp, http.StatusOK, nil)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &EventStream{body: resp.Body, sc: sc}, nil
}

// ProcessOutput calls GET .../output?offset=N&follow=B.
func (c *Client) ProcessOutput(ctx context.Context, id, proc string, offset int64, follow bool) (*EventStream, error) {
	q := url.Values{"offset": {strconv.FormatInt(offset, 10)}}
	if follow {
		q.Set("follow", "true")
	}
	return c.openStream(ctx, http.MethodGet, processPath(id, proc)+"/output", q, nil)
}

// ExecStream calls POST /sandboxes/{id}/exec with Accept:
// application/x-ndjson: data events as the command writes, then end.
func (c *Client) ExecStream(ctx context.Context, id string, req apitype.ExecRequest) (*EventStream, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", errdefs.ErrInvalidArgument)
	}
	return c.openStream(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/exec", nil, b)
}

// Dialer is what a WebSocket client needs to reach this daemon: its HTTP
// client (which dials the socket), the URL of a route, the headers every
// request carries, and the error mapping. Package api/client/attach uses
// it, so that this package links no WebSocket library.
type Dialer struct {
	HTTP   *http.Client
	URL    string
	Header http.Header
}

// AttachDialer returns how to open GET /sandboxes/{id}/processes/{proc}/attach
// (offset < 0: from now).
func (c *Client) AttachDialer(id, proc string, offset int64) Dialer {
	u := "ws://matrxd" + processPath(id, proc) + "/attach"
	if offset >= 0 {
		u += "?offset=" + strconv.FormatInt(offset, 10)
	}
	h := http.Header{}
	if c.apiKey != "" {
		h.Set(apitype.APIKeyHeader, c.apiKey)
	}
	return Dialer{HTTP: c.http, URL: u, Header: h}
}

// ErrorFromResponse turns a daemon's error response into its errdefs class
// (for callers that make their own requests, like api/client/attach).
func ErrorFromResponse(resp *http.Response) error {
	var e apitype.ErrorResponse
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		json.Unmarshal(b, &e)
	}
	return errorFromStatus(resp.StatusCode, e.Detail)
}
