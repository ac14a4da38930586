// Package testenv holds the one rule for tests that need what a laptop may
// lack (root, containerd, an S3 server, FUSE, CNI, a registry...): without
// the prerequisite the test skips with the reason, unless
// MATRX_REQUIRE_INTEGRATION=1 (set by `make test` and CI), where a missing
// prerequisite fails the test, so a green CI run means every integration
// test really ran. It is test support only; production code must not
// import it.
//
// Naming rule for integration tests: they live in files named
// *_integration_test.go, *_e2e_test.go or *_linux_test.go, start their own
// daemons (containerdtest, s3test, daemontest) and call Need or Skip first.
package testenv

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// EnvRequire is the variable that turns missing prerequisites into failures.
const EnvRequire = "MATRX_REQUIRE_INTEGRATION"

// Required reports whether missing prerequisites must fail tests.
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// Skip skips t with the reason, or fails it under MATRX_REQUIRE_INTEGRATION=1.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("integration prerequisite missing (%s=1): %s", EnvRequire, msg)
	}
	t.Skipf("integration test skipped: %s (set %s=1 to fail instead)", msg, EnvRequire)
}

// NeedRoot skips (or fails) t unless it runs as root.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root: %s", why)
	}
}

// EnvContainerd2Pass is set (to the containerd 2 build's directory, see
// bootstrap/tools.sh) for `make test`'s second pass, which runs the tests
// that must hold on both containerd versions again on containerd 2.
const EnvContainerd2Pass = "MATRX_TEST_CONTAINERD_DIR"

// bothContainerds holds the names of the tests that asked to run on both
// containerd versions (test support only; one test binary's lifetime).
var bothContainerds sync.Map

// BothContainerds tags t as a test that must also pass on containerd 2
// (user namespaces through idmapped mounts there, a chowned image copy on
// 1.6). The second pass of `make test` runs exactly the tests so tagged;
// call it first thing in the test.
func BothContainerds(t testing.TB) { bothContainerds.Store(t.Name(), true) }

// SkipUnlessSelected skips t in the containerd 2 pass unless t (or the
// test it is a subtest of) is tagged with BothContainerds. containerdtest
// calls it before starting a daemon.
func SkipUnlessSelected(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvContainerd2Pass) == "" {
		return
	}
	name := t.Name()
	for {
		if _, ok := bothContainerds.Load(name); ok {
			return
		}
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			break
		}
		name = name[:i]
	}
	t.Skip("containerd 2 pass: this test is not tagged testenv.BothContainerds")
}
