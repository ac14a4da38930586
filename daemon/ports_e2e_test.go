//go:build linux

package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/ctl"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// echoServer answers every HTTP request with its own request head (and
// body) as a text/plain body, and a WebSocket upgrade with 101 and then
// an echo of every byte. busybox nc runs it per connection.
const echoServer = `cat > /tmp/echo.sh <<'EOF'
#!/bin/sh
head=""
cr=$(printf '\r')
while IFS= read -r line; do
  line=${line%"$cr"}
  [ -z "$line" ] && break
  head="$head$line
"
done
case "$head" in *"Upgrade: websocket"*)
  printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
  exec cat ;;
esac
len=$(printf '%s' "$head" | sed -n 's/^[Cc]ontent-[Ll]ength: *//p')
if [ -n "$len" ] && [ "$len" -gt 0 ]; then head="$head
$(head -c "$len")"; fi
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${#head}" "$head"
EOF
chmod +x /tmp/echo.sh
mkdir -p /tmp/www && echo "hello from $SANDBOX_ID" > /tmp/www/index.html
httpd -p 8080 -h /tmp/www
(nc -ll -p 8081 -e /tmp/echo.sh </dev/null >/dev/null 2>&1 &)
(nc -ll -p 7000 -e cat </dev/null >/dev/null 2>&1 &)
for p in 8080 8081 7000; do until netstat -ltn | grep -q ":$p "; do sleep 0.05; done; done`

// TestPorts: the API's proxy route, raw TCP streams (the client and matrx
// port-forward) and the preview listener reach what a sandbox serves,
// from inside its own network namespace (mode none included), with the
// prefix stripped, X-Forwarded-* set and the daemon's credentials kept
// out; bad ports, ports nobody listens on and stopped sandboxes answer
// clearly.
func TestPorts(t *testing.T) {
	h := daemontest.Start(t, func(c *daemon.Config) { c.PreviewAddress = "127.0.0.1:0" })
	ctx := context.Background()
	a := h.Create("pia", nil)
	offline := h.Create("pia", &apitype.SandboxConfig{Network: &apitype.NetworkConfig{Mode: "none"}})
	public := h.Create("pia", &apitype.SandboxConfig{PublicPorts: []int{8080}})
	for _, s := range []*apitype.Sandbox{a, offline, public} {
		if r := h.Exec(s.SandboxID, echoServer); r.ExitCode != 0 {
			t.Fatalf("servers in %s: %+v", s.SandboxID, r)
		}
	}
	get := func(path string) (int, string) {
		t.Helper()
		code, body, err := h.Client().RawWithHeader(ctx, "GET", path, nil, apitype.APIKeyHeader, "secret-key")
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return code, string(body)
	}

	t.Run("proxy", func(t *testing.T) {
		if code, body := get("/sandboxes/" + a.SandboxID + "/proxy/8080/index.html"); code != 200 || body != "hello from "+a.SandboxID+"\n" {
			t.Fatalf("proxied page: %d %q", code, body)
		}
		if code, body := get("/sandboxes/" + a.SandboxID + "/proxy/8080/"); code != 200 || !strings.HasPrefix(body, "hello") {
			t.Fatalf("proxied root: %d %q", code, body)
		}
		// The app's own errors come back as they are (not the API's JSON).
		if code, body := get("/sandboxes/" + a.SandboxID + "/proxy/8080/nope"); code != 404 || strings.Contains(body, `"detail"`) {
			t.Fatalf("the app's 404: %d %q", code, body)
		}
		code, body := get("/sandboxes/" + a.SandboxID + "/proxy/8081/some/deep%2Fpath?q=1&r=%20")
		for _, want := range []string{
			"GET /some/deep%2Fpath?q=1&r=%20 HTTP/1.1\n", "Host: localhost:8081\n", "X-Forwarded-Host: matrxd\n",
			"X-Forwarded-Proto: http\n", "X-Forwarded-Prefix: /sandboxes/" + a.SandboxID + "/proxy/8081\n",
		} {
			if code != 200 || !strings.Contains(body, want) {
				t.Errorf("the app saw %d:\n%s\nwant a line %q", code, body, want)
			}
		}
		if strings.Contains(strings.ToLower(body), "x-api-key") || strings.Contains(body, "secret-key") {
			t.Errorf("the API key reached the sandbox:\n%s", body)
		}
		code, resp, err := h.Client().Raw(ctx, "POST", "/sandboxes/"+a.SandboxID+"/proxy/8081/api/items", []byte(`{"name":"a"}`))
		if err != nil || code != 200 || !strings.Contains(string(resp), "POST /api/items HTTP/1.1\n") || !strings.HasSuffix(string(resp), "\n"+`{"name":"a"}`) {
			t.Errorf("proxied POST: %v %d\n%s", err, code, resp)
		}
		// Network mode none: the proxy enters the namespace, nothing routes.
		if code, body := get("/sandboxes/" + offline.SandboxID + "/proxy/8080/index.html"); code != 200 || body != "hello from "+offline.SandboxID+"\n" {
			t.Fatalf("none-mode sandbox: %d %q", code, body)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		c, err := net.Dial("unix", h.Config.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /sandboxes/%s/proxy/8081/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", a.SandboxID)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" {
			t.Fatalf("upgrade: %v %+v", err, resp)
		}
		for _, msg := range []string{"ping\n", "pong pong\n"} {
			io.WriteString(c, msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
				t.Fatalf("echo over the upgraded connection: %v %q, want %q", err, got, msg)
			}
		}
	})
	t.Run("bad ports and sandboxes", func(t *testing.T) {
		for _, c := range []struct {
			path   string
			code   int
			detail string
		}{
			{"/sandboxes/" + a.SandboxID + "/proxy/0/", 400, `port \"0\"`},
			{"/sandboxes/" + a.SandboxID + "/proxy/70000/", 400, "1-65535"},
			{"/sandboxes/" + a.SandboxID + "/proxy/http/", 400, "1-65535"},
			{"/sandboxes/" + a.SandboxID + "/proxy/9/", 502, "nothing listens on port 9 in sandbox " + a.SandboxID},
			{"/sandboxes/" + offline.SandboxID + "/proxy/9/", 502, "nothing listens on port 9"},
			{"/sandboxes/sbx-doesnotexist/proxy/8080/", 404, "sbx-doesnotexist"},
			{"/sandboxes/sbx-000000000000/proxy/8080/", 404, "not found"},
		} {
			if code, body := get(c.path); code != c.code || !strings.Contains(body, c.detail) || !strings.HasPrefix(body, `{"detail":`) {
				t.Errorf("GET %s: %d %s, want %d with %q", c.path, code, body, c.code, c.detail)
			}
		}
		if _, err := h.Client().ConnectPort(ctx, a.SandboxID, 9); err == nil || !strings.Contains(err.Error(), "nothing listens on port 9") {
			t.Errorf("connect to a closed port: %v", err)
		}
		if _, err := h.Client().ConnectPort(ctx, a.SandboxID, 0); !errdefs.IsInvalidArgument(err) {
			t.Errorf("connect to port 0: %v", err)
		}
		code, body, _ := h.Client().Raw(ctx, "POST", "/sandboxes/"+a.SandboxID+"/ports/7000/connect", nil)
		if code != 400 || !strings.Contains(string(body), "Upgrade: tcp") {
			t.Errorf("connect without an upgrade: %d %s", code, body)
		}
	})
	t.Run("tcp stream", func(t *testing.T) {
		for _, s := range []*apitype.Sandbox{a, offline} {
			st, err := h.Client().ConnectPort(ctx, s.SandboxID, 7000)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(st, "raw bytes\x00\xff")
			st.CloseWrite() // the app sees EOF and ends: the echo is all there is
			got, err := io.ReadAll(st)
			st.Close()
			if err != nil || string(got) != "raw bytes\x00\xff" {
				t.Fatalf("stream to %s: %v %q", s.SandboxID, err, got)
			}
		}
	})
	t.Run("port-forward", func(t *testing.T) {
		pctx, cancel := context.WithCancel(ctx)
		var out syncBuffer
		app := ctl.App()
		app.Writer, app.ErrWriter = &out, &out
		app.ExitErrHandler = func(*cli.Context, error) {}
		done := make(chan error, 1)
		go func() {
			done <- ctl.RunContext(pctx, app, []string{"matrx", "--socket", h.Config.Socket, "port-forward", offline.SandboxID, "0:7000", "0:8080"})
		}()
		var addrs []string
		deadline := time.Now().Add(10 * time.Second)
		for len(addrs) < 2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			addrs = nil
			for _, m := range regexp.MustCompile(`Forwarding from (\S+) ->`).FindAllStringSubmatch(out.String(), -1) {
				addrs = append(addrs, m[1])
			}
		}
		if len(addrs) != 2 {
			cancel()
			t.Fatalf("port-forward did not start: %q", out.String())
		}
		var wg sync.WaitGroup
		for i := 0; i < 5; i++ { // a few connections at once
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", addrs[0])
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				msg := fmt.Sprintf("through the forward %d", i)
				io.WriteString(c, msg)
				c.(*net.TCPConn).CloseWrite()
				if got, err := io.ReadAll(c); err != nil || string(got) != msg {
					t.Errorf("forwarded echo: %v %q", err, got)
				}
			}()
		}
		wg.Wait()
		resp, err := http.Get("http://" + addrs[1] + "/index.html")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello from "+offline.SandboxID+"\n" {
			t.Errorf("forwarded HTTP: %q", body)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("port-forward ended with %v: %s", err, out.String())
		}
		if _, err := net.Dial("tcp", addrs[0]); err == nil {
			t.Errorf("the local port stays open after the command ended")
		}
	})
	t.Run("preview", func(t *testing.T) {
		p, err := h.Client().Preview(ctx, a.SandboxID, 8080, 0)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(p.URL)
		if err != nil || p.Host != "8080-"+a.SandboxID+".localhost" || u.Hostname() != p.Host || u.Port() == "" || p.Public ||
			p.TokenHeader != apitype.PreviewTokenHeader || p.Token == "" || time.Until(p.ExpiresAt) < 50*time.Minute {
			t.Fatalf("preview: %v %+v", err, p)
		}
		listener := "127.0.0.1:" + u.Port()
		noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		fetch := func(host, path string, hdr http.Header) (*http.Response, string) {
			t.Helper()
			req, _ := http.NewRequest("GET", "http://"+listener+path, nil)
			req.Host = host
			for k, v := range hdr {
				req.Header[k] = v
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp, string(b)
		}
		host := p.Host + ":" + u.Port()
		if resp, body := fetch(host, "/index.html", nil); resp.StatusCode != 401 || !strings.Contains(body, "private") {
			t.Errorf("no token: %d %s", resp.StatusCode, body)
		}
		tok := http.Header{apitype.PreviewTokenHeader: {p.Token}}
		if resp, body := fetch(host, "/index.html", tok); resp.StatusCode != 200 || body != "hello from "+a.SandboxID+"\n" {
			t.Errorf("with the token: %d %q", resp.StatusCode, body)
		}
		other, err := h.Client().Preview(ctx, offline.SandboxID, 8080, 0)
		if err != nil {
			t.Fatal(err)
		}
		if resp, _ := fetch(host, "/index.html", http.Header{apitype.PreviewTokenHeader: {other.Token}}); resp.StatusCode != 401 {
			t.Errorf("another sandbox's token: %d", resp.StatusCode)
		}
		// A signed URL sets a cookie for that host and redirects to the
		// clean URL; the cookie then lets the page in.
		su, _ := url.Parse(p.SignedURL)
		resp, _ := fetch(host, su.RequestURI(), nil)
		cookies := resp.Cookies()
		if resp.StatusCode != 303 || resp.Header.Get("Location") != "/" || len(cookies) != 1 || !cookies[0].HttpOnly {
			t.Fatalf("signed URL: %d %v %v", resp.StatusCode, resp.Header, cookies)
		}
		withCookie := http.Header{"Cookie": {cookies[0].Name + "=" + cookies[0].Value}}
		if resp, body := fetch(host, "/index.html", withCookie); resp.StatusCode != 200 || !strings.HasPrefix(body, "hello") {
			t.Errorf("with the cookie: %d %q", resp.StatusCode, body)
		}
		// The cookie is for that port only; a tampered signature is nothing.
		if resp, _ := fetch("8081-"+a.SandboxID+".localhost", "/", withCookie); resp.StatusCode != 401 {
			t.Errorf("the cookie of port 8080 on port 8081: %d", resp.StatusCode)
		}
		if resp, _ := fetch(host, strings.Replace(su.RequestURI(), "matrx_preview=", "matrx_preview=1", 1), nil); resp.StatusCode != 401 {
			t.Errorf("tampered signed URL: %d", resp.StatusCode)
		}
		// The app sees forwarded headers and none of the credentials.
		_, body := fetch("8081-"+a.SandboxID+".localhost", "/x?keep=1&matrx_preview=zz", http.Header{
			apitype.PreviewTokenHeader: {p.Token}, "Cookie": {"app=1; matrx_preview=zz"},
		})
		for _, want := range []string{"GET /x?keep=1 HTTP/1.1\n", "X-Forwarded-For: 127.0.0.1\n", "X-Forwarded-Host: 8081-" + a.SandboxID + ".localhost\n", "Cookie: app=1\n"} {
			if !strings.Contains(body, want) {
				t.Errorf("the app saw:\n%s\nwant a line %q", body, want)
			}
		}
		if strings.Contains(body, p.Token) || strings.Contains(body, "zz") {
			t.Errorf("preview credentials reached the sandbox:\n%s", body)
		}
		// Public ports need no token; the sandbox's other ports still do.
		if resp, body := fetch("8080-"+public.SandboxID+".localhost", "/index.html", nil); resp.StatusCode != 200 || !strings.Contains(body, public.SandboxID) {
			t.Errorf("public port: %d %q", resp.StatusCode, body)
		}
		if resp, _ := fetch("8081-"+public.SandboxID+".localhost", "/", nil); resp.StatusCode != 401 {
			t.Errorf("a port that is not public: %d", resp.StatusCode)
		}
		for _, h := range []string{"localhost", "8080-" + a.SandboxID + ".example.com", "0-" + a.SandboxID + ".localhost", "x.8080-" + a.SandboxID + ".localhost"} {
			if resp, _ := fetch(h, "/", tok); resp.StatusCode != 404 {
				t.Errorf("host %q: %d, want 404", h, resp.StatusCode)
			}
		}
		// A sandbox nobody knows answers like a private port.
		if resp, _ := fetch("8080-sbx-000000000000.localhost", "/", tok); resp.StatusCode != 401 {
			t.Errorf("unknown sandbox: %d", resp.StatusCode)
		}
		if _, err := h.Client().Preview(ctx, a.SandboxID, 0, 0); !errdefs.IsInvalidArgument(err) {
			t.Errorf("preview of port 0: %v", err)
		}
	})
	t.Run("stopped sandbox", func(t *testing.T) {
		s := h.Create("pia", nil)
		if err := h.Client().Delete(ctx, s.SandboxID, false); err != nil {
			t.Fatal(err)
		}
		if code, body := get("/sandboxes/" + s.SandboxID + "/proxy/8080/"); code != 409 || !strings.Contains(body, "not running") {
			t.Errorf("proxy to a stopped sandbox: %d %s", code, body)
		}
		if _, err := h.Client().ConnectPort(ctx, s.SandboxID, 7000); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("connect to a stopped sandbox: %v", err)
		}
		if _, err := h.Client().Preview(ctx, s.SandboxID, 8080, 0); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("preview of a stopped sandbox: %v", err)
		}
	})
}

// syncBuffer is a bytes.Buffer safe for a command's goroutines to write
// while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
