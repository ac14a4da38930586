package runtime

import (
	"io"
	"testing"
	"time"
)

// The gate gives nothing until opened, then one line, then EOF; delivered
// closes only when the copy comes back for more after the line (its write
// of the line is over), and abandoning an unopened gate gives EOF at once.
func TestStdinGate(t *testing.T) {
	g := newStdinGate()
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 8)
		n, _ := g.Read(b)
		got <- string(b[:n])
	}()
	select {
	case s := <-got:
		t.Fatalf("read %q before the gate opened", s)
	case <-time.After(20 * time.Millisecond):
	}
	g.open()
	if s := <-got; s != "\n" {
		t.Fatalf("first read = %q, want a newline", s)
	}
	select {
	case <-g.delivered:
		t.Fatal("delivered before the copy asked for more")
	default:
	}
	if n, err := g.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("second read = %d, %v; want EOF", n, err)
	}
	<-g.delivered
	g.abandon() // after use: a no-op

	a := newStdinGate()
	a.abandon()
	if n, err := a.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("abandoned gate read = %d, %v; want EOF", n, err)
	}
}
