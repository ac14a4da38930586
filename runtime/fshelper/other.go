//go:build !linux

package fshelper

import (
	"fmt"
	"os"
)

// Main is `matrx-init fs`; the helper runs only inside Linux sandboxes.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "matrx-init fs: not supported on this OS (sandboxes are Linux)")
	return 2
}
