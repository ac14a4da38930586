// Package undo owns rollback of half-made things: code that builds
// something in steps pushes the step that removes each piece it made, and
// runs them all, newest first, if a later step fails. Nothing leaks when
// step 5 of 7 fails. It knows nothing about what the steps do.
package undo

import (
	"context"
	"log/slog"
	"time"

	"github.com/containerd/errdefs"
)

// Timeout bounds a whole rollback.
const Timeout = 30 * time.Second

// Stack is a list of cleanup steps. The zero value is ready to use.
type Stack struct {
	steps []step
}

type step struct {
	name string
	fn   func(context.Context) error
}

// Push adds a cleanup step.
func (s *Stack) Push(name string, fn func(context.Context) error) {
	s.steps = append(s.steps, step{name, fn})
}

// Run runs every step, newest first, on a context detached from ctx's
// cancellation (a cancelled request must still release what it made) and
// bounded by Timeout. Failures are logged and do not stop the rollback;
// NotFound counts as done.
func (s *Stack) Run(ctx context.Context, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Timeout)
	defer cancel()
	for i := len(s.steps) - 1; i >= 0; i-- {
		if err := s.steps[i].fn(ctx); err != nil && !errdefs.IsNotFound(err) {
			log.Warn("undo step failed", "step", s.steps[i].name, "error", err)
		}
	}
	s.steps = nil
}
