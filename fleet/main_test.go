//go:build linux

package fleet_test

import (
	"os"
	"testing"

	"github.com/sasha-s/go-deadlock"

	"github.com/matrx-dev/matrx/testenv"
)

// TestMain turns off the lock-order check that go-cni compiles in under
// -race (github.com/sasha-s/go-deadlock): it tells goroutines apart with
// petermattis/goid, which returns 0 for every goroutine on this Go
// version, so two matrxd in one process (two CNI libraries setting up
// sandboxes at once) read as one goroutine taking two locks in both
// orders, and it exits the test binary. The timeout-based deadlock check
// stays on.
func TestMain(m *testing.M) {
	deadlock.Opts.DisableLockOrderDetection = true
	testenv.ReportHangs()
	os.Exit(m.Run())
}
