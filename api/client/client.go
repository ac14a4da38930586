// Package client is the one typed client of the matrxd API, used by the
// matrx CLI and by the integration tests. It speaks HTTP over the daemon's
// Unix socket, turns error responses back into errdefs classes (the inverse
// of api.statusOf), and retries with exponential backoff, but only where a
// retry cannot do something twice: connection failures before a request
// was sent, idempotent calls (GET, DELETE), and creates that carry an
// Idempotency-Key. Exec and creates without a key are never retried.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/errclass"
)

// DefaultSocket is where matrxd listens by default.
const DefaultSocket = apitype.DefaultSocket

// Client talks to one matrxd.
type Client struct {
	http     *http.Client
	network  string // "unix" or "tcp"
	address  string
	base     string
	retries  int
	backoff  time.Duration
	maxDelay time.Duration
	apiKey   string
	wrap     func(http.RoundTripper) http.RoundTripper
}

// Option configures a Client.
type Option func(*Client)

// WithRetries sets how many times a retryable call is retried (default 4).
func WithRetries(n int) Option { return func(c *Client) { c.retries = n } }

// WithBackoff sets the first retry delay (default 100ms, doubling, capped at 2s).
func WithBackoff(d time.Duration) Option { return func(c *Client) { c.backoff = d } }

// WithAPIKey sends key in the X-API-Key header of every request, as the
// daemon's optional TCP listener requires (the Unix socket ignores it).
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

// WithTransportWrapper wraps the client's HTTP transport (tests validate
// every exchange against api/openapi.yaml this way).
func WithTransportWrapper(wrap func(http.RoundTripper) http.RoundTripper) Option {
	return func(c *Client) { c.wrap = wrap }
}

// New returns a client for the daemon listening on socket.
func New(socket string, opts ...Option) *Client {
	return newClient("unix", socket, opts)
}

// NewTCP returns a client for the daemon's optional TCP listener at address
// (HOST:PORT); it needs WithAPIKey. Prefer the Unix socket (New).
func NewTCP(address string, opts ...Option) *Client {
	return newClient("tcp", address, opts)
}

func newClient(network, address string, opts []Option) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	c := &Client{
		http:    &http.Client{Transport: tr},
		network: network, address: address,
		base:    "http://matrxd",
		retries: 4, backoff: 100 * time.Millisecond, maxDelay: 2 * time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	if c.wrap != nil {
		c.http.Transport = c.wrap(tr)
	}
	return c
}

// newRequest builds a request to the daemon with the client's headers.
func (c *Client) newRequest(ctx context.Context, method, url string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	if c.apiKey != "" {
		req.Header.Set(apitype.APIKeyHeader, c.apiKey)
	}
	return req, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Error is an error response from the daemon. It unwraps to the errdefs
// class of its status code.
type Error struct {
	Status int
	Detail string
	class  error
}

func (e *Error) Error() string { return e.Detail }
func (e *Error) Unwrap() error { return e.class }

// errorFromStatus is the inverse of api.statusOf.
func errorFromStatus(status int, detail string) error {
	var class error = errdefs.ErrUnknown
	switch status {
	case http.StatusBadRequest:
		class = errdefs.ErrInvalidArgument
	case http.StatusNotFound:
		class = errdefs.ErrNotFound
	case http.StatusConflict:
		class = errdefs.ErrFailedPrecondition
	case http.StatusForbidden:
		class = errdefs.ErrPermissionDenied
	case http.StatusUnauthorized:
		class = errdefs.ErrUnauthenticated
	case http.StatusTooManyRequests:
		class = errdefs.ErrResourceExhausted
	case http.StatusInsufficientStorage:
		class = errclass.ErrInsufficientStorage
	case http.StatusNotImplemented:
		class = errdefs.ErrNotImplemented
	case http.StatusServiceUnavailable:
		class = errdefs.ErrUnavailable
	case http.StatusGatewayTimeout:
		class = context.DeadlineExceeded
	case http.StatusInternalServerError:
		class = errdefs.ErrInternal
	case http.StatusRequestEntityTooLarge:
		class = errclass.ErrTooLarge
	case http.StatusRequestedRangeNotSatisfiable:
		class = errclass.ErrUnsatisfiableRange
	case http.StatusBadGateway:
		// An image registry failed (api.statusOf): not retried, and
		// never Unauthenticated, even when the registry refused
		// credentials.
		class = errclass.ErrUpstream
	}
	if detail == "" {
		detail = http.StatusText(status)
	}
	return &Error{Status: status, Detail: detail, class: class}
}

// do sends one request. body may be nil, a []byte (JSON) or an io.Reader
// (streamed, never retried). out, if non-nil, receives the JSON response, or
// the raw body when it is a *[]byte.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any, want int, out any) error {
	return c.doWith(ctx, method, path, query, nil, false, body, want, out)
}

// doWith is do with extra headers; retrySafe marks a call that may be
// retried although its method is not idempotent (a create carrying an
// Idempotency-Key).
func (c *Client) doWith(ctx context.Context, method, path string, query url.Values, header http.Header, retrySafe bool, body any, want int, out any) error {
	var payload []byte
	var stream io.Reader
	switch b := body.(type) {
	case nil:
	case io.Reader:
		stream = b
	default:
		var err error
		if payload, err = json.Marshal(b); err != nil {
			return fmt.Errorf("encode request: %w", errdefs.ErrInvalidArgument)
		}
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	idempotent := method == http.MethodGet || method == http.MethodDelete || retrySafe
	delay := c.backoff
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if stream != nil {
			rd = stream
		} else if payload != nil {
			rd = bytes.NewReader(payload)
		}
		req, err := c.newRequest(ctx, method, u, rd)
		if err != nil {
			return fmt.Errorf("build request: %w", err)
		}
		for k, vs := range header {
			req.Header[k] = vs
		}
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		} else if stream != nil {
			req.Header.Set("Content-Type", "application/x-tar")
		}
		resp, err := c.http.Do(req)
		if err != nil {
			retryable := stream == nil && attempt < c.retries && (idempotent || notSent(err))
			if !retryable || ctx.Err() != nil {
				return fmt.Errorf("matrxd %s %s: %v: %w", method, path, err, errdefs.ErrUnavailable)
			}
			if err := sleep(ctx, delay); err != nil {
				return err
			}
			delay = min(delay*2, c.maxDelay)
			continue
		}
		err = c.decode(resp, want, out)
		if errdefs.IsUnavailable(err) && idempotent && stream == nil && attempt < c.retries {
			if err := sleep(ctx, delay); err != nil {
				return err
			}
			delay = min(delay*2, c.maxDelay)
			continue
		}
		return err
	}
}

func (c *Client) decode(resp *http.Response, want int, out any) error {
	defer resp.Body.Close()
	if resp.StatusCode != want {
		var e apitype.ErrorResponse
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil {
			e.Detail = string(bytes.TrimSpace(b))
		}
		return errorFromStatus(resp.StatusCode, e.Detail)
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return fmt.Errorf("read response: %v: %w", err, errdefs.ErrUnavailable)
		}
		*raw = b
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode response: %v: %w", err, errdefs.ErrUnknown)
	}
	return nil
}

// notSent reports whether a transport error happened before the request
// could reach the daemon (so retrying cannot run anything twice).
func notSent(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Health calls GET /health.
func (c *Client) Health(ctx context.Context) (*apitype.Health, error) {
	var h apitype.Health
	return &h, c.do(ctx, http.MethodGet, "/health", nil, nil, http.StatusOK, &h)
}

// Version calls GET /version.
func (c *Client) Version(ctx context.Context) (*apitype.Version, error) {
	var v apitype.Version
	return &v, c.do(ctx, http.MethodGet, "/version", nil, nil, http.StatusOK, &v)
}

// Capacity calls GET /capacity: the host's sandbox slots, CPUs and memory,
// and what the live sandboxes hold of them.
func (c *Client) Capacity(ctx context.Context) (*apitype.Capacity, error) {
	var v apitype.Capacity
	return &v, c.do(ctx, http.MethodGet, "/capacity", nil, nil, http.StatusOK, &v)
}

// CreateOption configures one Create call.
type CreateOption func(*createCall)

type createCall struct{ key string }

// WithIdempotencyKey sends key as the Idempotency-Key header: a create
// retried with the same key (within 24 h) returns the sandbox the first
// one made instead of making another. With a key, Create is retried like
// an idempotent call.
func WithIdempotencyKey(key string) CreateOption { return func(c *createCall) { c.key = key } }

// Create calls POST /sandboxes.
func (c *Client) Create(ctx context.Context, userID string, cfg *apitype.SandboxConfig, opts ...CreateOption) (*apitype.Sandbox, error) {
	var call createCall
	for _, o := range opts {
		o(&call)
	}
	var h http.Header
	if call.key != "" {
		h = http.Header{apitype.IdempotencyKeyHeader: {call.key}}
	}
	var s apitype.Sandbox
	return &s, c.doWith(ctx, http.MethodPost, "/sandboxes", nil, h, call.key != "", apitype.CreateSandboxRequest{UserID: userID, Config: cfg}, http.StatusCreated, &s)
}

// List calls GET /sandboxes and follows next_cursor to the end: every
// matching sandbox, newest first.
func (c *Client) List(ctx context.Context, userID string, all bool) (*apitype.SandboxList, error) {
	out := &apitype.SandboxList{Sandboxes: []apitype.Sandbox{}}
	cursor := ""
	for {
		page, err := c.ListPage(ctx, ListOptions{UserID: userID, All: all, Limit: listPageSize, Cursor: cursor})
		if err != nil {
			return nil, err
		}
		out.Sandboxes = append(out.Sandboxes, page.Sandboxes...)
		out.Total = page.Total
		if page.NextCursor == "" {
			return out, nil
		}
		cursor = page.NextCursor
	}
}

// listPageSize is the page size List asks for.
const listPageSize = 500

// ListOptions selects one page of GET /sandboxes.
type ListOptions struct {
	UserID string
	All    bool
	Limit  int    // 0: every match in one answer
	Cursor string // a previous page's NextCursor
	// Pooled lists the warm pools' sandboxes instead (neither UserID
	// nor All may be set with it).
	Pooled bool
}

// ListPage calls GET /sandboxes once.
func (c *Client) ListPage(ctx context.Context, o ListOptions) (*apitype.SandboxList, error) {
	q := url.Values{}
	if o.UserID != "" {
		q.Set("user_id", o.UserID)
	}
	if o.All {
		q.Set("all", "true")
	}
	if o.Pooled {
		q.Set("pooled", "true")
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	var l apitype.SandboxList
	return &l, c.do(ctx, http.MethodGet, "/sandboxes", q, nil, http.StatusOK, &l)
}

// Get calls GET /sandboxes/{id}.
func (c *Client) Get(ctx context.Context, id string) (*apitype.Sandbox, error) {
	var s apitype.Sandbox
	return &s, c.do(ctx, http.MethodGet, "/sandboxes/"+url.PathEscape(id), nil, nil, http.StatusOK, &s)
}

// Delete calls DELETE /sandboxes/{id}?graceful=...
func (c *Client) Delete(ctx context.Context, id string, graceful bool) error {
	q := url.Values{"graceful": {fmt.Sprint(graceful)}}
	return c.do(ctx, http.MethodDelete, "/sandboxes/"+url.PathEscape(id), q, nil, http.StatusNoContent, nil)
}

// Exec calls POST /sandboxes/{id}/exec.
func (c *Client) Exec(ctx context.Context, id string, req apitype.ExecRequest) (*apitype.ExecResponse, error) {
	var r apitype.ExecResponse
	return &r, c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/exec", nil, req, http.StatusOK, &r)
}

// Heartbeat calls POST /sandboxes/{id}/heartbeat.
func (c *Client) Heartbeat(ctx context.Context, id string) (*apitype.HeartbeatResponse, error) {
	var r apitype.HeartbeatResponse
	return &r, c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/heartbeat", nil, nil, http.StatusOK, &r)
}

// Complete calls POST /sandboxes/{id}/complete.
func (c *Client) Complete(ctx context.Context, id string, result map[string]any) (*apitype.SignalResponse, error) {
	var r apitype.SignalResponse
	return &r, c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/complete", nil, apitype.CompleteRequest{Result: result}, http.StatusOK, &r)
}

// SignalError calls POST /sandboxes/{id}/error.
func (c *Client) SignalError(ctx context.Context, id, msg string, details map[string]any) (*apitype.SignalResponse, error) {
	var r apitype.SignalResponse
	return &r, c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/error", nil, apitype.ErrorSignalRequest{Error: msg, Details: details}, http.StatusOK, &r)
}

// Images calls GET /images.
func (c *Client) Images(ctx context.Context) (*apitype.ImageList, error) {
	var l apitype.ImageList
	return &l, c.do(ctx, http.MethodGet, "/images", nil, nil, http.StatusOK, &l)
}

// ImportImage streams an OCI archive to POST /images/import.
func (c *Client) ImportImage(ctx context.Context, archive io.Reader) (*apitype.ImportResponse, error) {
	var r apitype.ImportResponse
	return &r, c.do(ctx, http.MethodPost, "/images/import", nil, archive, http.StatusOK, &r)
}

// OpenAPI returns the API document the daemon serves, as "yaml" or "json".
func (c *Client) OpenAPI(ctx context.Context, format string) ([]byte, error) {
	if format != "yaml" && format != "json" {
		return nil, fmt.Errorf("format %q: want yaml or json: %w", format, errdefs.ErrInvalidArgument)
	}
	var b []byte
	return b, c.do(ctx, http.MethodGet, "/openapi."+format, nil, nil, http.StatusOK, &b)
}

// Metrics calls GET /metrics and returns the Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var b []byte
	return b, c.do(ctx, http.MethodGet, "/metrics", nil, nil, http.StatusOK, &b)
}

// Raw sends an arbitrary request and returns the status and body, for tests
// that probe malformed input.
func (c *Client) Raw(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	return c.RawWithHeader(ctx, method, path, body, "", "")
}

// RawWithHeader is Raw with one extra request header (none when name is
// empty).
func (c *Client) RawWithHeader(ctx context.Context, method, path string, body []byte, name, value string) (int, []byte, error) {
	req, err := c.newRequest(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if name != "" {
		req.Header.Set(name, value)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// RestoreStorage calls POST /users/{user}/storage/restore: path (a hot
// file or directory) as it was at `at`, or its last trashed version when
// at is zero.
func (c *Client) RestoreStorage(ctx context.Context, userID, path string, at time.Time) (*apitype.StorageRestoreResponse, error) {
	req := apitype.StorageRestoreRequest{Path: path}
	if !at.IsZero() {
		req.At = &at
	}
	var r apitype.StorageRestoreResponse
	return &r, c.do(ctx, http.MethodPost, "/users/"+url.PathEscape(userID)+"/storage/restore", nil, req, http.StatusOK, &r)
}

// StorageStats calls GET /users/{user}/storage.
func (c *Client) StorageStats(ctx context.Context, userID string) (*apitype.StorageStats, error) {
	var s apitype.StorageStats
	return &s, c.do(ctx, http.MethodGet, "/users/"+url.PathEscape(userID)+"/storage", nil, nil, http.StatusOK, &s)
}

// CleanStorage calls DELETE /users/{user}/storage/{tier}?confirm=true.
func (c *Client) CleanStorage(ctx context.Context, userID, tier string) (*apitype.StorageCleanResponse, error) {
	var r apitype.StorageCleanResponse
	q := url.Values{"confirm": {"true"}}
	return &r, c.do(ctx, http.MethodDelete, "/users/"+url.PathEscape(userID)+"/storage/"+url.PathEscape(tier), q, nil, http.StatusOK, &r)
}

// Preview calls POST /sandboxes/{id}/preview: where the preview listener
// serves port, with the sandbox's token and a signed URL (ttl 0: the
// daemon's default).
func (c *Client) Preview(ctx context.Context, id string, port int, ttl time.Duration) (*apitype.Preview, error) {
	req := apitype.PreviewRequest{Port: port}
	if ttl > 0 {
		secs := int64(ttl / time.Second)
		req.TTLSeconds = &secs
	}
	var p apitype.Preview
	return &p, c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/preview", nil, req, http.StatusOK, &p)
}

// ConnectPort opens a raw TCP stream to port inside sandbox id (POST
// /sandboxes/{id}/ports/{port}/connect, upgraded to "tcp"). The stream
// supports CloseWrite: a half-close reaches the app as EOF.
func (c *Client) ConnectPort(ctx context.Context, id string, port int) (*Stream, error) {
	var raw net.Conn
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, c.network, c.address)
			raw = conn
			return conn, err
		},
		DisableKeepAlives: true,
	}
	var rt http.RoundTripper = tr
	if c.wrap != nil {
		rt = c.wrap(tr)
	}
	req, err := c.newRequest(ctx, http.MethodPost, fmt.Sprintf("%s/sandboxes/%s/ports/%d/connect", c.base, url.PathEscape(id), port), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "tcp")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("matrxd connect to port %d of %s: %v: %w", port, id, err, errdefs.ErrUnavailable)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, c.decode(resp, http.StatusSwitchingProtocols, nil)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok || raw == nil {
		resp.Body.Close()
		return nil, fmt.Errorf("matrxd switched protocols without a usable stream: %w", errdefs.ErrUnknown)
	}
	return &Stream{ReadWriteCloser: rwc, conn: raw}, nil
}

// Stream is a raw TCP stream into a sandbox.
type Stream struct {
	io.ReadWriteCloser
	conn net.Conn
}

// CloseWrite half-closes the stream: the app reads EOF, and can still
// answer.
func (s *Stream) CloseWrite() error {
	if cw, ok := s.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return s.Close()
}

// GrantAccess calls POST /sandboxes/{id}/access: a key that opens the
// sandbox over the SSH gateway (the caller's PublicKey, or a key pair made
// by the daemon whose private half comes back once).
func (c *Client) GrantAccess(ctx context.Context, id string, req apitype.AccessRequest) (*apitype.Access, error) {
	var a apitype.Access
	return &a, c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/access", nil, req, http.StatusOK, &a)
}

// RevokeAccess calls DELETE /sandboxes/{id}/access: every key of the
// sandbox, or only the one with fingerprint.
func (c *Client) RevokeAccess(ctx context.Context, id, fingerprint string) (*apitype.AccessRevoked, error) {
	var q url.Values
	if fingerprint != "" {
		q = url.Values{"fingerprint": {fingerprint}}
	}
	var r apitype.AccessRevoked
	return &r, c.do(ctx, http.MethodDelete, "/sandboxes/"+url.PathEscape(id)+"/access", q, nil, http.StatusOK, &r)
}

// SetTTL calls PATCH /sandboxes/{id}: the sandbox expires ttl from now.
func (c *Client) SetTTL(ctx context.Context, id string, ttl time.Duration) (*apitype.Sandbox, error) {
	n := int64(ttl / time.Second)
	var s apitype.Sandbox
	return &s, c.do(ctx, http.MethodPatch, "/sandboxes/"+url.PathEscape(id), nil, apitype.UpdateSandboxRequest{TTLSeconds: &n}, http.StatusOK, &s)
}

// Quarantine calls GET /admin/quarantine (root on the Unix socket only).
func (c *Client) Quarantine(ctx context.Context) (*apitype.QuarantineList, error) {
	var q apitype.QuarantineList
	return &q, c.do(ctx, http.MethodGet, "/admin/quarantine", nil, nil, http.StatusOK, &q)
}

// LifecycleStream is an open GET /events.
type LifecycleStream struct {
	body io.ReadCloser
	dec  *json.Decoder
}

// Events opens GET /events; since (zero: only new events) replays the
// events the daemon kept since then first.
func (c *Client) Events(ctx context.Context, since time.Time) (*LifecycleStream, error) {
	u := c.base + "/events"
	if !since.IsZero() {
		u += "?" + url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}}.Encode()
	}
	req, err := c.newRequest(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("matrxd GET /events: %v: %w", err, errdefs.ErrUnavailable)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.decode(resp, http.StatusOK, nil)
	}
	return &LifecycleStream{body: resp.Body, dec: json.NewDecoder(resp.Body)}, nil
}

// Next blocks for the next event; io.EOF once the stream ended.
func (s *LifecycleStream) Next() (*apitype.Event, error) {
	var e apitype.Event
	if err := s.dec.Decode(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

// Close ends the stream.
func (s *LifecycleStream) Close() error { return s.body.Close() }
