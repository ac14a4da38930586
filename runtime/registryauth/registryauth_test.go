package registryauth

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestLookupAuths(t *testing.T) {
	p := writeConfig(t, `{"auths": {
		"https://registry.example:5000/v1/": {"auth": "`+b64("alice:pw-one")+`"},
		"other.example": {"username": "bob", "password": "pw-two"},
		"tokens.example": {"identitytoken": "refresh-xyz"},
		"https://index.docker.io/v1/": {"auth": "`+b64("hub:pw-hub")+`"}
	}}`)
	k, err := New(Config{ConfigPath: p})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		host string
		want Credentials
		src  Source
	}{
		{"registry.example:5000", Credentials{"alice", "pw-one"}, SourceAuths},
		{"REGISTRY.example:5000", Credentials{"alice", "pw-one"}, SourceAuths},
		{"other.example", Credentials{"bob", "pw-two"}, SourceAuths},
		{"tokens.example", Credentials{"", "refresh-xyz"}, SourceAuths},
		{"docker.io", Credentials{"hub", "pw-hub"}, SourceAuths},
		{"registry.example", Credentials{}, SourceNone}, // another port is another registry
		{"unknown.example", Credentials{}, SourceNone},
	} {
		got, src, err := k.Lookup(context.Background(), c.host)
		if err != nil || got != c.want || src != c.src {
			t.Errorf("Lookup(%s) = %v, %s, %v; want %v, %s", c.host, got, src, err, c.want, c.src)
		}
	}
}

// TestConfigErrors: a bad file fails at startup, naming the entry but
// never quoting a value.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name, body, want string
	}{
		{"not JSON", `{"auths": {"h": {"auth": "c2VjcmV0"`, "not valid JSON"},
		{"auth not base64", `{"auths": {"h": {"auth": "***secret***"}}}`, `auths["h"]: "auth" is not base64`},
		{"auth without colon", `{"auths": {"h": {"auth": "` + b64("secretonly") + `"}}}`, `USER:PASSWORD`},
		{"username without password", `{"auths": {"h": {"username": "secretuser"}}}`, "go together"},
		{"wrong type", `{"auths": {"h": {"auth": 42}}}`, "wrong type"},
		{"bad helper name", `{"credHelpers": {"h": "../../bin/sh"}}`, "helper name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(Config{ConfigPath: writeConfig(t, c.body)})
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want FailedPrecondition containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "c2VjcmV0") {
				t.Fatalf("error quotes the file's values: %v", err)
			}
		})
	}
	if _, err := New(Config{ConfigPath: filepath.Join(t.TempDir(), "missing.json")}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestCredentialHelper(t *testing.T) {
	bin := t.TempDir()
	script := `#!/bin/sh
read host
case "$host" in
  good.example) echo '{"ServerURL":"good.example","Username":"carol","Secret":"pw-helper"}' ;;
  token.example) echo '{"ServerURL":"token.example","Username":"<token>","Secret":"tok"}' ;;
  broken.example) echo 'pw-leak-on-stdout'; echo 'helper broke' >&2; exit 1 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
`
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-mtest"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	p := writeConfig(t, `{"credHelpers": {"good.example": "mtest", "token.example": "mtest", "broken.example": "mtest", "none.example": "mtest", "gone.example": "absent"}}`)
	k, err := New(Config{ConfigPath: p})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if c, src, err := k.Lookup(ctx, "good.example"); err != nil || c != (Credentials{"carol", "pw-helper"}) || src != SourceHelper {
		t.Errorf("good: %v %s %v", c, src, err)
	}
	if c, _, err := k.Lookup(ctx, "token.example"); err != nil || c != (Credentials{"", "tok"}) {
		t.Errorf("identity token: %v %v", c, err)
	}
	if c, _, err := k.Lookup(ctx, "none.example"); err != nil || !c.IsZero() {
		t.Errorf("not found must be anonymous, not an error: %v %v", c, err)
	}
	_, _, err = k.Lookup(ctx, "broken.example")
	if err == nil || !strings.Contains(err.Error(), "helper broke") || strings.Contains(err.Error(), "pw-leak") {
		t.Errorf("broken helper: %v (want its stderr, never its stdout)", err)
	}
	if _, _, err := k.Lookup(ctx, "gone.example"); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "docker-credential-absent is not installed") {
		t.Errorf("missing helper: %v", err)
	}
}

func TestECRRegion(t *testing.T) {
	for host, want := range map[string]string{
		"123456789012.dkr.ecr.us-east-1.amazonaws.com":          "us-east-1",
		"123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com": "us-gov-west-1",
		"123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn":      "cn-north-1",
		"12345.dkr.ecr.us-east-1.amazonaws.com":                 "",
		"123456789012.dkr.ecr.us-east-1.amazonaws.com.evil":     "",
		"public.ecr.aws":        "",
		"registry.example:5000": "",
	} {
		got, ok := ECRRegion(host)
		if got != want || ok != (want != "") {
			t.Errorf("ECRRegion(%s) = %q, %v; want %q", host, got, ok, want)
		}
	}
}

func TestRedact(t *testing.T) {
	c := Credentials{Username: "alice", Password: "hunter2-long"}
	msg := "header Basic " + b64("alice:hunter2-long") + " and hunter2-long"
	got := c.Redact(msg)
	if strings.Contains(got, "hunter2") || strings.Contains(got, b64("alice:hunter2-long")) {
		t.Fatalf("not redacted: %q", got)
	}
	if s := c.String(); strings.Contains(s, "hunter2") {
		t.Fatalf("String shows the secret: %q", s)
	}
}

// TestECRTokens: concurrent lookups share one GetAuthorizationToken call,
// and a refusal is a PermissionDenied naming the AWS error code.
func TestECRTokens(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDUNIT")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "unit-secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	var calls atomic.Int32
	deny := atomic.Bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond) // let the lookups pile up
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		if deny.Load() {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"__type":"AccessDeniedException","message":"not allowed"}`))
			return
		}
		fmt.Fprintf(w, `{"authorizationData":[{"authorizationToken":%q,"expiresAt":%d}]}`, b64("AWS:tok-pw"), time.Now().Add(12*time.Hour).Unix())
	}))
	defer srv.Close()
	k, err := New(Config{ECR: ECRConfig{Endpoint: srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	const host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, src, err := k.Lookup(context.Background(), host)
			if err != nil || c != (Credentials{"AWS", "tok-pw"}) || src != SourceECR {
				t.Errorf("lookup: %v %s %v", c, src, err)
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d GetAuthorizationToken calls for 8 concurrent lookups, want 1", n)
	}
	deny.Store(true)
	_, _, err = k.Lookup(context.Background(), "210987654321.dkr.ecr.eu-west-1.amazonaws.com")
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "AccessDeniedException") {
		t.Fatalf("refusal: %v", err)
	}
}
