package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/metrics"
)

func TestLoadAPIKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name    string
		path    string
		want    string
		class   func(error) bool
		message string
	}{
		{"trimmed", write("ok", "  s3cret-key\n", 0o600), "s3cret-key", nil, ""},
		{"read-only owner", write("ro", "k", 0o400), "k", nil, ""},
		{"world readable", write("world", "k", 0o644), "", errdefs.IsInvalidArgument, "chmod 600"},
		{"group readable", write("group", "k", 0o640), "", errdefs.IsInvalidArgument, "mode 0640"},
		{"group writable", write("gw", "k", 0o620), "", errdefs.IsInvalidArgument, "group or others"},
		{"empty", write("empty", "", 0o600), "", errdefs.IsInvalidArgument, "empty"},
		{"blank", write("blank", " \n\t\n", 0o600), "", errdefs.IsInvalidArgument, "empty"},
		{"two lines", write("lines", "a\nb\n", 0o600), "", errdefs.IsInvalidArgument, "one line"},
		{"inner space", write("space", "a b", 0o600), "", errdefs.IsInvalidArgument, "without spaces"},
		{"too large", write("large", strings.Repeat("k", 5000), 0o600), "", errdefs.IsInvalidArgument, "larger than"},
		{"missing", filepath.Join(dir, "nope"), "", errdefs.IsNotFound, "does not exist"},
		{"directory", dir, "", errdefs.IsInvalidArgument, "not a regular file"},
		{"unset", "", "", errdefs.IsInvalidArgument, "not set"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "directory" {
				os.Chmod(dir, 0o700)
			}
			key, err := LoadAPIKey(c.path)
			if c.class == nil {
				if err != nil || string(key) != c.want {
					t.Fatalf("got %q, %v; want %q", key, err, c.want)
				}
				return
			}
			if err == nil || !c.class(err) || !strings.Contains(err.Error(), c.message) {
				t.Fatalf("got %q, %v; want an error containing %q", key, err, c.message)
			}
		})
	}
}

func TestListenTCP(t *testing.T) {
	cases := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:0", true},
		{"[::1]:0", true},
		{"localhost:0", true},
		{":0", false},
		{":8000", false},
		{"127.0.0.1", false},
		{"127.0.0.1:http", false},
		{"127.0.0.1:70000", false},
		{"", false},
	}
	for _, c := range cases {
		l, err := ListenTCP(c.addr)
		if c.ok {
			if err != nil {
				if strings.HasPrefix(c.addr, "[::1]") {
					t.Logf("%s: %v (no IPv6 loopback here)", c.addr, err)
					continue
				}
				t.Errorf("%s: %v", c.addr, err)
				continue
			}
			l.Close()
			continue
		}
		if !errdefs.IsInvalidArgument(err) {
			if l != nil {
				l.Close()
			}
			t.Errorf("%s: want InvalidArgument, got %v", c.addr, err)
		}
	}
}

// tcpServer is a Server with a stub of a documented route behind TCPHandler, on a real
// loopback listener.
func tcpServer(t *testing.T, key string) (*httptest.Server, *metrics.Metrics, *strings.Builder) {
	t.Helper()
	logs := &strings.Builder{}
	m := metrics.New()
	s := &Server{log: slog.New(slog.NewTextHandler(logs, nil)), metrics: m, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"pong": "yes"})
	})
	s.mux.Handle("GET /metrics", m.Handler())
	h, err := s.TCPHandler([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, m, logs
}

func TestTCPHandlerRequiresKey(t *testing.T) {
	const key = "correct-horse-battery-staple"
	srv, _, logs := tcpServer(t, key)
	cases := []struct {
		name    string
		headers []string
		status  int
		detail  string
	}{
		{"no header", nil, 401, "missing X-API-Key"},
		{"empty key", []string{""}, 401, "invalid API key"},
		{"wrong key", []string{"wrong"}, 401, "invalid API key"},
		{"prefix of the key", []string{key[:10]}, 401, "invalid API key"},
		{"key plus suffix", []string{key + "x"}, 401, "invalid API key"},
		{"case differs", []string{strings.ToUpper(key)}, 401, "invalid API key"},
		{"two headers", []string{key, key}, 401, "more than one"},
		{"right key", []string{key}, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/health", nil)
			for _, h := range c.headers {
				req.Header.Add("X-Api-Key", h)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
			if c.status == 200 {
				return
			}
			var e apitype.ErrorResponse
			if err := json.Unmarshal(b, &e); err != nil || !strings.Contains(e.Detail, c.detail) {
				t.Fatalf("body %s, want detail containing %q", b, c.detail)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
			}
		})
	}
	if !strings.Contains(logs.String(), "api key rejected") || !strings.Contains(logs.String(), "remote_addr=127.0.0.1:") {
		t.Fatalf("rejections not logged with the remote address:\n%s", logs)
	}
	if strings.Contains(logs.String(), key) {
		t.Fatalf("the key was logged:\n%s", logs)
	}
}

func TestTCPHandlerCountsRequests(t *testing.T) {
	srv, m, _ := tcpServer(t, "k")
	for _, key := range []string{"", "k", "k"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/health", nil)
		if key != "" {
			req.Header.Set(apitype.APIKeyHeader, key)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	out := rec.Body.String()
	for _, want := range []string{
		`matrx_http_requests_total{code="200",route="GET /health"} 2`,
		`matrx_http_requests_total{code="401",route="unmatched"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestTCPHandlerNeedsKey(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler), mux: http.NewServeMux()}
	if _, err := s.TCPHandler(nil); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("empty key accepted: %v", err)
	}
}

// hygieneServer is tcpServer with stubs of documented routes: one that
// reads a body (an upload), one that works slowly after reading it (an
// exec), and an admin route, and a short body timeout.
func hygieneServer(t *testing.T, key string, body time.Duration) (*httptest.Server, *lockedWriter) {
	t.Helper()
	logs := &lockedWriter{}
	s := &Server{log: slog.New(slog.NewTextHandler(logs, nil)), mux: http.NewServeMux(), tcpBodyTimeout: body}
	s.mux.HandleFunc("PUT /sandboxes/{id}/files", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apitype.ErrorResponse{Detail: err.Error()})
			return
		}
		w.Write(b)
	})
	s.mux.HandleFunc("POST /sandboxes/{id}/exec", func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		select { // an exec: minutes of work after a small body
		case <-time.After(3 * body):
			w.Write([]byte("done"))
		case <-r.Context().Done():
		}
	})
	s.mux.Handle("GET /admin/quarantine", s.rootOnly(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret")) }))
	h, err := s.TCPHandler([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config = TCPServer(h, s.log)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, logs
}

type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTCPListenerHygiene: a body that stalls is cut at the body deadline,
// work after the body is not; admin routes never answer over TCP; the
// server has header and idle timeouts; rejected keys are logged at most
// 10 times a minute, then summed up.
func TestTCPListenerHygiene(t *testing.T) {
	const key = "k"
	srv, logs := hygieneServer(t, key, 300*time.Millisecond)
	if srv.Config.ReadHeaderTimeout != TCPReadHeaderTimeout || srv.Config.IdleTimeout != TCPIdleTimeout || TCPIdleTimeout == 0 {
		t.Errorf("tcp server timeouts: header %v, idle %v", srv.Config.ReadHeaderTimeout, srv.Config.IdleTimeout)
	}
	addr := strings.TrimPrefix(srv.URL, "http://")

	// Headers, 10 of 100 body bytes, then silence.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PUT /sandboxes/sbx-0123456789ab/files HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nContent-Length: 100\r\n\r\n0123456789", key)
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("stalled body answered %d", resp.StatusCode)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stalled body held the connection for %v (body timeout 300ms)", d)
	}

	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set(apitype.APIKeyHeader, key)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("POST", "/sandboxes/sbx-0123456789ab/exec", `{"command":"sleep 600"}`); code != 200 || body != "done" {
		t.Errorf("work after the body was cut by the body deadline: %d %q", code, body)
	}
	if code, body := do("PUT", "/sandboxes/sbx-0123456789ab/files", "whole"); code != 200 || body != "whole" {
		t.Errorf("a prompt body: %d %q", code, body)
	}
	if code, body := do("GET", "/admin/quarantine", ""); code != http.StatusForbidden || strings.Contains(body, "secret") {
		t.Errorf("admin route over TCP with the key: %d %q, want 403", code, body)
	}

	for i := 0; i < 30; i++ {
		req, _ := http.NewRequest("GET", srv.URL+"/admin/quarantine", nil)
		req.Header.Set(apitype.APIKeyHeader, "wrong")
		if resp, err := srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}
	if n := strings.Count(logs.String(), "api key rejected"); n != tcpRejectLogBurst {
		t.Errorf("%d rejection lines for 30 rejections, want %d", n, tcpRejectLogBurst)
	}
	l := &logLimiter{burst: 2}
	t0 := time.Now()
	for i, want := range []bool{true, true, false, false} {
		if ok, _ := l.allow(t0.Add(time.Duration(i) * time.Second)); ok != want {
			t.Errorf("line %d logged %v, want %v", i, ok, want)
		}
	}
	if ok, suppressed := l.allow(t0.Add(61 * time.Second)); !ok || suppressed != 2 {
		t.Errorf("next minute: logged %v with %d suppressed, want true and 2", ok, suppressed)
	}
}

// TestAdminRoutesAnswerOnlyRoot: only a peer with uid 0 on the Unix
// socket gets an admin route.
func TestAdminRoutesAnswerOnlyRoot(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	h := s.rootOnly(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	for _, c := range []struct {
		name string
		peer Peer
		want int
	}{
		{"root on the socket", Peer{Known: true, UID: 0}, 200},
		{"another user on the socket", Peer{Known: true, UID: 1000}, 403},
		{"no peer credentials (TCP)", Peer{}, 403},
	} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/admin/quarantine", nil)
		r = r.WithContext(context.WithValue(r.Context(), keyPeer, c.peer))
		h.ServeHTTP(rec, r)
		if rec.Code != c.want {
			t.Errorf("%s: %d, want %d", c.name, rec.Code, c.want)
		}
	}
}

// TestConnectionCap: with the cap reached, a further client waits in the
// backlog until a connection closes.
func TestConnectionCap(t *testing.T) {
	l, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ll := LimitListener(l, 2)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) })}
	go srv.Serve(ll)
	defer srv.Close()
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	got := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + l.Addr().String() + "/")
		if err == nil {
			resp.Body.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("third connection served while two were open (cap 2): %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("third connection after one closed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("third connection not served after one closed")
	}
	held[1].Close()
}
