package network

import (
	"context"
	"strings"
	"sync"
	"time"
)

// Group commit of sandbox rule changes.
//
// Every sandbox's setup, claim (SetPolicy) and teardown changes its rules
// in the filter table with one iptables-restore transaction, and those
// transactions run one at a time (firewallMu; iptables' own xtables lock
// would serialize them anyway). One run costs a process start plus, with
// the nf_tables backend, a fetch of the whole ruleset, so under a burst of
// 50 claims the transactions queued: each claim's "claim" phase was mostly
// waiting for the 49 before it (2026-12-02: p50 271 ms of a 547 ms
// TTI burst). A batch instead takes every change that is waiting when the
// previous run ends and applies them as one transaction, so a burst costs
// a handful of runs.
//
// What each caller sees stays what it saw alone: its change is applied in
// the order the changes arrived, all of it or none of it, and it learns
// the outcome of its own change. Changes of different sandboxes name
// different addresses and comments, so applying them in one transaction
// is the same as applying them one after the other. When a merged
// transaction fails (one change deletes a rule that is gone, say), every
// change in it is retried alone, in order, so one bad change fails only
// its own caller. A caller whose context ends still waits for the run its
// change is in: the outcome of a change is always known to its caller
// (a change abandoned mid-run might still be applied, and the rules
// recorded for the sandbox would then be wrong).

// batchTimeout bounds one iptables-restore run of a batch (it waits up to
// 10 s for the xtables lock, "-w 10").
const batchTimeout = 30 * time.Second

// ruleBatch merges waiting transactions on one table.
type ruleBatch struct {
	table string
	// run applies one iptables-restore script; the caller holds lock.
	run  func(ctx context.Context, script string) error
	lock sync.Locker // held around each run (the manager's firewallMu)

	mu      sync.Mutex
	waiting []*batchChange
	leader  bool // a goroutine is applying batches (lead)
}

type batchChange struct {
	body string // the lines between "*table" and "COMMIT"
	done chan error
}

// apply applies script, an iptables-restore transaction on b's table
// ("*TABLE\n...COMMIT\n"), merged with whatever else is waiting.
func (b *ruleBatch) apply(ctx context.Context, script string) error {
	body, ok := strings.CutPrefix(script, "*"+b.table+"\n")
	if ok {
		body, ok = strings.CutSuffix(body, "COMMIT\n")
	}
	if !ok || strings.Contains(body, "COMMIT") || strings.Contains(body, "\n*") || strings.HasPrefix(body, "*") {
		// Not one transaction on this table: run it alone.
		b.lock.Lock()
		defer b.lock.Unlock()
		return b.run(ctx, script)
	}
	c := &batchChange{body: body, done: make(chan error, 1)}
	b.mu.Lock()
	b.waiting = append(b.waiting, c)
	lead := !b.leader
	b.leader = true
	b.mu.Unlock()
	if lead {
		// Its own goroutine, so that no caller waits for changes that
		// came after its own.
		go b.lead(context.WithoutCancel(ctx))
	}
	return <-c.done
}

// lead applies batches until none is waiting.
func (b *ruleBatch) lead(ctx context.Context) {
	for {
		b.mu.Lock()
		batch := b.waiting
		b.waiting = nil
		if len(batch) == 0 {
			b.leader = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.lock.Lock()
		b.applyBatch(ctx, batch)
		b.lock.Unlock()
	}
}

func (b *ruleBatch) applyBatch(ctx context.Context, batch []*batchChange) {
	script := func(cs ...*batchChange) string {
		var s strings.Builder
		s.WriteString("*" + b.table + "\n")
		for _, c := range cs {
			s.WriteString(c.body)
		}
		s.WriteString("COMMIT\n")
		return s.String()
	}
	runOne := func(cs ...*batchChange) error {
		ctx, cancel := context.WithTimeout(ctx, batchTimeout)
		defer cancel()
		return b.run(ctx, script(cs...))
	}
	err := runOne(batch...)
	if err == nil || len(batch) == 1 {
		for _, c := range batch {
			c.done <- err
		}
		return
	}
	// Nothing of the merged transaction was applied: each alone, in order.
	for _, c := range batch {
		c.done <- runOne(c)
	}
}
