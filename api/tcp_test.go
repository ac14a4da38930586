package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

// tcpServer is a Server with a stub route behind TCPHandler, on a real
// loopback listener.
func tcpServer(t *testing.T, key string) (*httptest.Server, *metrics.Metrics, *strings.Builder) {
	t.Helper()
	logs := &strings.Builder{}
	m := metrics.New()
	s := &Server{log: slog.New(slog.NewTextHandler(logs, nil)), metrics: m, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
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
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ping", nil)
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
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ping", nil)
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
		`matrx_http_requests_total{code="200",route="GET /ping"} 2`,
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
