package bootstraptest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestUpInstallsWhatInstallRequires: `make up` (up.sh) installs every
// binary install.sh's preflight requires, where matrxd looks for it. A
// binary added to one and not the other broke `make up` once (matrxd
// refuses to start without matrx-relay).
func TestUpInstallsWhatInstallRequires(t *testing.T) {
	root := repoRoot(t)
	install, err := os.ReadFile(filepath.Join(root, "bootstrap", "install.sh"))
	if err != nil {
		t.Fatal(err)
	}
	up, err := os.ReadFile(filepath.Join(root, "bootstrap", "up.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^BINARIES=\(([^)]*)\)`).FindSubmatch(install)
	if m == nil {
		t.Fatal("install.sh has no BINARIES=(...) list")
	}
	bins := strings.Fields(string(m[1]))
	if len(bins) < 4 {
		t.Fatalf("install.sh BINARIES lists only %v", bins)
	}
	for _, b := range bins {
		if !regexp.MustCompile(`install -D -m 0755 "\$BIN/` + regexp.QuoteMeta(b) + `" /usr/local/`).Match(up) {
			t.Errorf("up.sh does not install %s (install.sh requires it)", b)
		}
	}
}
