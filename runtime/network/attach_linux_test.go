package network

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// ifaceShape is what of `ip -o link show` must be the same whichever path
// attached an interface (not its index, name or MAC, nor its txqueuelen:
// see attach_linux.go).
var ifaceShape = regexp.MustCompile(`mtu \d+|state \S+|master \S+`)

func linkShape(t *testing.T, ns, name string) string {
	t.Helper()
	return strings.Join(ifaceShape.FindAllString(sh(t, ns, "ip", "-o", "link", "show", "dev", name), -1), " ")
}

func sysctlIn(t *testing.T, ns, key string) string {
	t.Helper()
	var v string
	if err := inNetNS(ns, func() error {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
		v = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDirectAttach: the first sandbox on a new bridge is attached by the
// CNI plugins (which make the bridge), the next ones directly; a sandbox
// attached directly looks exactly like one the plugins attached (lease,
// host port, eth0, address, route, arp_notify), carries traffic, and both
// kinds tear down to nothing. With WithCNIAttach every sandbox takes the
// plugins.
func TestDirectAttach(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	out := serve(t, e.outside, inetA.String()+":0")

	cniAtt := setup(t, m, "sbx-by-cni", Policy{})
	direct := setup(t, m, "sbx-direct", Policy{})
	cached := func(id string) bool {
		_, err := os.Stat(filepath.Join(libcniCacheDir, m.network+"-"+id+"-eth0"))
		return err == nil
	}
	// libcni caches the result of every ADD it runs: only the first
	// sandbox went through it.
	if !cached("sbx-by-cni") || cached("sbx-direct") {
		t.Fatalf("libcni cache entries: first sandbox %v (want true), second %v (want false)", cached("sbx-by-cni"), cached("sbx-direct"))
	}

	leases := map[string]string{}
	for path, owner := range m.leaseIDs() {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		leases[owner] = strings.Replace(string(b), owner, "ID", 1)
	}
	if leases["sbx-direct"] == "" || leases["sbx-direct"] != leases["sbx-by-cni"] {
		t.Errorf("lease files differ: plugin %q, direct %q", leases["sbx-by-cni"], leases["sbx-direct"])
	}
	if direct.IPv4 == cniAtt.IPv4 || !m.subnet.Contains(direct.IPv4) || direct.IPv4 == m.gateway {
		t.Errorf("direct address %s (plugin's %s, subnet %s, gateway %s)", direct.IPv4, cniAtt.IPv4, m.subnet, m.gateway)
	}

	hostVeth := func(id string) string {
		b, err := os.ReadFile(m.vethPath(id))
		if err != nil {
			t.Fatal(err)
		}
		name, _, _ := strings.Cut(string(b), " ")
		return name
	}
	for _, a := range []struct {
		id  string
		att *Attachment
	}{{"sbx-by-cni", cniAtt}, {"sbx-direct", direct}} {
		v := hostVeth(a.id)
		if !validVethName(v) || !m.isPort(v) {
			t.Errorf("%s: host veth %q is not a plugin-style port of %s", a.id, v, e.bridge)
		}
		if got := strings.TrimSpace(readFile(t, filepath.Join("/sys/class/net", v, "brport", "isolated"))); got != "1" {
			t.Errorf("%s: port %s isolated=%s", a.id, v, got)
		}
		if got := sh(t, a.att.NetNSPath, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(got, "inet "+a.att.IPv4.String()+"/24 ") {
			t.Errorf("%s: eth0 addresses: %s", a.id, got)
		}
		if got := strings.TrimSpace(sh(t, a.att.NetNSPath, "ip", "-4", "route", "show", "default")); !strings.HasPrefix(got, "default via "+m.gateway.String()+" dev eth0") {
			t.Errorf("%s: default route %q", a.id, got)
		}
		if got := sysctlIn(t, a.att.NetNSPath, "net.ipv4.conf.eth0.arp_notify"); got != "1" {
			t.Errorf("%s: arp_notify=%s", a.id, got)
		}
		mustReach(t, a.att.NetNSPath, out, out.addr)
	}
	if p, d := linkShape(t, "", hostVeth("sbx-by-cni")), linkShape(t, "", hostVeth("sbx-direct")); p != d {
		t.Errorf("host veths differ: plugin %q, direct %q", p, d)
	}
	if p, d := linkShape(t, cniAtt.NetNSPath, "eth0"), linkShape(t, direct.NetNSPath, "eth0"); p != d {
		t.Errorf("sandbox interfaces differ: plugin %q, direct %q", p, d)
	}
	for _, id := range []string{"sbx-by-cni", "sbx-direct"} {
		if err := m.Teardown(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	e.assertClean(t, m)

	// The plugin path on demand, on the same (now ready) bridge.
	mc := e.manager(t, Config{}, WithCNIAttach())
	setup(t, mc, "sbx-cni-again", Policy{})
	if !cached("sbx-cni-again") {
		t.Error("WithCNIAttach: the ADD did not go through libcni")
	}
	if err := mc.Teardown(context.Background(), "sbx-cni-again"); err != nil {
		t.Fatal(err)
	}
	e.assertClean(t, mc)
}

// TestReserveAddr: the direct path's IPAM, on host-local's lease directory
// alone (no root needed): the search starts after the last address given,
// wraps around, skips the gateway and addresses leased by anyone (a file
// host-local made is as taken as one of ours), and a full subnet is a
// clear error that changes nothing.
func TestReserveAddr(t *testing.T) {
	m, err := buildManager(Config{StateDir: t.TempDir()}, []Option{WithSubnet(netip.MustParsePrefix("10.9.8.0/29"))})
	if err != nil {
		t.Fatal(err)
	}
	dir := m.leaseDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// host-local already gave .3 to another sandbox.
	if err := os.WriteFile(filepath.Join(dir, "10.9.8.3"), []byte("sbx-plugin\r\neth0"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 4 {
		a, err := m.reserveAddr(fmt.Sprintf("sbx-%d", i))
		if err != nil {
			t.Fatalf("reserve %d: %v", i, err)
		}
		got = append(got, a.String())
	}
	if want := "10.9.8.2 10.9.8.4 10.9.8.5 10.9.8.6"; strings.Join(got, " ") != want {
		t.Fatalf("addresses %v, want %s (not the network .0, gateway .1, leased .3 or broadcast .7)", got, want)
	}
	if b := readFile(t, filepath.Join(dir, "10.9.8.4")); b != "sbx-1\r\neth0" {
		t.Errorf("lease file %q, want host-local's format", b)
	}
	before := dirNames(dir)
	if _, err := m.reserveAddr("sbx-overflow"); !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "no address left in sandbox subnet 10.9.8.0/29") {
		t.Fatalf("full subnet: %v", err)
	}
	if after := dirNames(dir); !slices.Equal(before, after) {
		t.Errorf("a failed reservation changed the lease dir: %v -> %v", before, after)
	}
	// A release frees only its own lease; the next search wraps around
	// from the last address given (.6) to the freed one.
	if err := m.releaseAddr("sbx-someone-else", netip.MustParseAddr("10.9.8.4")); err != nil {
		t.Fatal(err)
	}
	if err := m.releaseAddr("sbx-1", netip.MustParseAddr("10.9.8.4")); err != nil {
		t.Fatal(err)
	}
	if a, err := m.reserveAddr("sbx-again"); err != nil || a.String() != "10.9.8.4" {
		t.Fatalf("after the release: %v, %v; want 10.9.8.4", a, err)
	}
	if a := lastAddr(netip.MustParsePrefix("10.213.0.0/16")); a.String() != "10.213.255.255" {
		t.Errorf("lastAddr of a /16: %s", a)
	}
}
