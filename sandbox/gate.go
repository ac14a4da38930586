package sandbox

import (
	"context"
	goruntime "runtime"
	"sync"
	"time"
)

// # The claim gate
//
// A burst of claims from the warm pool is CPU-bound here: a claim and its
// first command cost about 30 ms of CPU across matrxd, the S3 server, the
// FUSE daemon, containerd and the sandbox's first processes, and a 2-vCPU
// host has 2 CPU-ms per ms. Started all at once, 50 claims share the CPUs
// and all of them finish near the end of the burst: processor sharing
// makes every create as slow as the whole burst. The claim gate lets only
// a few claims do their work at a time, in arrival order (a Go channel's
// waiters are served first come, first served), so they finish spread
// over the burst: the median claim waits about half the burst instead of
// all of it, and the last one is no later (the same work is done, and
// fewer claims in flight contend less for the registry, containerd and
// the S3 server).
//
// Measured (2026-12-04, 2-vCPU VM, bench/BenchmarkTTI, burst of 50 with a
// pool of 50, p50 / wall in ms): --cold-shared without the gate 734 / 827,
// 603 / 633; with 4 slots 490 / 894, 524 / 977; with 8, 414 / 661,
// 430 / 738, 402 / 691; with 16, 569 / 680. Per-user cold storage: 1096,
// 1356 without, 903, 1224, 1073 with 8. So: four slots per CPU. Creates
// that do not come from the pool do not pass the gate: their start is
// mostly waiting (runc, the disk image, CNI), and gating them cut the
// no-pool burst's throughput (8.0 -> 6.1 creates/s with 4 slots).
//
// A slot frees itself after claimGateHold even if its claim has not
// finished: a claim waiting on I/O (a user with thousands of hot files, a
// slow S3) must not hold back the ones behind it, and the gate only needs
// to bound the CPU-heavy part. So the gate never refuses a create (it
// ends one only when its caller gave up waiting), holds none for longer
// than the claims ahead of it take to finish or to pass the hold, and
// costs a lone create nothing (its slot is free).
type claimGate struct {
	slots chan struct{}
	hold  time.Duration
}

// claimGateHold is how long a claim keeps its slot at most (one takes
// 15-60 ms here alone, 30-120 ms in a burst).
const claimGateHold = 100 * time.Millisecond

// claimGateSize is the number of claims let through at once: four per
// CPU (measured above), enough to overlap one claim's waits (fsyncs, S3
// round trips, the runtime's process starts) with others' CPU work.
func claimGateSize() int { return 4 * goruntime.GOMAXPROCS(0) }

func newClaimGate(size int, hold time.Duration) *claimGate {
	return &claimGate{slots: make(chan struct{}, size), hold: hold}
}

// enter waits for a slot; leave frees it (at once, or already done when
// the hold ran out). It fails only when ctx ends first. A nil gate (a
// Manager made without New, in unit tests) lets everything through.
func (g *claimGate) enter(ctx context.Context) (leave func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	free := func() { once.Do(func() { <-g.slots }) }
	t := time.AfterFunc(g.hold, free)
	return func() { t.Stop(); free() }, nil
}
