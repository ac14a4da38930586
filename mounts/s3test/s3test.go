// Package s3test runs a private S3-compatible server for tests: one versitygw
// process (posix backend, data under a temp dir, random keys, bound to
// 127.0.0.1 on a free port) per test binary.
//
// It owns that process and its data directory, and nothing else: it never
// talks to any endpoint but the loopback server it started, and it never reads
// AWS credentials or configuration from the environment.
//
// Usage from a test package:
//
//	func TestMain(m *testing.M) { s3test.Main(m) }
//
//	func TestX(t *testing.T) {
//		srv := s3test.Start(t)     // skips if versitygw is not installed
//		bucket := srv.NewBucket(t) // fresh, uniquely named bucket
//		...
//	}
//
// The versitygw binary is looked up at $MATRX_VERSITYGW, then at
// <repo>/build/tools/versitygw (built by bootstrap/tools.sh), then in PATH.
// If it is missing, Start skips the test, unless MATRX_REQUIRE_INTEGRATION=1,
// in which case it fails it.
//
// Package-level state: Start shares one server between all tests of a test
// binary, so this package keeps that server in a package-level variable (an
// exception to the project's no-singletons rule that is acceptable in a test
// helper only). Main stops the server and removes its data directory after
// the tests ran; on Linux the process is also started with a parent-death
// signal, so it cannot outlive the test binary even without Main. Programs
// that are not tests (benchmarks) use Launch and Stop directly.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/testenv"
)

const (
	// EnvBinary names the environment variable that points at a versitygw binary.
	EnvBinary = "MATRX_VERSITYGW"

	// DefaultRegion is the region the server is started with.
	DefaultRegion = "us-east-1"
)

// Server is a running versitygw reachable at Endpoint with the static
// credentials AccessKey/SecretKey.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string

	// Dir is the posix backend's root: every bucket is a directory below it.
	Dir string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	tmpDir  string // created by Launch, removed by Stop
	logPath string
}

// Options configures Launch.
type Options struct {
	// Binary is the versitygw executable; FindBinary() when empty.
	Binary string
	// Dir holds the backend root ("data") and the server log; a new temp dir
	// (removed by Stop) when empty.
	Dir string
	// StartTimeout bounds the wait for the server to answer (default 30s).
	StartTimeout time.Duration
}

// FindBinary returns the versitygw executable to use: $MATRX_VERSITYGW,
// <repo>/build/tools/versitygw, or versitygw in PATH. The error wraps
// errdefs.ErrNotFound when none exists.
func FindBinary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%s=%q is not an executable file: %w", EnvBinary, p, errdefs.ErrNotFound)
	}
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, "build", "tools", "versitygw")
		if isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("versitygw not found (set %s, run bootstrap/tools.sh, or put it in PATH): %w",
		EnvBinary, errdefs.ErrNotFound)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// repoRoot walks up from the working directory to the directory holding
// go.mod (go test runs in the package directory).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory: %w", errdefs.ErrNotFound)
		}
		dir = parent
	}
}

// Launch starts a versitygw process and waits until it answers HTTP. The
// caller must call Stop.
func Launch(ctx context.Context, opts Options) (*Server, error) {
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, err = FindBinary(); err != nil {
			return nil, err
		}
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	srv := &Server{
		AccessKey: "AK" + randomHex(9),
		SecretKey: randomHex(20),
		Region:    DefaultRegion,
		exited:    make(chan struct{}),
	}
	base := opts.Dir
	if base == "" {
		d, err := os.MkdirTemp("", "matrx-s3test-")
		if err != nil {
			return nil, fmt.Errorf("create versitygw dir: %w", err)
		}
		base, srv.tmpDir = d, d
	}
	// The backend root and the process log must be distinct: everything below
	// the root is a bucket.
	root := filepath.Join(base, "data")
	srv.Dir = root
	srv.logPath = filepath.Join(base, "versitygw.log")
	if err := os.MkdirAll(root, 0o755); err != nil {
		srv.cleanupDir()
		return nil, fmt.Errorf("create versitygw backend dir: %w", err)
	}

	port, err := freePort()
	if err != nil {
		srv.cleanupDir()
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv.Endpoint = "http://" + addr

	logf, err := os.Create(srv.logPath)
	if err != nil {
		srv.cleanupDir()
		return nil, fmt.Errorf("create versitygw log: %w", err)
	}
	defer logf.Close()

	cmd := exec.Command(bin,
		"--port", addr,
		"--access", srv.AccessKey,
		"--secret", srv.SecretKey,
		"--region", srv.Region,
		"--quiet",
		// Like AWS S3: reuse connections (versitygw closes them by default).
		"--keep-alive",
		"posix", root)
	// Only what the server needs: no AWS_* or VGW_* variables leak in.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + srv.Dir}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		srv.cleanupDir()
		return nil, fmt.Errorf("start versitygw: %w", err)
	}
	srv.cmd = cmd
	go func() {
		srv.waitErr = cmd.Wait()
		close(srv.exited)
	}()

	if err := srv.waitReady(ctx, opts.StartTimeout); err != nil {
		_ = srv.Stop()
		return nil, err
	}
	return srv, nil
}

func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil // any HTTP answer (403 for an unsigned request) means it serves
		}
		select {
		case <-s.exited:
			return fmt.Errorf("versitygw exited during startup (%v): %s: %w",
				s.waitErr, s.logTail(), errdefs.ErrUnavailable)
		case <-ctx.Done():
			return fmt.Errorf("versitygw did not answer on %s: %s: %w", s.Endpoint, s.logTail(), errdefs.ErrUnavailable)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Stop kills the server's process group, waits for it, and removes the data
// directory if Launch created it. Safe to call more than once.
func (s *Server) Stop() error {
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.exited:
		default:
			pid := s.cmd.Process.Pid
			_ = killGroup(pid, syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(5 * time.Second):
				_ = killGroup(pid, syscall.SIGKILL)
				<-s.exited
			}
		}
	}
	return s.cleanupDir()
}

func (s *Server) cleanupDir() error {
	if s.tmpDir == "" {
		return nil
	}
	d := s.tmpDir
	s.tmpDir = ""
	return os.RemoveAll(d)
}

// Pid returns the server's process id (benchmarks read its CPU time).
func (s *Server) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Client returns an S3 client for the server with path-style addressing.
func (s *Server) Client() *s3.Client {
	return s3.NewFromConfig(aws.Config{
		Region:      s.Region,
		Credentials: credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoint)
		o.UsePathStyle = true
	})
}

// CreateBucket creates a bucket named name.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	if err != nil {
		return fmt.Errorf("create bucket %q: %w", name, err)
	}
	return nil
}

// NewBucket creates a fresh bucket with a name unique to this server and
// derived from the test's name, and returns it. Buckets are not deleted: they
// go away with the server's data directory.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := bucketName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.CreateBucket(ctx, name); err != nil {
		t.Fatal(err)
	}
	return name
}

// bucketName builds a valid bucket name (3–63 chars of [a-z0-9-]) from a test
// name plus a random suffix.
func bucketName(testName string) string {
	var b strings.Builder
	b.WriteString("t-")
	lastDash := true
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			lastDash = false
		default:
			if !lastDash {
				b.WriteByte('-')
				lastDash = true
			}
		}
		if b.Len() >= 44 {
			break
		}
	}
	base := strings.TrimRight(b.String(), "-")
	if len(base) > 44 {
		base = strings.TrimRight(base[:44], "-")
	}
	return base + "-" + randomHex(5)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// shared is the one server of this test binary (see the package comment).
var shared struct {
	mu      sync.Mutex
	srv     *Server
	err     error
	tried   bool
	managed bool // Main is running and will stop the server
}

// Start returns the test binary's shared server, launching it on first use.
// If versitygw is not installed the test is skipped (or fails when
// MATRX_REQUIRE_INTEGRATION=1).
func Start(t testing.TB) *Server {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.tried {
		shared.tried = true
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		shared.srv, shared.err = Launch(ctx, Options{})
		cancel()
		if shared.err == nil && !shared.managed {
			t.Logf("s3test: TestMain does not call s3test.Main; versitygw stops when the test binary exits and leaves %s behind", shared.srv.Dir)
		}
	}
	if shared.err != nil {
		if errdefs.IsNotFound(shared.err) {
			testenv.Skip(t, "needs versitygw: %v", shared.err)
		}
		t.Fatalf("s3test: %v", shared.err)
	}
	return shared.srv
}

// Main runs the tests and then stops the shared server, if one was started.
// Call it from TestMain. Each after runs once the tests have (a summary
// table, say), before the server stops.
func Main(m *testing.M, after ...func()) {
	os.Exit(run(m, after))
}

func run(m *testing.M, after []func()) int {
	testenv.ReportHangs()
	shared.mu.Lock()
	shared.managed = true
	shared.mu.Unlock()
	code := m.Run()
	for _, f := range after {
		f()
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		if err := shared.srv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "s3test: stop versitygw: %v\n", err)
		}
		shared.srv = nil
	}
	return code
}
