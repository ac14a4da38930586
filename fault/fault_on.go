//go:build matrxfault

package fault

import (
	"context"
	"os"
	"strings"
	"syscall"
)

// EnvFile names the file that arms a crash point.
const EnvFile = "MATRX_FAULT_FILE"

// At kills the process if point is armed. A name without a "/" gets the
// operation With put on ctx as its prefix.
func At(ctx context.Context, point string) {
	if !strings.Contains(point, "/") {
		point = op(ctx) + "/" + point
	}
	path := os.Getenv(EnvFile)
	if path == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(b)) != point {
		return
	}
	os.Stderr.WriteString("matrx fault: " + point + "\n")
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}

type opKey struct{}

// op returns the operation With put on ctx ("" if none).
func op(ctx context.Context) string {
	s, _ := ctx.Value(opKey{}).(string)
	return s
}

// With names the operation of the crash points below ctx.
func With(ctx context.Context, operation string) context.Context {
	return context.WithValue(ctx, opKey{}, operation)
}
