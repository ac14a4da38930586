package runtime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// A runtime whose OCI runtime binary is missing fails in New, before it
// connects to containerd (the socket here does not exist) or creates its
// state dir, with an error naming the flag and the binary.
func TestNewWithoutOCIRuntimeBinary(t *testing.T) {
	dir := t.TempDir()
	init := filepath.Join(dir, "matrx-init")
	if err := os.WriteFile(init, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Join(dir, "empty"))
	for _, name := range []string{OCIRuntimeRunc, OCIRuntimeCrun} {
		state := filepath.Join(dir, "state-"+name)
		_, err := New(context.Background(), Config{Address: filepath.Join(dir, "none.sock"), Namespace: "matrx", StateDir: state, InitPath: init},
			WithOCIRuntime(name))
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "--oci-runtime") || !strings.Contains(err.Error(), "apt-get install "+name) {
			t.Errorf("%s missing: got %v, want FailedPrecondition naming the flag and the package", name, err)
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Errorf("%s missing: state dir was created (%v)", name, err)
		}
	}
	if _, err := New(context.Background(), Config{Address: filepath.Join(dir, "none.sock"), Namespace: "matrx", StateDir: filepath.Join(dir, "s"), InitPath: init},
		WithOCIRuntime("kata")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown runtime: got %v, want InvalidArgument", err)
	}
}
