package ctl

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a command in a sandbox; its exit code passes through",
		UsageText: "matrx exec [flags] ID [--] CMD...",
		Description: `Runs CMD in the sandbox and waits for it. One argument after the id (or
after --) is a shell command string, run by bash -c; several arguments are
an argv, each quoted, as docker exec runs them. The working directory is
remembered between execs (cd in one, the next starts there). Piped stdin
(echo x | matrx exec ID -- cat) reaches the command, as with -i.

With -d the command runs in the background (matrx ps, logs, attach, kill);
with -t on a terminal, with -i reading this terminal's stdin; -it without
a command opens a login shell. These survive a daemon restart.

Examples:
   matrx exec -it sbx-0123456789ab
   matrx exec -d sbx-0123456789ab -- 'npm run dev'
   matrx exec sbx-0123456789ab -- 'cd /tmp && ls'
   matrx exec sbx-0123456789ab -- printf '%s\n' 'a b' c
   matrx exec sbx-0123456789ab --user root --timeout 60 -- apt list --installed`,
		UseShortOptionHandling: true,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "interactive", Aliases: []string{"i"}, Usage: "send this terminal's stdin to the command (a background process with stdin)"},
			&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "run the command on a terminal (raw mode, window size forwarded); without a command, a login shell"},
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "start the command as a background process and print its id"},
			&cli.StringFlag{Name: "cwd", Usage: "directory to run in (default: where the last exec ended)"},
			&cli.StringFlag{Name: "user", Value: "agent", Usage: "agent or root"},
			&cli.StringFlag{Name: "timeout", Usage: "whole seconds or a duration such as 90s or 5m (default: the daemon's, 30 s)"},
			&cli.StringSliceFlag{Name: "env", Usage: "K=V (repeatable)"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			o, err := execOptionsFrom(c)
			if err != nil {
				return err
			}
			o.stdin = stdinOf(c)
			// Piped stdin (echo x | matrx exec ID -- cat) reaches the
			// command: it runs as a process with stdin, as with -i.
			if !o.tty && !o.detach && stdinIsData(o.stdin) {
				o.interactive = true
			}
			if o.tty || o.interactive || o.detach {
				return runProcessExec(c.Context, newClient(c), o, c.App.Writer, c.App.ErrWriter)
			}
			return runExec(c.Context, newClient(c), o, c.App.Writer, c.App.ErrWriter)
		},
	}
}

type execOptions struct {
	stdin *os.File // where -i and -t read input
	id    string
	req   apitype.ExecRequest
	json  bool
	// interactive, tty and detach run the command as a background process
	// (sandbox_exec_process.go).
	interactive, tty, detach bool
}

// loginShell is what `matrx exec -it ID` runs without a command.
const loginShell = `if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi`

func execOptionsFrom(c *cli.Context) (execOptions, error) {
	o := execOptions{json: c.Bool("json"), interactive: c.Bool("interactive"), tty: c.Bool("tty"), detach: c.Bool("detach")}
	args := c.Args().Slice()
	if len(args) == 0 || args[0] == "--" {
		return o, fmt.Errorf("exec needs a sandbox id and a command (see 'matrx exec --help'): %w", errdefs.ErrInvalidArgument)
	}
	o.id, args = args[0], args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	switch {
	case len(args) == 0 && o.tty && !o.detach:
		o.req.Command = loginShell
	case len(args) == 0:
		return o, fmt.Errorf("exec needs a command after the sandbox id (see 'matrx exec --help'): %w", errdefs.ErrInvalidArgument)
	default:
		o.req.Command = commandLine(args)
	}
	o.req.User = c.String("user")
	if c.IsSet("cwd") {
		v := c.String("cwd")
		o.req.Cwd = &v
	}
	if c.IsSet("timeout") {
		secs, err := parseSeconds(c.String("timeout"))
		if err != nil {
			return o, fmt.Errorf("--timeout: %w", err)
		}
		o.req.Timeout = &secs
	}
	env, err := keyValues(c.StringSlice("env"), "env")
	if err != nil {
		return o, err
	}
	o.req.Env = env
	return o, nil
}

// commandLine turns exec's arguments into the shell command string the
// API takes: one argument is already a command string; several are an
// argv, each single-quoted so the shell passes it through unchanged.
func commandLine(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseSeconds reads whole seconds ("30") or a Go duration of whole
// seconds ("90s", "5m"); fractions are refused rather than rounded.
func parseSeconds(v string) (int, error) {
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 {
			return 0, fmt.Errorf("%q: want at least 1 second: %w", v, errdefs.ErrInvalidArgument)
		}
		return n, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d%time.Second != 0 || d < time.Second {
		return 0, fmt.Errorf("%q: want whole seconds (30) or a duration of whole seconds (90s, 5m): %w", v, errdefs.ErrInvalidArgument)
	}
	return int(d / time.Second), nil
}

func runExec(ctx context.Context, cl *client.Client, o execOptions, w, errw io.Writer) error {
	res, err := cl.Exec(ctx, o.id, o.req)
	if err != nil {
		return err
	}
	if o.json {
		if err := printJSON(w, res); err != nil {
			return err
		}
	} else {
		w.Write(output(res.Stdout, res.StdoutBase64))
		errw.Write(output(res.Stderr, res.StderrBase64))
		if res.TimedOut {
			fmt.Fprintln(errw, "matrx: command timed out")
		}
		if res.StdoutTruncated {
			fmt.Fprintln(errw, "matrx: stdout was cut at the daemon's output limit; the rest was dropped")
		}
		if res.StderrTruncated {
			fmt.Fprintln(errw, "matrx: stderr was cut at the daemon's output limit; the rest was dropped")
		}
	}
	if res.ExitCode != 0 {
		return cli.Exit("", res.ExitCode)
	}
	return nil
}

// output prefers the exact bytes when the daemon sent them base64-encoded.
func output(s, b64 string) []byte {
	if b64 != "" {
		if b, err := base64.StdEncoding.DecodeString(b64); err == nil {
			return b
		}
	}
	return []byte(s)
}
