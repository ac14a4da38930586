package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestExposition(t *testing.T) {
	m := metrics.New(metrics.WithSandboxStatus(func(ctx context.Context) (metrics.Snapshot, error) {
		if ctx == nil {
			return metrics.Snapshot{}, errors.New("no context")
		}
		return metrics.Snapshot{ByStatus: map[string]int{"running": 2, "stopped": 5}, HotSyncPending: 1}, nil
	}))
	m.ObserveCreate(300*time.Millisecond, true)
	m.ObserveCreate(time.Second, false)
	m.ObserveExec(20*time.Millisecond, false)
	m.ObserveExec(30*time.Second, true)
	m.ObserveDestroy(2*time.Second, true)
	m.AddHotSync("up", 4096, 3, 1, 0)
	m.AddHotSync("down", 100, 1, 0, 2)
	m.AddHotSync("sideways", 1, 1, 1, 1)
	m.AddHotSync("up", -5, -1, -1, -1) // ignored
	m.IncFUSERemount("s3fs")
	m.IncFUSERemount("/usr/bin/weird")
	m.ObserveRequest("POST /sandboxes/{id}/exec", 200, 25*time.Millisecond)
	m.ObserveRequest("POST /sandboxes/{id}/exec", 200, 25*time.Millisecond)
	m.ObserveRequest("", 404, time.Millisecond)
	m.ObserveRequest("GET /health", 999, time.Millisecond)
	if out := scrape(t, m.Handler()); !strings.Contains(out, "matrx_cold_spares_ready 0\n") {
		t.Fatalf("spares without a source: want 0 ready, got:\n%s", out)
	}
	m.SetColdSpares(func() (int, uint64) { return 3, 7 })

	out := scrape(t, m.Handler())
	for _, want := range []string{
		`matrx_sandbox_create_duration_seconds_count{result="ok"} 1`,
		`matrx_sandbox_create_duration_seconds_count{result="error"} 1`,
		`matrx_sandbox_exec_duration_seconds_count{result="ok"} 1`,
		`matrx_sandbox_exec_duration_seconds_count{result="timeout"} 1`,
		`matrx_sandbox_exec_duration_seconds_bucket{result="ok",le="0.025"} 1`,
		`matrx_sandbox_destroy_duration_seconds_sum{result="ok"} 2`,
		`matrx_hotsync_bytes_total{direction="up"} 4096`,
		"matrx_cold_spares_ready 3\n",
		"matrx_cold_spares_taken_total 7\n",
		`matrx_hotsync_files_total{direction="up"} 3`,
		`matrx_hotsync_conflicts_total{direction="up"} 1`,
		`matrx_hotsync_errors_total{direction="down"} 2`,
		`matrx_hotsync_bytes_total{direction="other"} 1`,
		`matrx_fuse_remounts_total{driver="s3fs"} 1`,
		`matrx_fuse_remounts_total{driver="other"} 1`,
		`matrx_http_requests_total{code="200",route="POST /sandboxes/{id}/exec"} 2`,
		`matrx_http_requests_total{code="404",route="unmatched"} 1`,
		`matrx_http_requests_total{code="0",route="GET /health"} 1`,
		`matrx_http_request_duration_seconds_count{route="POST /sandboxes/{id}/exec"} 2`,
		`matrx_sandboxes{status="running"} 2`,
		`matrx_sandboxes{status="stopped"} 5`,
		"matrx_hotsync_pending_sandboxes 1",
		`go_goroutines `,
		`process_open_fds `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if strings.Contains(out, "weird") || strings.Contains(out, "sideways") {
		t.Errorf("unbounded label value leaked into the exposition:\n%s", out)
	}
	// Our metrics pass the Prometheus linter (names, units, help).
	problems, err := promlint.New(strings.NewReader(out)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "matrx_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestStatusIsComputedAtScrapeTime(t *testing.T) {
	n := 0
	m := metrics.New()
	out := scrape(t, m.Handler())
	if strings.Contains(out, "matrx_sandboxes") {
		t.Fatalf("gauge exposed without a source:\n%s", out)
	}
	m.SetSandboxStatus(func(context.Context) (metrics.Snapshot, error) {
		n++
		return metrics.Snapshot{ByStatus: map[string]int{"ready": n}, HotSyncPending: 10 * n}, nil
	})
	scrape(t, m.Handler())
	if out := scrape(t, m.Handler()); !strings.Contains(out, `matrx_sandboxes{status="ready"} 2`) ||
		!strings.Contains(out, "\nmatrx_hotsync_pending_sandboxes 20\n") {
		t.Fatalf("second scrape:\n%s", out)
	}
	m.SetSandboxStatus(nil)
	if out := scrape(t, m.Handler()); strings.Contains(out, "matrx_sandboxes") {
		t.Fatalf("gauge still exposed after the source was removed")
	}
}

func TestStatusErrorKeepsOtherMetrics(t *testing.T) {
	var logs bytes.Buffer
	m := metrics.New(
		metrics.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		metrics.WithSandboxStatus(func(context.Context) (metrics.Snapshot, error) {
			return metrics.Snapshot{}, errors.New("registry closed")
		}),
	)
	m.ObserveRequest("GET /health", 200, time.Millisecond)
	out := scrape(t, m.Handler())
	if !strings.Contains(out, `matrx_http_requests_total{code="200",route="GET /health"} 1`) || strings.Contains(out, "matrx_sandboxes{") {
		t.Fatalf("exposition after a failing status source:\n%s", out)
	}
	if !strings.Contains(logs.String(), "registry closed") {
		t.Fatalf("status error not logged: %q", logs.String())
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	// Two daemons in one process (tests) must not share or collide on a
	// global registry.
	a, b := metrics.New(), metrics.New()
	a.ObserveRequest("GET /health", 200, 0)
	if out := scrape(t, b.Handler()); strings.Contains(out, "matrx_http_requests_total{") {
		t.Fatalf("metrics leaked between registries:\n%s", out)
	}
}

func TestNilIsANoop(t *testing.T) {
	var m *metrics.Metrics
	m.ObserveCreate(time.Second, true)
	m.ObserveExec(time.Second, true)
	m.ObserveDestroy(time.Second, false)
	m.AddHotSync("up", 1, 1, 1, 1)
	m.IncFUSERemount("s3fs")
	m.ObserveRequest("GET /health", 200, time.Second)
	m.SetSandboxStatus(func(context.Context) (metrics.Snapshot, error) { return metrics.Snapshot{}, nil })
	m.SetColdSpares(func() (int, uint64) { return 0, 0 })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("nil handler: %d", rec.Code)
	}
	io.Copy(io.Discard, rec.Body)
}
