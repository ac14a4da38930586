package client

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/errclass"
)

// serve runs handler on a Unix socket after delay.
func serve(t *testing.T, sock string, delay time.Duration, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h}
	go func() {
		time.Sleep(delay)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Error(err)
			return
		}
		srv.Serve(l)
	}()
	t.Cleanup(func() { srv.Close() })
}

func TestRetriesUntilDaemonUp(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	serve(t, sock, 300*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(apitype.Health{Status: "healthy"})
	}))
	c := New(sock, WithBackoff(50*time.Millisecond), WithRetries(10))
	h, err := c.Health(context.Background())
	if err != nil || h.Status != "healthy" {
		t.Fatalf("%v %+v", err, h)
	}
}

func TestNoRetryOfExecOnServerError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	var calls atomic.Int32
	serve(t, sock, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(apitype.ErrorResponse{Detail: "containerd down"})
	}))
	time.Sleep(100 * time.Millisecond)
	c := New(sock, WithBackoff(time.Millisecond), WithRetries(3))
	_, err := c.Exec(context.Background(), "sbx-0123456789ab", apitype.ExecRequest{Command: "true"})
	if !errdefs.IsUnavailable(err) || err.Error() != "containerd down" {
		t.Fatalf("exec error: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("exec sent %d times, want exactly once", n)
	}
	calls.Store(0)
	if _, err := c.Get(context.Background(), "sbx-0123456789ab"); !errdefs.IsUnavailable(err) {
		t.Fatalf("get error: %v", err)
	}
	if n := calls.Load(); n != 4 {
		t.Fatalf("idempotent get sent %d times, want 1+3 retries", n)
	}
}

func TestErrorClasses(t *testing.T) {
	for code, is := range map[int]func(error) bool{
		400: errdefs.IsInvalidArgument, 404: errdefs.IsNotFound, 409: errdefs.IsFailedPrecondition,
		503: errdefs.IsUnavailable, 501: errdefs.IsNotImplemented, 500: errdefs.IsInternal,
		429: errdefs.IsResourceExhausted, 507: errclass.IsInsufficientStorage,
	} {
		if err := errorFromStatus(code, "x"); !is(err) {
			t.Errorf("status %d maps to %v", code, err)
		}
	}
}
