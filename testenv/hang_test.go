package testenv

import (
	"strings"
	"testing"
)

// TestHangSummary reads this binary's own stacks while a goroutine of
// the test waits: the summary names the test and the line it waits on.
func TestHangSummary(t *testing.T) {
	release := make(chan struct{})
	waiting := make(chan struct{})
	go func() {
		close(waiting)
		<-release // the line the summary must name
	}()
	<-waiting
	defer close(release)
	var out strings.Builder
	// Let the goroutine block first (the dump must show it in its wait).
	for i := 0; ; i++ {
		dump := string(allStacks())
		if strings.Contains(dump, "[chan receive]:\ngithub.com/matrx-dev/matrx/testenv.TestHangSummary.func1") || i > 1000 {
			writeHangSummary(&out, dump, 2)
			break
		}
	}
	s := out.String()
	if !strings.Contains(s, "-- TestHangSummary goroutine ") || !strings.Contains(s, "testenv/hang_test.go:") || !strings.Contains(s, "[chan receive, 0 min]") {
		t.Fatalf("the summary does not name the waiting test goroutine:\n%s", s)
	}

	// A long-blocked goroutine of the repository gets its one line, one
	// outside the repository does not.
	synthetic := "goroutine 99 [select, 21 minutes]:\n" +
		"github.com/matrx-dev/matrx/sandbox.(*Manager).wait(0x1)\n\t" + repoRoot + "sandbox/wait.go:12 +0x1f\n" +
		"created by github.com/matrx-dev/matrx/sandbox.New in goroutine 1\n\t" + repoRoot + "sandbox/new.go:3 +0x2\n\n" +
		"goroutine 100 [IO wait, 30 minutes]:\n" +
		"internal/poll.runtime_pollWait(0x1)\n\t/usr/local/go/src/runtime/netpoll.go:351 +0x85\n"
	out.Reset()
	writeHangSummary(&out, synthetic, 2)
	if s := out.String(); !strings.Contains(s, "goroutine 99 [select, 21 min]: sandbox/wait.go:12\n") || strings.Contains(s, "goroutine 100") {
		t.Fatalf("summary of long-blocked goroutines:\n%s", s)
	}
}
