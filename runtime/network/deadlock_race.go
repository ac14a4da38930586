//go:build race || deadlocks

package network

import "github.com/sasha-s/go-deadlock"

// Under -race (and the deadlocks tag) go-cni guards its state with
// go-deadlock's RWMutex, whose lock-order check tells goroutines apart with
// petermattis/goid; on this Go version that returns 0 for every goroutine,
// so two sandboxes' CNI calls at once read as one goroutine locking
// recursively, and it exits the process. Production builds (neither tag)
// use sync.RWMutex and never run this. Turning the check off (its
// timeout-based deadlock report stays on) lets the race-enabled tests run
// CNI calls concurrently, as production does, instead of behind a lock of
// their own (the fleet tests' TestMain does the same for two daemons in one
// process).
func init() { deadlock.Opts.DisableLockOrderDetection = true }
