package cold

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// Command is one FUSE daemon invocation built by a driver.
type Command struct {
	// Path is the executable, absolute or looked up in PATH.
	Path string
	// Args follow argv[0].
	Args []string
	// Env is added to the daemon's minimal environment (PATH only).
	Env []string
	// Secrets are files written for this start only (credentials); they are
	// removed once the daemon's mount is in place (both daemons read their
	// credentials before they mount) or the start failed.
	Secrets []string
}

// fuseDriver is what the supervisor needs from a FUSE driver.
type fuseDriver struct {
	name string
	// build returns the invocation that mounts on mountpoint.
	build func(req Request, mountpoint string) (*Command, error)
	log   *slog.Logger
	o     options
	// proven is the driver's: set once one of its mounts answered, cleared
	// when a first generation that was not waited for did not (see
	// "Answered later").
	proven *atomic.Bool
}

// tailBuffer keeps the last max bytes written to it, for error messages, and
// hands each complete line to a logger.
type tailBuffer struct {
	mu   sync.Mutex
	max  int
	buf  []byte
	line []byte
	log  func(line string)
}

func newTailBuffer(max int, log func(string)) *tailBuffer {
	return &tailBuffer{max: max, log: log}
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	var lines []string
	t.line = append(t.line, p...)
	for {
		i := bytes.IndexByte(t.line, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, string(t.line[:i]))
		t.line = t.line[i+1:]
	}
	if len(t.line) > t.max { // a very long line without newline
		lines = append(lines, string(t.line))
		t.line = nil
	}
	t.mu.Unlock()
	if t.log != nil {
		for _, l := range lines {
			t.log(l)
		}
	}
	return len(p), nil
}

// String returns the kept output, trimmed, or "(no output)".
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(strings.ToValidUTF8(string(t.buf), "?"))
	if s == "" {
		return "(no output)"
	}
	return s
}
