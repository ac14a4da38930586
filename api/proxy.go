package api

// Ports: reaching what a sandbox serves. Three ways, one dialer:
//   - ANY /sandboxes/{id}/proxy/{port}/{path...} on the API socket is an
//     HTTP reverse proxy (WebSocket upgrades included) to 127.0.0.1:port
//     inside the sandbox, with the prefix stripped and X-Forwarded-For,
//     -Host, -Proto and -Prefix set;
//   - POST /sandboxes/{id}/ports/{port}/connect with "Upgrade: tcp" turns
//     the connection into a raw TCP stream to that port (matrx
//     port-forward);
//   - the optional preview listener (preview.go) routes
//     Host: <port>-<sandbox id>.<domain> the same way, behind a token.
//
// Every connection is made by sandbox.Manager.Dial, which creates the
// socket inside the sandbox's network namespace: nothing is routed and
// nothing is opened on the host, so it works in network mode none too. The
// daemon's own credentials never reach the sandbox: X-API-Key and the
// preview token (header, cookie, query parameter) are removed from what
// is forwarded.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
)

// proxyMethods are the methods the proxy route is served for.
var proxyMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// proxyTarget is where one proxied request goes, carried in its context
// from the handler to the reverse proxy's Rewrite.
type proxyTarget struct {
	id     string
	port   int
	path   string // escaped, starting with "/"
	query  string
	prefix string // what was stripped, for X-Forwarded-Prefix
}

type targetKey struct{}

// newReverseProxy is the one reverse proxy of a Server. Its transport keys
// pooled connections by "sandbox-id:port" and dials through the manager.
func (s *Server) newReverseProxy() *httputil.ReverseProxy {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, p, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			port, err := strconv.Atoi(p)
			if err != nil {
				return nil, err
			}
			return s.mgr.Dial(ctx, host, port)
		},
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(targetKey{}).(*proxyTarget)
			pr.Out.URL = &url.URL{Scheme: "http", Host: t.id + ":" + strconv.Itoa(t.port), RawQuery: t.query}
			if p, err := url.PathUnescape(t.path); err == nil {
				pr.Out.URL.Path = p
				if p != t.path {
					pr.Out.URL.RawPath = t.path
				}
			} else {
				pr.Out.URL.Path = t.path
			}
			// Development servers check Host; the original is in
			// X-Forwarded-Host.
			pr.Out.Host = "localhost:" + strconv.Itoa(t.port)
			pr.SetXForwarded()
			if t.prefix != "" {
				pr.Out.Header.Set("X-Forwarded-Prefix", t.prefix)
			}
			stripCredentials(pr.Out)
		},
		Transport:     tr,
		FlushInterval: -1, // server-sent events and streamed bodies arrive as they are written
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			t := r.Context().Value(targetKey{}).(*proxyTarget)
			s.failDial(w, r, t.id, t.port, err)
		},
	}
}

// stripCredentials removes what only the daemon may see from a request
// that goes into a sandbox.
func stripCredentials(r *http.Request) {
	r.Header.Del(apitype.APIKeyHeader)
	r.Header.Del(apitype.PreviewTokenHeader)
	if cs := r.Cookies(); len(cs) > 0 {
		r.Header.Del("Cookie")
		for _, c := range cs {
			if c.Name != previewCookie {
				r.AddCookie(c)
			}
		}
	}
}

// failDial answers a request whose connection into the sandbox failed: the
// lifecycle's classes as everywhere (404, 409, 400), and 502 with the
// reason for a port nothing listens on or an app that broke the exchange.
func (s *Server) failDial(w http.ResponseWriter, r *http.Request, id string, port int, err error) {
	switch {
	case errdefs.IsNotFound(err), errdefs.IsFailedPrecondition(err), errdefs.IsInvalidArgument(err):
		s.fail(w, r, err)
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		w.WriteHeader(http.StatusBadGateway)
	default:
		detail := err.Error()
		if !strings.Contains(detail, "sandbox "+id) {
			detail = fmt.Sprintf("the app on port %d of sandbox %s: %v", port, id, err)
		}
		writeJSON(w, http.StatusBadGateway, apitype.ErrorResponse{Detail: detail})
	}
}

// parsePort reads a {port} path value: 1-65535, digits only.
func parsePort(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 || v != strconv.Itoa(n) {
		return 0, fmt.Errorf("port %q: want a TCP port, 1-65535: %w", v, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// proxy serves ANY /sandboxes/{id}/proxy/{port}/{path...}.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	port, err := parsePort(r.PathValue("port"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The rest of the path, as the client escaped it.
	segs := strings.SplitN(r.URL.EscapedPath(), "/", 6) // "", sandboxes, id, proxy, port, rest
	rest := "/"
	if len(segs) == 6 {
		rest += segs[5]
	}
	t := &proxyTarget{id: id, port: port, path: rest, query: r.URL.RawQuery,
		prefix: "/sandboxes/" + id + "/proxy/" + strconv.Itoa(port)}
	s.forward(w, r, t)
}

// forward hands a request to the reverse proxy. The sandbox app's answer
// is passed through as it is (the API's own error rewriting is off).
func (s *Server) forward(w http.ResponseWriter, r *http.Request, t *proxyTarget) {
	if sw, ok := w.(*statusWriter); ok {
		sw.raw = true
	}
	// A long answer (server-sent events, a WebSocket) ends with the
	// daemon instead of holding its graceful shutdown.
	ctx, done := s.streamContext(r)
	defer done()
	s.rproxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, targetKey{}, t)))
}

// connectPort serves POST /sandboxes/{id}/ports/{port}/connect: with
// "Connection: Upgrade" and "Upgrade: tcp" the connection becomes a raw
// TCP stream to the port inside the sandbox (101 Switching Protocols),
// half-closes passed on both ways.
func (s *Server) connectPort(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	port, err := parsePort(r.PathValue("port"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), "tcp") {
		s.fail(w, r, fmt.Errorf("this route opens a TCP stream: send Connection: Upgrade and Upgrade: tcp: %w", errdefs.ErrInvalidArgument))
		return
	}
	up, err := s.mgr.Dial(r.Context(), id, port)
	if err != nil {
		s.failDial(w, r, id, port, err)
		return
	}
	down, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		s.fail(w, r, fmt.Errorf("hijack: %v: %w", err, errdefs.ErrInternal))
		return
	}
	// The stream ends with the daemon (hijacked connections are not
	// waited for by a shutdown, nor closed by it).
	stop := context.AfterFunc(s.streams, func() { down.Close(); up.Close() })
	defer stop()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
	if err := brw.Flush(); err != nil {
		up.Close()
		down.Close()
		return
	}
	pipeBoth(bufferedConn{Conn: down, r: brw.Reader}, up)
}

// headerHasToken reports whether a comma-separated header holds token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// bufferedConn reads what the HTTP server had buffered before the raw
// bytes.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c bufferedConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes a connection that can, and closes one that
// cannot.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// pipeBoth copies both ways until both directions have ended, passing
// each end's EOF on as a half-close, then closes both.
func pipeBoth(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		closeWrite(dst)
	}
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}
