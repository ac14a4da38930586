package network

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
)

// Defaults for the optional knobs.
const (
	DefaultBridge = "matrx0"
	// DefaultChainPrefix names the iptables chains of the default bridge.
	DefaultChainPrefix = "MATRX"
	// MaxAllow bounds Policy.Allow (each entry is one iptables rule).
	MaxAllow = 64
)

// DefaultSubnet is the bridge's IPv4 subnet unless WithSubnet says otherwise.
func DefaultSubnet() netip.Prefix { return netip.MustParsePrefix("10.213.0.0/16") }

// DefaultPluginDirs are searched for the CNI plugin binaries.
func DefaultPluginDirs() []string { return []string{"/usr/lib/cni", "/opt/cni/bin"} }

// Config holds the Manager's required settings.
type Config struct {
	// StateDir holds the conflist, IPAM leases, namespaces and per-sandbox
	// files. Required; e.g. /var/lib/matrx/network.
	StateDir string
	// AllowInternal lists internal IPv4 ranges (RFC1918, CGNAT,
	// link-local...) that sandboxes may reach anyway, e.g. an internal
	// package mirror. It never opens the sandbox subnet itself.
	AllowInternal []netip.Prefix
	// Nameservers replaces the host's upstream resolvers (the non-loopback
	// IPv4 nameservers of /etc/resolv.conf) in every sandbox's resolv.conf.
	Nameservers []netip.Addr
	// GatewayPort, when not 0, is the one TCP port of the host that
	// sandboxes may reach, and only on the bridge gateway address (matrxd
	// serves its sandbox listener there). Every other port of the gateway,
	// and every other host address, stays blocked.
	GatewayPort uint16
	Logger      *slog.Logger
}

// Option configures optional Manager knobs.
type Option func(*settings)

type settings struct {
	bridge         string
	subnet         netip.Prefix
	netnsDir       string
	pluginDirs     []string
	hostResolvConf []string
	cniOnly        bool
}

// WithBridge names the Linux bridge (default matrx0). A bridge other than
// the default also gets its own iptables chains ("MATRX-<bridge>-...") and
// CNI network name, so several Managers (tests) can share one host.
func WithBridge(name string) Option { return func(s *settings) { s.bridge = name } }

// WithCNIAttach makes every Setup attach through the CNI plugins, as the
// first one after the bridge's creation does, instead of attaching
// directly (attach_linux.go). For tests of the plugin path and for
// comparing the two.
func WithCNIAttach() Option { return func(s *settings) { s.cniOnly = true } }

// WithSubnet sets the bridge's IPv4 subnet (default 10.213.0.0/16).
func WithSubnet(p netip.Prefix) Option { return func(s *settings) { s.subnet = p } }

// WithNetNSDir sets where sandbox namespaces are bind-mounted (default
// <StateDir>/netns).
func WithNetNSDir(dir string) Option { return func(s *settings) { s.netnsDir = dir } }

// WithPluginDirs sets where the CNI plugin binaries are looked up.
func WithPluginDirs(dirs ...string) Option {
	return func(s *settings) { s.pluginDirs = append([]string(nil), dirs...) }
}

// WithHostResolvConf sets the host resolver files read for upstream
// nameservers, in order, the first one with a usable nameserver winning
// (default /etc/resolv.conf, then systemd-resolved's
// /run/systemd/resolve/resolv.conf for hosts whose /etc/resolv.conf only
// points at the 127.0.0.53 stub).
func WithHostResolvConf(paths ...string) Option {
	return func(s *settings) { s.hostResolvConf = append([]string(nil), paths...) }
}

// Mode is the kind of network a sandbox gets.
type Mode string

// The modes a Policy may ask for.
const (
	// ModeDefault (also the zero value "") is an attachment to the bridge
	// with egress to everything except the always-blocked ranges, or only
	// to Policy.Allow when that is set.
	ModeDefault Mode = "default"
	// ModeNone is loopback only: a namespace without any CNI attachment.
	ModeNone Mode = "none"
)

// Policy is what one sandbox may reach.
type Policy struct {
	Mode Mode
	// Allow, when non-empty, switches to deny-by-default and allows only
	// these IPv4 prefixes. The always-blocked ranges stay blocked unless the
	// operator's Config.AllowInternal lists them.
	Allow []netip.Prefix
	// Closed attaches the sandbox (address, bridge port, resolv.conf) but
	// lets nothing it sends through: it has no rules, so the per-sandbox
	// chain's tail rejects every packet, until SetPolicy gives it its
	// real policy. A warm-pool sandbox is closed until it is claimed.
	Closed bool
}

// Validate checks what can be checked without a Manager: the mode and the
// shape of every Allow entry. Manager.CheckPolicy also checks Allow against
// the always-blocked ranges.
func (p Policy) Validate() error {
	switch p.Mode {
	case "", ModeDefault:
	case ModeNone:
		if len(p.Allow) > 0 {
			return fmt.Errorf("network mode %q allows no traffic, but an allow list was given: %w", ModeNone, errdefs.ErrInvalidArgument)
		}
	default:
		return fmt.Errorf("network mode %q: must be %q or %q: %w", p.Mode, ModeDefault, ModeNone, errdefs.ErrInvalidArgument)
	}
	if len(p.Allow) > MaxAllow {
		return fmt.Errorf("network allow list has %d entries, at most %d are allowed: %w", len(p.Allow), MaxAllow, errdefs.ErrInvalidArgument)
	}
	for _, a := range p.Allow {
		if err := checkPrefix("network allow list entry", a); err != nil {
			return err
		}
	}
	return nil
}

// checkPrefix requires a valid, canonical IPv4 prefix.
func checkPrefix(what string, p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%s %q is not a valid CIDR prefix: %w", what, p, errdefs.ErrInvalidArgument)
	case !p.Addr().Is4() || p.Addr().Is4In6():
		return fmt.Errorf("%s %s is not IPv4: sandboxes have no IPv6: %w", what, p, errdefs.ErrInvalidArgument)
	case p.Masked() != p:
		return fmt.Errorf("%s %s has host bits set (did you mean %s?): %w", what, p, p.Masked(), errdefs.ErrInvalidArgument)
	}
	return nil
}

// Attachment is a sandbox's network as the runtime needs it for the spec.
type Attachment struct {
	// NetNSPath is the bind-mounted network namespace to join.
	NetNSPath string
	// IPv4 is the sandbox's address on the bridge; invalid in ModeNone.
	IPv4 netip.Addr
	// ResolvConf and Hosts are host files to bind-mount read-only at
	// /etc/resolv.conf and /etc/hosts.
	ResolvConf string
	Hosts      string
}

// alwaysBlocked are the destinations no sandbox reaches unless the operator
// lists them in Config.AllowInternal. The sandbox subnet and the host's own
// addresses are blocked separately (and unconditionally).
func alwaysBlocked() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
		netip.MustParsePrefix("10.0.0.0/8"),     // RFC1918
		netip.MustParsePrefix("100.64.0.0/10"),  // CGNAT (RFC6598)
		netip.MustParsePrefix("127.0.0.0/8"),    // loopback (martian when routed)
		netip.MustParsePrefix("169.254.0.0/16"), // link-local, cloud metadata 169.254.169.254
		netip.MustParsePrefix("172.16.0.0/12"),  // RFC1918
		netip.MustParsePrefix("192.168.0.0/16"), // RFC1918
		netip.MustParsePrefix("224.0.0.0/4"),    // multicast
		netip.MustParsePrefix("240.0.0.0/4"),    // reserved, 255.255.255.255
	}
}

// sandboxComment is the iptables comment on every per-sandbox rule.
func sandboxComment(id string) string { return commentPrefix + id }

const commentPrefix = "matrx-sandbox="

// validateID accepts ids usable as a file name, a CNI container id and an
// iptables comment: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 bytes.
func validateID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("sandbox id %q: must be 1 to 128 characters: %w", id, errdefs.ErrInvalidArgument)
	}
	for i, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			i > 0 && (c == '-' || c == '_' || c == '.')
		if !ok {
			return fmt.Errorf("sandbox id %q: only letters, digits and -_. (not first) are allowed: %w", id, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// validBridgeName is an interface name the kernel accepts (IFNAMSIZ-1).
func validBridgeName(name string) error {
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n:") || name == "." || name == ".." {
		return fmt.Errorf("bridge name %q: must be 1 to 15 characters without '/', ':' or spaces: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Manager owns one bridge, its subnet, its chains and every sandbox
// namespace attached to it. It is safe for concurrent use.
type Manager struct {
	log        *slog.Logger
	stateDir   string
	bridge     string
	network    string // CNI network name
	subnet     netip.Prefix
	gateway    netip.Addr
	gwPort     uint16
	netnsDir   string
	filesDir   string
	ipamDir    string
	confPath   string
	pluginDirs []string
	allowIntl  []netip.Prefix
	resolvers  []netip.Addr
	resolv     resolvConf // search/options from the host
	chains     chains
	platform   platformState
	locks      idLocks
	firewallMu sync.Mutex // serializes our own iptables invocations
	// cniMu is held shared by CNI calls once the bridge is up, and alone
	// by a setup that finds it missing (see cniLock).
	cniMu       sync.RWMutex
	resolvFiles []string
	cniOnly     bool // WithCNIAttach
}

// buildManager validates the configuration and fills in everything that
// does not touch the host.
func buildManager(cfg Config, opts []Option) (*Manager, error) {
	s := settings{
		bridge:         DefaultBridge,
		subnet:         DefaultSubnet(),
		pluginDirs:     DefaultPluginDirs(),
		hostResolvConf: []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"},
	}
	for _, o := range opts {
		o(&s)
	}
	if cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("network state dir %q must be an absolute path: %w", cfg.StateDir, errdefs.ErrInvalidArgument)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := validBridgeName(s.bridge); err != nil {
		return nil, err
	}
	if err := checkPrefix("sandbox subnet", s.subnet); err != nil {
		return nil, err
	}
	if b := s.subnet.Bits(); b < 8 || b > 29 {
		return nil, fmt.Errorf("sandbox subnet %s: prefix length must be between 8 and 29: %w", s.subnet, errdefs.ErrInvalidArgument)
	}
	for _, p := range cfg.AllowInternal {
		if err := checkPrefix("AllowInternal entry", p); err != nil {
			return nil, err
		}
	}
	for _, a := range cfg.Nameservers {
		if err := checkNameserver(a, s.subnet); err != nil {
			return nil, err
		}
	}
	if len(s.pluginDirs) == 0 {
		return nil, fmt.Errorf("no CNI plugin directory configured: %w", errdefs.ErrInvalidArgument)
	}
	netnsDir := s.netnsDir
	if netnsDir == "" {
		netnsDir = filepath.Join(cfg.StateDir, "netns")
	}
	if !filepath.IsAbs(netnsDir) {
		return nil, fmt.Errorf("netns dir %q must be an absolute path: %w", netnsDir, errdefs.ErrInvalidArgument)
	}
	network, prefix := s.bridge, DefaultChainPrefix
	if s.bridge == DefaultBridge {
		network = "matrx"
	} else {
		prefix = DefaultChainPrefix + "-" + s.bridge
	}
	m := &Manager{
		log:         cfg.Logger,
		stateDir:    cfg.StateDir,
		bridge:      s.bridge,
		network:     network,
		subnet:      s.subnet,
		gateway:     s.subnet.Addr().Next(),
		gwPort:      cfg.GatewayPort,
		netnsDir:    netnsDir,
		filesDir:    filepath.Join(cfg.StateDir, "sandboxes"),
		ipamDir:     filepath.Join(cfg.StateDir, "ipam"),
		confPath:    filepath.Join(cfg.StateDir, "cni", network+".conflist"),
		pluginDirs:  s.pluginDirs,
		allowIntl:   append([]netip.Prefix(nil), cfg.AllowInternal...),
		resolvers:   append([]netip.Addr(nil), cfg.Nameservers...),
		chains:      chainNames(prefix),
		resolvFiles: s.hostResolvConf,
		cniOnly:     s.cniOnly,
	}
	m.locks.m = map[string]*idLock{}
	return m, nil
}

// checkNameserver accepts an IPv4 unicast resolver outside the sandbox
// subnet.
func checkNameserver(a netip.Addr, subnet netip.Prefix) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("nameserver address is not valid: %w", errdefs.ErrInvalidArgument)
	case !a.Is4():
		return fmt.Errorf("nameserver %s is not IPv4: sandboxes have no IPv6: %w", a, errdefs.ErrInvalidArgument)
	case a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("nameserver %s is not reachable from a sandbox: %w", a, errdefs.ErrInvalidArgument)
	case subnet.Contains(a):
		return fmt.Errorf("nameserver %s is inside the sandbox subnet %s: %w", a, subnet, errdefs.ErrInvalidArgument)
	}
	return nil
}

// CheckPolicy validates p for this Manager: Policy.Validate, plus every
// Allow entry must be reachable at all (not inside the sandbox subnet, and
// not wholly inside an always-blocked range that AllowInternal does not
// open).
func (m *Manager) CheckPolicy(p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	for _, a := range p.Allow {
		if a.Overlaps(m.subnet) && a.Bits() >= m.subnet.Bits() {
			return fmt.Errorf("network allow list entry %s is inside the sandbox subnet %s: sandboxes never reach each other: %w", a, m.subnet, errdefs.ErrInvalidArgument)
		}
		for _, b := range alwaysBlocked() {
			if !(b.Contains(a.Addr()) && a.Bits() >= b.Bits()) {
				continue
			}
			opened := false
			for _, ai := range m.allowIntl {
				if ai.Overlaps(a) {
					opened = true
					break
				}
			}
			if !opened {
				return fmt.Errorf("network allow list entry %s is inside the always-blocked range %s and the operator's internal allow list does not open it: %w", a, b, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// Bridge is the name of the Linux bridge sandboxes are attached to.
func (m *Manager) Bridge() string { return m.bridge }

// Subnet is the sandboxes' IPv4 subnet.
func (m *Manager) Subnet() netip.Prefix { return m.subnet }

// Gateway is the bridge's address on the sandbox subnet: the sandboxes'
// default route, and the address of the host they may reach on
// Config.GatewayPort.
func (m *Manager) Gateway() netip.Addr { return m.gateway }

// gatewayPort is the open gateway port as an address (invalid when none).
func (m *Manager) gatewayPort() netip.AddrPort {
	if m.gwPort == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(m.gateway, m.gwPort)
}

// Nameservers are the resolvers written into every resolv.conf.
func (m *Manager) Nameservers() []netip.Addr { return append([]netip.Addr(nil), m.resolvers...) }

func (m *Manager) netnsPath(id string) string { return filepath.Join(m.netnsDir, id) }
func (m *Manager) filesPath(id string) string { return filepath.Join(m.filesDir, id) }

// idLocks serializes Setup/Teardown of one sandbox id without serializing
// different sandboxes.
type idLocks struct {
	mu sync.Mutex
	m  map[string]*idLock
}

type idLock struct {
	mu   sync.Mutex
	refs int
}

func (l *idLocks) lock(id string) func() {
	l.mu.Lock()
	e, ok := l.m[id]
	if !ok {
		e = &idLock{}
		l.m[id] = e
	}
	e.refs++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(l.m, id)
		}
		l.mu.Unlock()
	}
}
