package archtest

import (
	"os/exec"
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
