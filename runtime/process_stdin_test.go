//go:build linux

package runtime_test

import (
	"context"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/runtime"
)

// TestStdinClosedAtOnce: a process whose stdin is closed right after it
// starts (an SSH command with nothing to read, `ssh host true </dev/null`)
// reads EOF and ends; before the fix the FIFO lost its last writer before
// the process opened it, and the open waited forever.
func TestStdinClosedAtOnce(t *testing.T) {
	rt, env := newRuntime(t)
	id := startSandbox(t, rt, env, runtime.Resources{})
	ctx := context.Background()
	for range 5 {
		p := startProc(t, rt, id, runtime.ProcessSpec{Command: "cat; echo after-eof", Stdin: true})
		if err := p.CloseStdin(ctx); err != nil {
			t.Fatal(err)
		}
		if out := collect(t, p, "", 10*time.Second); out != "after-eof\n" {
			t.Fatalf("output %q", out)
		}
		if info := waitExit(t, p); info.ExitCode != 0 {
			t.Fatalf("exit %d", info.ExitCode)
		}
	}
	// Input written and closed before the process even opened it (the
	// fleet's kubectl exec -i with a short input): nothing is lost.
	for range 10 {
		p := startProc(t, rt, id, runtime.ProcessSpec{Command: "cat; echo after-eof", Stdin: true})
		if err := p.WriteStdin(ctx, []byte("line one\nline two\n")); err != nil {
			t.Fatal(err)
		}
		if err := p.CloseStdin(ctx); err != nil {
			t.Fatal(err)
		}
		if out := collect(t, p, "", 10*time.Second); out != "line one\nline two\nafter-eof\n" {
			t.Fatalf("output %q", out)
		}
		waitExit(t, p)
	}
}
