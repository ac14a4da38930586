//go:build linux

package sandbox

import (
	"context"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/registry"
)

// TestProcessRetention: ended processes are forgotten after the retention
// period (and their directories with them); running ones never are.
func TestProcessRetention(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	rec, err := m.Create(ctx, CreateRequest{UserID: "u", Config: registry.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	ended, err := m.StartProcess(ctx, rec.ID, ProcessInput{Command: "true"})
	if err != nil {
		t.Fatal(err)
	}
	running, err := m.StartProcess(ctx, rec.ID, ProcessInput{Command: "sleep 300", Tag: "sleeper"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := ended.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	if ps, _ := m.Processes(ctx, rec.ID); len(ps) != 2 {
		t.Fatalf("%d processes listed right after the exit, want 2", len(ps))
	}
	m.now = func() time.Time { return time.Now().Add(m.limits.ProcessRetention + time.Minute) }
	m.PruneProcesses(ctx)
	ps, err := m.Processes(ctx, rec.ID)
	if err != nil || len(ps) != 1 || ps[0].Info().ID != running.Info().ID {
		t.Fatalf("after the retention period: %v %d processes", err, len(ps))
	}
	if p, err := m.Process(ctx, rec.ID, "sleeper"); err != nil || p != running {
		t.Fatalf("by tag: %v", err)
	}
	if _, err := m.Process(ctx, rec.ID, ended.Info().ID); err == nil {
		t.Fatal("a forgotten process is still found")
	}

	// Ended processes keep at most ProcessRetainBytes of output together:
	// the newest stay, older ones go.
	m.now = time.Now
	m.limits.ProcessRetainBytes = 150000
	var big []string
	for i := 0; i < 3; i++ {
		p, err := m.StartProcess(ctx, rec.ID, ProcessInput{Command: "head -c 100000 /dev/zero"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(wctx); err != nil {
			t.Fatal(err)
		}
		big = append(big, p.Info().ID)
	}
	m.PruneProcesses(ctx)
	for i, id := range big {
		_, err := m.Process(ctx, rec.ID, id)
		if kept := err == nil; kept != (i == 2) {
			t.Fatalf("process %d of 3 (100 kB each, 150 kB retained): kept %v", i+1, kept)
		}
	}
}
