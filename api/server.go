// Package api owns the HTTP interface of matrxd: routes, the conversion
// between the wire types (api/apitype) and the lifecycle's own, the mapping
// of error classes to status codes, request logging with the caller's
// credentials, and the Unix socket it listens on. Its client half is
// api/client, which links only api/apitype and the standard library.
//
// It must not hold lifecycle logic: handlers decode and validate the wire
// format, call the sandbox manager, and encode. Every error body is
// {"detail": "..."}; no panic reaches a client.
package api

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/metrics"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/sandbox"
)

// Images is what the API needs for image routes.
type Images interface {
	Import(ctx context.Context, archive io.Reader) ([]string, error)
	Images(ctx context.Context) ([]runtime.ImageInfo, error)
	Version(ctx context.Context) (string, error)
}

// Config holds the server's required dependencies.
type Config struct {
	Manager *sandbox.Manager
	Images  Images
	Logger  *slog.Logger
	// Version is the daemon's build version.
	Version string
	// Host is what the host offers sandboxes (GET /capacity).
	Host Host
}

// Host is what the daemon's host offers sandboxes, known at startup.
type Host struct {
	CPUs          float64
	MemoryMB      int64
	NetworkSubnet string // empty without networking
}

// Server is the HTTP API.
type Server struct {
	mgr       *sandbox.Manager
	images    Images
	log       *slog.Logger
	version   string
	host      Host
	started   time.Time
	maxBody   int64
	maxImport int64
	maxUpload int64
	metrics   *metrics.Metrics
	mux       *http.ServeMux
	handler   http.Handler
	patterns  []string
	keepalive time.Duration
	// streams ends every output follow, attach and file watch
	// (CloseStreams).
	streams      context.Context
	closeStreams context.CancelFunc
	rproxy       *httputil.ReverseProxy
	preview      *previewConfig
	ssh          *SSHInfo
	// tcpBodyTimeout bounds reading a request body on the TCP listener.
	tcpBodyTimeout time.Duration
}

// CloseStreams ends every open output follow, attach and file watch (the
// processes are not affected; clients resume from their offset). Register it with
// http.Server.RegisterOnShutdown: those requests would otherwise hold a
// graceful shutdown for as long as their processes run.
func (s *Server) CloseStreams() { s.closeStreams() }

// streamContext is r's context, also ended by CloseStreams.
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.streams, cancel)
	return ctx, func() { stop(); cancel() }
}

// route is one served pattern ("METHOD /path/{param}") and its handler.
type route struct {
	pattern string
	handler http.Handler
}

// routes is every route the server serves, in one table, so that the test
// that compares the served API with api/openapi.yaml sees exactly what the
// mux sees.
func (s *Server) routes() []route {
	rs := []route{
		{"GET /health", http.HandlerFunc(s.health)},
		{"GET /version", http.HandlerFunc(s.versionInfo)},
		{"GET /capacity", http.HandlerFunc(s.capacity)},
		{"GET /openapi.json", http.HandlerFunc(serveOpenAPIJSON)},
		{"GET /openapi.yaml", http.HandlerFunc(serveOpenAPIYAML)},
		{"POST /sandboxes", http.HandlerFunc(s.createSandbox)},
		{"GET /sandboxes", http.HandlerFunc(s.listSandboxes)},
		{"GET /sandboxes/{id}", s.touching(s.getSandbox)},
		{"PATCH /sandboxes/{id}", s.touching(s.updateSandbox)},
		{"DELETE /sandboxes/{id}", http.HandlerFunc(s.deleteSandbox)},
		{"POST /sandboxes/{id}/exec", s.touching(s.exec)},
		{"POST /sandboxes/{id}/heartbeat", s.touching(s.heartbeat)},
		{"POST /sandboxes/{id}/complete", http.HandlerFunc(s.complete)},
		{"POST /sandboxes/{id}/error", http.HandlerFunc(s.errorSignal)},
		{"GET /sandboxes/{id}/files", s.touching(s.readFile)},
		{"PUT /sandboxes/{id}/files", s.touching(s.writeFile)},
		{"DELETE /sandboxes/{id}/files", s.touching(s.deleteFile)},
		{"GET /sandboxes/{id}/files/stat", s.touching(s.statFile)},
		{"GET /sandboxes/{id}/files/list", s.touching(s.listFiles)},
		{"POST /sandboxes/{id}/files/mkdir", s.touching(s.mkdirFile)},
		{"POST /sandboxes/{id}/files/move", s.touching(s.moveFile)},
		{"GET /sandboxes/{id}/files/watch", s.touching(s.watchFiles)},
		{"GET /sandboxes/{id}/files/find", s.touching(s.findFiles)},
		{"GET /sandboxes/{id}/files/grep", s.touching(s.grepFiles)},
		{"GET /events", http.HandlerFunc(s.streamEvents)},
		{"GET /admin/quarantine", s.rootOnly(s.quarantine)},
		{"GET /images", http.HandlerFunc(s.listImages)},
		{"POST /images/import", http.HandlerFunc(s.importImage)},
		{"POST /images/pull", http.HandlerFunc(s.pullImage)},
		{"POST /images/prune", http.HandlerFunc(s.pruneImages)},
		{"DELETE /images/{name...}", http.HandlerFunc(s.deleteImage)},
		{"GET /users/{user_id}/storage", http.HandlerFunc(s.storageStats)},
		{"DELETE /users/{user_id}/storage/{tier}", http.HandlerFunc(s.storageClean)},
		{"POST /users/{user_id}/storage/restore", http.HandlerFunc(s.storageRestore)},
		{"POST /sandboxes/{id}/ports/{port}/connect", s.touching(s.connectPort)},
		{"POST /sandboxes/{id}/preview", s.touching(s.createPreview)},
		{"POST /sandboxes/{id}/access", s.touching(s.grantAccess)},
		{"DELETE /sandboxes/{id}/access", s.touching(s.revokeAccess)},
	}
	for _, m := range proxyMethods {
		rs = append(rs, route{m + " /sandboxes/{id}/proxy/{port}/{path...}", s.touching(s.proxy)})
	}
	rs = append(rs, s.processRoutes()...)
	if s.metrics != nil {
		rs = append(rs, route{"GET /metrics", s.metrics.Handler()})
	}
	return rs
}

// Routes lists the patterns the server serves ("METHOD /path/{param}").
func (s *Server) Routes() []string { return append([]string(nil), s.patterns...) }

// Option configures optional server knobs.
type Option func(*Server)

// WithMaxBodyBytes caps JSON request bodies (default 1 MiB).
func WithMaxBodyBytes(n int64) Option { return func(s *Server) { s.maxBody = n } }

// WithMaxImportBytes caps image archive uploads (default 16 GiB).
func WithMaxImportBytes(n int64) Option { return func(s *Server) { s.maxImport = n } }

// WithKeepalive sets how often an idle output follow gets a keepalive
// line (default, and for 0, 15 s, so that proxies do not cut it).
func WithKeepalive(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.keepalive = d
		}
	}
}

// WithMaxUploadBytes caps file upload bodies (default 1 GiB); a larger
// body is refused with 413.
func WithMaxUploadBytes(n int64) Option { return func(s *Server) { s.maxUpload = n } }

// WithMetrics counts every request by route pattern and status code in m
// and serves m at GET /metrics (default: no metrics, no route).
func WithMetrics(m *metrics.Metrics) Option { return func(s *Server) { s.metrics = m } }

// NewServer builds the API handler.
func NewServer(cfg Config, opts ...Option) (*Server, error) {
	if cfg.Manager == nil || cfg.Images == nil {
		return nil, fmt.Errorf("api server needs a manager and an image service: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		mgr: cfg.Manager, images: cfg.Images, log: cfg.Logger, version: cfg.Version, host: cfg.Host,
		started: time.Now(), maxBody: 1 << 20, maxImport: 16 << 30, keepalive: keepaliveEvery,
		maxUpload: 1 << 30,
	}
	for _, o := range opts {
		o(s)
	}
	s.streams, s.closeStreams = context.WithCancel(context.Background())
	s.rproxy = s.newReverseProxy()
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.pattern, rt.handler)
		s.patterns = append(s.patterns, rt.pattern)
	}
	s.mux = mux
	s.handler = s.middleware(mux)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// --- middleware -------------------------------------------------------------

type ctxKey int

const (
	keyPeer ctxKey = iota
	keyRequestID
	keyCaller   // *sandboxConn: a connection of the sandbox listener
	keyCallerID // string: the sandbox a sandbox-listener request comes from
	keyListener // string: which listener served a request, when not the API's
)

func withListener(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, keyListener, name)
}

// Peer is the credential of the process on the other end of the socket.
type Peer struct {
	UID, GID uint32
	PID      int32
	Known    bool
}

var requestIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

type statusWriter struct {
	http.ResponseWriter
	status  int
	written bool
	// rewrite turns net/http's own plain-text errors (unknown route, wrong
	// method) into the JSON error shape.
	swallow bool
	// raw passes a response through untouched: a sandbox app's answer
	// through the proxy is the app's, plain-text errors included.
	raw bool
}

// Hijack hands the connection over (WebSocket and TCP upgrades); the
// request is logged as 101.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && !w.written {
		w.written, w.status = true, http.StatusSwitchingProtocols
	}
	return c, brw, err
}

func (w *statusWriter) WriteHeader(code int) {
	if w.written {
		return
	}
	w.written = true
	w.status = code
	if code >= 400 && !w.raw && strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Del("X-Content-Type-Options")
		w.ResponseWriter.WriteHeader(code)
		msg := strings.ToLower(http.StatusText(code))
		if code == http.StatusMethodNotAllowed {
			msg = "method not allowed; allowed: " + w.Header().Get("Allow")
		}
		json.NewEncoder(w.ResponseWriter).Encode(apitype.ErrorResponse{Detail: msg})
		w.swallow = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController and the WebSocket upgrade reach the
// connection (Hijack) through the status recorder.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := r.Header.Get("X-Request-ID")
		if !requestIDRe.MatchString(rid) {
			var b [8]byte
			rand.Read(b[:])
			rid = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-ID", rid)
		ctx := context.WithValue(r.Context(), keyRequestID, rid)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		peer, _ := r.Context().Value(keyPeer).(Peer)
		// The mux records the matched pattern on this request value.
		r = r.WithContext(ctx)
		defer func() {
			// http.ErrAbortHandler ends a stream whose status is already
			// sent (the client must see it broken, not short): net/http
			// closes the connection once it is re-raised below.
			p := recover()
			if p != nil && p != http.ErrAbortHandler {
				s.log.Error("panic in handler", "request_id", rid, "panic", fmt.Sprint(p), "path", r.URL.Path)
				if !sw.written {
					writeJSON(sw, http.StatusInternalServerError, apitype.ErrorResponse{Detail: "internal error (request " + rid + ")"})
				}
			}
			attrs := []any{
				"method", r.Method, "path", r.URL.Path, "status", sw.status,
				"duration_ms", float64(time.Since(start).Microseconds()) / 1000, "request_id", rid,
			}
			if peer.Known {
				attrs = append(attrs, "peer_uid", peer.UID, "peer_pid", peer.PID)
			}
			if sc, ok := r.Context().Value(keyCaller).(*sandboxConn); ok {
				attrs = append(attrs, "listener", "sandbox", "sandbox_id", sc.id)
			} else if l, ok := r.Context().Value(keyListener).(string); ok {
				attrs = append(attrs, "listener", l, "host", r.Host)
			}
			level := slog.LevelInfo
			if sw.status >= 500 {
				level = slog.LevelError
			}
			s.log.Log(ctx, level, "request", attrs...)
			s.metrics.ObserveRequest(r.Pattern, sw.status, time.Since(start))
			if p == http.ErrAbortHandler {
				panic(p)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

// ConnContext attaches the peer's SO_PEERCRED credentials to every request
// on a connection. Use it as http.Server.ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, keyPeer, peerOf(c))
}

// --- helpers ----------------------------------------------------------------

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	detail := err.Error()
	if code >= 500 {
		rid, _ := r.Context().Value(keyRequestID).(string)
		s.log.Error("request failed", "request_id", rid, "path", r.URL.Path, "error", err)
	}
	writeJSON(w, code, apitype.ErrorResponse{Detail: detail})
}

// bodyLimit is http.MaxBytesReader without its connection close: past the
// limit it fails with *http.MaxBytesError, but net/http still reads away
// (up to 256 KiB) what the client goes on sending before it answers, so a
// client that writes a too-large body gets its 400 instead of a reset
// (TestCallHome's "bad input" saw "Connection reset by peer" once).
type bodyLimit struct {
	r           io.ReadCloser
	left, limit int64
	err         error
}

func limitBody(r io.ReadCloser, limit int64) io.ReadCloser {
	return &bodyLimit{r: r, left: limit, limit: limit}
}

func (b *bodyLimit) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	if int64(n) <= b.left {
		b.left -= int64(n)
		return n, err
	}
	n, b.left = int(b.left), 0
	b.err = &http.MaxBytesError{Limit: b.limit}
	return n, b.err
}

func (b *bodyLimit) Close() error { return b.r.Close() }

// decode reads a size-limited JSON body into v, rejecting unknown fields and
// trailing data. An empty body decodes as {} when allowEmpty is set.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	body := limitBody(r.Body, s.maxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return fmt.Errorf("request body exceeds %d bytes: %w", s.maxBody, errdefs.ErrInvalidArgument)
		case errors.Is(err, io.EOF) && allowEmpty:
			return nil
		case errors.Is(err, io.EOF):
			return fmt.Errorf("request body is empty, expected a JSON object: %w", errdefs.ErrInvalidArgument)
		default:
			return fmt.Errorf("malformed JSON body: %v: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	if dec.More() {
		return fmt.Errorf("malformed JSON body: trailing data after the object: %w", errdefs.ErrInvalidArgument)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body exceeds %d bytes: %w", s.maxBody, errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("malformed JSON body: trailing data after the object: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// sandboxJSON is a sandbox as the API shows it; ssh_port is the gateway's
// port while the sandbox runs and the gateway is on.
func (s *Server) sandboxJSON(r *registry.Record) apitype.Sandbox {
	out := recordJSON(r)
	if s.ssh != nil && r.Status.AcceptsExec() {
		port := s.ssh.Port
		out.SSHPort = &port
	}
	return out
}

func recordJSON(r *registry.Record) apitype.Sandbox {
	out := apitype.Sandbox{
		SandboxID: r.ID, UserID: r.UserID.String(), Status: string(r.Status), ContainerID: r.ContainerID,
		CreatedAt: r.CreatedAt, HotPath: sandbox.HotPath, ColdPath: sandbox.ColdPath,
		Config: apitype.SandboxConfig{
			Image: r.Config.Image, CPU: r.Config.CPU, MemoryMB: r.Config.MemoryMB, Pids: r.Config.Pids, DiskMB: r.Config.DiskMB,
			TTLSeconds: r.Config.TTLSeconds, Env: r.Config.Env, Labels: r.Config.Labels,
			Network:     &apitype.NetworkConfig{Mode: r.Config.Network.Mode, Allow: r.Config.Network.Allow},
			PublicPorts: r.Config.PublicPorts,
			Pull:        r.Config.Pull,
		},
		ImageDigest: r.ImageDigest,
		TTLSeconds:  r.Config.TTLSeconds, Image: r.Config.Image, ExpiresAt: r.ExpiresAt,
		LastHeartbeatAt: r.LastHeartbeatAt, StoppedAt: r.StoppedAt, Error: r.Error,
		HotSyncedAt: r.HotSyncedAt, HotSyncError: r.HotSyncError, HotSyncPending: r.HotSyncPending,
		HotSyncOverLimit: r.HotSyncOverLimit, HotSyncRejectedCount: r.HotSyncRejectedCount, HotSyncRejected: r.HotSyncRejected,
		IPAddress: r.IPAddress,
		ExitCode:  r.ExitCode, OOMKills: r.OOMKills, LastActivityAt: r.LastActivityAt, IdleExpiresAt: sandbox.IdleExpiresAt(r),
	}
	out.Config.HeartbeatTimeoutSeconds = r.Config.HeartbeatTimeoutSeconds
	out.Config.IdleTimeoutSeconds = r.Config.IdleTimeoutSeconds
	if r.StopReason != "" {
		reason := r.StopReason
		out.StopReason = &reason
	}
	return out
}

// --- handlers ---------------------------------------------------------------

// health answers from memory and the registry's index: it never waits on
// containerd or the bucket, whose state supervision keeps (conditions).
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	n, err := s.mgr.ActiveCount(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	h := apitype.Health{Status: "healthy", ActiveSandboxes: n, UptimeSeconds: time.Since(s.started).Seconds(), Version: s.version, ContainerdStatus: "ok"}
	if len(s.mgr.Pools()) > 0 {
		if h.PooledSandboxes, err = s.mgr.PooledCount(r.Context()); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	var details []string
	for _, c := range s.mgr.Conditions() {
		h.Status = "degraded"
		h.Reasons = append(h.Reasons, c.Reason)
		details = append(details, c.Reason+": "+c.Detail)
		if c.Reason == sandbox.ConditionContainerd {
			h.ContainerdStatus = c.Detail
		}
	}
	h.Detail = strings.Join(details, "; ")
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) versionInfo(w http.ResponseWriter, r *http.Request) {
	v, err := s.images.Version(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := apitype.Version{Version: s.version, Containerd: v}
	if s.ssh != nil {
		out.SSHHostKey = s.ssh.Fingerprint
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) capacity(w http.ResponseWriter, r *http.Request) {
	u, err := s.mgr.Usage(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.Capacity{
		Slots:         apitype.Allocation{Total: int64(s.mgr.Limits().MaxSandboxes), Allocated: int64(u.Sandboxes)},
		CPU:           apitype.CPUAllocation{Total: s.host.CPUs, Allocated: u.CPU},
		MemoryMB:      apitype.Allocation{Total: s.host.MemoryMB, Allocated: u.MemoryMB},
		NetworkSubnet: s.host.NetworkSubnet,
	})
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req apitype.CreateSandboxRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	cr := sandbox.CreateRequest{UserID: req.UserID, IdempotencyKey: r.Header.Get(apitype.IdempotencyKeyHeader)}
	if c := req.Config; c != nil {
		cr.Config = registry.Config{Image: c.Image, CPU: c.CPU, MemoryMB: c.MemoryMB, Pids: c.Pids, DiskMB: c.DiskMB, TTLSeconds: c.TTLSeconds, Env: c.Env, Labels: c.Labels, PublicPorts: c.PublicPorts, Pull: c.Pull,
			HeartbeatTimeoutSeconds: c.HeartbeatTimeoutSeconds, IdleTimeoutSeconds: c.IdleTimeoutSeconds}
		if c.Network != nil {
			cr.Config.Network = registry.NetworkConfig{Mode: c.Network.Mode, Allow: c.Network.Allow}
		}
	}
	ctx := r.Context()
	if cr.IdempotencyKey != "" {
		// A keyed create runs to the end even if its caller goes away (a
		// client that crashed, a provider killed mid-create): the caller
		// will retry with the key, and must then get this sandbox, not a
		// create that was undone half-way and so refuses its key.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), keyedCreateTimeout)
		defer cancel()
	}
	rec, err := s.mgr.Create(ctx, cr)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxJSON(rec))
}

// keyedCreateTimeout bounds a create that carries an Idempotency-Key once
// its caller has gone (an image pull is the long part of a create).
const keyedCreateTimeout = 30 * time.Minute

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := knownParams(q, "user_id", "all", "limit", "cursor", "pooled"); err != nil {
		s.fail(w, r, err)
		return
	}
	req := sandbox.PageRequest{UserID: q.Get("user_id"), Cursor: q.Get("cursor")}
	var err error
	if req.All, err = boolParam(q, "all", false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Pooled, err = boolParam(q, "pooled", false); err != nil {
		s.fail(w, r, err)
		return
	}
	if l := q.Get("limit"); l != "" {
		n, perr := strconv.Atoi(l)
		if perr != nil || n < 1 {
			s.fail(w, r, fmt.Errorf("query parameter limit=%q: want a whole number in [1, %d]: %w", l, sandbox.MaxPageSize, errdefs.ErrInvalidArgument))
			return
		}
		req.Limit = n
	}
	page, err := s.mgr.ListPage(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := apitype.SandboxList{Sandboxes: []apitype.Sandbox{}, Total: page.Total, NextCursor: page.NextCursor}
	for _, rec := range page.Records {
		out.Sandboxes = append(out.Sandboxes, s.sandboxJSON(rec))
	}
	writeJSON(w, http.StatusOK, out)
}

// boolParam reads an optional true/false query parameter.
func boolParam(q url.Values, name string, def bool) (bool, error) {
	switch v := q.Get(name); v {
	case "":
		return def, nil
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	default:
		return def, fmt.Errorf("query parameter %s=%q: want true or false: %w", name, v, errdefs.ErrInvalidArgument)
	}
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	rec, err := s.mgr.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.sandboxJSON(rec))
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request) {
	graceful, err := boolParam(r.URL.Query(), "graceful", true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reason := sandbox.ReasonUserRequested
	if _, err := s.mgr.Destroy(r.Context(), r.PathValue("id"), graceful, reason); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// knownParams refuses query parameters other than known, naming them.
func knownParams(q url.Values, known ...string) error {
	for k := range q {
		if !slices.Contains(known, k) {
			if len(known) == 0 {
				return fmt.Errorf("unknown query parameter %q (this route takes none): %w", k, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("unknown query parameter %q (known: %s): %w", k, strings.Join(known, ", "), errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// sandboxID reads the {id} path value and answers 404 for anything that is
// not a sandbox id, before the body is read: an unknown sandbox is "not
// found" whatever the request carries.
func (s *Server) sandboxID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !ids.ValidSandboxID(id) {
		s.fail(w, r, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound))
		return "", false
	}
	return id, true
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	var req apitype.ExecRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	in := sandbox.ExecInput{Command: req.Command, User: req.User, Env: req.Env}
	if req.Timeout != nil {
		if *req.Timeout < 1 || *req.Timeout > 86400 {
			s.fail(w, r, fmt.Errorf("timeout %d is out of range [1, %d] seconds: %w", *req.Timeout, int(s.mgr.Limits().MaxCmdTimeout/time.Second), errdefs.ErrInvalidArgument))
			return
		}
		in.Timeout = time.Duration(*req.Timeout) * time.Second
	}
	if req.Cwd != nil {
		if *req.Cwd == "" {
			s.fail(w, r, fmt.Errorf("cwd is empty: use null for the remembered directory: %w", errdefs.ErrInvalidArgument))
			return
		}
		in.Cwd = *req.Cwd
	}
	if wantsNDJSON(r) {
		s.streamExec(w, r, id, in)
		return
	}
	res, err := s.mgr.Exec(r.Context(), id, in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := apitype.ExecResponse{
		ExitCode: res.ExitCode, Stdout: string(res.Stdout), Stderr: string(res.Stderr), Cwd: res.Cwd,
		TimedOut: res.TimedOut, Truncated: res.StdoutTruncated || res.StderrTruncated,
		StdoutTruncated: res.StdoutTruncated, StderrTruncated: res.StderrTruncated,
		DurationMS: res.Duration.Milliseconds(),
	}
	if !utf8.Valid(res.Stdout) {
		out.StdoutBase64 = base64.StdEncoding.EncodeToString(res.Stdout)
	}
	if !utf8.Valid(res.Stderr) {
		out.StderrBase64 = base64.StdEncoding.EncodeToString(res.Stderr)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	rec, err := s.mgr.Heartbeat(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.HeartbeatResponse{Acknowledged: true, SandboxID: rec.ID})
}

func (s *Server) complete(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	var req apitype.CompleteRequest
	if err := s.decode(w, r, &req, true); err != nil {
		s.fail(w, r, err)
		return
	}
	rec, err := s.mgr.Signal(r.Context(), id, sandbox.ReasonGracefulShutdown, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.SignalResponse{Status: string(registry.StatusShuttingDown), SandboxID: rec.ID})
}

func (s *Server) errorSignal(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	var req apitype.ErrorSignalRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Error == "" || len(req.Error) > 4096 {
		s.fail(w, r, fmt.Errorf("error must be 1-4096 characters: %w", errdefs.ErrInvalidArgument))
		return
	}
	rec, err := s.mgr.Signal(r.Context(), id, sandbox.ReasonError, req.Error)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.SignalResponse{Status: string(registry.StatusShuttingDown), SandboxID: rec.ID, ErrorReceived: true})
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.images.Images(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := apitype.ImageList{Images: []apitype.Image{}}
	for _, i := range imgs {
		out.Images = append(out.Images, apitype.Image{Name: i.Name, Digest: i.Digest, Size: i.Size, CreatedAt: i.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, s.maxImport)
	names, err := s.images.Import(r.Context(), body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = fmt.Errorf("image archive exceeds %d bytes: %w", s.maxImport, errdefs.ErrInvalidArgument)
		}
		s.fail(w, r, err)
		return
	}
	s.log.Info("images imported", "images", names)
	s.mgr.ImagesChanged()
	writeJSON(w, http.StatusOK, apitype.ImportResponse{Images: names})
}

// Serve runs srv on l until ctx ends, then shuts down gracefully: no new
// connections, in-flight requests finish (up to drain).
func Serve(ctx context.Context, srv *http.Server, l net.Listener, drain time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("drain in-flight requests: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
