package sandbox

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestClaimGateBoundsAndFrees(t *testing.T) {
	g := newClaimGate(2, time.Hour)
	ctx := context.Background()
	a, err := g.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.enter(ctx); err != nil {
		t.Fatal(err)
	}
	// Full: a third create waits, and gives up with its context.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := g.enter(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("enter on a full gate: %v, want the context's deadline", err)
	}
	if len(g.slots) != 2 {
		t.Fatalf("a create that gave up holds a slot: %d taken", len(g.slots))
	}
	got := make(chan error, 1)
	go func() {
		leave, err := g.enter(ctx)
		if err == nil {
			leave()
		}
		got <- err
	}()
	a()
	a() // leaving twice frees one slot, once
	if err := <-got; err != nil {
		t.Fatalf("enter after a leave: %v", err)
	}
	if len(g.slots) != 1 {
		t.Fatalf("%d slots taken, want 1", len(g.slots))
	}
}

// A slot frees itself after the hold, and the late leave of its create
// then frees nothing else.
func TestClaimGateHoldRunsOut(t *testing.T) {
	g := newClaimGate(1, 10*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	slow, err := g.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g.hold = time.Hour // for the creates after the slow one
	next, err := g.enter(ctx)
	if err != nil {
		t.Fatalf("a create waits behind one past its hold: %v", err)
	}
	slow()
	if len(g.slots) != 1 {
		t.Fatalf("the slow create's late leave freed the next one's slot: %d taken", len(g.slots))
	}
	next()
	if len(g.slots) != 0 {
		t.Fatalf("%d slots taken after every create left", len(g.slots))
	}
}
