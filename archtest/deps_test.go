package archtest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// clientAllowed is everything outside the standard library that the API's
// client half may link (tailscale's deptest style): the wire types, the
// error vocabulary, and nothing of the daemon. A program built on
// api/client must never pull in containerd, bbolt, the AWS SDK or CNI.
var clientAllowed = map[string]bool{
	"github.com/containerd/errdefs": true,
	module + "/api/apitype":         true,
	module + "/api/client":          true,
	module + "/errclass":            true,
}

// clientMayLink: the WebSocket attach, which needs a WebSocket library,
// lives in api/client/attach, outside this rule.
func clientMayLink(pkg string) bool { return clientAllowed[pkg] }

func TestClientLinksNoDaemon(t *testing.T) {
	for _, pkg := range []string{module + "/api/client", module + "/api/apitype"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", pkg).Output()
		if err != nil {
			t.Skipf("go list unavailable: %v", err)
		}
		n := 0
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			n++
			if len(f) != 2 || f[1] == "true" {
				continue
			}
			if !clientMayLink(f[0]) {
				t.Errorf("%s links %s: the client half of the API may link only the standard library, errdefs, apitype, errclass and coder/websocket", pkg, f[0])
			}
		}
		if n < 10 {
			t.Fatalf("go list -deps %s listed only %d packages: the check is not looking at the real graph", pkg, n)
		}
	}
}

// kubernetesFree are the programs and packages that must not link
// Kubernetes or Virtual Kubelet (hundreds of packages, and code matrxd has
// no use for): only the fleet provider (fleet/, cmd/matrx-vk) does.
var kubernetesFree = []string{
	module + "/cmd/matrxd", module + "/cmd/matrx", module + "/cmd/matrx-init",
	module + "/api/client", module + "/daemon", module + "/ctl",
}

func TestOnlyTheProviderLinksKubernetes(t *testing.T) {
	for _, pkg := range kubernetesFree {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			t.Skipf("go list unavailable: %v", err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %d packages: the check is not looking at the real graph", pkg, len(deps))
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "k8s.io/") || strings.HasPrefix(d, "sigs.k8s.io/") ||
				strings.HasPrefix(d, "github.com/virtual-kubelet/") || strings.HasPrefix(d, module+"/fleet") {
				t.Errorf("%s links %s: only the fleet provider may link Kubernetes", pkg, d)
			}
		}
	}
	// The positive control: the check sees Kubernetes where it is.
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"/cmd/matrx-vk").Output()
	if err != nil || !slices.Contains(strings.Fields(string(out)), "k8s.io/client-go/kubernetes") {
		t.Fatalf("cmd/matrx-vk does not link client-go: the check cannot see Kubernetes (%v)", err)
	}
}
