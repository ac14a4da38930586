package ctl

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progressMin is the transfer size from which cp shows a progress bar
// (unknown sizes, tars, always show one).
const progressMin = 8 << 20

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress counts the bytes read through it and, on a terminal, redraws
// one status line at most five times a second.
type progress struct {
	r     io.Reader
	total int64 // -1: unknown
	what  string
	w     io.Writer
	on    bool

	mu    sync.Mutex
	n     int64
	start time.Time
	last  time.Time
}

func newProgress(r io.Reader, total int64, what string, o cpOptions) *progress {
	return &progress{r: r, total: total, what: what, w: o.errw, on: o.progress && (total < 0 || total >= progressMin), start: time.Now()}
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	p.n += int64(n)
	if p.on && time.Since(p.last) > 200*time.Millisecond {
		p.last = time.Now()
		p.draw()
	}
	p.mu.Unlock()
	return n, err
}

func (p *progress) draw() {
	secs := time.Since(p.start).Seconds()
	rate := float64(p.n) / max(secs, 0.001)
	line := fmt.Sprintf("\r%s: %s", p.what, humanBytes(float64(p.n)))
	if p.total > 0 {
		line += fmt.Sprintf(" / %s %3.0f%%", humanBytes(float64(p.total)), 100*float64(p.n)/float64(p.total))
	}
	fmt.Fprintf(p.w, "%s  %s/s   ", line, humanBytes(rate))
}

// done draws the final state and ends the line.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.on && !p.last.IsZero() {
		p.draw()
		fmt.Fprintln(p.w)
	}
}

func humanBytes(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for b >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", b, units[i])
}
