package network

// Setup: attaching a sandbox's network namespace to the bridge (CNI), its
// firewall rules and its resolv.conf and hosts files.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/matrx-dev/matrx/undo"

	"github.com/containerd/errdefs"
	gocni "github.com/containerd/go-cni"
)

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
	var cniTook, rulesTook time.Duration // for the log line
	attachedBy := ""
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
		t0 := time.Now()
		ip, hostVeth, how, err := m.attach(ctx, id, nsPath)
		cniTook = time.Since(t0)
		attachedBy = how
		if err != nil {
			return nil, err
		}
		att.IPv4 = ip
		if err := m.isolatePort(hostVeth); err != nil {
			return nil, err
		}
		if err := m.recordVeth(id, hostVeth); err != nil {
			return nil, err
		}
		if err := waitGuard(); err != nil {
			return nil, err
		}
		rollback.Push("remove firewall rules", func(ctx context.Context) error { return m.removeSandboxRules(ctx, id) })
		t0 = time.Now()
		if err := m.installSandboxRules(ctx, id, ip, p); err != nil {
			return nil, err
		}
		rulesTook = time.Since(t0)
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
	log.Info("sandbox network set up", "mode", string(mode), "ip", att.IPv4.String(), "allow", fmt.Sprint(p.Allow),
		"attach", attachedBy, "cni_ms", float64(cniTook.Microseconds()/100)/10, "rules_ms", float64(rulesTook.Microseconds()/100)/10)
	return att, nil
}

// attach attaches the namespace to the bridge: directly (attach_linux.go)
// once the bridge is ready, through the CNI plugins to make it. how says
// which ("direct" or "cni"), for the log.
func (m *Manager) attach(ctx context.Context, id, nsPath string) (ip netip.Addr, hostVeth, how string, err error) {
	unlock, ready := m.cniLock()
	defer unlock()
	if ready && !m.cniOnly {
		ip, hostVeth, err = m.attachDirect(id, nsPath)
		return ip, hostVeth, "direct", err
	}
	res, err := m.platform.cni.Setup(ctx, id, nsPath)
	if err != nil {
		return netip.Addr{}, "", "cni", fmt.Errorf("attach sandbox %s to bridge %s: %v: %w", id, m.bridge, err, errdefs.ErrUnavailable)
	}
	ip, hostVeth, err = m.parseResult(res)
	return ip, hostVeth, "cni", err
}

// cniLock lets CNI ADDs of different sandboxes run at once (each is two
// plugin processes, bridge and host-local, whose IPAM leases are taken
// under host-local's own file lock) once the bridge exists with its
// gateway address. Until then, on the first setup or after the bridge was
// removed, one ADD runs alone: concurrent bridge plugins would race to
// create the bridge and to add its address, and the loser would fail its
// create. ready reports that the bridge was ready (and the lock is
// shared).
func (m *Manager) cniLock() (unlock func(), ready bool) {
	if m.bridgeReady() {
		m.cniMu.RLock()
		return m.cniMu.RUnlock, true
	}
	m.cniMu.Lock()
	return m.cniMu.Unlock, false
}

// bridgeReady reports whether the bridge exists and holds the gateway
// address.
func (m *Manager) bridgeReady() bool {
	br, err := net.InterfaceByName(m.bridge)
	if err != nil {
		return false
	}
	addrs, err := br.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == m.gateway {
			return true
		}
	}
	return false
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
