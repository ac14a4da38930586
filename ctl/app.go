// Package ctl is the matrx command-line interface: one file per command
// (nerdctl's layout). Each command turns its flags into an options struct
// and calls one function that talks to api/client and prints a table (or
// JSON with --json). It holds no sandbox logic; the daemon validates
// everything. The one command that works without the daemon is `doctor`,
// which checks the host through package doctor.
//
// Argument order follows Docker and kubectl habits: flags may come before
// or after positional arguments (`matrx rm ID --force`); urfave/cli/v2
// stops parsing flags at the first positional argument, so App's Run
// moves a command's flags in front of its positional arguments first
// (reorderFlags). Everything after `--` is left alone. A flag the command
// does not have is an error that names the command's --help.
package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/version"
)

// jsonFlag is --json, shared by every command that prints something.
func jsonFlag() cli.Flag { return &cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"} }

// App is the matrx command. Run it with Run, which reorders flags.
func App() *cli.App {
	app := &cli.App{
		Name:                 "matrx",
		Usage:                "manage matrx sandboxes through the matrxd socket",
		Version:              version.Version,
		EnableBashCompletion: false,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Value: client.DefaultSocket, EnvVars: []string{"MATRX_SOCKET"}, Usage: "matrxd API socket"},
		},
		ExitErrHandler: exitErrHandler,
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(c.App.ErrWriter, "matrx: unknown command %q; run 'matrx --help' for the list\n", name)
			cli.OsExiter(2)
		},
		Commands: []*cli.Command{
			createCommand(),
			lsCommand(),
			inspectCommand(),
			execCommand(),
			psCommand(),
			logsCommand(),
			attachCommand(),
			killCommand(),
			cpCommand(),
			fsCommand(),
			rmCommand(),
			portForwardCommand(),
			sshCommand(),
			accessCommand(),
			ttlCommand(),
			imageCommand(),
			storageCommand(),
			healthCommand(),
			versionCommand(),
			apiCommand(),
			doctorCommand(),
		},
	}
	app.OnUsageError = usageError
	for _, c := range app.Commands {
		setUsageError(c)
	}
	return app
}

// Run runs app on args (args[0] is the program name) after moving each
// command's flags in front of its positional arguments. An error it
// returns has been printed; a cli.ExitCoder carries the exit code.
func Run(app *cli.App, args []string) error {
	return RunContext(context.Background(), app, args)
}

// RunContext is Run with a context that commands which run until
// interrupted (port-forward) also stop on.
func RunContext(ctx context.Context, app *cli.App, args []string) error {
	args, err := reorderFlags(app, args)
	if err != nil {
		w := app.ErrWriter
		if w == nil {
			w = os.Stderr
		}
		fmt.Fprintln(w, "matrx: "+err.Error())
		return cli.Exit("", 2)
	}
	return app.RunContext(ctx, args)
}

func setUsageError(c *cli.Command) {
	c.OnUsageError = usageError
	for _, s := range c.Subcommands {
		setUsageError(s)
	}
}

// usageError makes a flag error say where to look.
func usageError(c *cli.Context, err error, _ bool) error {
	name := c.App.Name
	if c.Command != nil && c.Command.FullName() != "" {
		name += " " + c.Command.FullName()
	}
	return fmt.Errorf("%v (see '%s --help'): %w", err, name, errdefs.ErrInvalidArgument)
}

func exitErrHandler(c *cli.Context, err error) {
	if err == nil {
		return
	}
	if ec, ok := err.(cli.ExitCoder); ok {
		if msg := ec.Error(); msg != "" {
			fmt.Fprintln(c.App.ErrWriter, msg)
		}
		cli.OsExiter(ec.ExitCode())
		return
	}
	fmt.Fprintln(c.App.ErrWriter, "matrx: "+err.Error())
	cli.OsExiter(1)
}

func newClient(c *cli.Context) *client.Client {
	return client.New(c.String("socket"))
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// keyValues parses repeated KEY=VALUE flags.
func keyValues(list []string, flag string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: want KEY=VALUE: %w", flag, kv, errdefs.ErrInvalidArgument)
		}
		m[k] = v
	}
	return m, nil
}

// exactArgs checks a command got exactly n positional arguments, naming
// them in the error.
func exactArgs(c *cli.Context, n int, what string) error {
	if c.NArg() != n {
		return fmt.Errorf("%s needs %s, got %d argument(s) (see 'matrx %s --help'): %w",
			c.Command.FullName(), what, c.NArg(), c.Command.FullName(), errdefs.ErrInvalidArgument)
	}
	return nil
}

// stdinOf is the command's stdin: the app's Reader when it is a file (tests
// set it), os.Stdin otherwise.
func stdinOf(c *cli.Context) *os.File {
	if f, ok := c.App.Reader.(*os.File); ok && f != nil {
		return f
	}
	return os.Stdin
}

// stdinIsData reports whether stdin carries data a command would lose
// (a pipe or a file), as opposed to a terminal or /dev/null.
func stdinIsData(f *os.File) bool {
	st, err := f.Stat()
	if err != nil {
		return false
	}
	m := st.Mode()
	return m&os.ModeNamedPipe != 0 || m.IsRegular() && st.Size() > 0
}
