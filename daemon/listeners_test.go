package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/sandbox"
)

func validConfig(t *testing.T) Config {
	dir := t.TempDir()
	return Config{
		Socket: filepath.Join(dir, "matrxd.sock"), ContainerdAddress: filepath.Join(dir, "none.sock"),
		ContainerdNamespace: "matrx", StateDir: filepath.Join(dir, "state"), Store: "memory",
		LogFormat: "json", ExpiryInterval: time.Second, Limits: sandbox.DefaultLimits(),
	}
}

func TestValidateListeners(t *testing.T) {
	cases := []struct {
		name                  string
		metrics, tcp, keyFile string
		err                   string // "" = valid
	}{
		{"all off", "", "", "", ""},
		{"metrics on 127.0.0.1", "127.0.0.1:9464", "", "", ""},
		{"metrics on 127.0.0.2", "127.0.0.2:9464", "", "", ""},
		{"metrics on ::1", "[::1]:9464", "", "", ""},
		{"metrics on localhost", "localhost:9464", "", "", ""},
		{"metrics on every interface", "0.0.0.0:9464", "", "", "not a loopback address"},
		{"metrics without host", ":9464", "", "", "not a loopback address"},
		{"metrics on a private address", "10.1.2.3:9464", "", "", "not a loopback address"},
		{"metrics on a name", "metrics.internal:9464", "", "", "not a loopback address"},
		{"metrics without port", "127.0.0.1", "", "", "HOST:PORT"},
		{"tcp with key", "", "127.0.0.1:8000", "/etc/matrx/api-key", ""},
		{"tcp on every interface", "", "0.0.0.0:8000", "/etc/matrx/api-key", ""},
		{"tcp without key", "", "127.0.0.1:8000", "", "no api key file"},
		{"tcp without host", "", ":8000", "/etc/matrx/api-key", "has no host"},
		{"tcp without port", "", "127.0.0.1", "/etc/matrx/api-key", "HOST:PORT"},
		{"same address twice", "127.0.0.1:8000", "127.0.0.1:8000", "/k", "both"},
		{"key file alone", "", "", "/etc/matrx/api-key", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig(t)
			cfg.MetricsAddress, cfg.TCPAddress, cfg.APIKeyFile = c.metrics, c.tcp, c.keyFile
			err := cfg.Validate()
			if c.err == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("got %v, want InvalidArgument containing %q", err, c.err)
			}
		})
	}
}

// A key file others can read stops the daemon before it starts anything.
func TestRunRefusesReadableKeyFile(t *testing.T) {
	cfg := validConfig(t)
	cfg.TCPAddress = "127.0.0.1:0"
	cfg.APIKeyFile = filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(cfg.APIKeyFile, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(cfg.APIKeyFile, 0o644)
	err := Run(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("got %v", err)
	}
	if _, serr := os.Stat(cfg.StateDir); !os.IsNotExist(serr) {
		t.Fatalf("state dir created before the key file was checked: %v", serr)
	}
}

// An unknown --oci-runtime is refused before anything starts, naming the
// flag.
func TestValidateOCIRuntime(t *testing.T) {
	for name, want := range map[string]string{"": "", "runc": "", "crun": "", "kata": "--oci-runtime", "RUNC": "--oci-runtime"} {
		cfg := validConfig(t)
		cfg.OCIRuntime = name
		err := cfg.Validate()
		if want == "" && err != nil {
			t.Errorf("%q: unexpected error %v", name, err)
		}
		if want != "" && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), want)) {
			t.Errorf("%q: got %v, want InvalidArgument naming %s", name, err, want)
		}
	}
}
