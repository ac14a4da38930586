package ctl

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
)

// reorderFlags moves the flags of the command named in args in front of
// its positional arguments, so `matrx rm ID --force` and
// `matrx storage clean USER --tier hot` parse as written (urfave/cli/v2
// stops parsing flags at the first positional argument). Only tokens
// before `--` move; a flag's value moves with it. Commands that take a
// command line to run (exec) stop at their first positional argument
// after the id: what follows belongs to the command being run.
//
// It refuses what no order can make work: a flag that needs a value but is
// the last word, and exec's `--` before the sandbox id.
func reorderFlags(app *cli.App, args []string) ([]string, error) {
	if len(args) < 2 {
		return args, nil
	}
	out := []string{args[0]}
	i := 1
	// Global flags, then the command path (command and subcommands).
	cmds := app.Commands
	globals := app.Flags
	var cmd *cli.Command
	for i < len(args) {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			out = append(out, a)
			i++
			if takesValue(globals, a) && !strings.Contains(a, "=") && i < len(args) {
				out = append(out, args[i])
				i++
			}
			continue
		}
		next := find(cmds, a)
		if next == nil {
			break
		}
		out = append(out, a)
		i++
		cmd = next
		cmds = next.Subcommands
		globals = nil
		if len(cmds) == 0 {
			break
		}
	}
	if cmd == nil || len(cmd.Subcommands) > 0 {
		return append(out, args[i:]...), nil
	}
	help := "see 'matrx " + cmd.FullName() + " --help'"
	if cmd.FullName() == "" {
		help = "see 'matrx " + cmd.Name + " --help'"
	}
	var flags, positional []string
	limit := positionalLimit(cmd.Name)
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if limit > 0 && len(positional) < limit {
				return nil, fmt.Errorf("%s: the sandbox id goes before -- (%s): %w", cmd.Name, help, errdefs.ErrInvalidArgument)
			}
			positional = append(positional, args[i:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			if takesValue(cmd.Flags, a) && !strings.Contains(a, "=") {
				if i+1 >= len(args) || args[i+1] == "--" {
					return nil, fmt.Errorf("flag %s needs a value (%s): %w", a, help, errdefs.ErrInvalidArgument)
				}
				i++
				flags = append(flags, args[i])
			}
			continue
		}
		if limit > 0 && len(positional) == limit {
			// The command line to run starts here, flags and all.
			positional = append(positional, "--")
			positional = append(positional, args[i:]...)
			break
		}
		positional = append(positional, a)
	}
	out = append(out, flags...)
	return append(out, positional...), nil
}

// positionalLimit is, per command, how many positional arguments come
// before the command line it runs (0: no command line).
func positionalLimit(cmd string) int {
	if cmd == "exec" || cmd == "ssh" {
		return 1
	}
	return 0
}

func find(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether token (-x, --name) names a flag of flags that
// takes a value (anything but a boolean flag).
func takesValue(flags []cli.Flag, token string) bool {
	name := strings.TrimLeft(token, "-")
	if k, _, ok := strings.Cut(name, "="); ok {
		name = k
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if bf, ok := f.(*cli.BoolFlag); ok && bf != nil {
				return false
			}
			return true
		}
	}
	return false
}
