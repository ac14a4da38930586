package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/errclass"
)

func decodeBody(body string, v any, allowEmpty bool) error {
	s := &Server{maxBody: 1024}
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	return s.decode(httptest.NewRecorder(), r, v, allowEmpty)
}

func TestDecode(t *testing.T) {
	cases := []struct {
		body  string
		empty bool
		ok    bool
	}{
		{`{"command":"ls"}`, false, true},
		{`{"command":"ls","timeout":5,"user":"root","cwd":null,"env":{"A":"b"}}`, false, true},
		{``, false, false},
		{``, true, true},
		{`{"command":"ls"`, false, false},
		{`{"command":"ls"} x`, false, false},
		{`{"command":"ls"}{}`, false, false},
		{`{"cmd":"ls"}`, false, false},
		{`{"timeout":"5"}`, false, false},
		{`{"timeout":1.5}`, false, false},
		{`[1]`, false, false},
		{`{"command":"` + strings.Repeat("a", 2000) + `"}`, false, false},
	}
	for _, c := range cases {
		var req apitype.ExecRequest
		err := decodeBody(c.body, &req, c.empty)
		if c.ok != (err == nil) {
			t.Errorf("decode %.40q: %v", c.body, err)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("decode %.40q: error is not InvalidArgument: %v", c.body, err)
		}
	}
}

func FuzzDecodeExecRequest(f *testing.F) {
	for _, s := range []string{`{"command":"ls"}`, `{}`, `{"env":{"A":"1"}}`, `{"cwd":null}`, `x`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var req apitype.ExecRequest
		if err := decodeBody(body, &req, false); err != nil && !errdefs.IsInvalidArgument(err) {
			t.Fatalf("decode %q: unexpected error class %v", body, err)
		}
	})
}

func FuzzDecodeCreateRequest(f *testing.F) {
	for _, s := range []string{`{"user_id":"u","config":{"cpu":1}}`, `{"config":null}`, `{"user_id":1}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var req apitype.CreateSandboxRequest
		if err := decodeBody(body, &req, false); err != nil && !errdefs.IsInvalidArgument(err) {
			t.Fatalf("decode %q: unexpected error class %v", body, err)
		}
	})
}

func TestStatusOf(t *testing.T) {
	cases := map[error]int{
		errdefs.ErrInvalidArgument:                              400,
		errdefs.ErrNotFound:                                     404,
		errdefs.ErrFailedPrecondition:                           409,
		errdefs.ErrAlreadyExists:                                409,
		errdefs.ErrUnavailable:                                  503,
		errdefs.ErrNotImplemented:                               501,
		context.DeadlineExceeded:                                504,
		errdefs.ErrResourceExhausted:                            429,
		fmt.Errorf("disk: %w", errclass.ErrInsufficientStorage): 507,
		errors.New("boom"):                                      500,
	}
	for err, want := range cases {
		if got := statusOf(err); got != want {
			t.Errorf("statusOf(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestPanicBecomesJSON500(t *testing.T) {
	s := &Server{}
	s.log = discardLogger()
	h := s.middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
	if rec.Code != 500 || !bytes.Contains(rec.Body.Bytes(), []byte(`"detail"`)) {
		t.Fatalf("panic answered %d %q", rec.Code, rec.Body.String())
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// limitBody passes up to its limit and then fails with *http.MaxBytesError
// (what decode maps to its "exceeds" answer), without http.MaxBytesReader's
// connection close.
func TestLimitBody(t *testing.T) {
	for _, c := range []struct {
		body  string
		limit int64
		ok    bool
	}{{"12345", 5, true}, {"123456", 5, false}, {"", 0, true}, {"1", 0, false}} {
		got, err := io.ReadAll(limitBody(io.NopCloser(strings.NewReader(c.body)), c.limit))
		var mbe *http.MaxBytesError
		if c.ok && (err != nil || string(got) != c.body) || !c.ok && (!errors.As(err, &mbe) || int64(len(got)) != c.limit) {
			t.Errorf("%q with limit %d: %q, %v", c.body, c.limit, got, err)
		}
	}
}
