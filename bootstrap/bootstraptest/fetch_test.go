package bootstraptest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// artifactServer serves payload at any path under /releases/ from
// 127.0.0.1 and counts requests. /releases/truncated.bin announces more
// bytes than it sends and drops the connection.
type artifactServer struct {
	*httptest.Server
	hits     atomic.Int64
	lastPath atomic.Value // string
}

func newArtifactServer(t *testing.T, payload []byte) *artifactServer {
	t.Helper()
	s := &artifactServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("/releases/truncated.bin", func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.Header().Set("Content-Length", "1048576")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(payload)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		// Abort the response mid-body: the client sees a short transfer.
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/releases/", func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.lastPath.Store(r.URL.Path)
		_, _ = w.Write(payload)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		http.NotFound(w, r)
	})
	// httptest listens on 127.0.0.1; say so explicitly to keep traffic on
	// loopback whatever the default becomes.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Server = &httptest.Server{Listener: l, Config: &http.Server{Handler: mux, ErrorLog: nil}}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func fetchScript(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/bin/bash"); err != nil {
		skipf(t, "bash not found")
	}
	needTool(t, "curl")
	needTool(t, "sha256sum")
	return filepath.Join(repoRoot(t), "bootstrap", "lib", "fetch-verified.sh")
}

func TestFetchVerified(t *testing.T) {
	script := fetchScript(t)
	payload := []byte("mount-s3 stand-in package\x00\x01\x02 bytes\n")
	good := sha256Hex(payload)
	bad := sha256Hex([]byte("something else"))
	srv := newArtifactServer(t, payload)

	tests := []struct {
		name      string
		url       string // relative URLs are joined to MATRX_FETCH_BASE_URL
		sum       string
		existing  []byte // DEST content before the run, nil for none
		wantCode  int
		wantDest  []byte // DEST content after, nil for none
		wantInErr string
		wantHits  int64 // requests the server saw
	}{
		{name: "good checksum installs", url: "releases/1.0/pkg.deb", sum: good,
			wantCode: 0, wantDest: payload, wantHits: 1},
		{name: "absolute url", url: srv.URL + "/releases/1.0/pkg.deb", sum: good,
			wantCode: 0, wantDest: payload, wantHits: 1},
		{name: "uppercase checksum accepted", url: "releases/1.0/pkg.deb", sum: strings.ToUpper(good),
			wantCode: 0, wantDest: payload, wantHits: 1},
		{name: "bad checksum installs nothing", url: "releases/1.0/pkg.deb", sum: bad,
			wantCode: 1, wantInErr: "CHECKSUM MISMATCH", wantHits: 1},
		{name: "bad checksum keeps existing dest", url: "releases/1.0/pkg.deb", sum: bad,
			existing: []byte("old"), wantCode: 1, wantDest: []byte("old"), wantInErr: "CHECKSUM MISMATCH", wantHits: 1},
		{name: "already present downloads nothing", url: "releases/1.0/pkg.deb", sum: good,
			existing: payload, wantCode: 0, wantDest: payload, wantHits: 0},
		{name: "stale dest replaced", url: "releases/1.0/pkg.deb", sum: good,
			existing: []byte("old"), wantCode: 0, wantDest: payload, wantHits: 1},
		{name: "http error", url: "missing/pkg.deb", sum: good,
			wantCode: 1, wantInErr: "download of", wantHits: 1},
		{name: "truncated transfer", url: "releases/truncated.bin", sum: good,
			wantCode: 1, wantInErr: "download of", wantHits: 1},
		{name: "placeholder checksum refused", url: "releases/1.0/pkg.deb", sum: "TO-BE-FILLED",
			wantCode: 2, wantInErr: "verification is never skipped", wantHits: 0},
		{name: "empty checksum refused", url: "releases/1.0/pkg.deb", sum: "",
			wantCode: 2, wantInErr: "not 64 hex digits", wantHits: 0},
		{name: "short checksum refused", url: "releases/1.0/pkg.deb", sum: good[:63],
			wantCode: 2, wantInErr: "not 64 hex digits", wantHits: 0},
		// Refused before any connection is attempted.
		{name: "plain http off loopback refused", url: "http://example.invalid/pkg.deb", sum: good,
			wantCode: 2, wantInErr: "only https", wantHits: 0},
		{name: "loopback look-alike host refused", url: "http://127.0.0.1.example.invalid/pkg.deb", sum: good,
			wantCode: 2, wantInErr: "only https", wantHits: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			dest := filepath.Join(dir, "pkg.deb")
			if tc.existing != nil {
				if err := os.WriteFile(dest, tc.existing, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := srv.hits.Load()
			r := runCmd(t, dir, []string{"MATRX_FETCH_BASE_URL=" + srv.URL}, script, tc.url, tc.sum, dest)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d, want %d: %s", r.code, tc.wantCode, r)
			}
			if tc.wantInErr != "" && !strings.Contains(r.stderr, tc.wantInErr) {
				t.Errorf("stderr lacks %q: %s", tc.wantInErr, r)
			}
			if tc.wantCode != 0 && !strings.Contains(r.stderr, "fetch-verified:") {
				t.Errorf("failure message does not name the tool: %s", r)
			}
			if hits := srv.hits.Load() - before; hits != tc.wantHits {
				t.Errorf("server saw %d requests, want %d", hits, tc.wantHits)
			}
			got, err := os.ReadFile(dest)
			switch {
			case tc.wantDest == nil && err == nil:
				t.Errorf("DEST exists after failure (%d bytes)", len(got))
			case tc.wantDest == nil && !os.IsNotExist(err):
				t.Errorf("stat DEST: %v", err)
			case tc.wantDest != nil && err != nil:
				t.Errorf("DEST missing: %v", err)
			case tc.wantDest != nil && string(got) != string(tc.wantDest):
				t.Errorf("DEST = %q, want %q", got, tc.wantDest)
			}
			// No temp (.part) files are left behind, whatever happened.
			names := listDir(t, dir)
			want := []string{}
			if tc.wantDest != nil {
				want = []string{"pkg.deb"}
			}
			if !slices.Equal(names, want) && !(len(names) == 0 && len(want) == 0) {
				t.Errorf("directory holds %q, want %q", names, want)
			}
			if tc.wantCode == 0 {
				if fi, err := os.Stat(dest); err == nil && fi.Mode().Perm() != 0o644 {
					t.Errorf("DEST mode %v, want 0644", fi.Mode().Perm())
				}
			}
		})
	}
}

func TestFetchVerifiedUsage(t *testing.T) {
	script := fetchScript(t)
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"a", "b"},
		{"a", "b", "c", "d"},
	} {
		if r := runCmd(t, dir, nil, script, args...); r.code != 2 || !strings.Contains(r.stderr, "usage:") {
			t.Errorf("args %q: %s", args, r)
		}
	}
	// A relative URL needs a base.
	sum := sha256Hex(nil)
	if r := runCmd(t, dir, nil, script, "x/y.deb", sum, filepath.Join(dir, "y.deb")); r.code != 2 || !strings.Contains(r.stderr, "MATRX_FETCH_BASE_URL") {
		t.Errorf("relative url without base: %s", r)
	}
	// The destination directory must exist; nothing is created.
	if r := runCmd(t, dir, []string{"MATRX_FETCH_BASE_URL=http://127.0.0.1:1"}, script, "x/y.deb", sum, filepath.Join(dir, "no", "y.deb")); r.code != 2 {
		t.Errorf("missing dest dir: %s", r)
	}
	if names := listDir(t, dir); len(names) != 0 {
		t.Errorf("usage errors left files: %q", names)
	}
}
