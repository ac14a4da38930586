package network

// Integration tests: real namespaces, the Debian CNI plugins and iptables.
//
// Traffic rule: probes only go to hosts that live in namespaces these tests
// create. "The internet" is a test namespace ("outside") reached through a
// veth and /32 host routes, holding TEST-NET addresses (203.0.113.10,
// 198.51.100.10) and the private-range stand-ins (10.99.0.1, a resolver at
// 10.99.0.53, 100.64.0.10, 169.254.10.10). The metadata address
// 169.254.169.254 is put on a test-made interface of this host for the one
// test that needs it, so that a leak would land here.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	gocni "github.com/containerd/go-cni"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/testenv"
	"golang.org/x/sys/unix"
)

// Addresses of the test hosts in the "outside" namespace.
var (
	transitHost = netip.MustParseAddr("198.51.100.253") // host end of the veth
	transitOut  = netip.MustParseAddr("198.51.100.254") // outside end
	inetA       = netip.MustParseAddr("203.0.113.10")
	inetB       = netip.MustParseAddr("198.51.100.10")
	privHost    = netip.MustParseAddr("10.99.0.1")
	resolver    = netip.MustParseAddr("10.99.0.53")
	cgnatHost   = netip.MustParseAddr("100.64.0.10")
	linkLocal   = netip.MustParseAddr("169.254.10.10")
	metadata    = netip.MustParseAddr("169.254.169.254")
)

// TestMain holds the cross-package host-network lock for the whole run:
// these tests put fixed TEST-NET and metadata addresses on the host, as the
// daemon's hostile-sandbox test does.
func TestMain(m *testing.M) {
	testenv.ReportHangs()
	unlock, err := containerdtest.LockHostNetwork()
	if err != nil {
		fmt.Fprintln(os.Stderr, "host network lock:", err)
		os.Exit(1)
	}
	code := m.Run()
	unlock()
	os.Exit(code)
}

func outsideAddrs() []netip.Addr {
	return []netip.Addr{inetA, inetB, privHost, resolver, cgnatHost, linkLocal}
}

const (
	allowTimeout = 3 * time.Second
	blockTimeout = 1 * time.Second
)

// requireIntegration skips (or, under MATRX_REQUIRE_INTEGRATION=1, fails)
// when this machine cannot run the tests.
func requireIntegration(t *testing.T) {
	t.Helper()
	reason := ""
	switch {
	case os.Geteuid() != 0:
		reason = "needs root (network namespaces, iptables, CNI)"
	case !pluginPresent("bridge") || !pluginPresent("host-local"):
		reason = "needs the CNI bridge and host-local plugins in /usr/lib/cni or /opt/cni/bin (apt-get install containernetworking-plugins)"
	default:
		for _, bin := range []string{"iptables", "iptables-restore", "ip"} {
			if _, err := exec.LookPath(bin); err != nil {
				reason = "needs " + bin
			}
		}
	}
	if reason != "" {
		testenv.Skip(t, "%s", reason)
	}
}

func pluginPresent(name string) bool {
	for _, d := range DefaultPluginDirs() {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return true
		}
	}
	return false
}

func randTag(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// sh runs a command on the host (or, with ns set, inside that namespace).
func sh(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := shErr(ns, args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return out
}

func shErr(ns string, args ...string) (string, error) {
	var out []byte
	run := func() error {
		var err error
		out, err = exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	var err error
	if ns == "" {
		err = run()
	} else {
		err = inNetNS(ns, run)
	}
	return string(out), err
}

// testEnv is one Manager on its own bridge, subnet, chains and state dir,
// plus (optionally) the outside world.
type testEnv struct {
	tag     string
	dir     string
	bridge  string
	subnet  netip.Prefix
	outside string // namespace of the test hosts
	log     *slog.Logger
}

func newEnv(t *testing.T, withOutside bool) *testEnv {
	t.Helper()
	requireIntegration(t)
	tag := randTag(t)
	b, _ := hex.DecodeString(tag)
	e := &testEnv{
		tag:    tag,
		dir:    t.TempDir(),
		bridge: "mxt" + tag,
		subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + b[0]%50, b[1], 0}), 24),
		log:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if withOutside {
		e.makeOutside(t)
	}
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// makeOutside builds the test hosts' namespace and routes /32s to it.
func (e *testEnv) makeOutside(t *testing.T) {
	e.outside = filepath.Join(e.dir, "outside")
	if err := createNetNS(e.outside, func() error { return setLinkUp("lo") }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeNetNS(e.outside) })
	hostIf, outIf := "mxo"+e.tag, "mxp"+e.tag
	sh(t, "", "ip", "link", "add", hostIf, "type", "veth", "peer", "name", outIf, "netns", e.outside)
	t.Cleanup(func() { _, _ = shErr("", "ip", "link", "del", hostIf) }) // takes the routes with it
	sh(t, "", "ip", "addr", "add", transitHost.String()+"/30", "dev", hostIf)
	sh(t, "", "ip", "link", "set", hostIf, "up")
	sh(t, e.outside, "ip", "addr", "add", transitOut.String()+"/30", "dev", outIf)
	for _, a := range outsideAddrs() {
		sh(t, e.outside, "ip", "addr", "add", a.String()+"/32", "dev", outIf)
	}
	sh(t, e.outside, "ip", "link", "set", outIf, "up")
	sh(t, e.outside, "ip", "route", "add", "default", "via", transitHost.String())
	for _, a := range outsideAddrs() {
		sh(t, "", "ip", "route", "add", a.String()+"/32", "via", transitOut.String(), "dev", hostIf)
	}
}

// manager starts a Manager for this env; Uninstall runs at cleanup.
func (e *testEnv) manager(t *testing.T, cfg Config, opts ...Option) *Manager {
	t.Helper()
	cfg.StateDir = filepath.Join(e.dir, "state")
	cfg.Logger = e.log
	if cfg.Nameservers == nil {
		cfg.Nameservers = []netip.Addr{resolver}
	}
	opts = append([]Option{WithBridge(e.bridge), WithSubnet(e.subnet)}, opts...)
	m, err := New(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Uninstall(context.Background()); err != nil {
			t.Errorf("Uninstall: %v", err)
		}
		e.assertUninstalled(t, m)
	})
	return m
}

func setup(t *testing.T, m *Manager, id string, p Policy) *Attachment {
	t.Helper()
	att, err := m.Setup(context.Background(), id, p)
	if err != nil {
		t.Fatalf("Setup %s: %v", id, err)
	}
	return att
}

// server is a TCP listener in a namespace ("" = the host) that greets and
// counts every connection it accepts.
type server struct {
	addr netip.AddrPort
	hits atomic.Int32
	peer atomic.Value // netip.Addr of the last client
}

func serve(t *testing.T, ns string, addr string) *server {
	t.Helper()
	var ln net.Listener
	listen := func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}
	var err error
	if ns == "" {
		err = listen()
	} else {
		err = inNetNS(ns, listen)
	}
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &server{addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.hits.Add(1)
			s.peer.Store(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			_, _ = c.Write([]byte("hello from test host\n"))
			c.Close()
		}
	}()
	return s
}

// at is the server's port on another address of the same listener.
func (s *server) at(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, s.addr.Port()) }

// dial connects from namespace ns ("" = host) and reads the greeting.
func dial(ns string, to netip.AddrPort, timeout time.Duration) error {
	do := func() error {
		c, err := net.DialTimeout("tcp4", to.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(b, []byte("hello from test host")) {
			return fmt.Errorf("unexpected greeting %q", b)
		}
		return nil
	}
	if ns == "" {
		return do()
	}
	return inNetNS(ns, do)
}

func mustReach(t *testing.T, ns string, s *server, to netip.AddrPort) {
	t.Helper()
	before := s.hits.Load()
	if err := dial(ns, to, allowTimeout); err != nil {
		t.Errorf("%s should be reachable: %v", to, err)
		return
	}
	if s.hits.Load() == before {
		t.Errorf("%s answered but the test server saw no connection", to)
	}
}

func mustNotReach(t *testing.T, ns string, s *server, to netip.AddrPort) {
	t.Helper()
	before := s.hits.Load()
	err := dial(ns, to, blockTimeout)
	if err == nil {
		t.Errorf("%s should be blocked but was reachable", to)
	}
	if n := s.hits.Load() - before; n != 0 {
		t.Errorf("%s should be blocked but the test server accepted %d connection(s)", to, n)
	}
	if err != nil && errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("%s: connection refused means a packet got through to a host: %v", to, err)
	}
}

// TestEgress checks default mode against every kind of destination.
func TestEgress(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	a := setup(t, m, "sbx-a", Policy{})
	nb := setup(t, m, "sbx-b", Policy{Mode: ModeDefault})

	out := serve(t, e.outside, "0.0.0.0:0") // every outside address
	dns := serve(t, e.outside, resolver.String()+":53")

	t.Run("internet allowed", func(t *testing.T) {
		mustReach(t, a.NetNSPath, out, out.at(inetA))
		mustReach(t, a.NetNSPath, out, out.at(inetB))
		// Masqueraded: the internet sees the host's address, never the
		// sandbox's (the outside namespace could route back either way).
		if got, _ := out.peer.Load().(netip.Addr); got != transitHost {
			t.Errorf("outside saw the connection from %v, want the host's %v (masquerade)", got, transitHost)
		}
	})
	t.Run("private ranges blocked", func(t *testing.T) {
		mustNotReach(t, a.NetNSPath, out, out.at(privHost))
		mustNotReach(t, a.NetNSPath, out, out.at(cgnatHost))
		mustNotReach(t, a.NetNSPath, out, out.at(linkLocal))
		mustNotReach(t, a.NetNSPath, out, out.at(resolver)) // only port 53 of it
		// The same hosts answer the host itself: the servers work.
		mustReach(t, "", out, out.at(privHost))
	})
	t.Run("dns to the configured resolver allowed", func(t *testing.T) {
		mustReach(t, a.NetNSPath, dns, dns.addr)
		other := serve(t, e.outside, privHost.String()+":53")
		mustNotReach(t, a.NetNSPath, other, other.addr)
	})
	t.Run("metadata blocked", func(t *testing.T) {
		// This kernel has no dummy driver: a veth pair with both ends on
		// the host is the "dummy" interface.
		dummy := "mxd" + e.tag
		sh(t, "", "ip", "link", "add", dummy, "type", "veth", "peer", "name", "mxe"+e.tag)
		defer func() { _, _ = shErr("", "ip", "link", "del", dummy) }()
		sh(t, "", "ip", "addr", "add", metadata.String()+"/32", "dev", dummy)
		sh(t, "", "ip", "link", "set", dummy, "up")
		md := serve(t, "", metadata.String()+":0")
		md80 := serve(t, "", metadata.String()+":80")
		mustReach(t, "", md, md.addr) // the listener works from the host
		mustNotReach(t, a.NetNSPath, md, md.addr)
		mustNotReach(t, a.NetNSPath, md80, md80.addr)
	})
	t.Run("host blocked", func(t *testing.T) {
		host := serve(t, "", "0.0.0.0:0")
		mustReach(t, "", host, host.at(netip.MustParseAddr("127.0.0.1")))
		mustNotReach(t, a.NetNSPath, host, host.at(m.gateway))   // the bridge address
		mustNotReach(t, a.NetNSPath, host, host.at(transitHost)) // another host address
	})
	t.Run("neighbour blocked", func(t *testing.T) {
		nbSrv := serve(t, nb.NetNSPath, "0.0.0.0:0")
		aSrv := serve(t, a.NetNSPath, "0.0.0.0:0")
		// The host reaches both (and the replies come back through INPUT).
		mustReach(t, "", nbSrv, nbSrv.at(nb.IPv4))
		mustReach(t, "", aSrv, aSrv.at(a.IPv4))
		mustNotReach(t, a.NetNSPath, nbSrv, nbSrv.at(nb.IPv4))
		mustNotReach(t, nb.NetNSPath, aSrv, aSrv.at(a.IPv4))
		// Layer 2 too: isolated bridge ports, so a's ARP for b went
		// unanswered, whatever br_netfilter does with iptables.
		if mac := neighbourMAC(t, a.NetNSPath, nb.IPv4); mac != "" {
			t.Errorf("sandbox a resolved b's MAC %s: bridge ports are not isolated", mac)
		}
		ports := bridgePorts(e.bridge)
		if len(ports) != 2 {
			t.Errorf("bridge ports %v, want the two sandboxes' veths", ports)
		}
		for _, veth := range ports {
			if got := strings.TrimSpace(readFile(t, filepath.Join("/sys/class/net", veth, "brport", "isolated"))); got != "1" {
				t.Errorf("bridge port %s isolated = %s", veth, got)
			}
		}
		routedNeighboursBlocked(t, m, a, nb)
	})
	t.Run("no ipv6 inside", func(t *testing.T) {
		err := inNetNS(a.NetNSPath, func() error {
			for _, k := range []string{"all", "default", "lo", "eth0"} {
				b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + k + "/disable_ipv6")
				if err != nil {
					return err
				}
				if strings.TrimSpace(string(b)) != "1" {
					return fmt.Errorf("%s: disable_ipv6=%s", k, b)
				}
			}
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			for _, i := range ifs {
				addrs, _ := i.Addrs()
				for _, ad := range addrs {
					if p, _ := netip.ParsePrefix(ad.String()); p.Addr().Is6() {
						return fmt.Errorf("interface %s has IPv6 address %s", i.Name, p)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	t.Run("files", func(t *testing.T) {
		if got, want := readFile(t, a.ResolvConf), "nameserver "+resolver.String()+"\n"; !strings.Contains(got, want) || strings.Count(got, "nameserver") != 1 {
			t.Errorf("resolv.conf:\n%s", got)
		}
		if got := readFile(t, a.Hosts); !strings.Contains(got, a.IPv4.String()+"\tsbx-a\n") || !strings.Contains(got, "127.0.0.1\tlocalhost") {
			t.Errorf("hosts:\n%s", got)
		}
		if !e.subnet.Contains(a.IPv4) || a.IPv4 == nb.IPv4 {
			t.Errorf("addresses %s and %s, subnet %s", a.IPv4, nb.IPv4, e.subnet)
		}
		if a.NetNSPath != filepath.Join(e.dir, "state", "netns", "sbx-a") || !isNetNS(a.NetNSPath) {
			t.Errorf("netns path %s is not a mounted namespace", a.NetNSPath)
		}
	})
	t.Run("setup twice", func(t *testing.T) {
		_, err := m.Setup(context.Background(), "sbx-a", Policy{})
		if !errdefs.IsAlreadyExists(err) {
			t.Errorf("second Setup of sbx-a: %v, want AlreadyExists", err)
		}
		mustReach(t, a.NetNSPath, out, out.at(inetA)) // and the first is intact
	})
	t.Run("invalid input", func(t *testing.T) {
		for _, tc := range []struct {
			id string
			p  Policy
		}{
			{"../x", Policy{}},
			{"sbx-c", Policy{Mode: "host"}},
			{"sbx-c", Policy{Allow: prefixes("10.99.0.0/24")}}, // not opened by the operator
		} {
			if _, err := m.Setup(context.Background(), tc.id, tc.p); !errdefs.IsInvalidArgument(err) {
				t.Errorf("Setup(%q, %+v) = %v, want InvalidArgument", tc.id, tc.p, err)
			}
		}
	})
	if t.Failed() {
		t.Logf("iptables:\n%s", sh(t, "", "iptables", "-S"))
	}
	for _, id := range []string{"sbx-a", "sbx-b"} {
		if err := m.Teardown(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	e.assertClean(t, m)
}

// routedNeighboursBlocked routes two sandboxes to each other through the
// host (as a sandbox with CAP_NET_ADMIN could) instead of across the
// isolated bridge: then FORWARD's subnet rule is what stops them.
func routedNeighboursBlocked(t *testing.T, m *Manager, a, b *Attachment) {
	t.Helper()
	aSrv := serve(t, a.NetNSPath, "0.0.0.0:0")
	bSrv := serve(t, b.NetNSPath, "0.0.0.0:0")
	sh(t, a.NetNSPath, "ip", "route", "add", b.IPv4.String()+"/32", "via", m.gateway.String(), "dev", "eth0")
	sh(t, b.NetNSPath, "ip", "route", "add", a.IPv4.String()+"/32", "via", m.gateway.String(), "dev", "eth0")
	mustNotReach(t, a.NetNSPath, bSrv, bSrv.at(b.IPv4))
	mustNotReach(t, b.NetNSPath, aSrv, aSrv.at(a.IPv4))
	sh(t, a.NetNSPath, "ip", "route", "del", b.IPv4.String()+"/32")
	sh(t, b.NetNSPath, "ip", "route", "del", a.IPv4.String()+"/32")
}

// TestAllowInternal: the operator's internal allow list opens exactly the
// listed ranges, for default and allow-list sandboxes, and never the
// sandbox subnet even when a listed range covers it.
func TestAllowInternal(t *testing.T) {
	e := newEnv(t, true)
	// 10.192.0.0/10 covers every test subnet (10.200-249.x.0/24).
	m := e.manager(t, Config{AllowInternal: prefixes(privHost.String()+"/32", "10.192.0.0/10")})
	a := setup(t, m, "sbx-int", Policy{})
	l := setup(t, m, "sbx-int-list", Policy{Allow: prefixes(privHost.String() + "/32")})
	out := serve(t, e.outside, "0.0.0.0:0")
	routedNeighboursBlocked(t, m, a, l)

	mustReach(t, a.NetNSPath, out, out.at(privHost))
	mustNotReach(t, a.NetNSPath, out, out.at(resolver)) // same /24, not listed
	mustNotReach(t, a.NetNSPath, out, out.at(cgnatHost))
	mustReach(t, a.NetNSPath, out, out.at(inetA))

	mustReach(t, l.NetNSPath, out, out.at(privHost))
	mustNotReach(t, l.NetNSPath, out, out.at(inetA))
}

// TestAllowList: a non-empty Allow is deny-by-default.
func TestAllowList(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	att := setup(t, m, "sbx-list", Policy{Allow: prefixes("203.0.113.0/24")})
	out := serve(t, e.outside, "0.0.0.0:0")
	dns := serve(t, e.outside, resolver.String()+":53")

	mustReach(t, att.NetNSPath, out, out.at(inetA))
	mustNotReach(t, att.NetNSPath, out, out.at(inetB))
	mustNotReach(t, att.NetNSPath, out, out.at(privHost))
	mustNotReach(t, att.NetNSPath, out, out.at(linkLocal))
	mustNotReach(t, att.NetNSPath, out, out.at(transitHost)) // the host
	mustReach(t, att.NetNSPath, dns, dns.addr)               // DNS still works

	// A wider allow list still never opens what is always blocked.
	wide := setup(t, m, "sbx-wide", Policy{Allow: prefixes("0.0.0.0/0")})
	mustReach(t, wide.NetNSPath, out, out.at(inetB))
	mustNotReach(t, wide.NetNSPath, out, out.at(privHost))
	inside := serve(t, att.NetNSPath, "0.0.0.0:0")
	mustNotReach(t, wide.NetNSPath, inside, inside.at(att.IPv4))
}

// TestClosedThenOpened: a sandbox set up Closed (a warm-pool sandbox)
// reaches nothing, not even DNS, until SetPolicy gives it a policy, which
// then holds exactly; a policy for another address or mode none is
// refused and changes nothing.
func TestClosedThenOpened(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	att := setup(t, m, "sbx-pooled", Policy{Closed: true})
	out := serve(t, e.outside, "0.0.0.0:0")
	dns := serve(t, e.outside, resolver.String()+":53")
	mustNotReach(t, att.NetNSPath, out, out.at(inetA))
	mustNotReach(t, att.NetNSPath, dns, dns.addr)

	ctx := context.Background()
	other := netip.AddrFrom4([4]byte{1, 2, 3, 4})
	if err := m.SetPolicy(ctx, "sbx-pooled", other, Policy{}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("SetPolicy with an address outside the subnet: %v, want InvalidArgument", err)
	}
	if err := m.SetPolicy(ctx, "sbx-pooled", att.IPv4, Policy{Mode: ModeNone}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("SetPolicy to mode none: %v, want InvalidArgument", err)
	}
	mustNotReach(t, att.NetNSPath, out, out.at(inetA))

	if err := m.SetPolicy(ctx, "sbx-pooled", att.IPv4, Policy{Allow: prefixes("203.0.113.0/24")}); err != nil {
		t.Fatal(err)
	}
	mustReach(t, att.NetNSPath, out, out.at(inetA))
	mustNotReach(t, att.NetNSPath, out, out.at(inetB))
	mustNotReach(t, att.NetNSPath, out, out.at(privHost))
	mustReach(t, att.NetNSPath, dns, dns.addr)
	// Changed again, the old rules are gone, not stacked.
	if err := m.SetPolicy(ctx, "sbx-pooled", att.IPv4, Policy{}); err != nil {
		t.Fatal(err)
	}
	mustReach(t, att.NetNSPath, out, out.at(inetB))
	mustNotReach(t, att.NetNSPath, out, out.at(privHost))
	if lines, ok := m.recordedRules("sbx-pooled"); !ok || len(lines) != 2 {
		t.Fatalf("recorded rules after two changes: %v %v, want the default policy's 2", lines, ok)
	}
	if err := m.Teardown(ctx, "sbx-pooled"); err != nil {
		t.Fatal(err)
	}
	lines, _ := m.sandboxRuleLines(ctx)
	for _, l := range lines {
		if id, ok := sandboxOfRule(l); ok && id == "sbx-pooled" {
			t.Fatalf("rule left after teardown: %s", l)
		}
	}
}

// TestPoliciesAtOnce: pooled sandboxes opened at the same moment (a burst
// of claims, whose rule changes share iptables-restore runs) each get
// exactly their own policy; one whose recorded rules no longer match the
// table fails alone and keeps what it had.
func TestPoliciesAtOnce(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	ctx := context.Background()
	var runs atomic.Int32
	run := m.platform.filter4.run
	m.platform.filter4.run = func(ctx context.Context, script string) error {
		runs.Add(1)
		return run(ctx, script)
	}
	const n = 12
	atts := make([]*Attachment, n)
	for i := range n {
		atts[i] = setup(t, m, fmt.Sprintf("sbx-burst-%02d", i), Policy{Closed: true})
	}
	// The broken one: opened, then one of its rules deleted behind the
	// manager's back, so replacing its recorded rules fails.
	broken := setup(t, m, "sbx-burst-broken", Policy{})
	recorded, ok := m.recordedRules("sbx-burst-broken")
	if !ok || len(recorded) != 2 {
		t.Fatalf("recorded rules of the broken sandbox: %v %v", recorded, ok)
	}
	args := splitRule(recorded[1])
	args[0] = "-D"
	if _, err := m.platform.ipt4.run(ctx, args...); err != nil {
		t.Fatal(err)
	}
	runs.Store(0)
	policy := func(i int) Policy {
		if i%2 == 1 {
			return Policy{Allow: prefixes("203.0.113.0/24")}
		}
		return Policy{}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	var brokenErr error
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() { <-start; errs[i] = m.SetPolicy(ctx, fmt.Sprintf("sbx-burst-%02d", i), atts[i].IPv4, policy(i)) })
	}
	wg.Go(func() {
		<-start
		brokenErr = m.SetPolicy(ctx, "sbx-burst-broken", broken.IPv4, Policy{Allow: prefixes("203.0.113.0/24")})
	})
	close(start)
	wg.Wait()
	t.Logf("%d policy changes in %d iptables-restore runs", n+1, runs.Load())
	for i, err := range errs {
		if err != nil {
			t.Errorf("SetPolicy of sandbox %d: %v", i, err)
		}
	}
	if brokenErr == nil {
		t.Errorf("SetPolicy of the sandbox whose rules were changed behind the manager's back succeeded")
	}
	lines, err := m.sandboxRuleLines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, l := range lines {
		if id, ok := sandboxOfRule(l); ok {
			got[id] = append(got[id], l)
		}
	}
	for i := range n {
		id := fmt.Sprintf("sbx-burst-%02d", i)
		want := ip4Rules(m.chains, id, atts[i].IPv4, policy(i))
		if words(got[id]) != words(want) {
			t.Errorf("rules of %s:\n%q\nwant\n%q", id, got[id], want)
		}
		if rec, _ := m.recordedRules(id); fmt.Sprint(rec) != fmt.Sprint(want) {
			t.Errorf("recorded rules of %s: %q, want %q", id, rec, want)
		}
	}
	if words(got["sbx-burst-broken"]) != words(recorded[:1]) {
		t.Errorf("the broken sandbox's rules changed: %q, want %q", got["sbx-burst-broken"], recorded[:1])
	}
	out := serve(t, e.outside, "0.0.0.0:0")
	mustReach(t, atts[0].NetNSPath, out, out.at(inetB))
	mustReach(t, atts[1].NetNSPath, out, out.at(inetA))
	mustNotReach(t, atts[1].NetNSPath, out, out.at(inetB))
	for i := range n {
		if err := m.Teardown(ctx, fmt.Sprintf("sbx-burst-%02d", i)); err != nil {
			t.Error(err)
		}
	}
	if err := m.Teardown(ctx, "sbx-burst-broken"); err != nil {
		t.Error(err)
	}
	e.assertClean(t, m)
}

// words compares rule lines by their arguments (iptables -S quotes some
// that the recorded lines do not).
func words(lines []string) string {
	var out [][]string
	for _, l := range lines {
		out = append(out, splitRule(l))
	}
	return fmt.Sprintf("%q", out)
}

// TestSourceGuard: a sandbox must not get its neighbour's policy by
// sending with the neighbour's address. Unprivileged, the kernel already
// refuses to route from a non-local source (IP_FREEBIND binds, but sending
// fails); a process with CAP_NET_ADMIN or CAP_NET_RAW (which sandboxes do
// not get) could, and the guard inside the namespace stops it.
func TestSourceGuard(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	strict := setup(t, m, "sbx-strict", Policy{Allow: prefixes("203.0.113.0/24")})
	open := setup(t, m, "sbx-open", Policy{})

	var received atomic.Int32
	var pc net.PacketConn
	if err := inNetNS(e.outside, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", inetB.String()+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	dst := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	wait := func(want int32) int32 {
		deadline := time.Now().Add(time.Second)
		for received.Load() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		return received.Load()
	}

	// Control: the open sandbox, with its own address, gets through.
	if err := sendUDPFrom(open.NetNSPath, open.IPv4, dst, unix.IP_FREEBIND); err != nil {
		t.Fatalf("open sandbox send: %v", err)
	}
	if got := wait(1); got != 1 {
		t.Fatalf("open sandbox's packet not received (%d)", got)
	}
	// Unprivileged spoofing: refused by the kernel's routing.
	if err := sendUDPFrom(strict.NetNSPath, open.IPv4, dst, unix.IP_FREEBIND); !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("IP_FREEBIND send from a foreign address: %v, want ENETUNREACH", err)
	}
	// Privileged spoofing: dropped by the guard.
	if err := sendUDPFrom(strict.NetNSPath, open.IPv4, dst, unix.IP_TRANSPARENT); !errors.Is(err, unix.EPERM) {
		t.Errorf("IP_TRANSPARENT send from a foreign address: %v, want EPERM from the guard", err)
	}
	if got := wait(2); got != 1 {
		t.Errorf("a spoofed packet from the strict sandbox was received")
	}
	// Without the guard it would have worked: the test can see the hole.
	sh(t, strict.NetNSPath, "iptables", "-F", "OUTPUT")
	if err := sendUDPFrom(strict.NetNSPath, open.IPv4, dst, unix.IP_TRANSPARENT); err != nil {
		t.Fatalf("send without the guard: %v", err)
	}
	if got := wait(2); got != 2 {
		t.Errorf("control failed: without the guard the spoofed packet should arrive (%d)", got)
	}
}

// sendUDPFrom sends one datagram from namespace ns with source address src,
// which need not be local: opt is IP_FREEBIND (unprivileged) or
// IP_TRANSPARENT (needs CAP_NET_ADMIN, which the test has).
func sendUDPFrom(ns string, src netip.Addr, dst netip.AddrPort, opt int) error {
	return inNetNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, opt, 1); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
			return err
		}
		return unix.Sendto(fd, []byte("x"), 0, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())})
	})
}

// TestModeNone: loopback only.
func TestModeNone(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	att := setup(t, m, "sbx-none", Policy{Mode: ModeNone})
	if att.IPv4.IsValid() {
		t.Errorf("mode none got address %s", att.IPv4)
	}
	lo := serve(t, att.NetNSPath, "127.0.0.1:0")
	mustReach(t, att.NetNSPath, lo, lo.addr)
	out := serve(t, e.outside, "0.0.0.0:0")
	mustNotReach(t, att.NetNSPath, out, out.at(inetA))
	var names []string
	if err := inNetNS(att.NetNSPath, func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"lo"}) {
		t.Errorf("interfaces in mode none: %v", names)
	}
	if rc := readFile(t, att.ResolvConf); strings.Contains(rc, "nameserver") {
		t.Errorf("resolv.conf in mode none:\n%s", rc)
	}
	if got := readFile(t, att.Hosts); !strings.Contains(got, "127.0.1.1\tsbx-none\n") {
		t.Errorf("hosts:\n%s", got)
	}
	if lines := e.sandboxRules(t, m); len(lines) != 0 {
		t.Errorf("mode none has firewall rules: %v", lines)
	}
	if err := m.Teardown(context.Background(), "sbx-none"); err != nil {
		t.Fatal(err)
	}
	e.assertClean(t, m)
}

// TestResolvConfFromHost: nameservers come from the host's resolver files
// (loopback stubs and IPv6 skipped), with search and options.
func TestResolvConfFromHost(t *testing.T) {
	e := newEnv(t, false)
	hostFile := filepath.Join(e.dir, "host-resolv.conf")
	stubFile := filepath.Join(e.dir, "stub-resolv.conf")
	if err := os.WriteFile(stubFile, []byte("nameserver 127.0.0.53\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostFile, []byte("# upstream\nnameserver 127.0.0.1\nnameserver 2001:db8::53\nnameserver 10.99.0.53\nnameserver 198.51.100.53\nsearch corp.example\noptions ndots:2 timeout:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := e.manager(t, Config{Nameservers: []netip.Addr{}}, WithHostResolvConf(stubFile, hostFile))
	if got := fmt.Sprint(m.Nameservers()); got != "[10.99.0.53 198.51.100.53]" {
		t.Errorf("nameservers %s", got)
	}
	att := setup(t, m, "sbx-dns", Policy{})
	want := "# Generated by matrx for sandbox sbx-dns. Read-only.\nnameserver 10.99.0.53\nnameserver 198.51.100.53\nsearch corp.example\noptions ndots:2 timeout:1\n"
	if got := readFile(t, att.ResolvConf); got != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
	// Both resolvers got their port-53 exception, and nothing else.
	rules := sh(t, "", "iptables", "-S", m.chains.block)
	for _, r := range []string{"10.99.0.53/32", "198.51.100.53/32"} {
		if strings.Count(rules, "-d "+r+" -p") != 2 {
			t.Errorf("no udp+tcp port 53 exception for %s:\n%s", r, rules)
		}
	}
	if st, err := os.Stat(att.ResolvConf); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("resolv.conf mode: %v %v", st, err)
	}
}

// TestSetupFailureLeavesNothing exhausts a tiny subnet: the failing Setup
// (CNI ADD fails after the namespace was made) must undo everything.
func TestSetupFailureLeavesNothing(t *testing.T) {
	e := newEnv(t, false)
	e.subnet = netip.PrefixFrom(e.subnet.Addr(), 29) // .2-.6: five addresses
	m := e.manager(t, Config{})
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("sbx-full-%d", i)
		setup(t, m, id, Policy{})
		ids = append(ids, id)
	}
	before := e.snapshot(t, m)
	_, err := m.Setup(context.Background(), "sbx-overflow", Policy{})
	if err == nil {
		t.Fatal("Setup in a full subnet succeeded")
	}
	t.Logf("expected failure: %v", err)
	if after := e.snapshot(t, m); after != before {
		t.Errorf("failed Setup left something behind:\nbefore: %s\nafter:  %s", before, after)
	}
	for _, id := range ids {
		if err := m.Teardown(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	e.assertClean(t, m)
	// The freed addresses are usable again.
	setup(t, m, "sbx-again", Policy{})
}

// TestTeardownWithoutAUsableRecord: Teardown deletes a sandbox's rules in
// one step from the record Setup wrote; when a recorded rule is already
// gone, or the record names another sandbox, it falls back to listing the
// chain and still removes everything, and never touches a neighbour.
func TestTeardownWithoutAUsableRecord(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	setup(t, m, "sbx-neighbour", Policy{})
	setup(t, m, "sbx-a", Policy{Allow: prefixes("203.0.113.0/24", "198.51.100.0/24")})
	setup(t, m, "sbx-b", Policy{})
	recA, ok := m.recordedRules("sbx-a")
	if !ok || len(recA) != 3 {
		t.Fatalf("record of sbx-a: %q %v", recA, ok)
	}
	// The record says what iptables lists (up to quoting), so its "-D"
	// lines match the installed rules.
	norm := func(lines []string) []string {
		var out []string
		for _, l := range lines {
			out = append(out, strings.Join(splitRule(l), "\x00"))
		}
		slices.Sort(out)
		return out
	}
	var listed []string
	for _, l := range e.sandboxRules(t, m) {
		if id, _ := sandboxOfRule(l); id == "sbx-a" {
			listed = append(listed, l)
		}
	}
	if !slices.Equal(norm(listed), norm(recA)) {
		t.Fatalf("recorded rules differ from iptables -S:\n%s\nvs\n%s", strings.Join(recA, "\n"), strings.Join(listed, "\n"))
	}
	// And deleting by the record alone works (b's record is intact).
	recB, _ := m.recordedRules("sbx-b")
	if err := m.platform.ipt4.apply(context.Background(), deleteRules("filter", recB)); err != nil {
		t.Fatalf("delete by record: %v", err)
	}
	if err := m.platform.ipt4.apply(context.Background(), insertRules("filter", m.chains.sbx, func() [][]string {
		var specs [][]string
		for _, l := range recB {
			specs = append(specs, splitRule(l)[2:]) // drop "-A CHAIN"
		}
		return specs
	}())); err != nil {
		t.Fatalf("reinstall b's rules: %v", err)
	}
	// One of a's rules vanished (an operator, a partial earlier teardown).
	sh(t, "", append([]string{"iptables", "-D"}, splitRule(strings.Replace(recA[1], "-A ", "", 1))...)...)
	if err := m.Teardown(context.Background(), "sbx-a"); err != nil {
		t.Fatal(err)
	}
	// b's record was replaced by one naming the neighbour.
	recN, _ := m.recordedRules("sbx-neighbour")
	if err := os.WriteFile(m.rulesPath("sbx-b"), []byte(strings.Join(recN, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(context.Background(), "sbx-b"); err != nil {
		t.Fatal(err)
	}
	for _, l := range e.sandboxRules(t, m) {
		if id, _ := sandboxOfRule(l); id != "sbx-neighbour" {
			t.Errorf("rule left after teardown: %s", l)
		}
	}
	if got := len(e.sandboxRules(t, m)); got != 2 {
		t.Errorf("the neighbour has %d rules, want its 2", got)
	}
	if err := m.Teardown(context.Background(), "sbx-neighbour"); err != nil {
		t.Fatal(err)
	}
	e.assertClean(t, m)
}

// TestCycles: 50 Setup/Teardown cycles, five at a time, leave nothing.
func TestCycles(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	out := serve(t, e.outside, inetA.String()+":0")
	const n, parallel = 50, 5
	var wg sync.WaitGroup
	errc := make(chan error, n)
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			id := fmt.Sprintf("sbx-cycle-%02d", i)
			p := Policy{}
			if i%5 == 4 {
				p = Policy{Allow: prefixes("203.0.113.0/24")}
			}
			att, err := m.Setup(context.Background(), id, p)
			if err != nil {
				errc <- err
				return
			}
			if i%10 == 0 { // some of them also carry traffic
				if err := dial(att.NetNSPath, out.addr, allowTimeout); err != nil {
					errc <- fmt.Errorf("%s: %w", id, err)
				}
			}
			if err := m.Teardown(context.Background(), id); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	e.assertClean(t, m)
	// Teardown is idempotent.
	if err := m.Teardown(context.Background(), "sbx-cycle-00"); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

// TestGC simulates a crash: sandboxes set up by one Manager, the daemon
// "restarts" (a new Manager on the same state), one sandbox even lost its
// namespace mount (as after a reboot), and GC removes all but the kept one,
// which keeps working.
func TestGC(t *testing.T) {
	e := newEnv(t, true)
	m1 := e.manager(t, Config{})
	out := serve(t, e.outside, inetA.String()+":0")
	kept := setup(t, m1, "sbx-kept", Policy{})
	setup(t, m1, "sbx-lost-1", Policy{})
	lost2 := setup(t, m1, "sbx-lost-2", Policy{Allow: prefixes("203.0.113.0/24")})
	setup(t, m1, "sbx-lost-none", Policy{Mode: ModeNone})
	// The namespace of lost-2 disappears without CNI DEL: its veth is
	// gone, but its rules and lease remain.
	if err := unix.Unmount(lost2.NetNSPath, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	// It was made by an earlier matrxd, whose bridge plugin had ipMasq on:
	// it also left a masquerade chain, as that plugin names and tags it,
	// and no record of its rules.
	if err := os.Remove(m1.rulesPath("sbx-lost-2")); err != nil {
		t.Fatal(err)
	}
	legacy := "CNI-" + e.tag
	sh(t, "", "iptables", "-t", "nat", "-N", legacy)
	sh(t, "", "iptables", "-t", "nat", "-A", legacy, "-d", e.subnet.String(), "-j", "ACCEPT")
	sh(t, "", "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", lost2.IPv4.String()+"/32",
		"-m", "comment", "--comment", `name: "`+m1.network+`" id: "sbx-lost-2"`, "-j", legacy)
	t.Cleanup(func() { // only if GC failed to
		shErr("", "iptables", "-t", "nat", "-D", "POSTROUTING", "-s", lost2.IPv4.String()+"/32",
			"-m", "comment", "--comment", `name: "`+m1.network+`" id: "sbx-lost-2"`, "-j", legacy)
		shErr("", "iptables", "-t", "nat", "-F", legacy)
		shErr("", "iptables", "-t", "nat", "-X", legacy)
	})

	m2, err := New(context.Background(), Config{StateDir: m1.stateDir, Logger: e.log, Nameservers: []netip.Addr{resolver}},
		WithBridge(e.bridge), WithSubnet(e.subnet))
	if err != nil {
		t.Fatal(err)
	}
	// The restart kept the running sandbox's rules.
	mustReach(t, kept.NetNSPath, out, out.addr)
	if err := m2.GC(context.Background(), func(id string) bool { return id == "sbx-kept" }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	mustReach(t, kept.NetNSPath, out, out.addr)
	if got := e.sandboxIDs(t, m2); !slices.Equal(got, []string{"sbx-kept"}) {
		t.Errorf("after GC keeping sbx-kept, sandboxes with state: %v", got)
	}
	if err := m2.GC(context.Background(), func(string) bool { return false }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	e.assertClean(t, m2)
	if _, err := shErr("", "iptables", "-t", "nat", "-S", legacy); err == nil {
		t.Errorf("GC left the legacy masquerade chain %s", legacy)
	}
	if err := m2.GC(context.Background(), nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("GC(nil) = %v", err)
	}
}

// snapshot is a one-line summary of all state a Manager can leave behind.
func (e *testEnv) snapshot(t *testing.T, m *Manager) string {
	t.Helper()
	return fmt.Sprintf("ids=%v rules=%d nat=%d ports=%v netns=%v files=%v leases=%v cache=%v",
		e.sandboxIDs(t, m), len(e.sandboxRules(t, m)), len(e.natRules(t, m)), bridgePorts(e.bridge),
		dirNames(m.netnsDir), dirNames(m.filesDir), leaseNames(m), cacheNames(m))
}

// sandboxIDs is every id with any state, as GC sees it.
func (e *testEnv) sandboxIDs(t *testing.T, m *Manager) []string {
	t.Helper()
	ids, err := m.knownIDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func (e *testEnv) sandboxRules(t *testing.T, m *Manager) []string {
	t.Helper()
	var out []string
	// Only this manager's chains: other packages' tests (the daemon's) run
	// their own sandboxes, with their own chains, at the same time.
	for _, l := range strings.Split(sh(t, "", "iptables", "-S", m.chains.sbx), "\n") {
		if strings.Contains(l, commentPrefix) {
			out = append(out, l)
		}
	}
	return out
}

func (e *testEnv) natRules(t *testing.T, m *Manager) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(sh(t, "", "iptables", "-t", "nat", "-S"), "\n") {
		if strings.Contains(l, `name: \"`+m.network+`\"`) {
			out = append(out, l)
		}
	}
	return out
}

// assertClean: no sandbox of m has anything left anywhere.
func (e *testEnv) assertClean(t *testing.T, m *Manager) {
	t.Helper()
	if got := e.sandboxIDs(t, m); len(got) != 0 {
		t.Errorf("sandboxes with leftover state: %v", got)
	}
	if got := e.sandboxRules(t, m); len(got) != 0 {
		t.Errorf("leftover sandbox rules:\n%s", strings.Join(got, "\n"))
	}
	if got := e.natRules(t, m); len(got) != 0 {
		t.Errorf("leftover masquerade rules:\n%s", strings.Join(got, "\n"))
	}
	if got := bridgePorts(e.bridge); len(got) != 0 {
		t.Errorf("leftover veths on %s: %v", e.bridge, got)
	}
	if got := dirNames(m.netnsDir); len(got) != 0 {
		t.Errorf("leftover netns files: %v", got)
	}
	if got := dirNames(m.filesDir); len(got) != 0 {
		t.Errorf("leftover sandbox files: %v", got)
	}
	if got := leaseNames(m); len(got) != 0 {
		t.Errorf("leftover IPAM leases: %v", got)
	}
	if got := cacheNames(m); len(got) != 0 {
		t.Errorf("leftover libcni cache entries: %v", got)
	}
	// The shared chain is back to its tail alone.
	if got := strings.TrimSpace(sh(t, "", "iptables", "-S", m.chains.sbx)); got != "-N "+m.chains.sbx+"\n-A "+m.chains.sbx+" -j REJECT --reject-with icmp-admin-prohibited" {
		t.Errorf("%s:\n%s", m.chains.sbx, got)
	}
}

// assertUninstalled: after Uninstall nothing of the Manager remains.
func (e *testEnv) assertUninstalled(t *testing.T, m *Manager) {
	t.Helper()
	for _, table := range []string{"filter", "nat"} {
		for _, l := range strings.Split(sh(t, "", "iptables", "-t", table, "-S"), "\n") {
			if strings.Contains(l, e.bridge) || strings.Contains(l, `\"`+m.network+`\"`) {
				t.Errorf("left in iptables %s: %s", table, l)
			}
		}
	}
	for _, c := range []string{m.chains.fwd, m.chains.sbx, m.chains.block, m.chains.in} {
		if _, err := shErr("", "iptables", "-S", c); err == nil {
			t.Errorf("chain %s left after Uninstall", c)
		}
	}
	if _, err := shErr("", "iptables", "-t", "nat", "-S", m.chains.nat); err == nil {
		t.Errorf("nat chain %s left after Uninstall", m.chains.nat)
	}
	if strings.Contains(sh(t, "", "iptables", "-t", "nat", "-S", "POSTROUTING"), m.chains.nat) {
		t.Errorf("jump to %s left in POSTROUTING", m.chains.nat)
	}
	if out, err := shErr("", "ip6tables", "-S"); err == nil && strings.Contains(out, e.bridge) {
		t.Errorf("left in ip6tables:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", e.bridge)); err == nil {
		t.Errorf("bridge %s still exists", e.bridge)
	}
	if _, err := os.Stat(m.netnsDir); err == nil {
		t.Errorf("netns dir %s still exists", m.netnsDir)
	}
}

func bridgePorts(bridge string) []string {
	return dirNames(filepath.Join("/sys/class/net", bridge, "brif"))
}

func dirNames(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func leaseNames(m *Manager) []string {
	var out []string
	for path := range m.leaseIDs() {
		out = append(out, filepath.Base(path))
	}
	slices.Sort(out)
	return out
}

func cacheNames(m *Manager) []string {
	var out []string
	for _, n := range dirNames(libcniCacheDir) {
		if strings.HasPrefix(n, m.network+"-") {
			out = append(out, n)
		}
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// neighbourMAC returns the resolved MAC of ip in ns's ARP table ("" when
// unresolved).
func neighbourMAC(t *testing.T, ns string, ip netip.Addr) string {
	t.Helper()
	var mac string
	if err := inNetNS(ns, func() error {
		// /proc/self/net follows the process's namespace, not this thread's.
		b, err := os.ReadFile("/proc/thread-self/net/arp")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) >= 4 && f[0] == ip.String() && f[2] != "0x0" {
				mac = f[3]
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// TestGatewayPort: with Config.GatewayPort set, sandboxes reach exactly
// that TCP port on the gateway address, seen from their own address (so
// SandboxAt names them); every other port of the gateway and the same port
// on every other host address stay blocked.
func TestGatewayPort(t *testing.T) {
	e := newEnv(t, true)
	gw := e.subnet.Addr().Next()
	// The bridge (and so the gateway address) appears with the first
	// sandbox: bind before it exists, as matrxd does.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1) })
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", gw.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
	gwSrv := &server{addr: netip.AddrPortFrom(gw, port)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			gwSrv.hits.Add(1)
			gwSrv.peer.Store(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			_, _ = c.Write([]byte("hello from test host\n"))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })

	m := e.manager(t, Config{GatewayPort: port})
	a := setup(t, m, "sbx-a", Policy{})
	strict := setup(t, m, "sbx-strict", Policy{Allow: prefixes("203.0.113.0/24")})
	if m.Gateway() != gw {
		t.Fatalf("Gateway() = %v, want %v", m.Gateway(), gw)
	}

	mustReach(t, a.NetNSPath, gwSrv, gwSrv.addr)
	if got, _ := gwSrv.peer.Load().(netip.Addr); got != a.IPv4 {
		t.Errorf("the gateway port saw %v, want the sandbox's own %v", got, a.IPv4)
	}
	// An allow list does not close the way home (INPUT, not FORWARD).
	mustReach(t, strict.NetNSPath, gwSrv, gwSrv.addr)

	other := serve(t, "", "0.0.0.0:0")
	mustReach(t, "", other, other.at(netip.MustParseAddr("127.0.0.1")))
	mustNotReach(t, a.NetNSPath, other, other.at(gw))
	samePort := serve(t, "", netip.AddrPortFrom(transitHost, port).String())
	mustNotReach(t, a.NetNSPath, samePort, samePort.addr)
	mustNotReach(t, strict.NetNSPath, samePort, samePort.addr)

	for _, c := range []struct {
		addr netip.Addr
		want string
	}{
		{a.IPv4, "sbx-a"}, {strict.IPv4, "sbx-strict"}, {gw, ""}, {e.subnet.Addr(), ""},
		{transitHost, ""}, {a.IPv4.Next().Next().Next(), ""},
	} {
		if got, ok := m.SandboxAt(c.addr); got != c.want || ok != (c.want != "") {
			t.Errorf("SandboxAt(%v) = %q %v, want %q", c.addr, got, ok, c.want)
		}
	}
	if err := m.Teardown(context.Background(), "sbx-a"); err != nil {
		t.Fatal(err)
	}
	if got, ok := m.SandboxAt(a.IPv4); ok {
		t.Errorf("SandboxAt names %q after teardown", got)
	}
}

// TestTeardownDirect: a sandbox attached by this version is detached
// without the CNI plugins (its recorded host veth deleted through
// netlink), which removes the pair even while something still holds its
// namespace; a missing or stale record takes CNI DEL, and a record whose
// index does not match never deletes the link it names.
func TestTeardownDirect(t *testing.T) {
	e := newEnv(t, true)
	m := e.manager(t, Config{})
	veth := func(id string) (string, string) {
		t.Helper()
		b, err := os.ReadFile(m.vethPath(id))
		if err != nil {
			t.Fatalf("veth record of %s: %v", id, err)
		}
		name, idx, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		return name, idx
	}
	port := func(name string) bool { return slices.Contains(bridgePorts(e.bridge), name) }

	att := setup(t, m, "sbx-direct", Policy{})
	name, idx := veth("sbx-direct")
	if got, _ := os.ReadFile(filepath.Join("/sys/class/net", name, "ifindex")); strings.TrimSpace(string(got)) != idx || !port(name) {
		t.Fatalf("record %s %s does not name a port of %s (ifindex %q)", name, idx, e.bridge, got)
	}
	// Something still holds the namespace (a process stuck in the kernel,
	// say): the pair must go all the same.
	hold, err := os.Open(att.NetNSPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	// And the plugins are out of reach, so only the direct delete can
	// remove it.
	withPlugins := m.platform.cni
	noPlugins, err := gocni.New(gocni.WithMinNetworkCount(1), gocni.WithPluginDir([]string{t.TempDir()}), gocni.WithInterfacePrefix("eth"))
	if err == nil {
		err = noPlugins.Load(gocni.WithConfListFile(m.confPath))
	}
	if err != nil {
		t.Fatal(err)
	}
	m.platform.cni = noPlugins
	err = m.Teardown(context.Background(), "sbx-direct")
	m.platform.cni = withPlugins
	if err != nil {
		t.Fatal(err)
	}
	if port(name) {
		t.Fatalf("host veth %s still on the bridge after a direct detach", name)
	}

	// No record (attached by an older version): CNI DEL.
	setup(t, m, "sbx-legacy", Policy{})
	legacy, _ := veth("sbx-legacy")
	if err := os.Remove(m.vethPath("sbx-legacy")); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(context.Background(), "sbx-legacy"); err != nil {
		t.Fatal(err)
	}
	if port(legacy) {
		t.Fatalf("host veth %s of a sandbox without a record left", legacy)
	}

	// A record naming a neighbour's veth with another index deletes
	// nothing of the neighbour's.
	setup(t, m, "sbx-stale", Policy{})
	setup(t, m, "sbx-other", Policy{})
	other, otherIdx := veth("sbx-other")
	n, _ := strconv.Atoi(otherIdx)
	if err := os.WriteFile(m.vethPath("sbx-stale"), []byte(fmt.Sprintf("%s %d\n", other, n+1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(context.Background(), "sbx-stale"); err != nil {
		t.Fatal(err)
	}
	if !port(other) {
		t.Fatalf("a stale record took the neighbour's veth %s", other)
	}
	if got := bridgePorts(e.bridge); len(got) != 1 {
		t.Fatalf("bridge ports after the stale sandbox's teardown: %v, want only %s", got, other)
	}
	if err := m.Teardown(context.Background(), "sbx-other"); err != nil {
		t.Fatal(err)
	}
	e.assertClean(t, m)
}
