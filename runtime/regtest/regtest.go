//go:build linux

// Package regtest starts a real image registry for integration tests:
// Debian's docker-registry (distribution 2.8) with htpasswd basic auth, on
// a loopback port, with its storage, config and logs in a temp dir. Images
// are pushed with skopeo from OCI archives (our own build/images/*.tar, or
// layouts a test writes). It is test support only; production code must
// not import it.
//
// A missing prerequisite (docker-registry, htpasswd, skopeo:
// bootstrap/install.sh --packages-only --test-tools) skips the test, or
// fails it under MATRX_REQUIRE_INTEGRATION=1 (testenv).
package regtest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/testenv"
)

// User is a registry account.
type User struct{ Name, Password string }

// Registry is one running registry.
type Registry struct {
	// Host is HOST:PORT, as in image references.
	Host  string
	Users []User
	Dir   string
	cmd   *exec.Cmd
	log   string
	cfg   string
	t     testing.TB
}

// Start runs a registry that accepts the given users (basic auth; at least
// one). It is stopped when t ends.
func Start(t testing.TB, users ...User) *Registry {
	t.Helper()
	if len(users) == 0 {
		t.Fatal("regtest: at least one user")
	}
	for _, tool := range []string{"docker-registry", "htpasswd", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skip(t, "%s not installed (bootstrap/install.sh --packages-only --test-tools)", tool)
		}
	}
	dir := t.TempDir()
	var htpasswd strings.Builder
	for _, u := range users {
		out, err := exec.Command("htpasswd", "-Bbn", u.Name, u.Password).Output()
		if err != nil {
			t.Fatalf("htpasswd: %v", err)
		}
		htpasswd.Write(out)
	}
	hp := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(hp, []byte(htpasswd.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &Registry{Users: users, Dir: dir, log: filepath.Join(dir, "registry.log"), cfg: filepath.Join(dir, "config.yml"), t: t}
	r.Host = freeLoopbackPort(t)
	conf := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
auth:
  htpasswd:
    realm: matrx-test
    path: %s
`, filepath.Join(dir, "data"), r.Host, hp)
	if err := os.WriteFile(r.cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	t.Cleanup(r.Stop)
	return r
}

func freeLoopbackPort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func (r *Registry) start() {
	r.t.Helper()
	logf, err := os.OpenFile(r.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	defer logf.Close()
	r.cmd = exec.Command("docker-registry", "serve", r.cfg)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start docker-registry: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + r.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(r.log)
			r.t.Fatalf("registry did not come up on %s: %v\n%s", r.Host, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the registry (a pull then finds it unreachable). Calling it
// twice is fine.
func (r *Registry) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	r.cmd = nil
}

// Push copies the image of an OCI archive (oci-archive:PATH) or layout
// (oci:DIR:TAG) to REPO:TAG in this registry, as the first user, and
// returns the manifest digest the registry stored. Extra skopeo flags go
// before the source ("--all" for every image of an index).
func (r *Registry) Push(src, repoTag string, flags ...string) string {
	r.t.Helper()
	if !strings.Contains(src, ":") {
		src = "oci-archive:" + src
	}
	digestFile := filepath.Join(r.Dir, "digest-"+strings.NewReplacer("/", "_", ":", "_").Replace(repoTag))
	u := r.Users[0]
	args := append([]string{"copy", "--quiet", "--dest-tls-verify=false",
		"--dest-creds", u.Name + ":" + u.Password, "--digestfile", digestFile}, flags...)
	cmd := exec.Command("skopeo", append(args, src, "docker://"+r.Host+"/"+repoTag)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+r.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("skopeo push %s to %s: %v\n%s", src, repoTag, err, out)
	}
	d, err := os.ReadFile(digestFile)
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.TrimSpace(string(d))
}

// Requests counts the access-log lines whose request line starts with
// prefix, e.g. "GET /v2/team/app/manifests/".
func (r *Registry) Requests(prefix string) int {
	f, err := os.Open(r.log)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// Apache combined format: ... "METHOD /path HTTP/1.1" STATUS ...
		line := sc.Text()
		i := strings.IndexByte(line, '"')
		if i >= 0 && strings.HasPrefix(line[i+1:], prefix) {
			n++
		}
	}
	return n
}

// Log returns the registry's log, for failure messages.
func (r *Registry) Log() string {
	b, _ := os.ReadFile(r.log)
	return string(b)
}
