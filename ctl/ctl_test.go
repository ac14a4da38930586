package ctl

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/urfave/cli/v2"
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
		{apitype.Sandbox{Status: "running", HotSyncOverLimit: "more than 200000 ..."}, "running (too many hot files to sync all: see inspect)"},
		{apitype.Sandbox{Status: "stopped", HotSyncRejectedCount: 2}, "stopped (2 hot files cannot be stored: see inspect)"},
	} {
		if got := statusText(c.s); got != c.want {
			t.Errorf("%+v: %q, want %q", c.s, got, c.want)
		}
	}
}

// parse runs the real App on args with every action replaced by one that
// records what the command saw, so flag handling is tested as users type.
func parse(t *testing.T, args ...string) (*cli.Context, string, error) {
	t.Helper()
	app := App()
	var got *cli.Context
	var errOut bytes.Buffer
	app.ErrWriter, app.Writer = &errOut, io.Discard
	app.ExitErrHandler = func(*cli.Context, error) {}
	var stub func(cmds []*cli.Command)
	stub = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.Action = func(c *cli.Context) error { got = c; return nil }
			stub(c.Subcommands)
		}
	}
	stub(app.Commands)
	err := Run(app, append([]string{"matrx"}, args...))
	return got, errOut.String(), err
}

func TestFlagsMayFollowPositionalArguments(t *testing.T) {
	for _, c := range []struct {
		args       []string
		flag, want string
		positional []string
	}{
		{[]string{"rm", "sbx-1", "--force"}, "force", "true", []string{"sbx-1"}},
		{[]string{"rm", "--force", "sbx-1", "sbx-2"}, "force", "true", []string{"sbx-1", "sbx-2"}},
		{[]string{"rm", "sbx-1", "-f", "sbx-2"}, "force", "true", []string{"sbx-1", "sbx-2"}},
		{[]string{"storage", "clean", "alice", "--tier", "hot", "--yes"}, "tier", "hot", []string{"alice"}},
		{[]string{"storage", "clean", "alice", "--tier=cold"}, "tier", "cold", []string{"alice"}},
		{[]string{"ls", "--all", "--user", "bob"}, "user", "bob", nil},
		{[]string{"--socket", "/tmp/s", "inspect", "sbx-1"}, "", "", []string{"sbx-1"}},
		{[]string{"exec", "sbx-1", "--user", "root", "--", "ls", "-la"}, "user", "root", []string{"sbx-1", "--", "ls", "-la"}},
		{[]string{"exec", "--cwd=/x", "sbx-1", "--", "pwd"}, "cwd", "/x", []string{"sbx-1", "--", "pwd"}},
		{[]string{"exec", "sbx-1", "ls", "-la", "--user", "x"}, "user", "agent", []string{"sbx-1", "--", "ls", "-la", "--user", "x"}},
	} {
		ctx, errOut, err := parse(t, c.args...)
		if err != nil || ctx == nil {
			t.Errorf("%q: %v %s", c.args, err, errOut)
			continue
		}
		if c.flag != "" && fmt.Sprint(ctx.Value(c.flag)) != c.want {
			t.Errorf("%q: --%s = %v, want %s", c.args, c.flag, ctx.Value(c.flag), c.want)
		}
		if got := ctx.Args().Slice(); strings.Join(got, "|") != strings.Join(c.positional, "|") {
			t.Errorf("%q: arguments %q, want %q", c.args, got, c.positional)
		}
	}
}

func TestMisplacedOrUnknownFlagsSayWhere(t *testing.T) {
	for _, args := range [][]string{
		{"rm", "sbx-1", "--bogus"},
		{"storage", "clean", "alice", "--tier"},
		{"exec", "--timeout"},
	} {
		_, errOut, err := parse(t, args...)
		if err == nil || !strings.Contains(err.Error()+errOut, "--help") {
			t.Errorf("%q: got %v %q, want an error pointing at --help", args, err, errOut)
		}
	}
}

func TestExecOptions(t *testing.T) {
	for _, c := range []struct {
		args    []string
		cmd     string
		timeout int
		wantErr string
	}{
		{args: []string{"exec", "sbx-1", "--", "echo hi"}, cmd: "echo hi"},
		{args: []string{"exec", "sbx-1", "--", "sh", "-c", "echo out; exit 3"}, cmd: `sh -c 'echo out; exit 3'`},
		{args: []string{"exec", "sbx-1", "--", "printf", `%s\n`, "a b", "c"}, cmd: `printf '%s\n' 'a b' c`},
		{args: []string{"exec", "sbx-1", "--", "echo", "it's"}, cmd: `echo 'it'\''s'`},
		{args: []string{"exec", "sbx-1", "true"}, cmd: "true"},
		{args: []string{"exec", "--timeout", "90s", "sbx-1", "--", "true"}, cmd: "true", timeout: 90},
		{args: []string{"exec", "sbx-1", "--timeout", "5", "--", "true"}, cmd: "true", timeout: 5},
		{args: []string{"exec", "sbx-1", "--timeout", "1.5", "--", "true"}, wantErr: "whole seconds"},
		{args: []string{"exec", "sbx-1", "--timeout", "0", "--", "true"}, wantErr: "at least 1"},
		{args: []string{"exec", "sbx-1", "--"}, wantErr: "needs a command"},
		{args: []string{"exec", "--", "ls"}, wantErr: "sandbox id"},
		{args: []string{"exec", "sbx-1", "--env", "NOEQ", "--", "ls"}, wantErr: "KEY=VALUE"},
	} {
		ctx, errOut, err := parse(t, c.args...)
		if err != nil {
			if c.wantErr == "" || !strings.Contains(errOut, c.wantErr) {
				t.Errorf("%q: %v %s", c.args, err, errOut)
			}
			continue
		}
		o, err := execOptionsFrom(ctx)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: got %v, want an error mentioning %q", c.args, err, c.wantErr)
			}
			continue
		}
		if err != nil || o.id != "sbx-1" || o.req.Command != c.cmd {
			t.Errorf("%q: %v id=%q command %q, want %q", c.args, err, o.id, o.req.Command, c.cmd)
		}
		if c.timeout != 0 && (o.req.Timeout == nil || *o.req.Timeout != c.timeout) {
			t.Errorf("%q: timeout %v, want %d", c.args, o.req.Timeout, c.timeout)
		}
	}
}

func TestEveryCommandHasHelpWithAnExample(t *testing.T) {
	var walk func(prefix []string, cmds []*cli.Command)
	walk = func(prefix []string, cmds []*cli.Command) {
		for _, c := range cmds {
			path := append(append([]string(nil), prefix...), c.Name)
			if len(c.Subcommands) > 0 {
				walk(path, c.Subcommands)
				continue
			}
			if !strings.Contains(c.Description, "matrx "+strings.Join(path, " ")) {
				t.Errorf("matrx %s: --help has no example", strings.Join(path, " "))
			}
			var out bytes.Buffer
			app := App()
			app.Writer, app.ErrWriter = &out, &out
			app.ExitErrHandler = func(*cli.Context, error) {}
			if err := Run(app, append(append([]string{"matrx"}, path...), "--help")); err != nil || !strings.Contains(out.String(), "Example") {
				t.Errorf("matrx %s --help: %v\n%s", strings.Join(path, " "), err, out.String())
			}
		}
	}
	walk(nil, App().Commands)
}

func TestUnknownCommandIsNamed(t *testing.T) {
	var out bytes.Buffer
	app := App()
	app.Writer, app.ErrWriter = &out, &out
	code := -1
	defer func(old func(int)) { cli.OsExiter = old }(cli.OsExiter)
	cli.OsExiter = func(c int) { code = c }
	Run(app, []string{"matrx", "frobnicate"})
	if code != 2 || !strings.Contains(out.String(), `unknown command "frobnicate"`) {
		t.Fatalf("exit %d, output %q", code, out.String())
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
