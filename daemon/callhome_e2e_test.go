//go:build linux

package daemon_test

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// callHome is a shell function for the minimal image (busybox nc, no
// curl): `call METHOD PATH [BODY]` sends one HTTP/1.0 request to
// $ORCHESTRATOR_URL and prints the status code, a newline, and the body.
// SIGTERM is ignored: complete and error stop the sandbox at once, and
// the exec must live to print the answer.
const callHome = `trap '' TERM
call() {
  hp=${ORCHESTRATOR_URL#http://}
  printf '%s %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$1" "$2" "$hp" "${#3}" "$3" | nc -w 5 "${hp%:*}" "${hp#*:}" >/tmp/resp
  sed -n '1s/^HTTP\/1.[01] \([0-9]*\).*/\1/p' /tmp/resp
  sed '1,/^\r$/d' /tmp/resp
}
`

// call runs one request from inside sandbox id and returns status and body.
func call(t *testing.T, h *daemontest.Harness, id, method, path, body string) (int, string) {
	t.Helper()
	r := h.Exec(id, callHome+fmt.Sprintf("call %s %s '%s'", method, path, body))
	code, rest, _ := strings.Cut(r.Stdout, "\n")
	n, err := strconv.Atoi(code)
	if err != nil {
		t.Fatalf("%s %s from %s: no HTTP answer: %+v", method, path, id, r)
	}
	return n, rest
}

// TestCallHome: from inside a sandbox, $ORCHESTRATOR_URL reaches the
// sandbox listener on the gateway, which serves the sandbox its own record,
// heartbeats and complete/error signals, refuses every other sandbox id
// (403) and every other route (404), and rate-limits; every other port of
// the host stays closed.
func TestCallHome(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	a := h.Create("carol", nil)
	b := h.Create("dave", nil)
	gw := h.Config.Network.Subnet.Addr().Next()
	url := fmt.Sprintf("http://%s:%d", gw, daemon.DefaultSandboxAPIPort)

	if r := h.Exec(a.SandboxID, `echo "$ORCHESTRATOR_URL ${MATRX_API_SOCKET-unset}"`); r.Stdout != url+" unset\n" {
		t.Fatalf("environment: %+v, want ORCHESTRATOR_URL=%s", r, url)
	}

	t.Run("heartbeat", func(t *testing.T) {
		code, body := call(t, h, a.SandboxID, "POST", "/sandboxes/"+a.SandboxID+"/heartbeat", "")
		if code != 200 || !strings.Contains(body, `"acknowledged":true`) || !strings.Contains(body, a.SandboxID) {
			t.Fatalf("heartbeat: %d %s", code, body)
		}
		got, err := h.Client().Get(ctx, a.SandboxID)
		if err != nil || got.LastHeartbeatAt == nil || got.Status != "running" {
			t.Fatalf("after the heartbeat: %v %+v", err, got)
		}
	})
	t.Run("own record", func(t *testing.T) {
		code, body := call(t, h, a.SandboxID, "GET", "/sandboxes/"+a.SandboxID, "")
		if code != 200 || !strings.Contains(body, `"sandbox_id":"`+a.SandboxID+`"`) || !strings.Contains(body, `"user_id":"carol"`) {
			t.Fatalf("own record: %d %s", code, body)
		}
	})
	t.Run("other sandboxes refused", func(t *testing.T) {
		for _, p := range []string{
			"/sandboxes/" + b.SandboxID + "/heartbeat", "/sandboxes/" + b.SandboxID + "/complete",
			"/sandboxes/" + b.SandboxID + "/error", "/sandboxes/sbx-doesnotexist/heartbeat",
		} {
			body := ""
			if strings.HasSuffix(p, "/error") {
				body = `{"error":"spoofed"}`
			}
			if code, resp := call(t, h, a.SandboxID, "POST", p, body); code != 403 || !strings.Contains(resp, `"detail"`) {
				t.Errorf("POST %s: %d %s, want 403", p, code, resp)
			}
		}
		if code, resp := call(t, h, a.SandboxID, "GET", "/sandboxes/"+b.SandboxID, ""); code != 403 {
			t.Errorf("GET another sandbox: %d %s, want 403", code, resp)
		}
		got, err := h.Client().Get(ctx, b.SandboxID)
		if err != nil || got.LastHeartbeatAt != nil || got.Status != "ready" {
			t.Fatalf("the other sandbox was touched: %v %+v", err, got)
		}
	})
	t.Run("host-only routes refused", func(t *testing.T) {
		for _, c := range [][2]string{
			{"GET", "/health"}, {"GET", "/sandboxes"}, {"POST", "/sandboxes"}, {"GET", "/metrics"},
			{"POST", "/sandboxes/" + a.SandboxID + "/exec"}, {"DELETE", "/sandboxes/" + a.SandboxID},
			{"POST", "/sandboxes/" + a.SandboxID + "/access"}, {"GET", "/sandboxes/" + a.SandboxID + "/heartbeat"},
			{"POST", "/images/import"}, {"GET", "/openapi.json"},
		} {
			if code, resp := call(t, h, a.SandboxID, c[0], c[1], ""); code != 404 || !strings.Contains(resp, `"detail"`) {
				t.Errorf("%s %s: %d %s, want 404", c[0], c[1], code, resp)
			}
		}
	})
	t.Run("bad input", func(t *testing.T) {
		if code, resp := call(t, h, a.SandboxID, "POST", "/sandboxes/"+a.SandboxID+"/error", `{"error":""}`); code != 400 || !strings.Contains(resp, "error must be") {
			t.Errorf("empty error: %d %s, want 400", code, resp)
		}
		big := strings.Repeat("x", 70<<10)
		r := h.Exec(a.SandboxID, callHome+`call POST /sandboxes/$SANDBOX_ID/complete "{\"result\":{\"x\":\"$(head -c 71680 /dev/zero | tr '\0' x)\"}}" | head -c 300`)
		if !strings.HasPrefix(r.Stdout, "400\n") || !strings.Contains(r.Stdout, "exceeds") {
			t.Errorf("%d-byte body: %+v, want 400", len(big), r)
		}
	})
	t.Run("other host ports stay closed", func(t *testing.T) {
		port := hostSecretPort(t)
		for _, to := range []string{
			fmt.Sprintf("%s %d", gw, port), fmt.Sprintf("%s %d", gw, daemon.DefaultSandboxAPIPort+1),
			fmt.Sprintf("%s 22", gw), fmt.Sprintf("127.0.0.1 %d", daemon.DefaultSandboxAPIPort),
		} {
			r := h.Exec(a.SandboxID, "echo x | nc -w 2 "+to+" 2>&1; echo rc=$?")
			if strings.Contains(r.Stdout, "host secret") || strings.Contains(r.Stdout, "rc=0") {
				t.Errorf("nc %s from the sandbox: %+v", to, r)
			}
		}
		// The same port on another host address: nothing but the gateway.
		if hostIP := otherHostAddr(t, gw.String()); hostIP != "" {
			r := h.Exec(a.SandboxID, fmt.Sprintf("echo x | nc -w 2 %s %d 2>&1; echo rc=$?", hostIP, port))
			if strings.Contains(r.Stdout, "host secret") || strings.Contains(r.Stdout, "rc=0") {
				t.Errorf("host address %s from the sandbox: %+v", hostIP, r)
			}
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		r := h.Exec(b.SandboxID, callHome+`for i in $(seq 40); do call POST /sandboxes/$SANDBOX_ID/heartbeat | head -1; done | sort | uniq -c`)
		counts := map[string]int{}
		for _, m := range regexp.MustCompile(`(\d+) (\d+)`).FindAllStringSubmatch(r.Stdout, -1) {
			counts[m[2]], _ = strconv.Atoi(m[1])
		}
		if counts["429"] == 0 || counts["200"] < 15 || counts["200"]+counts["429"] != 40 {
			t.Fatalf("40 heartbeats at once: %v (%q), want some 429 after the burst of 20", counts, r.Stdout)
		}
		time.Sleep(1200 * time.Millisecond)
		if code, body := call(t, h, b.SandboxID, "POST", "/sandboxes/"+b.SandboxID+"/heartbeat", ""); code != 200 {
			t.Fatalf("after a second: %d %s", code, body)
		}
	})
	t.Run("complete", func(t *testing.T) {
		c := h.Create("erin", nil)
		h.Exec(c.SandboxID, "echo finished > /home/agent/result.txt")
		code, body := call(t, h, c.SandboxID, "POST", "/sandboxes/"+c.SandboxID+"/complete", `{"result":{"ok":true}}`)
		if code != 200 || !strings.Contains(body, `"status":"shutting_down"`) {
			t.Fatalf("complete: %d %s", code, body)
		}
		got := waitStatus(t, h.Client(), c.SandboxID, "stopped", "graceful_shutdown")
		if got.HotSyncPending || got.HotSyncedAt == nil || !got.HotSyncedAt.After(got.CreatedAt) {
			t.Fatalf("hot files not synced on complete: %+v", got)
		}
		next := h.Create("erin", nil)
		if r := h.Exec(next.SandboxID, "cat /home/agent/result.txt"); r.Stdout != "finished\n" {
			t.Fatalf("the completed sandbox's hot files: %+v", r)
		}
	})
	t.Run("error", func(t *testing.T) {
		c := h.Create("erin", nil)
		code, body := call(t, h, c.SandboxID, "POST", "/sandboxes/"+c.SandboxID+"/error", `{"error":"agent crashed","details":{"step":3}}`)
		if code != 200 || !strings.Contains(body, `"error_received":true`) {
			t.Fatalf("error: %d %s", code, body)
		}
		if got := waitStatus(t, h.Client(), c.SandboxID, "stopped", "error"); got.Error != "agent crashed" {
			t.Fatalf("error not recorded: %+v", got)
		}
	})
	t.Run("none mode gets a socket", func(t *testing.T) {
		n := h.Create("frank", &apitype.SandboxConfig{Network: &apitype.NetworkConfig{Mode: "none"}})
		r := h.Exec(n.SandboxID, `echo "$ORCHESTRATOR_URL $MATRX_API_SOCKET"; test -S "$MATRX_API_SOCKET" && stat -c '%A %u %g' "$MATRX_API_SOCKET"`)
		if r.Stdout != "http://localhost /.matrx/api/sandbox.sock\nsrw-rw---- 0 1000\n" {
			t.Fatalf("none-mode sandbox: %+v", r)
		}
		// Bound read-only: not even the sandbox's root replaces it.
		r, err := h.Client().Exec(ctx, n.SandboxID, apitype.ExecRequest{Command: "rm -f /.matrx/api/sandbox.sock 2>&1; touch /.matrx/api/x 2>&1; test -S /.matrx/api/sandbox.sock", User: "root"})
		if err != nil || r.ExitCode != 0 || strings.Count(r.Stdout, "Read-only file system") != 2 {
			t.Fatalf("root replacing the socket: %v %+v", err, r)
		}
		// After a daemon restart the socket is served again, and the
		// gateway still tells sandboxes apart.
		h.Stop()
		h.Start()
		if r := h.Exec(n.SandboxID, `test -S "$MATRX_API_SOCKET" && echo socket`); r.Stdout != "socket\n" {
			t.Fatalf("socket after a restart: %+v", r)
		}
		if code, body := call(t, h, a.SandboxID, "POST", "/sandboxes/"+a.SandboxID+"/heartbeat", ""); code != 200 {
			t.Fatalf("heartbeat after a restart: %d %s", code, body)
		}
		if err := h.Client().Delete(ctx, n.SandboxID, false); err != nil {
			t.Fatal(err)
		}
	})
	if !strings.Contains(h.Logs(), `"listener":"sandbox","sandbox_id":"`+a.SandboxID+`"`) {
		t.Errorf("sandbox listener requests are not logged with the caller's sandbox id")
	}
}

// otherHostAddr is a host IPv4 address other than the gateway (the host's
// own interface address), or "" if it has none.
func otherHostAddr(t *testing.T, gw string) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip, _, err := net.ParseCIDR(a.String())
		if err == nil && ip.To4() != nil && !ip.IsLoopback() && ip.String() != gw && !strings.HasPrefix(ip.String(), "169.254.") {
			return ip.String()
		}
	}
	return ""
}
