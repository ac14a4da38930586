package network

// Garbage collection after a crash, and removal of the whole network.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

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
		out[filepath.Join(dir, e.Name())] = leaseOwner(data)
	}
	return out
}

// leaseOwner is the sandbox id a host-local lease file names (its first
// line; "ID\r\neth0").
func leaseOwner(data []byte) string {
	owner, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(owner)
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
