package network

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestPolicyValidate(t *testing.T) {
	many := make([]netip.Prefix, MaxAllow+1)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 32)
	}
	tests := []struct {
		name    string
		p       Policy
		wantErr string // substring; "" = valid
	}{
		{"zero value is default", Policy{}, ""},
		{"default", Policy{Mode: ModeDefault}, ""},
		{"none", Policy{Mode: ModeNone}, ""},
		{"allow list", Policy{Allow: prefixes("203.0.113.0/24", "198.51.100.7/32")}, ""},
		{"allow everything", Policy{Allow: prefixes("0.0.0.0/0")}, ""},
		{"unknown mode", Policy{Mode: "bridge"}, `mode "bridge"`},
		{"none with allow", Policy{Mode: ModeNone, Allow: prefixes("203.0.113.0/24")}, "allows no traffic"},
		{"ipv6", Policy{Allow: prefixes("2001:db8::/32")}, "not IPv4"},
		{"ipv4-mapped ipv6", Policy{Allow: prefixes("::ffff:203.0.113.0/120")}, "not IPv4"},
		{"host bits", Policy{Allow: prefixes("203.0.113.5/24")}, "did you mean 203.0.113.0/24"},
		{"invalid prefix", Policy{Allow: []netip.Prefix{{}}}, "not a valid CIDR"},
		{"too many", Policy{Allow: many}, "at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			checkErr(t, err, tt.wantErr)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("error %v is not InvalidArgument", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not mention %q", err, want)
	}
}

func TestCheckPolicy(t *testing.T) {
	m, err := buildManager(Config{StateDir: "/tmp/x", AllowInternal: prefixes("10.99.0.0/24", "192.168.5.0/24")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		allow   []netip.Prefix
		wantErr string
	}{
		{"public", prefixes("203.0.113.0/24"), ""},
		{"everything", prefixes("0.0.0.0/0"), ""},
		{"contains private ranges", prefixes("8.0.0.0/6", "0.0.0.0/1"), ""},
		{"internal opened by operator", prefixes("10.99.0.0/24"), ""},
		{"part of an opened range", prefixes("10.99.0.128/25"), ""},
		{"wider than opened range", prefixes("10.99.0.0/16"), ""}, // overlaps: the opened part is reachable
		{"rfc1918 not opened", prefixes("10.1.0.0/16"), "always-blocked range 10.0.0.0/8"},
		{"metadata", prefixes("169.254.169.254/32"), "169.254.0.0/16"},
		{"cgnat", prefixes("100.64.1.0/24"), "100.64.0.0/10"},
		{"multicast", prefixes("239.1.1.1/32"), "224.0.0.0/4"},
		{"sandbox subnet", prefixes("10.213.4.0/24"), "inside the sandbox subnet"},
		{"shape still checked", prefixes("10.99.0.1/24"), "host bits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, m.CheckPolicy(Policy{Allow: tt.allow}), tt.wantErr)
		})
	}
}

func TestBuildManagerConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		opts    []Option
		wantErr string
	}{
		{"defaults", Config{StateDir: "/var/lib/matrx/network"}, nil, ""},
		{"relative state dir", Config{StateDir: "state"}, nil, "absolute"},
		{"no state dir", Config{}, nil, "absolute"},
		{"bridge name too long", Config{StateDir: "/s"}, []Option{WithBridge("a-very-long-bridge")}, "1 to 15"},
		{"bridge name with slash", Config{StateDir: "/s"}, []Option{WithBridge("a/b")}, "without '/'"},
		{"ipv6 subnet", Config{StateDir: "/s"}, []Option{WithSubnet(netip.MustParsePrefix("fd00::/64"))}, "not IPv4"},
		{"subnet host bits", Config{StateDir: "/s"}, []Option{WithSubnet(netip.MustParsePrefix("10.213.0.1/16"))}, "host bits"},
		{"subnet too small", Config{StateDir: "/s"}, []Option{WithSubnet(netip.MustParsePrefix("10.213.0.0/30"))}, "between 8 and 29"},
		{"allow internal ipv6", Config{StateDir: "/s", AllowInternal: prefixes("fc00::/7")}, nil, "not IPv4"},
		{"nameserver loopback", Config{StateDir: "/s", Nameservers: []netip.Addr{netip.MustParseAddr("127.0.0.53")}}, nil, "not reachable"},
		{"nameserver in subnet", Config{StateDir: "/s", Nameservers: []netip.Addr{netip.MustParseAddr("10.213.0.1")}}, nil, "inside the sandbox subnet"},
		{"nameserver ipv6", Config{StateDir: "/s", Nameservers: []netip.Addr{netip.MustParseAddr("2001:db8::53")}}, nil, "not IPv4"},
		{"relative netns dir", Config{StateDir: "/s"}, []Option{WithNetNSDir("netns")}, "absolute"},
		{"no plugin dirs", Config{StateDir: "/s"}, []Option{WithPluginDirs()}, "plugin directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := buildManager(tt.cfg, tt.opts)
			checkErr(t, err, tt.wantErr)
		})
	}
}

func TestNamesDerivedFromBridge(t *testing.T) {
	m, err := buildManager(Config{StateDir: "/s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.chains.fwd != "MATRX-FWD" || m.chains.in != "MATRX-IN" || m.network != "matrx" || m.gateway.String() != "10.213.0.1" {
		t.Errorf("default names: %+v network %s gateway %s", m.chains, m.network, m.gateway)
	}
	if m.netnsPath("sbx-1") != "/s/netns/sbx-1" {
		t.Errorf("netns path %s", m.netnsPath("sbx-1"))
	}
	m, err = buildManager(Config{StateDir: "/s"}, []Option{WithBridge("mxt12345678901")})
	if err != nil {
		t.Fatal(err)
	}
	// iptables chain names may have at most 28 characters.
	for _, c := range []string{m.chains.fwd, m.chains.sbx, m.chains.block, m.chains.in, m.chains.v6} {
		if len(c) > 28 {
			t.Errorf("chain %q is longer than 28 characters", c)
		}
	}
	if m.network != "mxt12345678901" || m.chains.block != "MATRX-mxt12345678901-BLOCK" {
		t.Errorf("names for a test bridge: %+v network %s", m.chains, m.network)
	}
}

func TestValidateID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"sbx-0123456789ab", true},
		{"a", true},
		{"A.b_c-9", true},
		{"", false},
		{"-leading", false},
		{".hidden", false},
		{"..", false},
		{"a/b", false},
		{"a b", false},
		{"a\"b", false},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
	}
	for _, tt := range tests {
		err := validateID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("validateID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("validateID(%q) error is not InvalidArgument: %v", tt.id, err)
		}
	}
}

func TestIDLocks(t *testing.T) {
	var l idLocks
	l.m = map[string]*idLock{}
	u1 := l.lock("a")
	u2 := l.lock("b") // different ids do not block each other
	done := make(chan struct{})
	go func() {
		u := l.lock("a")
		u()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("second lock of the same id did not wait")
	default:
	}
	u1()
	<-done
	u2()
	if len(l.m) != 0 {
		t.Errorf("lock map not emptied: %v", l.m)
	}
}

func TestParseResolvConf(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want resolvConf
	}{
		{"empty", "", resolvConf{}},
		{
			"typical",
			"# comment\nnameserver 10.255.255.53\nnameserver 2001:db8::1%eth0\nsearch a.example b.example\noptions ndots:2 edns0\n",
			resolvConf{
				Nameservers: []netip.Addr{netip.MustParseAddr("10.255.255.53"), netip.MustParseAddr("2001:db8::1")},
				Search:      []string{"a.example", "b.example"},
				Options:     []string{"ndots:2", "edns0"},
			},
		},
		{
			"domain then search, last wins; junk ignored",
			"domain old.example\nnameserver not-an-ip\nnameserver\nsearch new.example ; trailing comment\nbogus line here\n",
			resolvConf{Search: []string{"new.example"}},
		},
		{
			"options accumulate, inline comments",
			"options rotate\noptions timeout:1 # why\nnameserver 192.0.2.53 # primary\n",
			resolvConf{Nameservers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}, Options: []string{"rotate", "timeout:1"}},
		},
		{"systemd stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
			resolvConf{Nameservers: []netip.Addr{netip.MustParseAddr("127.0.0.53")}, Options: []string{"edns0", "trust-ad"}, Search: []string{"."}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseResolvConf(tt.in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestUpstreamResolvers(t *testing.T) {
	in := []netip.Addr{
		netip.MustParseAddr("127.0.0.53"),
		netip.MustParseAddr("10.255.255.53"),
		netip.MustParseAddr("::1"),
		netip.MustParseAddr("2001:db8::53"),
		netip.MustParseAddr("0.0.0.0"),
		netip.MustParseAddr("::ffff:198.51.100.53"),
		netip.MustParseAddr("169.254.169.253"),
	}
	kept, dropped := upstreamResolvers(in)
	want := []netip.Addr{netip.MustParseAddr("10.255.255.53"), netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("169.254.169.253")}
	if !reflect.DeepEqual(kept, want) {
		t.Errorf("kept %v, want %v", kept, want)
	}
	if len(dropped) != 4 {
		t.Errorf("dropped %v, want 4 entries", dropped)
	}
}

func TestRenderFiles(t *testing.T) {
	got := renderResolvConf("sbx-1", []netip.Addr{netip.MustParseAddr("10.99.0.53")}, []string{"corp.example"}, []string{"ndots:2"})
	want := "# Generated by matrx for sandbox sbx-1. Read-only.\nnameserver 10.99.0.53\nsearch corp.example\noptions ndots:2\n"
	if got != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
	got = renderResolvConf("sbx-1", nil, nil, nil)
	if strings.Contains(got, "nameserver") || !strings.Contains(got, "no DNS") {
		t.Errorf("resolv.conf without network:\n%s", got)
	}
	if rc := parseResolvConf(got); len(rc.Nameservers) != 0 {
		t.Errorf("rendered file parses with nameservers %v", rc.Nameservers)
	}
	h := renderHosts("sbx-1", netip.MustParseAddr("10.213.0.7"))
	if !strings.Contains(h, "127.0.0.1\tlocalhost\n") || !strings.Contains(h, "10.213.0.7\tsbx-1\n") || strings.Contains(h, "::1") {
		t.Errorf("hosts:\n%s", h)
	}
	if h := renderHosts("sbx-1", netip.Addr{}); !strings.Contains(h, "127.0.1.1\tsbx-1\n") {
		t.Errorf("hosts without network:\n%s", h)
	}
}

func TestStaticRules(t *testing.T) {
	c := chainNames("MATRX")
	got := staticRules(c, "matrx0", netip.MustParsePrefix("10.213.0.0/16"), netip.AddrPort{},
		[]netip.Addr{netip.MustParseAddr("10.255.255.53")}, prefixes("10.99.0.0/24"))
	lines := strings.Split(strings.TrimSpace(got), "\n")
	want := []string{
		"*filter",
		":MATRX-FWD - [0:0]",
		":MATRX-BLOCK - [0:0]",
		":MATRX-IN - [0:0]",
		"-A MATRX-FWD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-A MATRX-FWD -i matrx0 -j MATRX-SBX",
		"-A MATRX-FWD -j DROP",
		"-A MATRX-BLOCK -d 10.213.0.0/16 -j REJECT --reject-with icmp-admin-prohibited",
		"-A MATRX-BLOCK -d 10.255.255.53/32 -p udp --dport 53 -j ACCEPT",
		"-A MATRX-BLOCK -d 10.255.255.53/32 -p tcp --dport 53 -j ACCEPT",
		"-A MATRX-BLOCK -d 10.99.0.0/24 -j RETURN",
	}
	if !reflect.DeepEqual(lines[:len(want)], want) {
		t.Errorf("static rules start:\n%s\nwant:\n%s", strings.Join(lines[:len(want)], "\n"), strings.Join(want, "\n"))
	}
	for _, p := range []string{"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "224.0.0.0/4"} {
		if !strings.Contains(got, "-A MATRX-BLOCK -d "+p+" -j REJECT") {
			t.Errorf("static rules do not block %s", p)
		}
	}
	if !strings.Contains(got, "-A MATRX-IN -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A MATRX-IN -j REJECT --reject-with icmp-admin-prohibited\nCOMMIT\n") {
		t.Errorf("input chain:\n%s", got)
	}
	// The sandbox listener's port: TCP, the gateway address only, before
	// the reject.
	withPort := staticRules(c, "matrx0", netip.MustParsePrefix("10.213.0.0/16"), netip.MustParseAddrPort("10.213.0.1:8787"), nil, nil)
	if !strings.Contains(withPort, "-A MATRX-IN -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"+
		"-A MATRX-IN -d 10.213.0.1/32 -p tcp -m tcp --dport 8787 -j ACCEPT\n-A MATRX-IN -j REJECT --reject-with icmp-admin-prohibited\n") {
		t.Errorf("input chain with the gateway port:\n%s", withPort)
	}
	if strings.Contains(got, "--dport 8787") {
		t.Errorf("gateway port open without being configured:\n%s", got)
	}
	if !strings.HasSuffix(got, "*nat\n:MATRX-NAT - [0:0]\n-A MATRX-NAT -d 10.213.0.0/16 -j RETURN\n-A MATRX-NAT -d 224.0.0.0/4 -j RETURN\n-A MATRX-NAT -j MASQUERADE\nCOMMIT\n") {
		t.Errorf("nat chain:\n%s", got)
	}
}

func TestSandboxRules(t *testing.T) {
	c := chainNames("MATRX")
	ip := netip.MustParseAddr("10.213.0.5")
	got := insertRules("filter", c.sbx, sandboxRules(c, "sbx-1", ip, Policy{}))
	want := "*filter\n" +
		"-I MATRX-SBX 1 -s 10.213.0.5/32 -m comment --comment matrx-sandbox=sbx-1 -j ACCEPT\n" +
		"-I MATRX-SBX 1 -s 10.213.0.5/32 -m comment --comment matrx-sandbox=sbx-1 -j MATRX-BLOCK\n" +
		"COMMIT\n"
	if got != want {
		t.Errorf("default mode:\n%s\nwant:\n%s", got, want)
	}
	rules := sandboxRules(c, "sbx-2", ip, Policy{Allow: prefixes("203.0.113.0/24", "198.51.100.0/24")})
	gotRules := make([]string, len(rules))
	for i, r := range rules {
		gotRules[i] = joinArgs(r)
	}
	wantRules := []string{
		"-s 10.213.0.5/32 -m comment --comment matrx-sandbox=sbx-2 -j MATRX-BLOCK",
		"-s 10.213.0.5/32 -d 203.0.113.0/24 -m comment --comment matrx-sandbox=sbx-2 -j ACCEPT",
		"-s 10.213.0.5/32 -d 198.51.100.0/24 -m comment --comment matrx-sandbox=sbx-2 -j ACCEPT",
	}
	if !reflect.DeepEqual(gotRules, wantRules) {
		t.Errorf("allow list:\n%s\nwant:\n%s", strings.Join(gotRules, "\n"), strings.Join(wantRules, "\n"))
	}
}

func TestParseSavedRules(t *testing.T) {
	tests := []struct {
		line string
		id   string
		ok   bool
	}{
		{`-A MATRX-SBX -s 10.213.0.5/32 -m comment --comment "matrx-sandbox=sbx-1" -j MATRX-BLOCK`, "sbx-1", true},
		{`-A MATRX-SBX -s 10.213.0.5/32 -m comment --comment matrx-sandbox=sbx-1 -j ACCEPT`, "sbx-1", true},
		{`-A MATRX-SBX -j REJECT --reject-with icmp-admin-prohibited`, "", false},
		{`-A MATRX-SBX -m comment --comment "matrx-sandbox=bad id" -j ACCEPT`, "", false},
		{`-A MATRX-SBX -m comment --comment "other=sbx-1" -j ACCEPT`, "", false},
	}
	for _, tt := range tests {
		id, ok := sandboxOfRule(tt.line)
		if id != tt.id || ok != tt.ok {
			t.Errorf("sandboxOfRule(%s) = %q, %v; want %q, %v", tt.line, id, ok, tt.id, tt.ok)
		}
	}
	masq := []struct {
		line, network, id, chain string
		ok                       bool
	}{
		{`-A POSTROUTING -s 10.213.0.2/32 -m comment --comment "name: \"matrx\" id: \"sbx-1\"" -j CNI-0123abcd`, "matrx", "sbx-1", "CNI-0123abcd", true},
		{`-A POSTROUTING -s 10.213.0.2/32 -m comment --comment "name: \"other\" id: \"sbx-1\"" -j CNI-0123abcd`, "matrx", "", "", false},
		{`-A POSTROUTING -s 10.213.0.2/32 -m comment --comment "name: \"matrx\" id: \"sbx-1\"" -j MASQUERADE`, "matrx", "", "", false},
		{`-A CNI-0123abcd -d 10.213.0.0/16 -m comment --comment "name: \"matrx\" id: \"sbx-1\"" -j ACCEPT`, "matrx", "", "", false},
		{`-A POSTROUTING -s 10.213.0.2/32 -m comment --comment "name: \"matrx\" id: \"../x\"" -j CNI-0123abcd`, "matrx", "", "", false},
	}
	for _, tt := range masq {
		id, chain, ok := cniMasqRule(tt.line, tt.network)
		if id != tt.id || chain != tt.chain || ok != tt.ok {
			t.Errorf("cniMasqRule(%s) = %q %q %v; want %q %q %v", tt.line, id, chain, ok, tt.id, tt.chain, tt.ok)
		}
	}
	del := deleteRules("filter", []string{`-A MATRX-SBX -s 10.213.0.5/32 -m comment --comment "matrx-sandbox=sbx-1" -j ACCEPT`})
	if del != "*filter\n-D MATRX-SBX -s 10.213.0.5/32 -m comment --comment \"matrx-sandbox=sbx-1\" -j ACCEPT\nCOMMIT\n" {
		t.Errorf("deleteRules:\n%s", del)
	}
}

func TestSplitRuleRoundTrip(t *testing.T) {
	args := []string{"-A", "X", "-m", "comment", "--comment", `name: "a b" \ id`, "", "-j", "ACCEPT"}
	if got := splitRule(joinArgs(args)); !reflect.DeepEqual(got, args) {
		t.Errorf("round trip: %q -> %q", args, got)
	}
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add("nameserver 10.0.0.1\nsearch a b\noptions ndots:1\n")
	f.Add("domain x\n#c\n;c\nnameserver ::1%lo\n")
	f.Fuzz(func(t *testing.T, data string) {
		rc := parseResolvConf(data)
		kept, _ := upstreamResolvers(rc.Nameservers)
		// Rendering and parsing again keeps what sandboxes get.
		again := parseResolvConf(renderResolvConf("id", kept, rc.Search, rc.Options))
		if !reflect.DeepEqual(again.Nameservers, kept) && !(len(again.Nameservers) == 0 && len(kept) == 0) {
			t.Errorf("nameservers %v became %v", kept, again.Nameservers)
		}
	})
}

func FuzzSplitRule(f *testing.F) {
	f.Add("a", `name: "x" id: "y"`, "c")
	f.Add("", `\`, `"`)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		for _, s := range []string{a, b, c} {
			if strings.ContainsAny(s, "\n\r\x00") {
				t.Skip("iptables arguments are single-line")
			}
		}
		args := []string{a, b, c}
		if got := splitRule(joinArgs(args)); !reflect.DeepEqual(got, args) {
			t.Errorf("round trip: %q -> %q", args, got)
		}
	})
}
