package network

// Firewall: matrx's own iptables chains, installed once per daemon, and
// each sandbox's rules, recorded at setup so teardown can delete exactly
// them in one iptables-restore.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

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
	if err := t.apply(ctx, staticRules(m.chains, m.bridge, m.subnet, m.gatewayPort(), m.resolvers, m.allowIntl)); err != nil {
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

// isolatePort marks the sandbox's bridge port isolated: isolated ports
// cannot exchange frames with each other (only with the bridge itself), so
// sandboxes are separated at layer 2 whether or not br_netfilter passes
// bridged traffic to iptables.
func (m *Manager) isolatePort(veth string) error {
	if !m.isPort(veth) {
		return fmt.Errorf("host veth %s is not a port of bridge %s: %w", veth, m.bridge, errdefs.ErrUnavailable)
	}
	if err := writeRTNLSysctl(filepath.Join("/sys/class/net", veth, "brport", "isolated"), "1"); err != nil {
		return fmt.Errorf("isolate bridge port %s: %v: %w", veth, err, errdefs.ErrUnavailable)
	}
	return nil
}

// isPort reports whether the host interface veth is a port of this
// manager's bridge.
func (m *Manager) isPort(veth string) bool {
	master, err := os.Readlink(filepath.Join("/sys/class/net", veth, "master"))
	return err == nil && filepath.Base(master) == m.bridge
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
	return m.platform.filter4.apply(ctx, insertRules("filter", m.chains.sbx, sandboxRules(m.chains, id, ip, p)))
}

// SetPolicy replaces the rules of a sandbox that is set up (at address ip)
// with those of p, in one iptables-restore transaction: no packet is ever
// judged by a mix of the two, nor by neither. It is how a warm-pool
// sandbox, set up Closed, is opened for the user who claimed it.
func (m *Manager) SetPolicy(ctx context.Context, id string, ip netip.Addr, p Policy) error {
	if err := validateID(id); err != nil {
		return err
	}
	if !ip.IsValid() || !m.subnet.Contains(ip) {
		return fmt.Errorf("sandbox %s: address %v is not in the sandbox subnet %s: %w", id, ip, m.subnet, errdefs.ErrInvalidArgument)
	}
	if p.Mode == ModeNone {
		return fmt.Errorf("sandbox %s is attached to the bridge; mode %q needs a sandbox without an attachment: %w", id, ModeNone, errdefs.ErrInvalidArgument)
	}
	if err := m.CheckPolicy(p); err != nil {
		return err
	}
	unlock := m.locks.lock(id)
	defer unlock()
	old, ok := m.recordedRules(id)
	if !ok {
		return fmt.Errorf("sandbox %s has no recorded firewall rules to replace: %w", id, errdefs.ErrFailedPrecondition)
	}
	for _, l := range old {
		if !strings.Contains(l, "-s "+netip.PrefixFrom(ip, 32).String()+" ") {
			return fmt.Errorf("sandbox %s's recorded rules are not for address %s: %w", id, ip, errdefs.ErrFailedPrecondition)
		}
	}
	next := ip4Rules(m.chains, id, ip, p)
	err := m.platform.filter4.apply(ctx, replaceRules("filter", m.chains.sbx, old, sandboxRules(m.chains, id, ip, p)))
	if err != nil {
		return fmt.Errorf("set firewall rules of %s: %w", id, err)
	}
	return m.recordRules(id, next)
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
	if lines, ok := m.recordedRules(id); ok {
		if len(lines) == 0 {
			return nil
		}
		if err := m.platform.filter4.apply(ctx, deleteRules("filter", lines)); err == nil {
			return nil
		}
	}
	m.firewallMu.Lock()
	defer m.firewallMu.Unlock()
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
