package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestInitLinksOnlyStdlibAndXSys: matrx-init is bind-mounted into every
// sandbox and runs there as PID 1 and as the files helper; it is built
// static (CGO_ENABLED=0) and must stay small and auditable: the standard
// library, golang.org/x/sys and its own packages only.
func TestInitLinksOnlyStdlibAndXSys(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", module+"/cmd/matrx-init")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	own := map[string]bool{module + "/cmd/matrx-init": true, module + "/runtime/initproc": true, module + "/runtime/fshelper": true}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		n++
		if len(f) != 2 || f[1] == "true" || own[f[0]] || strings.HasPrefix(f[0], "golang.org/x/sys/") {
			continue
		}
		t.Errorf("matrx-init links %s: it may link only the standard library, golang.org/x/sys, runtime/initproc and runtime/fshelper", f[0])
	}
	if n < 10 {
		t.Fatalf("go list -deps listed only %d packages: the check is not looking at the real graph", n)
	}
}
