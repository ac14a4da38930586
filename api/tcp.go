package api

// The TCP listener exists for clients of the original service, which spoke
// HTTP on a TCP port with an X-API-Key header. It is off by default and
// serves the same routes as the Unix socket, behind that key. The socket
// stays the recommended interface: it needs no shared secret, and every
// request carries the caller's uid (SO_PEERCRED). The listener speaks plain
// HTTP: bind it to loopback, or put a TLS proxy in front of it.
//
// Hygiene, because a TCP port can be reached by things that are not our
// clients: TCPServer sets header and idle timeouts, the handler gives every
// request body (except an image upload, which may be large) a read
// deadline, LimitListener caps the connections, and rejected keys are
// logged at most tcpRejectLogBurst times a minute (then summed up), so a
// scanner cannot flood the log. Admin routes never answer over TCP.

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
)

// maxAPIKeyFile bounds what LoadAPIKey reads.
const maxAPIKeyFile = 4096

// LoadAPIKey reads the TCP listener's API key from path. The file must be a
// regular file with no permission bits for group or others (chmod 600) and
// hold one non-empty key; surrounding whitespace is trimmed.
func LoadAPIKey(path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("api key file is not set: %w", errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("api key file %s does not exist: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("open api key file: %w", err)
	}
	defer f.Close()
	// Check the file that was opened, not the path (no swap in between).
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat api key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("api key file %s is not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("api key file %s has mode %04o: it must not be accessible by group or others (chmod 600 %s): %w",
			path, perm, path, errdefs.ErrInvalidArgument)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxAPIKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read api key file %s: %w", path, err)
	}
	if len(b) > maxAPIKeyFile {
		return nil, fmt.Errorf("api key file %s is larger than %d bytes: %w", path, maxAPIKeyFile, errdefs.ErrInvalidArgument)
	}
	key := bytes.TrimSpace(b)
	if len(key) == 0 {
		return nil, fmt.Errorf("api key file %s is empty: %w", path, errdefs.ErrInvalidArgument)
	}
	for _, c := range key {
		// Anything else cannot travel in an HTTP header value.
		if c < 0x21 || c > 0x7e {
			return nil, fmt.Errorf("api key in %s must be one line of printable ASCII without spaces: %w", path, errdefs.ErrInvalidArgument)
		}
	}
	return key, nil
}

// ListenTCP listens on addr, which must name a host (an IP address or a
// name; "0.0.0.0" to mean every interface) and a port. An empty host is
// refused so that no listener binds every interface by accident.
func ListenTCP(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("tcp address %q: want HOST:PORT: %w", addr, errdefs.ErrInvalidArgument)
	}
	if host == "" {
		return nil, fmt.Errorf("tcp address %q has no host: name one (127.0.0.1 for loopback only): %w", addr, errdefs.ErrInvalidArgument)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return nil, fmt.Errorf("tcp address %q: port must be a number below 65536: %w", addr, errdefs.ErrInvalidArgument)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, nil
}

// TCPHandler is the API for the TCP listener: every route of ServeHTTP
// (request log, metrics and error shape included) behind an X-API-Key check
// that compares in constant time. A missing or wrong key is answered 401
// {"detail": ...} before any route runs.
func (s *Server) TCPHandler(key []byte) (http.Handler, error) {
	if len(key) == 0 {
		return nil, fmt.Errorf("tcp listener needs a non-empty api key: %w", errdefs.ErrInvalidArgument)
	}
	// Comparing fixed-size digests also hides the key's length.
	want := sha256.Sum256(key)
	rejected := &logLimiter{burst: tcpRejectLogBurst}
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := r.Header[http.CanonicalHeaderKey(apitype.APIKeyHeader)]
		detail := "missing " + apitype.APIKeyHeader + " header"
		if ok && len(got) == 1 {
			sum := sha256.Sum256([]byte(got[0]))
			if subtle.ConstantTimeCompare(sum[:], want[:]) == 1 {
				s.mux.ServeHTTP(w, r)
				return
			}
			detail = "invalid API key"
		} else if ok {
			detail = "more than one " + apitype.APIKeyHeader + " header"
		}
		rid, _ := r.Context().Value(keyRequestID).(string)
		if log, suppressed := rejected.allow(time.Now()); log {
			attrs := []any{"request_id", rid, "remote_addr", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "reason", detail}
			if suppressed > 0 {
				attrs = append(attrs, "suppressed_since_last", suppressed)
			}
			s.log.Warn("api key rejected", attrs...)
		}
		writeJSON(w, http.StatusUnauthorized, apitype.ErrorResponse{Detail: detail})
	})
	body := s.tcpBodyTimeout
	if body <= 0 {
		body = tcpBodyTimeout
	}
	return bodyDeadline(s.middleware(auth), body), nil
}

// TCP listener limits.
const (
	// TCPReadHeaderTimeout and TCPIdleTimeout bound a connection that
	// sends nothing useful.
	TCPReadHeaderTimeout = 10 * time.Second
	TCPIdleTimeout       = 60 * time.Second
	// tcpBodyTimeout bounds reading one request body (image uploads
	// excepted).
	tcpBodyTimeout = 30 * time.Second
	// DefaultTCPMaxConns caps concurrent TCP connections.
	DefaultTCPMaxConns = 128
	// tcpRejectLogBurst is how many rejected keys are logged per minute.
	tcpRejectLogBurst = 10
)

// WithTCPBodyTimeout sets how long a TCP client may take to send a request
// body (default 30 s; image uploads are not bound by it).
func WithTCPBodyTimeout(d time.Duration) Option { return func(s *Server) { s.tcpBodyTimeout = d } }

// TCPServer returns the http.Server for the TCP listener: h (TCPHandler)
// with header and idle timeouts. There is no overall read or write
// timeout: execs answer after up to the max command timeout, and events
// stream.
func TCPServer(h http.Handler, errorLog *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h, ConnContext: ConnContext,
		ReadHeaderTimeout: TCPReadHeaderTimeout, IdleTimeout: TCPIdleTimeout,
		ErrorLog: slog.NewLogLogger(errorLog.Handler(), slog.LevelWarn),
	}
}

// streamingUpload reports whether r's body may legitimately take long to
// arrive (an image archive).
func streamingUpload(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == "/images/import"
}

// bodyDeadline gives every request with a body d to deliver it; the
// deadline is lifted once the body has been read, so the handler's own
// work (an exec of many minutes) is not cut by it. Requests without a
// body only have the server's header timeout: a read deadline on them
// would cancel their context mid-handler.
func bodyDeadline(next http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || streamingUpload(r) {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, lift: func() { rc.SetReadDeadline(time.Time{}) }}
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts its connection's read deadline once the whole body
// arrived (EOF). A body that failed (the deadline passed) keeps it, so
// that net/http's own attempt to drain the rest fails fast too and the
// connection is closed.
type deadlineBody struct {
	io.ReadCloser
	once sync.Once
	lift func()
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.once.Do(b.lift)
	}
	return n, err
}

// logLimiter allows burst log lines per minute and counts the rest.
type logLimiter struct {
	mu         sync.Mutex
	burst      int
	window     time.Time
	n          int
	suppressed int
}

// allow reports whether to log now, and how many lines were suppressed
// since the last one logged.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Minute {
		l.window, l.n = now, 0
	}
	if l.n >= l.burst {
		l.suppressed++
		return false, 0
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

// LimitListener caps l at max concurrent connections: Accept waits while
// max are open, so excess clients queue in the kernel's backlog instead
// of costing the daemon a goroutine and a buffer each.
func LimitListener(l net.Listener, max int) net.Listener {
	return &limitListener{Listener: l, sem: make(chan struct{}, max), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
