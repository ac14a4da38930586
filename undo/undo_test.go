package undo

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/containerd/errdefs"
)

func TestRunNewestFirstDespiteFailuresAndCancel(t *testing.T) {
	var order []string
	var s Stack
	s.Push("a", func(context.Context) error { order = append(order, "a"); return nil })
	s.Push("b", func(context.Context) error { order = append(order, "b"); return errors.New("boom") })
	s.Push("c", func(ctx context.Context) error {
		if ctx.Err() != nil {
			t.Error("undo ran on a cancelled context")
		}
		order = append(order, "c")
		return errdefs.ErrNotFound
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Run(ctx, slog.New(slog.DiscardHandler))
	if len(order) != 3 || order[0] != "c" || order[1] != "b" || order[2] != "a" {
		t.Fatalf("order %v", order)
	}
	s.Run(ctx, slog.New(slog.DiscardHandler)) // empty after a run
	if len(order) != 3 {
		t.Fatal("steps ran twice")
	}
}
