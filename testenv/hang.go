package testenv

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// ReportHangs arranges that, shortly before the test binary's -test.timeout
// would end it, the binary prints where its tests and its long-blocked
// goroutines wait and exits with status 2. Call it from TestMain (it parses
// the flags).
//
// Why: Go's own timeout panic prints the running tests first and every
// goroutine after them. A package that runs daemons in process has
// hundreds of goroutines, so the names scroll out of the tail of the
// output, and the tail is often all a CI log keeps (a daemon test run that
// hung to its 30-minute timeout left only a FUSE process's stderr copier
// to read). This report puts the full dump first and a compact summary
// last: one line per goroutine blocked for minutes, then each test
// goroutine's frames in this repository.
func ReportHangs() {
	if !flag.Parsed() {
		flag.Parse()
	}
	f := flag.Lookup("test.timeout")
	if f == nil {
		return
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return
	}
	timeout, ok := g.Get().(time.Duration)
	if !ok || timeout <= 0 {
		return
	}
	margin := min(time.Minute, timeout/10)
	time.AfterFunc(timeout-margin, func() {
		fmt.Fprintf(os.Stderr, "\ntestenv: still running %v after the start, %v before -test.timeout: every goroutine, then a summary\n\n", timeout-margin, margin)
		dump := allStacks()
		os.Stderr.Write(dump)
		writeHangSummary(os.Stderr, string(dump), 2)
		os.Exit(2)
	})
}

// allStacks is every goroutine's stack.
func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutineHeader matches "goroutine 7 [chan receive, 21 minutes]:".
var goroutineHeader = regexp.MustCompile(`^goroutine (\d+) \[([^,\]]+)(?:, (\d+) minutes)?.*\]:$`)

// repoRoot is this repository's directory as the binary was built from
// it ("/work/main/"), the prefix of its frames' files.
var repoRoot = func() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "/nonexistent/"
	}
	return filepath.Dir(filepath.Dir(file)) + "/"
}()

// repoFrame is a frame's "file:line" relative to the repository when the
// file is the repository's.
func repoFrame(fileLine string) (string, bool) {
	fileLine = strings.TrimSpace(fileLine)
	if i := strings.LastIndexByte(fileLine, ' '); i > 0 {
		fileLine = fileLine[:i] // the "+0x1f" offset
	}
	rel, ok := strings.CutPrefix(fileLine, repoRoot)
	return rel, ok
}

// HangSummary is writeHangSummary of this process's goroutines now, for a
// test that gave up waiting (a daemon that does not stop, say).
func HangSummary(minMinutes int) string {
	var s strings.Builder
	writeHangSummary(&s, string(allStacks()), minMinutes)
	return s.String()
}

// writeHangSummary writes dump's goroutines blocked for minMinutes or more
// (one line each, their frames in this repository innermost first) and
// then every goroutine running a test, its repository frames one per line.
func writeHangSummary(w io.Writer, dump string, minMinutes int) {
	type goroutine struct {
		header string
		state  string
		mins   int
		frames []string
		isTest bool
		test   string
	}
	var gs []goroutine
	for _, block := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		m := goroutineHeader.FindStringSubmatch(lines[0])
		if m == nil {
			continue
		}
		g := goroutine{header: "goroutine " + m[1], state: m[2]}
		fmt.Sscan(m[3], &g.mins)
		for i := 1; i+1 < len(lines); i += 2 {
			fn, at := strings.TrimSpace(lines[i]), lines[i+1]
			if strings.HasPrefix(fn, "created by ") {
				break
			}
			if fr, ok := repoFrame(at); ok {
				g.frames = append(g.frames, fr)
				if name := testFunc(fn); name != "" && strings.Contains(at, "_test.go") {
					g.isTest, g.test = true, name
				}
			}
		}
		gs = append(gs, g)
	}
	fmt.Fprintf(w, "\n==== testenv hang summary (%d goroutines)\n", len(gs))
	for _, g := range gs {
		if !g.isTest && g.mins >= minMinutes && len(g.frames) > 0 {
			fmt.Fprintf(w, "%s [%s, %d min]: %s\n", g.header, g.state, g.mins, strings.Join(g.frames[:min(4, len(g.frames))], " < "))
		}
	}
	for _, g := range gs {
		if g.isTest {
			fmt.Fprintf(w, "-- %s %s [%s, %d min]\n", g.test, g.header, g.state, g.mins)
			for _, fr := range g.frames[:min(12, len(g.frames))] {
				fmt.Fprintf(w, "     %s\n", fr)
			}
		}
	}
	fmt.Fprintln(w, "==== end of the hang summary")
}

// testFunc is the Test function a frame's function line names
// ("pkg.TestX(...)", "pkg.TestX.func2(...)"), or "".
func testFunc(fn string) string {
	fn, _, _ = strings.Cut(fn, "(")
	i := strings.LastIndexByte(fn, '/')
	_, name, ok := strings.Cut(fn[i+1:], ".")
	if !ok || !strings.HasPrefix(name, "Test") {
		return ""
	}
	name, _, _ = strings.Cut(name, ".")
	return name
}
