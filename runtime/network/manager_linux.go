package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/matrx-dev/matrx/undo"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/containerd/errdefs"
	gocni "github.com/containerd/go-cni"
	"golang.org/x/sys/unix"
)

// libcniCacheDir is where libcni keeps ADD results (go-cni cannot move it).
const libcniCacheDir = "/var/lib/cni/results"

// platformState is what the Linux Manager holds beyond the portable fields.
type platformState struct {
	cni   gocni.CNI
	ipt4  iptables
	ipt6  iptables
	have6 bool
}

// New prepares the host for sandbox networking: state directories, the CNI
// conflist, net.ipv4.ip_forward and the Manager's iptables chains. It is
// idempotent, and safe to call again after a daemon restart while sandboxes
// from the previous run still have rules: their per-sandbox rules are kept.
// The bridge itself is created by the bridge plugin on the first Setup.
func New(ctx context.Context, cfg Config, opts ...Option) (*Manager, error) {
	m, err := buildManager(cfg, opts)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("sandbox networking needs root: %w", errdefs.ErrFailedPrecondition)
	}
	for _, plugin := range []string{"bridge", "host-local"} {
		if !m.havePlugin(plugin) {
			return nil, fmt.Errorf("CNI plugin %q not found in %s (Debian: apt-get install containernetworking-plugins): %w",
				plugin, strings.Join(m.pluginDirs, ", "), errdefs.ErrFailedPrecondition)
		}
	}
	if m.platform.ipt4, err = lookIPTables("4"); err != nil {
		return nil, err
	}
	if m.platform.ipt6, err = lookIPTables("6"); err != nil {
		m.log.Warn("ip6tables not found: relying on IPv6 being disabled inside every sandbox", "error", err)
	} else {
		m.platform.have6 = true
	}

	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{m.stateDir, 0o711}, {m.netnsDir, 0o711}, {m.filesDir, 0o711},
		{m.ipamDir, 0o700}, {filepath.Dir(m.confPath), 0o755},
	} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("create network state dir: %w", err)
		}
	}
	if err := ensureSharedMount(m.netnsDir); err != nil {
		return nil, err
	}
	m.loadResolvers()

	if err := m.writeConfList(); err != nil {
		return nil, err
	}
	c, err := gocni.New(
		gocni.WithMinNetworkCount(1),
		gocni.WithPluginDir(m.pluginDirs),
		gocni.WithInterfacePrefix("eth"),
	)
	if err != nil {
		return nil, fmt.Errorf("initialise CNI: %w", err)
	}
	if err := c.Load(gocni.WithConfListFile(m.confPath)); err != nil {
		return nil, fmt.Errorf("load CNI config %s: %v: %w", m.confPath, err, errdefs.ErrFailedPrecondition)
	}
	m.platform.cni = c

	if err := enableIPForward(m.log); err != nil {
		return nil, err
	}
	if err := m.installFirewall(ctx); err != nil {
		return nil, err
	}
	m.log.Info("sandbox networking ready", "bridge", m.bridge, "subnet", m.subnet.String(),
		"chains", m.chains.fwd+","+m.chains.sbx+","+m.chains.block+","+m.chains.in,
		"nameservers", fmt.Sprint(m.resolvers), "allow_internal", fmt.Sprint(m.allowIntl))
	return m, nil
}

func (m *Manager) havePlugin(name string) bool {
	for _, d := range m.pluginDirs {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return true
		}
	}
	return false
}

// loadResolvers picks the sandboxes' nameservers (configured, or the first
// host resolver file with a usable one) and the search/options lines.
func (m *Manager) loadResolvers() {
	configured := len(m.resolvers) > 0
	haveSearch := false
	for _, f := range m.resolvFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		rc := parseResolvConf(string(data))
		kept, dropped := upstreamResolvers(rc.Nameservers)
		if !haveSearch && (configured || len(kept) > 0) {
			m.resolv = resolvConf{Search: rc.Search, Options: rc.Options}
			haveSearch = true
		}
		if configured {
			break
		}
		if len(dropped) > 0 {
			m.log.Debug("host nameservers sandboxes cannot use", "file", f, "dropped", fmt.Sprint(dropped))
		}
		if len(kept) > 0 {
			m.resolvers = kept
			m.log.Info("sandbox nameservers taken from the host", "file", f, "nameservers", fmt.Sprint(kept))
			break
		}
	}
	if len(m.resolvers) == 0 {
		m.log.Warn("no upstream nameserver usable from sandboxes: sandboxes will have no DNS; configure Nameservers",
			"files", strings.Join(m.resolvFiles, ","))
	}
	local := hostAddrs()
	for _, r := range m.resolvers {
		if local[r] {
			m.log.Warn("nameserver is an address of this host, which sandboxes can never reach; configure Nameservers", "nameserver", r.String())
		}
	}
}

func hostAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out[p.Addr()] = true
		}
	}
	return out
}

// writeConfList writes the conflist that go-cni then loads from disk.
func (m *Manager) writeConfList() error {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       m.network,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      m.bridge,
			"isGateway":   true,
			"ipMasq":      false, // one subnet-wide rule instead (staticRules)
			"hairpinMode": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": m.subnet.String(), "gateway": m.gateway.String()}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": m.ipamDir,
			},
		}},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode CNI config: %w", err)
	}
	return writeFileAtomic(m.confPath, append(data, '\n'), 0o644)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func enableIPForward(log *slog.Logger) error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		log.Debug("net.ipv4.ip_forward already enabled")
		return nil
	}
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable net.ipv4.ip_forward: %w", err)
	}
	log.Info("enabled net.ipv4.ip_forward: sandbox egress is routed (and masqueraded) through the host")
	return nil
}

// installFirewall creates or refreshes the Manager's chains and jumps.
func (m *Manager) installFirewall(ctx context.Context) error {
	m.firewallMu.Lock()
	defer m.firewallMu.Unlock()
	t := m.platform.ipt4
	ok, err := t.chainExists(ctx, "filter", m.chains.sbx)
	if err != nil {
		return err
	}
	if !ok {
		if _, err := t.run(ctx, "-t", "filter", "-N", m.chains.sbx); err != nil {
			return err
		}
	}
	if !t.has(ctx, "filter", m.chains.sbx, sbxTail()) {
		if _, err := t.run(ctx, append([]string{"-t", "filter", "-A", m.chains.sbx}, sbxTail()...)...); err != nil {
			return err
		}
	}
	if err := t.apply(ctx, staticRules(m.chains, m.bridge, m.subnet, m.resolvers, m.allowIntl)); err != nil {
		return err
	}
	for _, j := range m.chains.jumps4(m.bridge, m.subnet) {
		if err := t.ensureFirst(ctx, j); err != nil {
			return err
		}
	}
	if !m.platform.have6 {
		return nil
	}
	if err := m.platform.ipt6.apply(ctx, static6Rules(m.chains)); err != nil {
		return err
	}
	for _, j := range m.chains.jumps6(m.bridge) {
		if err := m.platform.ipt6.ensureFirst(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

// Setup creates the sandbox's network namespace, attaches it to the bridge
// (unless p.Mode is none), installs its firewall rules and writes its
// resolv.conf and hosts files. On any failure everything it made is undone.
// A sandbox id that is already set up is AlreadyExists.
func (m *Manager) Setup(ctx context.Context, id string, p Policy) (_ *Attachment, err error) {
	return m.setup(ctx, id, p, "")
}

// SetupIn is Setup for a network namespace that already exists at nsSrc
// (e.g. /proc/PID/ns/net of a created, not yet started container): the
// namespace is bind-mounted at the sandbox's netns path (so it outlives the
// container until Teardown) and attached in place. The runtime uses it with
// user namespaces, where the network namespace must be owned by the
// sandbox's user namespace (runc creates it) for sysfs mounts and for
// runc exec to join it.
func (m *Manager) SetupIn(ctx context.Context, id string, p Policy, nsSrc string) (_ *Attachment, err error) {
	if nsSrc == "" {
		return nil, fmt.Errorf("SetupIn needs a namespace path: %w", errdefs.ErrInvalidArgument)
	}
	return m.setup(ctx, id, p, nsSrc)
}

// Files returns where Setup/SetupIn write a sandbox's resolv.conf and hosts
// file. The runtime binds them into the container before the network is
// attached; PrepareFiles fills them.
func (m *Manager) Files(id string) (resolvConf, hosts string) {
	files := m.filesPath(id)
	return filepath.Join(files, "resolv.conf"), filepath.Join(files, "hosts")
}

// PrepareFiles writes a sandbox's resolv.conf and hosts file before its
// namespace exists (see SetupIn). Teardown removes them.
func (m *Manager) PrepareFiles(id string, p Policy) error {
	if err := validateID(id); err != nil {
		return err
	}
	if err := m.CheckPolicy(p); err != nil {
		return err
	}
	files := m.filesPath(id)
	if err := os.Mkdir(files, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("network of sandbox %s already set up: %w", id, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("create sandbox network files dir: %w", err)
	}
	var nameservers []netip.Addr
	if p.Mode != ModeNone {
		nameservers = m.resolvers
	}
	rc, hosts := m.Files(id)
	if err := writeFileAtomic(rc, []byte(renderResolvConf(id, nameservers, m.resolv.Search, m.resolv.Options)), 0o644); err != nil {
		os.RemoveAll(files)
		return err
	}
	if err := writeFileAtomic(hosts, []byte(renderHosts(id, netip.Addr{})), 0o644); err != nil {
		os.RemoveAll(files)
		return err
	}
	return nil
}

func (m *Manager) setup(ctx context.Context, id string, p Policy, nsSrc string) (_ *Attachment, err error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	if err := m.CheckPolicy(p); err != nil {
		return nil, err
	}
	unlock := m.locks.lock(id)
	defer unlock()
	log := m.log.With("sandbox_id", id)
	var rollback undo.Stack
	defer func() {
		if err != nil {
			rollback.Run(ctx, log)
		}
	}()

	files := m.filesPath(id)
	if nsSrc == "" {
		if err := os.Mkdir(files, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				return nil, fmt.Errorf("network of sandbox %s already set up: %w", id, errdefs.ErrAlreadyExists)
			}
			return nil, fmt.Errorf("create sandbox network files dir: %w", err)
		}
	} else if _, err := os.Stat(files); err != nil {
		// SetupIn after PrepareFiles; tolerate a missing dir all the same.
		if err := os.Mkdir(files, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create sandbox network files dir: %w", err)
		}
	}
	rollback.Push("remove network files", func(context.Context) error { return os.RemoveAll(files) })

	nsPath := m.netnsPath(id)
	if nsSrc == "" {
		err = createNetNS(nsPath, configureSandboxNS)
	} else {
		err = adoptNetNS(nsPath, nsSrc, configureSandboxNS)
	}
	if err != nil {
		return nil, err
	}
	rollback.Push("remove network namespace", func(context.Context) error { return removeNetNS(nsPath) })

	rcPath, hostsPath := m.Files(id)
	att := &Attachment{NetNSPath: nsPath, ResolvConf: rcPath, Hosts: hostsPath}
	var nameservers []netip.Addr
	if p.Mode != ModeNone {
		// The source guard does not depend on the address, so it goes in
		// while the plugin runs (an iptables-restore in a fresh namespace
		// takes 5-20 ms). Undo waits for it before the namespace goes.
		guard := make(chan error, 1)
		go func() { guard <- m.installSourceGuard(ctx, nsPath) }()
		waitGuard := sync.OnceValue(func() error { return <-guard })
		rollback.Push("wait for the source guard", func(context.Context) error { waitGuard(); return nil })
		// The plugin may fail half-way (a veth made, no address left), so
		// the undo step comes first.
		rollback.Push("CNI delete", func(ctx context.Context) error { return m.detach(ctx, id, nsPath) })
		m.cniMu.Lock()
		res, err := m.platform.cni.Setup(ctx, id, nsPath)
		m.cniMu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("attach sandbox %s to bridge %s: %v: %w", id, m.bridge, err, errdefs.ErrUnavailable)
		}
		ip, hostVeth, err := m.parseResult(res)
		if err != nil {
			return nil, err
		}
		att.IPv4 = ip
		if err := m.isolatePort(hostVeth); err != nil {
			return nil, err
		}
		if err := waitGuard(); err != nil {
			return nil, err
		}
		rollback.Push("remove firewall rules", func(ctx context.Context) error { return m.removeSandboxRules(ctx, id) })
		if err := m.installSandboxRules(ctx, id, ip, p); err != nil {
			return nil, err
		}
		nameservers = m.resolvers
	}
	if err := m.recordRules(id, ip4Rules(m.chains, id, att.IPv4, p)); err != nil {
		return nil, err
	}
	// Rewrite in place (same inode): a container may already bind them.
	rc := renderResolvConf(id, nameservers, m.resolv.Search, m.resolv.Options)
	if err := writeInPlace(att.ResolvConf, []byte(rc)); err != nil {
		return nil, err
	}
	if err := writeInPlace(att.Hosts, []byte(renderHosts(id, att.IPv4))); err != nil {
		return nil, err
	}
	mode := p.Mode
	if mode == "" {
		mode = ModeDefault
	}
	log.Info("sandbox network set up", "mode", string(mode), "ip", att.IPv4.String(), "allow", fmt.Sprint(p.Allow))
	return att, nil
}

// writeInPlace replaces a file's content without replacing the file, so a
// bind mount of it sees the new content.
func writeInPlace(path string, data []byte) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return writeFileAtomic(path, data, 0o644)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("rewrite %s: %w", path, err)
	}
	return f.Close()
}

func (m *Manager) parseResult(res *gocni.Result) (netip.Addr, string, error) {
	var (
		ip       netip.Addr
		hostVeth string
	)
	for name, c := range res.Interfaces {
		if c.Sandbox != "" {
			for _, ipc := range c.IPConfigs {
				if a, ok := netip.AddrFromSlice(ipc.IP); ok && a.Unmap().Is4() {
					ip = a.Unmap()
				}
			}
		} else if name != m.bridge && c.Mac != "" {
			hostVeth = name
		}
	}
	if !ip.IsValid() || !m.subnet.Contains(ip) {
		return ip, hostVeth, fmt.Errorf("CNI result has no IPv4 address in %s: %w", m.subnet, errdefs.ErrUnavailable)
	}
	if hostVeth == "" {
		return ip, hostVeth, fmt.Errorf("CNI result names no host veth: %w", errdefs.ErrUnavailable)
	}
	return ip, hostVeth, nil
}

// isolatePort marks the sandbox's bridge port isolated: isolated ports
// cannot exchange frames with each other (only with the bridge itself), so
// sandboxes are separated at layer 2 whether or not br_netfilter passes
// bridged traffic to iptables.
func (m *Manager) isolatePort(veth string) error {
	master, err := os.Readlink(filepath.Join("/sys/class/net", veth, "master"))
	if err != nil || filepath.Base(master) != m.bridge {
		return fmt.Errorf("host veth %s is not a port of bridge %s: %w", veth, m.bridge, errdefs.ErrUnavailable)
	}
	if err := os.WriteFile(filepath.Join("/sys/class/net", veth, "brport", "isolated"), []byte("1"), 0o644); err != nil {
		return fmt.Errorf("isolate bridge port %s: %v: %w", veth, err, errdefs.ErrUnavailable)
	}
	return nil
}

// installSourceGuard drops, inside the sandbox's namespace, every packet
// whose source is not an address of the namespace, so that a sandbox
// cannot borrow a neighbour's address (and policy). Unprivileged programs
// cannot do that anyway (routing refuses non-local sources without
// IP_TRANSPARENT); this is the layer for a process that holds CAP_NET_RAW,
// which sandboxes are not given. The namespace's only non-loopback
// address is the one CNI assigns: adding another, or removing the rule,
// needs CAP_NET_ADMIN, which defeats any in-namespace guard and which
// sandboxes are not given either. Not naming the address lets the guard go
// in while the plugin is still choosing it.
func (m *Manager) installSourceGuard(ctx context.Context, nsPath string) error {
	rules := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" +
		"-A OUTPUT -o lo -j ACCEPT\n" +
		"-A OUTPUT -m addrtype --src-type LOCAL -j ACCEPT\n" +
		"-A OUTPUT -j DROP\nCOMMIT\n"
	return inNetNS(nsPath, func() error {
		// Started from this thread, iptables-restore runs in the namespace.
		cmd := exec.CommandContext(ctx, m.platform.ipt4.restore, "-w", "10")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("install source guard in %s: %v: %s: %w", nsPath, err, strings.TrimSpace(string(out)), errdefs.ErrUnavailable)
		}
		return nil
	})
}

func (m *Manager) installSandboxRules(ctx context.Context, id string, ip netip.Addr, p Policy) error {
	m.firewallMu.Lock()
	defer m.firewallMu.Unlock()
	return m.platform.ipt4.apply(ctx, insertRules("filter", m.chains.sbx, sandboxRules(m.chains, id, ip, p)))
}

// ip4Rules are the "-A CHAIN ..." lines Setup installed for a sandbox
// (none without an address).
func ip4Rules(c chains, id string, ip netip.Addr, p Policy) []string {
	if !ip.IsValid() {
		return nil
	}
	var lines []string
	for _, r := range sandboxRules(c, id, ip, p) {
		lines = append(lines, "-A "+c.sbx+" "+joinArgs(r))
	}
	return lines
}

// rulesPath records the rules of a sandbox set up by this version, next to
// its resolv.conf (host-only: the sandbox sees the two files, not the
// directory). Its presence also says the sandbox has no masquerade chain of
// its own (see sweepNAT).
func (m *Manager) rulesPath(id string) string { return filepath.Join(m.filesPath(id), "rules") }

func (m *Manager) recordRules(id string, lines []string) error {
	data := strings.Join(lines, "\n")
	if len(lines) > 0 {
		data += "\n"
	}
	if err := writeFileAtomic(m.rulesPath(id), []byte(data), 0o600); err != nil {
		return fmt.Errorf("record firewall rules of %s: %w", id, err)
	}
	return nil
}

// recordedRules returns the recorded rules of a sandbox, ok false when
// there is no usable record (a sandbox of an earlier matrxd, a setup that
// failed before recording, a record that does not name this sandbox).
func (m *Manager) recordedRules(id string) (lines []string, ok bool) {
	b, err := os.ReadFile(m.rulesPath(id))
	if err != nil {
		return nil, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" {
			continue
		}
		if got, valid := sandboxOfRule(l); !valid || got != id || !strings.HasPrefix(l, "-A "+m.chains.sbx+" ") {
			return nil, false
		}
		lines = append(lines, l)
	}
	return lines, true
}

// removeSandboxRules deletes every rule whose comment names the sandbox:
// in one iptables-restore from the record Setup wrote (each iptables-nft
// listing costs 5-10 ms), or, without a usable record or if a recorded
// rule is already gone, by listing the chain.
func (m *Manager) removeSandboxRules(ctx context.Context, id string) error {
	m.firewallMu.Lock()
	defer m.firewallMu.Unlock()
	if lines, ok := m.recordedRules(id); ok {
		if len(lines) == 0 {
			return nil
		}
		if err := m.platform.ipt4.apply(ctx, deleteRules("filter", lines)); err == nil {
			return nil
		}
	}
	lines, err := m.sandboxRuleLines(ctx)
	if err != nil {
		return err
	}
	var mine []string
	for _, l := range lines {
		if got, ok := sandboxOfRule(l); ok && got == id {
			mine = append(mine, l)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	return m.platform.ipt4.apply(ctx, deleteRules("filter", mine))
}

// sandboxRuleLines lists the per-sandbox chain (nothing if it is gone).
func (m *Manager) sandboxRuleLines(ctx context.Context) ([]string, error) {
	ok, err := m.platform.ipt4.chainExists(ctx, "filter", m.chains.sbx)
	if err != nil || !ok {
		return nil, err
	}
	return m.platform.ipt4.list(ctx, "filter", m.chains.sbx)
}

// detach is CNI DEL. With the namespace gone (a reboot leaves an empty
// file), DEL runs without one: the plugin then only releases the lease, and
// the sweeps below remove the rest.
func (m *Manager) detach(ctx context.Context, id, nsPath string) error {
	path := ""
	if isNetNS(nsPath) {
		path = nsPath
	}
	m.cniMu.Lock()
	err := m.platform.cni.Remove(ctx, id, path)
	m.cniMu.Unlock()
	if err != nil {
		return fmt.Errorf("CNI delete for sandbox %s: %v: %w", id, err, errdefs.ErrUnavailable)
	}
	return nil
}

// Teardown removes everything Setup made for the sandbox: firewall rules,
// the CNI attachment (veth, masquerade rules, IPAM lease), the namespace
// and the files. It needs no memory of Setup (it works after a restart) and
// is idempotent: tearing down an unknown sandbox is not an error.
func (m *Manager) Teardown(ctx context.Context, id string) error {
	if err := validateID(id); err != nil {
		return err
	}
	unlock := m.locks.lock(id)
	defer unlock()
	log := m.log.With("sandbox_id", id)
	nsPath := m.netnsPath(id)
	var errs []error
	_, recorded := m.recordedRules(id)
	if err := m.removeSandboxRules(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if err := m.detach(ctx, id, nsPath); err != nil {
		log.Warn("CNI delete failed; removing its leftovers directly", "error", err)
	}
	if !recorded { // made by an earlier matrxd, or never fully set up
		if err := m.sweepNAT(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.sweepLeases(id); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(filepath.Join(libcniCacheDir, m.network+"-"+id+"-eth0")); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove libcni cache entry: %w", err))
	}
	if err := removeNetNS(nsPath); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(m.filesPath(id)); err != nil {
		errs = append(errs, fmt.Errorf("remove network files: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down network of sandbox %s: %w", id, err)
	}
	log.Debug("sandbox network torn down")
	return nil
}

// sweepNAT removes the bridge plugin's masquerade rule and chain for the
// sandbox if CNI DEL could not (it only finds them through the interface
// inside a live namespace). Sandboxes made since ipMasq was turned off
// have none; those of an earlier matrxd, still running across an upgrade,
// do.
func (m *Manager) sweepNAT(ctx context.Context, id string) error {
	m.firewallMu.Lock()
	defer m.firewallMu.Unlock()
	t := m.platform.ipt4
	lines, err := t.list(ctx, "nat", "POSTROUTING")
	if err != nil {
		return err
	}
	for _, l := range lines {
		got, chain, ok := cniMasqRule(l, m.network)
		if !ok || got != id {
			continue
		}
		if err := t.apply(ctx, deleteRules("nat", []string{l})); err != nil {
			return err
		}
		if err := t.removeChain(ctx, "nat", chain); err != nil {
			return err
		}
	}
	return nil
}

// leaseIDs maps each host-local lease file of this network to its owner.
func (m *Manager) leaseIDs() map[string]string {
	dir := filepath.Join(m.ipamDir, m.network)
	entries, _ := os.ReadDir(dir)
	out := map[string]string{}
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err != nil {
			continue // lock, last_reserved_ip.0
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		owner, _, _ := strings.Cut(string(data), "\n")
		out[filepath.Join(dir, e.Name())] = strings.TrimSpace(owner)
	}
	return out
}

func (m *Manager) sweepLeases(id string) error {
	for path, owner := range m.leaseIDs() {
		if owner != id {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove IPAM lease %s: %w", path, err)
		}
	}
	return nil
}

// GC tears down the network of every sandbox that has any leftover here
// (namespace, files, firewall rule, masquerade rule, IPAM lease or libcni
// cache entry) and that keep does not claim. Call it at startup, before
// Setup, or make keep also claim sandboxes being set up concurrently.
func (m *Manager) GC(ctx context.Context, keep func(id string) bool) error {
	if keep == nil {
		return fmt.Errorf("network GC needs a keep function: %w", errdefs.ErrInvalidArgument)
	}
	ids, err := m.knownIDs(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if keep(id) {
			continue
		}
		if err := m.Teardown(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		m.log.Info("removed leftover sandbox network", "sandbox_id", id)
	}
	return errors.Join(errs...)
}

// knownIDs lists every sandbox id with any trace in this Manager's state.
func (m *Manager) knownIDs(ctx context.Context) ([]string, error) {
	set := map[string]bool{}
	add := func(id string) {
		if validateID(id) == nil {
			set[id] = true
		}
	}
	for _, dir := range []string{m.netnsDir, m.filesDir} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			add(e.Name())
		}
	}
	for _, owner := range m.leaseIDs() {
		add(owner)
	}
	entries, _ := os.ReadDir(libcniCacheDir)
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), m.network+"-"); ok {
			if id, ok := strings.CutSuffix(rest, "-eth0"); ok {
				add(id)
			}
		}
	}
	m.firewallMu.Lock()
	defer m.firewallMu.Unlock()
	lines, err := m.sandboxRuleLines(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range lines {
		if id, ok := sandboxOfRule(l); ok {
			add(id)
		}
	}
	nat, err := m.platform.ipt4.list(ctx, "nat", "POSTROUTING")
	if err != nil {
		return nil, err
	}
	for _, l := range nat {
		if id, _, ok := cniMasqRule(l, m.network); ok {
			add(id)
		}
	}
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// Uninstall removes every sandbox network of this Manager and then the
// Manager's own host state: jumps, chains, the bridge, the namespace mount
// and its state subdirectories. The daemon never calls it (sandboxes
// outlive the daemon); it is for operators and tests.
func (m *Manager) Uninstall(ctx context.Context) error {
	errs := []error{m.GC(ctx, func(string) bool { return false })}
	m.firewallMu.Lock()
	t := m.platform.ipt4
	for _, j := range m.chains.jumps4(m.bridge, m.subnet) {
		errs = append(errs, t.deleteAll(ctx, j))
	}
	for _, c := range []string{m.chains.fwd, m.chains.sbx, m.chains.block, m.chains.in} {
		errs = append(errs, t.removeChain(ctx, "filter", c))
	}
	errs = append(errs, t.removeChain(ctx, "nat", m.chains.nat))
	if m.platform.have6 {
		for _, j := range m.chains.jumps6(m.bridge) {
			errs = append(errs, m.platform.ipt6.deleteAll(ctx, j))
		}
		errs = append(errs, m.platform.ipt6.removeChain(ctx, "filter", m.chains.v6))
	}
	m.firewallMu.Unlock()
	errs = append(errs, deleteBridge(m.bridge))
	// Only a namespace dir inside the state dir is ours to unmount.
	if rel, err := filepath.Rel(m.stateDir, m.netnsDir); err == nil && !strings.HasPrefix(rel, "..") && rel != "." {
		if err := unix.Unmount(m.netnsDir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m.netnsDir, err))
		}
		errs = append(errs, os.RemoveAll(m.netnsDir))
	}
	for _, d := range []string{m.filesDir, filepath.Join(m.ipamDir, m.network), m.confPath} {
		errs = append(errs, os.RemoveAll(d))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall sandbox networking: %w", err)
	}
	m.log.Info("sandbox networking uninstalled", "bridge", m.bridge)
	return nil
}

// deleteBridge takes the bridge down and deletes it (SIOCBRDELBR, as
// brctl delbr does). A missing bridge is not an error.
func deleteBridge(name string) error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", name, "bridge")); err != nil {
		return nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err == nil {
		ifr.SetUint16(ifr.Uint16() &^ unix.IFF_UP)
		_ = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	}
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCBRDELBR, uintptr(unsafe.Pointer(p))); errno != 0 && errno != unix.ENXIO {
		return fmt.Errorf("delete bridge %s: %w", name, errno)
	}
	return nil
}
