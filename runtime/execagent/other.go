//go:build !linux

package execagent

import (
	"errors"
	"fmt"
	"os"
)

// ErrNotStarted: see the Linux build.
var ErrNotStarted = errors.New("exec agent did not start the command")

// Main is `matrx-init exec-agent`; the agent runs only inside Linux sandboxes.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "matrx-init exec-agent: not supported on this OS (sandboxes are Linux)")
	return 2
}

// Agent is not available off Linux.
type Agent struct{}

// Cmd is not available off Linux.
type Cmd struct{ NsPid int }

// ExitResult: see the Linux build.
type ExitResult struct {
	Code int
	Err  error
}

// Open fails off Linux.
func Open(pid int) (*Agent, error) { return nil, errors.New("exec agent: Linux only") }

func (a *Agent) Pid() int    { return 0 }
func (a *Agent) Alive() bool { return false }
func (a *Agent) Close()      {}
func (a *Agent) Start(Request, *os.File, *os.File, *os.File) (*Cmd, error) {
	return nil, ErrNotStarted
}
func (a *Agent) ChildHostPid(int) (int, error) { return 0, ErrNotStarted }
func (a *Agent) Probe() error                  { return ErrNotStarted }
func (c *Cmd) Exited() <-chan ExitResult       { return nil }
func (c *Cmd) Close()                          {}
