package network

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	gocni "github.com/containerd/go-cni"
)

// libcniCacheDir is where libcni keeps ADD results (go-cni cannot move it).
const libcniCacheDir = "/var/lib/cni/results"

// platformState is what the Linux Manager holds beyond the portable fields.
type platformState struct {
	cni   gocni.CNI
	ipt4  iptables
	ipt6  iptables
	have6 bool
	// filter4 merges the per-sandbox rule changes of ipt4's filter table
	// that wait at once into one transaction (batch.go).
	filter4 *ruleBatch
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
	m.platform.filter4 = &ruleBatch{table: "filter", run: m.platform.ipt4.apply, lock: &m.firewallMu}
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
