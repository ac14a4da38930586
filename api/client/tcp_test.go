package client

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
)

func TestTCPClientSendsAPIKey(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get(apitype.APIKeyHeader) != "k1" {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(apitype.ErrorResponse{Detail: "invalid API key"})
			return
		}
		json.NewEncoder(w).Encode(apitype.Health{Status: "healthy"})
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	if h, err := NewTCP(l.Addr().String(), WithAPIKey("k1")).Health(ctx); err != nil || h.Status != "healthy" {
		t.Fatalf("with key: %v %+v", err, h)
	}
	_, err = NewTCP(l.Addr().String(), WithAPIKey("k2"), WithRetries(0)).Health(ctx)
	var e *Error
	if !errdefs.IsUnauthorized(err) {
		t.Fatalf("wrong key: %v", err)
	}
	if !asError(err, &e) || e.Status != http.StatusUnauthorized || e.Detail != "invalid API key" {
		t.Fatalf("wrong key error: %#v", err)
	}
	if status, _, err := NewTCP(l.Addr().String(), WithAPIKey("k1")).Raw(ctx, "GET", "/health", nil); err != nil || status != 200 {
		t.Fatalf("raw with key: %d %v", status, err)
	}
}

func asError(err error, e **Error) bool {
	x, ok := err.(*Error)
	*e = x
	return ok
}

func TestMetrics(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	serve(t, sock, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(apitype.ErrorResponse{Detail: "not found"})
			return
		}
		w.Write([]byte("matrx_up 1\n"))
	}))
	b, err := New(sock, WithRetries(20)).Metrics(context.Background())
	if err != nil || string(b) != "matrx_up 1\n" {
		t.Fatalf("%v %q", err, b)
	}
}

func TestMetricsNotServed(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	serve(t, sock, 0, http.NotFoundHandler())
	_, err := New(sock, WithRetries(20)).Metrics(context.Background())
	if !errdefs.IsNotFound(err) {
		t.Fatalf("want NotFound, got %v", err)
	}
}
