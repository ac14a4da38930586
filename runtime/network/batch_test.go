package network

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRuleBatch: changes that wait while a run is under way go into the
// next run as one transaction, in arrival order; when a merged run fails
// each change is retried alone and only the bad one fails; a script that
// is not one transaction on the table runs alone.
func TestRuleBatch(t *testing.T) {
	var (
		mu      sync.Mutex
		runs    []string
		release = make(chan struct{})
		first   = make(chan struct{})
		once    sync.Once
	)
	var fw sync.Mutex
	b := &ruleBatch{table: "filter", lock: &fw, run: func(ctx context.Context, script string) error {
		if fw.TryLock() {
			fw.Unlock()
			t.Error("a run without the firewall lock held")
		}
		once.Do(func() { close(first); <-release })
		mu.Lock()
		runs = append(runs, script)
		mu.Unlock()
		if strings.Contains(script, "bad") {
			return errors.New("iptables-restore: line 2 failed")
		}
		return nil
	}}
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() { errc <- b.apply(ctx, "*filter\n-I C 1 -s 10.0.0.1/32 -j ACCEPT\nCOMMIT\n") }()
	<-first // the first run has started and waits
	var wg sync.WaitGroup
	results := make([]error, 4)
	for i, body := range []string{"-D C one\n", "-I C 1 bad\n", "-I C 1 three\n", "-I C 1 four\n"} {
		wg.Go(func() { results[i] = b.apply(ctx, "*filter\n"+body+"COMMIT\n") })
		// Arrival order is the order of the calls.
		for deadline := time.Now().Add(5 * time.Second); ; {
			b.mu.Lock()
			n := len(b.waiting)
			b.mu.Unlock()
			if n == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("change %d never queued", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("first change: %v", err)
	}
	wg.Wait()
	for i, err := range results {
		if (err != nil) != (i == 1) {
			t.Errorf("change %d: %v (only change 1 is bad)", i, err)
		}
	}
	want := []string{
		"*filter\n-I C 1 -s 10.0.0.1/32 -j ACCEPT\nCOMMIT\n",
		"*filter\n-D C one\n-I C 1 bad\n-I C 1 three\n-I C 1 four\nCOMMIT\n", // merged, failed
		"*filter\n-D C one\nCOMMIT\n", "*filter\n-I C 1 bad\nCOMMIT\n", "*filter\n-I C 1 three\nCOMMIT\n", "*filter\n-I C 1 four\nCOMMIT\n",
	}
	if fmt.Sprint(runs) != fmt.Sprint(want) {
		t.Fatalf("runs:\n%q\nwant:\n%q", runs, want)
	}

	// Not one transaction on this table: alone, as given.
	runs = nil
	for _, s := range []string{"*nat\n-D POSTROUTING x\nCOMMIT\n", "*filter\n-I C 1 a\nCOMMIT\n*nat\n-D P y\nCOMMIT\n", "-I C 1 a\n"} {
		if err := b.apply(ctx, s); err != nil {
			t.Fatal(err)
		}
		if len(runs) != 1 || runs[0] != s {
			t.Fatalf("script %q ran as %q", s, runs)
		}
		runs = nil
	}
	// A caller whose context is already done still gets its change's outcome.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.apply(cctx, "*filter\n-I C 1 five\nCOMMIT\n"); err != nil {
		t.Fatalf("change with a cancelled context: %v", err)
	}
}
