package ctl

import (
	"github.com/urfave/cli/v2"
)

func attachCommand() *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "attach this terminal to a background process (its terminal, or its output and stdin)",
		UsageText: "matrx attach ID PROCESS",
		Description: `Output starts from now; keystrokes go to the process (on a terminal ^C
interrupts it there). Detaching (closing this terminal, or the connection
ending) leaves the process running. The exit code passes through when the
process ends while attached.

Example:
   matrx attach sbx-0123456789ab p-3f9c2a1b7d4e`,
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a sandbox id and a process id or tag"); err != nil {
				return err
			}
			cl := newClient(c)
			id, proc := c.Args().Get(0), c.Args().Get(1)
			p, err := cl.Process(c.Context, id, proc)
			if err != nil {
				return err
			}
			input := p.Stdin
			if p.PTY != nil {
				term := terminalOf(stdinOf(c))
				if term != nil {
					rows, cols := term.size()
					cl.ResizeProcess(c.Context, id, p.ProcessID, rows, cols)
				}
				return attachTerminal(c.Context, cl, id, p.ProcessID, -1, input, true, stdinOf(c), term, c.App.Writer)
			}
			return attachTerminal(c.Context, cl, id, p.ProcessID, -1, input, false, stdinOf(c), nil, c.App.Writer)
		},
	}
}
