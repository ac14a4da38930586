package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

// initAllowedPrefixes are the modules matrx-init may link beyond the
// standard library: golang.org/x/sys everywhere, and for its sftp
// subcommand (runtime/sftpserver) github.com/pkg/sftp with its own
// dependencies, github.com/kr/fs and golang.org/x/crypto (pkg/sftp's
// client half imports x/crypto/ssh; the server never dials anything).
var initAllowedPrefixes = []string{"golang.org/x/sys/", "github.com/pkg/sftp", "github.com/kr/fs", "golang.org/x/crypto/"}

// TestInitLinksOnlyStdlibAndXSys: matrx-init is bind-mounted into every
// sandbox and runs there as PID 1, as the files helper and as the SFTP
// server; it is built static (CGO_ENABLED=0) and must stay small and
// auditable: the standard library, golang.org/x/sys, the SFTP server's
// modules and its own packages only.
func TestInitLinksOnlyStdlibAndXSys(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", module+"/cmd/matrx-init")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	own := map[string]bool{
		module + "/cmd/matrx-init": true, module + "/runtime/initproc": true, module + "/runtime/fshelper": true, module + "/runtime/execagent": true,
		module + "/runtime/sftpserver": true,
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		n++
		if len(f) != 2 || f[1] == "true" || own[f[0]] || allowedForInit(f[0]) {
			continue
		}
		t.Errorf("matrx-init links %s: it may link only the standard library, golang.org/x/sys, the SFTP server's modules (%s) and runtime/initproc, runtime/fshelper, runtime/execagent and runtime/sftpserver", f[0], strings.Join(initAllowedPrefixes[1:], ", "))
	}
	if n < 10 {
		t.Fatalf("go list -deps listed only %d packages: the check is not looking at the real graph", n)
	}
}

func allowedForInit(pkg string) bool {
	for _, p := range initAllowedPrefixes {
		if strings.HasPrefix(pkg, p) {
			return true
		}
	}
	return false
}
