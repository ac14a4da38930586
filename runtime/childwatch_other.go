//go:build !linux

package runtime

import (
	"errors"

	"github.com/matrx-dev/matrx/runtime/execagent"
)

// childWatch: see the Linux build (exec agents run only there).
type childWatch struct{ exited chan struct{} }

func watchChild(int) (*childWatch, error) { return nil, errors.New("exec agent: Linux only") }

func (c *childWatch) status() execagent.ExitResult {
	return execagent.ExitResult{Err: errors.New("exec agent: Linux only")}
}

func (c *childWatch) close() {}
