package apitest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// recorder collects what the validator reports.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) report(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}

// exchange sends one request through a validating transport to a server
// that answers with status, content type and body.
func exchange(t *testing.T, d *Document, rec *recorder, method, path, reqBody string, status int, ct, body string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	defer srv.Close()
	c := &http.Client{Transport: d.Transport(http.DefaultTransport, rec.report)}
	var rd io.Reader
	if reqBody != "" {
		rd = strings.NewReader(reqBody)
	}
	req, _ := http.NewRequest(method, srv.URL+path, rd)
	if reqBody != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

const sandboxJSON = `{"sandbox_id":"sbx-0123456789ab","user_id":"u","status":"ready","container_id":"sbx-0123456789ab",
"created_at":"2026-01-01T00:00:00Z","hot_path":"/home/agent","cold_path":"/data/cold","config":{"cpu":1},
"ssh_port":null,"ttl_seconds":60,"image":"i","expires_at":"2026-01-01T00:01:00Z","last_heartbeat_at":null,
"stopped_at":null,"stop_reason":null,"hot_synced_at":null,"hot_sync_pending":false`

func TestValidatorAgainstTheRealDocument(t *testing.T) {
	d := Load(t)
	rec := &recorder{}
	cases := []struct {
		name                  string
		method, path, reqBody string
		status                int
		body                  string
		wantReport            string // "" = must pass
	}{
		{"documented", "GET", "/health", "", 200, `{"status":"healthy","active_sandboxes":1,"uptime_seconds":2.5}`, ""},
		{"undocumented field", "GET", "/health", "", 200, `{"status":"healthy","active_sandboxes":1,"uptime_seconds":2.5,"surprise":true}`, "surprise"},
		{"undocumented status", "GET", "/health", "", 418, `{"detail":"teapot"}`, "status is not supported"},
		{"undocumented route refused", "GET", "/nowhere", "", 404, `{"detail":"not found"}`, ""},
		{"undocumented route refused badly", "GET", "/nowhere", "", 404, `not json`, "error shape"},
		{"undocumented route served", "GET", "/nowhere", "", 200, `{}`, "not in api/openapi.yaml"},
		{"undocumented method", "PUT", "/sandboxes", "", 405, `{"detail":"method not allowed"}`, ""},
		{"error shape", "GET", "/sandboxes/sbx-doesnotexist", "", 404, `{"detail":"sandbox not found"}`, ""},
		{"bad error shape", "GET", "/sandboxes/sbx-doesnotexist", "", 404, `{"message":"nope"}`, "detail"},
		{"sandbox", "GET", "/sandboxes/sbx-0123456789ab", "", 200, sandboxJSON + `}`, ""},
		{"sandbox extra field", "GET", "/sandboxes/sbx-0123456789ab", "", 200, sandboxJSON + `,"leaked":"x"}`, "leaked"},
		{"sandbox missing field", "GET", "/sandboxes/sbx-0123456789ab", "", 200, strings.Replace(sandboxJSON, `"ssh_port":null,`, "", 1) + `}`, "ssh_port"},
		{"invalid request accepted", "POST", "/sandboxes", `{"config":{}}`, 201, sandboxJSON + `}`, "calls the request invalid"},
		{"invalid request refused", "POST", "/sandboxes", `{"config":{}}`, 400, `{"detail":"user_id is empty"}`, ""},
	}
	for _, c := range cases {
		exchange(t, d, rec, c.method, c.path, c.reqBody, c.status, "application/json", c.body)
		got := rec.take()
		switch {
		case c.wantReport == "" && len(got) > 0:
			t.Errorf("%s: reported %q, want nothing", c.name, got)
		case c.wantReport != "" && (len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), c.wantReport)):
			t.Errorf("%s: reported %q, want a report mentioning %q", c.name, got, c.wantReport)
		}
	}
}

const streamDoc = `openapi: 3.1.0
info: {title: t, version: "1"}
servers: [{url: "http://matrxd"}]
paths:
  /stream:
    get:
      responses:
        "200":
          description: events
          content:
            application/x-ndjson:
              schema:
                type: object
                additionalProperties: false
                required: [type]
                properties:
                  type: {type: string, enum: [data, end]}
                  data: {type: string}
  /upgrade:
    get:
      responses:
        "101": {description: websocket}
`

func TestValidatorChecksNDJSONLineByLineAndUpgrades(t *testing.T) {
	d, err := Parse([]byte(streamDoc))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	exchange(t, d, rec, "GET", "/stream", "", 200, NDJSON, "{\"type\":\"data\",\"data\":\"x\"}\n{\"type\":\"end\"}\n")
	if got := rec.take(); len(got) > 0 {
		t.Fatalf("valid stream reported: %q", got)
	}
	exchange(t, d, rec, "GET", "/stream", "", 200, NDJSON, "{\"type\":\"data\"}\n{\"type\":\"data\",\"extra\":1}\n{\"type\":\"bogus\"}")
	got := rec.take()
	if len(got) != 2 || !strings.Contains(got[0], "line 2") || !strings.Contains(got[1], "line 3") {
		t.Fatalf("bad lines: reported %q, want lines 2 and 3", got)
	}
	exchange(t, d, rec, "GET", "/stream", "", 200, "application/json", `{"type":"end"}`)
	if got := rec.take(); len(got) == 0 {
		t.Fatal("a JSON answer where the document lists only NDJSON was not reported")
	}
}

func TestValidatorAcceptsDocumentedUpgrades(t *testing.T) {
	d, err := Parse([]byte(streamDoc))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		buf.Flush()
	}))
	defer srv.Close()
	for path, want := range map[string]bool{"/upgrade": false, "/stream": true} {
		rec := &recorder{}
		c := &http.Client{Transport: d.Transport(http.DefaultTransport, rec.report)}
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := len(rec.take()) > 0; got != want {
			t.Errorf("upgrade on %s: reported=%v, want %v", path, got, want)
		}
	}
}
