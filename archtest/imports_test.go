package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/matrx-dev/matrx"

// forbidden maps a package (and its subpackages) to packages it must never
// import, directly. Why each arrow exists is in the package docs.
var forbidden = map[string][]string{
	"runtime":    {"api", "sandbox", "daemon", "ctl", "mounts", "registry"},
	"mounts":     {"api", "sandbox", "daemon", "ctl", "runtime", "registry"},
	"registry":   {"api", "sandbox", "daemon", "ctl", "runtime", "mounts"},
	"sandbox":    {"api", "daemon", "ctl", "sshgate"},
	"api":        {"daemon", "ctl", "sshgate"},
	"sshgate":    {"api", "daemon", "ctl", "mounts"},
	"api/client": {"sandbox", "runtime", "registry", "mounts", "daemon", "ctl"},
	"ctl":        {"sandbox", "runtime", "registry", "mounts", "daemon"},
	"undo":       {"api", "sandbox", "daemon", "ctl", "runtime", "mounts", "registry", "doctor", "metrics"},
	"metrics":    {"api", "sandbox", "daemon", "ctl", "runtime", "mounts", "registry", "doctor"},
	"doctor":     {"api", "sandbox", "daemon", "ctl", "registry"},
	"errclass":   {"api", "sandbox", "daemon", "ctl", "runtime", "mounts", "registry", "doctor", "metrics", "undo"},
	// The fleet provider speaks to matrxd through api/client only.
	"fleet":      {"api", "sandbox", "daemon", "ctl", "runtime", "mounts", "registry", "doctor", "metrics"},
	"fault":      {"api", "sandbox", "daemon", "ctl", "runtime", "mounts", "registry", "doctor", "metrics", "undo"},
	"ids":        {"api", "sandbox", "daemon", "ctl", "runtime", "mounts", "registry", "doctor", "metrics", "undo", "errclass", "fault"},
	"hostconfig": {"api/client", "sandbox", "daemon", "ctl", "runtime", "mounts", "registry", "doctor", "metrics", "undo", "errclass", "fault", "ids"},
}

func TestImportDirections(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"/...").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module+"/")
		for owner, bans := range forbidden {
			if !within(pkg, owner) || (owner == "api" && within(pkg, "api/client")) {
				continue
			}
			checked++
			for _, imp := range fields[1:] {
				if !strings.HasPrefix(imp, module+"/") {
					continue
				}
				dep := strings.TrimPrefix(imp, module+"/")
				for _, ban := range bans {
					// api/client and its wire types may be imported by anyone;
					// their own rule is separate (deps_test.go).
					if within(dep, ban) && !(ban == "api" && (within(dep, "api/client") || dep == "api/apitype")) && !within(dep, owner) {
						t.Errorf("%s imports %s: %s must not depend on %s", pkg, dep, owner, ban)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package was checked: the module path or layout changed")
	}
}

// testSupport are packages only tests (and benchmark commands) may import.
var testSupport = []string{"testenv", "runtime/containerdtest", "runtime/regtest", "daemon/daemontest", "api/apitest", "registry/registrytest", "fleet/kubetest"}

// TestProductionCodeImportsNoTestSupport: no daemon, CLI or library
// package links test harnesses.
func TestProductionCodeImportsNoTestSupport(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"/...").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module+"/")
		if isTestSupport(pkg) || strings.HasSuffix(pkg, "test") || strings.Contains(pkg, "/cmd/hotbench") {
			continue
		}
		for _, imp := range fields[1:] {
			if dep := strings.TrimPrefix(imp, module+"/"); dep != imp && isTestSupport(dep) {
				t.Errorf("%s imports the test-support package %s", pkg, dep)
			}
		}
	}
}

func isTestSupport(pkg string) bool {
	for _, s := range testSupport {
		if pkg == s {
			return true
		}
	}
	return false
}

func within(pkg, root string) bool { return pkg == root || strings.HasPrefix(pkg, root+"/") }
