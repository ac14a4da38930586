package bench

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/matrx-dev/matrx/mounts/s3test"
)

// TestMain prints, after every benchmark has run, the one table `make
// bench` ends with: each issue 16 figure that this run measured, against
// its target. Benchmarks add rows with target; a figure whose benchmark
// did not run (-bench selected others) is absent, not invented.
func TestMain(m *testing.M) { s3test.Main(m, printSummary) }

type targetRow struct {
	metric, measured, target string
	met                      bool
}

var summary struct {
	sync.Mutex
	rows []targetRow
}

// target records one figure of this run against its target.
func target(metric, measured, want string, met bool) {
	summary.Lock()
	defer summary.Unlock()
	summary.rows = append(summary.rows, targetRow{metric, measured, want, met})
}

func printSummary() {
	summary.Lock()
	defer summary.Unlock()
	if len(summary.rows) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n== issue 16 targets, this run (2 vCPU host; figures from the tables above)\n")
	fmt.Fprintf(&b, "%-52s %-22s %-16s %s\n", "figure", "measured", "target", "")
	for _, r := range summary.rows {
		verdict := "MET"
		switch {
		case r.target == "(reported)":
			verdict = ""
		case !r.met:
			verdict = "not met"
		}
		fmt.Fprintf(&b, "%-52s %-22s %-16s %s\n", r.metric, r.measured, r.target, verdict)
	}
	os.Stdout.WriteString(b.String())
}
