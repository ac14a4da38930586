//go:build linux

package daemon_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/metrics"
)

// freeLoopback returns a loopback address nothing listens on right now.
func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// sample returns the value of the exposition line "series value".
func sample(t *testing.T, exposition, series string) (float64, bool) {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return v, true
		}
	}
	return 0, false
}

// TestMetrics runs a create, an exec and a destroy through the daemon, then
// reads /metrics over the socket and over the loopback metrics listener.
func TestMetrics(t *testing.T) {
	metricsAddr := freeLoopback(t)
	mx := metrics.New()
	h := daemontest.Start(t, func(c *daemon.Config) {
		c.Metrics = mx
		c.MetricsAddress = metricsAddr
	})
	ctx := context.Background()
	s := h.Create("metrics-user", nil)
	if r := h.Exec(s.SandboxID, "echo hi"); r.Stdout != "hi\n" {
		t.Fatalf("exec: %+v", r)
	}
	if err := h.Client().Delete(ctx, s.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	h.Client().Raw(ctx, "GET", "/sandboxes/sbx-000000000000", nil) // 404 on a known route
	h.Client().Raw(ctx, "GET", "/no/such/route", nil)              // 404, no route

	out, err := h.Client().Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	atLeast := map[string]float64{
		`matrx_http_requests_total{code="201",route="POST /sandboxes"}`:                1,
		`matrx_http_requests_total{code="200",route="POST /sandboxes/{id}/exec"}`:      1,
		`matrx_http_requests_total{code="204",route="DELETE /sandboxes/{id}"}`:         1,
		`matrx_http_requests_total{code="200",route="POST /images/import"}`:            1,
		`matrx_http_requests_total{code="404",route="GET /sandboxes/{id}"}`:            1,
		`matrx_http_requests_total{code="404",route="unmatched"}`:                      1,
		`matrx_http_request_duration_seconds_count{route="POST /sandboxes/{id}/exec"}`: 1,
		`matrx_sandboxes{status="stopped"}`:                                            1,
	}
	for series, min := range atLeast {
		if v, ok := sample(t, text, series); !ok || v < min {
			t.Errorf("%s = %v (present %v), want >= %v", series, v, ok, min)
		}
	}
	for _, series := range []string{`matrx_sandboxes{status="running"}`, `matrx_sandboxes{status="ready"}`} {
		if v, ok := sample(t, text, series); !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", series, v, ok)
		}
	}
	// Latency histograms and sync volumes come from the lifecycle.
	for series, want := range map[string]float64{
		`matrx_sandbox_create_duration_seconds_count{result="ok"}`:  1,
		`matrx_sandbox_exec_duration_seconds_count{result="ok"}`:    1,
		`matrx_sandbox_destroy_duration_seconds_count{result="ok"}`: 1,
	} {
		if v, ok := sample(t, text, series); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	// Bounded cardinality: no sandbox id, user id or raw path is a label.
	for _, leak := range []string{"sbx-", "metrics-user", "/no/such/route", s.SandboxID} {
		if strings.Contains(text, leak) {
			t.Errorf("exposition contains %q", leak)
		}
	}

	// The loopback listener serves the same metrics, and nothing else.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `route="POST /sandboxes/{id}/exec"`) {
		t.Fatalf("metrics listener: %d\n%.500s", resp.StatusCode, body)
	}
	for _, path := range []string{"/health", "/sandboxes"} {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("metrics listener serves %s: %d", path, resp.StatusCode)
		}
	}
	// The listener closes with the daemon.
	h.Stop()
	if c, err := net.Dial("tcp", metricsAddr); err == nil {
		c.Close()
		t.Fatalf("metrics listener still open after the daemon stopped")
	}
}

// TestTCPListener serves the API on loopback TCP to a client with the key.
func TestTCPListener(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "api-key")
	if err := os.WriteFile(keyFile, []byte("s3cret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tcpAddr := freeLoopback(t)
	h := daemontest.Start(t, func(c *daemon.Config) {
		c.TCPAddress = tcpAddr
		c.APIKeyFile = keyFile
	})
	ctx := context.Background()
	tc := client.NewTCP(tcpAddr, client.WithAPIKey("s3cret-0123456789"))
	defer tc.Close()
	s, err := tc.Create(ctx, "old-client", nil)
	if err != nil {
		t.Fatalf("create over tcp: %v", err)
	}
	if r, err := tc.Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "echo over tcp"}); err != nil || r.Stdout != "over tcp\n" {
		t.Fatalf("exec over tcp: %v %+v", err, r)
	}
	// The socket needs no key and sees the same sandbox.
	if got, err := h.Client().Get(ctx, s.SandboxID); err != nil || got.UserID != "old-client" {
		t.Fatalf("get over the socket: %v %+v", err, got)
	}
	for _, key := range []string{"", "wrong", "s3cret-012345678"} {
		var opts []client.Option
		if key != "" {
			opts = append(opts, client.WithAPIKey(key))
		}
		c := client.NewTCP(tcpAddr, append(opts, client.WithRetries(0))...)
		_, err := c.List(ctx, "", true)
		var e *client.Error
		if !errdefs.IsUnauthorized(err) || !asClientError(err, &e) || e.Status != 401 || e.Detail == "" {
			t.Errorf("key %q: %v", key, err)
		}
		c.Close()
	}
	if err := tc.Delete(ctx, s.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.Logs(), `"msg":"api key rejected"`) || strings.Contains(h.Logs(), "s3cret") {
		t.Fatalf("rejections not logged, or the key was:\n%s", h.Logs())
	}
	h.Stop()
	if c, err := net.Dial("tcp", tcpAddr); err == nil {
		c.Close()
		t.Fatalf("tcp listener still open after the daemon stopped")
	}
}

func asClientError(err error, e **client.Error) bool {
	x, ok := err.(*client.Error)
	*e = x
	return ok
}
