package api

// The sandbox listener: the way back from inside a sandbox. The original
// service's in-sandbox SDK calls POST {ORCHESTRATOR_URL}/sandboxes/
// {SANDBOX_ID}/heartbeat|complete|error; matrxd serves those routes (and
// GET /sandboxes/{id}) to sandboxes on a listener of their own, never on
// the API socket, and only about the caller itself.
//
// Decisions:
//   - The caller's identity comes from the connection, never from the
//     request. A sandbox with a bridge address connects from that address
//     to the gateway (runtime/network opens exactly that one TCP port to
//     sandboxes); the address names the sandbox through its IPAM lease
//     (network.Manager.SandboxAt), and a sandbox cannot send from another
//     address (the in-namespace source guard; no CAP_NET_ADMIN or
//     CAP_NET_RAW). A connection from an address no sandbox holds is
//     closed before a byte is read. A sandbox without an address (network
//     mode none) gets a Unix socket of its own, bound read-only into it:
//     which socket it is names the sandbox. The socket belongs to the
//     sandbox's root and agent group (0660), so no other host user can
//     speak for the sandbox through it.
//   - Exactly four routes: GET /sandboxes/{self} and POST /sandboxes/
//     {self}/heartbeat|complete|error. Any other sandbox id, existing or
//     not, answers 403; every other path or method 404. The handlers are
//     the API's own (same validation, same answers).
//   - Rate-limited per sandbox (SandboxRate requests per second after a
//     burst of SandboxBurst; 429 with Retry-After beyond), at most
//     SandboxConns connections at once per sandbox, 64 KiB request bodies,
//     small headers and short timeouts: a sandbox cannot make the daemon
//     hold much on its behalf.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/time/rate"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/sandbox"
)

// Limits of the sandbox listener, per sandbox.
const (
	// SandboxRate is the sustained request rate (per second) and
	// SandboxBurst the burst a sandbox may send.
	SandboxRate  = 5
	SandboxBurst = 20
	// SandboxConns bounds a sandbox's connections open at once.
	SandboxConns = 8
	// sandboxMaxBody bounds a request body (a complete's result, say).
	sandboxMaxBody = 64 << 10
)

// SandboxAPIConfig configures the sandbox listener.
type SandboxAPIConfig struct {
	// Gateway, when valid, is the bridge gateway address and port the
	// listener serves sandboxes with a bridge address on.
	Gateway netip.AddrPort
	// Lookup names the sandbox holding a bridge address; required with
	// Gateway (network.Manager.SandboxAt).
	Lookup func(netip.Addr) (string, bool)
	// SocketDir holds the per-sandbox sockets of sandboxes without an
	// address (SocketDir/<id>/sandbox.sock). Required; the daemon's own
	// directory.
	SocketDir string
	// SocketUID and SocketGID own each socket (mode 0660): the host ids of
	// the sandbox's root and of its agent group.
	SocketUID, SocketGID int
	Logger               *slog.Logger
}

// SandboxAPI is the sandbox listener. It implements sandbox.Home.
type SandboxAPI struct {
	cfg SandboxAPIConfig
	log *slog.Logger

	mu      sync.Mutex
	srv     *http.Server                 // nil until Start
	sockets map[string]*net.UnixListener // by sandbox id
	pending []net.Listener               // opened before Start
	conns   map[string]int               // open connections per sandbox
	limits  map[string]*callerLimit
	serving sync.WaitGroup
}

type callerLimit struct {
	lim  *rate.Limiter
	used time.Time
}

// NewSandboxAPI checks the configuration. Sockets may be opened at once
// (sandbox recovery does, before the API serves); they are served from
// Start.
func NewSandboxAPI(cfg SandboxAPIConfig) (*SandboxAPI, error) {
	if cfg.SocketDir == "" || !filepath.IsAbs(cfg.SocketDir) {
		return nil, fmt.Errorf("sandbox listener socket dir %q must be an absolute path: %w", cfg.SocketDir, errdefs.ErrInvalidArgument)
	}
	if cfg.Gateway.IsValid() && (cfg.Lookup == nil || cfg.Gateway.Port() == 0) {
		return nil, fmt.Errorf("sandbox listener on %s needs a port and an address lookup: %w", cfg.Gateway, errdefs.ErrInvalidArgument)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.SocketDir, 0o711); err != nil {
		return nil, fmt.Errorf("create sandbox socket dir: %w", err)
	}
	return &SandboxAPI{
		cfg: cfg, log: cfg.Logger,
		sockets: map[string]*net.UnixListener{}, conns: map[string]int{}, limits: map[string]*callerLimit{},
	}, nil
}

// URL is ORCHESTRATOR_URL for sandboxes with a bridge address ("" without
// a gateway listener).
func (h *SandboxAPI) URL() string {
	if !h.cfg.Gateway.IsValid() {
		return ""
	}
	return "http://" + h.cfg.Gateway.String()
}

// Start serves the gateway listener (when configured) and every socket,
// with srv's handlers. It returns once the gateway is bound; stop ends
// every listener and waits for in-flight requests (up to drain).
func (h *SandboxAPI) Start(srv *Server) (stop func(drain time.Duration), err error) {
	hs := &http.Server{
		Handler:           srv.sandboxHandler(h),
		ConnContext:       sandboxConnContext,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
	}
	var gw net.Listener
	if h.cfg.Gateway.IsValid() {
		l, err := listenFreebind(h.cfg.Gateway)
		if err != nil {
			return nil, fmt.Errorf("sandbox listener on %s: %w", h.cfg.Gateway, err)
		}
		gw = &gatewayListener{Listener: l, h: h}
		h.log.Info("sandbox listener serving", "address", h.cfg.Gateway.String())
	}
	h.mu.Lock()
	h.srv = hs
	pending := h.pending
	h.pending = nil
	h.mu.Unlock()
	if gw != nil {
		h.serve(gw)
	}
	for _, l := range pending {
		h.serve(l)
	}
	return func(drain time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			hs.Close()
		}
		h.serving.Wait()
	}, nil
}

func (h *SandboxAPI) serve(l net.Listener) {
	h.serving.Add(1)
	go func() {
		defer h.serving.Done()
		if err := h.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			h.log.Warn("sandbox listener stopped", "address", l.Addr().String(), "error", err)
		}
	}()
}

// OpenSocket makes sandbox id's socket, replacing one an earlier daemon
// left, and returns its directory (to bind at sandbox.HomeSocketDir).
func (h *SandboxAPI) OpenSocket(id string) (string, error) {
	if !ids.ValidSandboxID(id) {
		return "", fmt.Errorf("sandbox id %q: %w", id, errdefs.ErrInvalidArgument)
	}
	dir := filepath.Join(h.cfg.SocketDir, id)
	path := filepath.Join(dir, sandbox.HomeSocketName)
	if len(path) >= 108 {
		return "", fmt.Errorf("sandbox socket path %s is longer than 107 bytes (use a shorter state dir): %w", path, errdefs.ErrInvalidArgument)
	}
	// A listener of this daemon goes; the directory stays: a running
	// sandbox has it bound, and a new directory would not reach it.
	h.closeListener(id)
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create sandbox socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("remove stale sandbox socket: %w", err)
	}
	// Bound outside the sandbox's directory (which the sandbox sees), then
	// moved into it.
	l, err := bindPrivate(h.cfg.SocketDir, path, h.cfg.SocketUID, h.cfg.SocketGID, 0o660)
	if err != nil {
		return "", fmt.Errorf("sandbox socket: %w", err)
	}
	h.mu.Lock()
	h.sockets[id] = l
	serving := h.srv != nil
	sl := &socketListener{UnixListener: l, h: h, id: id}
	if !serving {
		h.pending = append(h.pending, sl)
	}
	h.mu.Unlock()
	if serving {
		h.serve(sl)
	}
	return dir, nil
}

// CloseSocket stops serving sandbox id's socket and removes its directory.
func (h *SandboxAPI) CloseSocket(id string) {
	if !ids.ValidSandboxID(id) {
		return
	}
	h.closeListener(id)
	dir := filepath.Join(h.cfg.SocketDir, id)
	if err := os.RemoveAll(dir); err != nil {
		h.log.Warn("remove sandbox socket dir", "sandbox_id", id, "error", err)
	}
}

func (h *SandboxAPI) closeListener(id string) {
	h.mu.Lock()
	l := h.sockets[id]
	delete(h.sockets, id)
	delete(h.limits, id)
	h.mu.Unlock()
	if l != nil {
		l.Close()
	}
}

// admit counts a new connection of sandbox id; false when it has too many.
func (h *SandboxAPI) admit(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns[id] >= SandboxConns {
		return false
	}
	h.conns[id]++
	return true
}

func (h *SandboxAPI) release(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns[id]--; h.conns[id] <= 0 {
		delete(h.conns, id)
	}
}

// allow takes one request from sandbox id's budget.
func (h *SandboxAPI) allow(id string) bool {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	cl := h.limits[id]
	if cl == nil {
		// Forget sandboxes idle for long (their budgets are full again
		// anyway): the map stays as large as the busy sandboxes.
		for k, v := range h.limits {
			if now.Sub(v.used) > 10*time.Minute {
				delete(h.limits, k)
			}
		}
		cl = &callerLimit{lim: rate.NewLimiter(SandboxRate, SandboxBurst)}
		h.limits[id] = cl
	}
	cl.used = now
	return cl.lim.AllowN(now, 1)
}

// sandboxConn is a connection whose sandbox is known.
type sandboxConn struct {
	net.Conn
	id   string
	h    *SandboxAPI
	once sync.Once
	tcp  bool // identity re-checked per request against the address
}

func (c *sandboxConn) Close() error {
	c.once.Do(func() { c.h.release(c.id) })
	return c.Conn.Close()
}

// gatewayListener accepts only connections from addresses a sandbox holds.
type gatewayListener struct {
	net.Listener
	h *SandboxAPI
}

func (l *gatewayListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, perr := netip.ParseAddrPort(c.RemoteAddr().String())
		id, ok := "", perr == nil
		if ok {
			id, ok = l.h.cfg.Lookup(ap.Addr())
		}
		switch {
		case !ok:
			l.h.log.Warn("sandbox listener: connection from an address no sandbox holds, closed", "remote", c.RemoteAddr().String())
			c.Close()
		case !l.h.admit(id):
			l.h.log.Warn("sandbox listener: too many connections, closed", "sandbox_id", id, "limit", SandboxConns)
			c.Close()
		default:
			return &sandboxConn{Conn: c, id: id, h: l.h, tcp: true}, nil
		}
	}
}

// socketListener is one sandbox's socket: every connection is that sandbox.
type socketListener struct {
	*net.UnixListener
	h  *SandboxAPI
	id string
}

func (l *socketListener) Accept() (net.Conn, error) {
	for {
		c, err := l.UnixListener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.h.admit(l.id) {
			l.h.log.Warn("sandbox listener: too many connections, closed", "sandbox_id", l.id, "limit", SandboxConns)
			c.Close()
			continue
		}
		return &sandboxConn{Conn: c, id: l.id, h: l.h}, nil
	}
}

func sandboxConnContext(ctx context.Context, c net.Conn) context.Context {
	if sc, ok := c.(*sandboxConn); ok {
		return context.WithValue(ctx, keyCaller, sc)
	}
	return ctx
}

// callerOf is the sandbox a request on the sandbox listener comes from.
func (h *SandboxAPI) callerOf(r *http.Request) (string, bool) {
	sc, ok := r.Context().Value(keyCaller).(*sandboxConn)
	if !ok {
		return "", false
	}
	if sc.tcp {
		// The address may have changed hands since the connection was
		// accepted (the sandbox stopped, another got its lease).
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			return "", false
		}
		if id, ok := h.cfg.Lookup(ap.Addr()); !ok || id != sc.id {
			return "", false
		}
	}
	return sc.id, true
}

// sandboxHandler is the sandbox listener's handler: the API's own
// handlers for the four routes, each behind the identity check.
func (s *Server) sandboxHandler(h *SandboxAPI) http.Handler {
	mux := http.NewServeMux()
	self := func(next http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, _ := r.Context().Value(keyCallerID).(string)
			if r.PathValue("id") != caller {
				s.fail(w, r, fmt.Errorf("sandbox %s may only speak about itself: %w", caller, errdefs.ErrPermissionDenied))
				return
			}
			r.Body = limitBody(r.Body, sandboxMaxBody)
			next(w, r)
		})
	}
	mux.Handle("GET /sandboxes/{id}", self(s.getSandbox))
	mux.Handle("POST /sandboxes/{id}/heartbeat", self(s.heartbeat))
	mux.Handle("POST /sandboxes/{id}/complete", self(s.complete))
	mux.Handle("POST /sandboxes/{id}/error", self(s.errorSignal))
	// Everything else, whatever the method: not here.
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, fmt.Errorf("%s %s is not served to sandboxes: %w", r.Method, r.URL.Path, errdefs.ErrNotFound))
	}))
	guarded := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, ok := h.callerOf(r)
		if !ok {
			s.fail(w, r, fmt.Errorf("this connection does not belong to a running sandbox: %w", errdefs.ErrPermissionDenied))
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), keyCallerID, caller))
		if !h.allow(caller) {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, apitype.ErrorResponse{
				Detail: fmt.Sprintf("rate limit: a sandbox may send %d requests at once and %d per second after that; retry later", SandboxBurst, SandboxRate),
			})
			return
		}
		mux.ServeHTTP(w, r)
	})
	return s.middleware(guarded)
}
