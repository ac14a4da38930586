//go:build !linux

package relay

import (
	"fmt"
	"os"
)

// Main fails: the relay runs beside a Linux runc shim only.
func Main() {
	fmt.Fprintln(os.Stderr, "matrx-relay: not supported on this OS")
	os.Exit(2)
}
