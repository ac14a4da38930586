//go:build !matrxfault

package fault

import "context"

// At is a crash point (a no-op in this build).
func At(context.Context, string) {}

// With names the operation of the crash points below ctx (a no-op in this
// build).
func With(ctx context.Context, _ string) context.Context { return ctx }
