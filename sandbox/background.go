package sandbox

import (
	"sync"
	"time"
)

// inBackground runs f on a goroutine of its own, beside whatever the
// caller does next (the steps of a create or claim that touch nothing in
// common). The returned wait blocks until f has ended and returns how long
// it took and its error, the same each time it is called (an undo step
// may wait again).
func inBackground(f func() error) (wait func() (time.Duration, error)) {
	type result struct {
		took time.Duration
		err  error
	}
	done := make(chan result, 1)
	go func(t0 time.Time) {
		err := f()
		done <- result{time.Since(t0), err}
	}(time.Now())
	get := sync.OnceValue(func() result { return <-done })
	return func() (time.Duration, error) { r := get(); return r.took, r.err }
}
