package ctl

import (
	"testing"

	"github.com/matrx-dev/matrx/api/apitype"
)

func TestStatusText(t *testing.T) {
	for _, c := range []struct {
		s    apitype.Sandbox
		want string
	}{
		{apitype.Sandbox{Status: "running"}, "running"},
		{apitype.Sandbox{Status: "running", HotSyncPending: true}, "running (last checkpoint failed)"},
		{apitype.Sandbox{Status: "stopped", HotSyncPending: true}, "stopped (hot files not in S3 yet)"},
		{apitype.Sandbox{Status: "expired"}, "expired"},
	} {
		if got := statusText(c.s); got != c.want {
			t.Errorf("%+v: %q, want %q", c.s, got, c.want)
		}
	}
}

func TestParseExec(t *testing.T) {
	cases := []struct {
		args    []string
		id, cmd string
		cwd     string
		user    string
		timeout int
		env     map[string]string
		json    bool
		wantErr bool
	}{
		{args: []string{"sbx-1", "--", "echo", "hi"}, id: "sbx-1", cmd: "echo hi", user: "agent"},
		{args: []string{"sbx-1", "--cwd", "/tmp", "--user=root", "--timeout", "5", "--env", "A=b=c", "--json", "--", "ls", "-la"},
			id: "sbx-1", cmd: "ls -la", cwd: "/tmp", user: "root", timeout: 5, env: map[string]string{"A": "b=c"}, json: true},
		{args: []string{"--cwd=/x", "sbx-1", "--", "pwd"}, id: "sbx-1", cmd: "pwd", cwd: "/x", user: "agent"},
		{args: []string{"sbx-1", "true"}, id: "sbx-1", cmd: "true", user: "agent"},
		{args: []string{"sbx-1", "--"}, wantErr: true},
		{args: []string{"--", "ls"}, wantErr: true},
		{args: []string{"sbx-1", "--timeout", "x", "--", "ls"}, wantErr: true},
		{args: []string{"sbx-1", "--env", "NOEQ", "--", "ls"}, wantErr: true},
		{args: []string{"sbx-1", "--bogus", "1", "--", "ls"}, wantErr: true},
		{args: []string{"sbx-1", "--cwd"}, wantErr: true},
	}
	for _, c := range cases {
		got, err := parseExec(c.args)
		if c.wantErr {
			if err == nil {
				t.Errorf("%q: expected an error, got %+v", c.args, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if got.id != c.id || got.req.Command != c.cmd || got.req.User != c.user || got.jsonOut != c.json {
			t.Errorf("%q: got %+v", c.args, got)
		}
		if (c.cwd == "") != (got.req.Cwd == nil) || (got.req.Cwd != nil && *got.req.Cwd != c.cwd) {
			t.Errorf("%q: cwd %v", c.args, got.req.Cwd)
		}
		if (c.timeout == 0) != (got.req.Timeout == nil) || (got.req.Timeout != nil && *got.req.Timeout != c.timeout) {
			t.Errorf("%q: timeout %v", c.args, got.req.Timeout)
		}
		for k, v := range c.env {
			if got.req.Env[k] != v {
				t.Errorf("%q: env %v", c.args, got.req.Env)
			}
		}
	}
}

func TestKeyValues(t *testing.T) {
	m, err := keyValues([]string{"A=1", "B="}, "env")
	if err != nil || m["A"] != "1" || m["B"] != "" {
		t.Fatalf("%v %v", m, err)
	}
	if _, err := keyValues([]string{"=x"}, "env"); err == nil {
		t.Fatal("empty key accepted")
	}
}
