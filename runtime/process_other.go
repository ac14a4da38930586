//go:build !linux

package runtime

import (
	"fmt"
	"os"

	"github.com/containerd/errdefs"
)

var errNeedsLinux = fmt.Errorf("background processes need Linux: not supported on this OS: %w", errdefs.ErrNotImplemented)

func openFIFOWriter(string) (*os.File, error) { return nil, errNeedsLinux }
func makeStdinDir(string) error               { return nil }
func (r *Runtime) makeSandboxStdin(string, string, ExecUser) (string, string, error) {
	return "", "", errNeedsLinux
}
func resolveCwd(int, string, string) (string, error) { return "", errNeedsLinux }
func sandboxPid(p int) int                           { return p }
func stdinOpened(int, string) bool                   { return false }
