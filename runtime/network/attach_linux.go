package network

// Direct attach: what CNI ADD does for a sandbox, without the plugins.
//
// A CNI ADD here is two plugin processes, bridge and host-local (which
// the bridge plugin execs), each a Go program of several MiB that starts,
// parses its config, does a handful of netlink calls and exits: 10-30 ms
// of a create, most of it CPU, and so a fixed cost of every create in a
// burst. Once the bridge exists with its gateway address (the first
// sandbox's ADD, and the first after the bridge was removed, still go
// through the plugins, which make the bridge), Setup does the same work
// itself, through netlink and the lease directory:
//
//  1. an address from host-local's own lease directory, in host-local's
//     format and under its lock (a file per address, "ID\r\neth0", created
//     O_EXCL; last_reserved_ip.0; flock on the directory's "lock"), so the
//     two paths share one pool and Teardown's sweepLeases and a CNI DEL
//     release either kind;
//  2. one RTM_NEWLINK: a veth pair whose host end is up, a port of the
//     bridge and named as the plugin names it ("veth" and 8 hex digits,
//     which the direct detach requires), and whose peer is created as
//     eth0 inside the sandbox's namespace, down;
//  3. inside the namespace: arp_notify on eth0 (as the plugin sets it:
//     bringing eth0 up announces its address, so a host neighbour entry
//     left by the address's previous sandbox is replaced at once), the
//     address, eth0 up and the default route through the gateway.
//
// What the plugin does and this does not, on purpose: ensure the bridge
// (bridgeReady checked it; a bridge removed in between fails the create,
// as the plugin would fail it), IPv6 DAD and accept_ra sysctls (IPv6 is
// disabled in every sandbox namespace), a libcni cache entry (Teardown
// deletes the veth through its record, and a CNI DEL without a cached
// result works from the config), the wait for the bridge port's
// operational state (a veth is up when both its ends are, and a bridge
// without STP forwards at once). And one difference: the plugin's veths
// have a txqueuelen of 0 (its netlink library sent the zero value), these
// the kernel's default, 1000; a veth has no queue (IFF_NO_QUEUE) unless a
// qdisc is added, which only traffic shaping would do. The port's
// isolation and the veth record are Setup's, after either path.
//
// On any failure nothing is left: the veth (both ends: deleting one
// deletes the pair) and the lease are removed before attachDirect
// returns.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// sandboxIfName is the sandbox end of the veth pair, as go-cni names the
// first network's interface (WithInterfacePrefix("eth")).
const sandboxIfName = "eth0"

// attachDirect attaches the namespace at nsPath to the bridge and returns
// the sandbox's address and the host veth's name. The caller holds cniMu
// shared and has seen bridgeReady.
func (m *Manager) attachDirect(id, nsPath string) (_ netip.Addr, _ string, err error) {
	br, err := netlink.LinkByName(m.bridge)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("look up bridge %s: %v: %w", m.bridge, err, errdefs.ErrUnavailable)
	}
	ip, err := m.reserveAddr(id)
	if err != nil {
		return netip.Addr{}, "", err
	}
	defer func() {
		if err != nil {
			if rerr := m.releaseAddr(id, ip); rerr != nil {
				m.log.Warn("direct attach: release the address of a failed attach", "sandbox_id", id, "ip", ip.String(), "error", rerr)
			}
		}
	}()
	ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer unix.Close(ns)
	veth, err := createVeth(br.Attrs().Index, ns)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("attach sandbox %s to bridge %s: %w", id, m.bridge, err)
	}
	defer func() {
		if err != nil {
			if derr := netlink.LinkDel(veth); derr != nil && !errors.As(derr, new(netlink.LinkNotFoundError)) {
				m.log.Warn("direct attach: delete the veth of a failed attach", "sandbox_id", id, "veth", veth.Name, "error", derr)
			}
		}
	}()
	if err := inNetNS(nsPath, func() error { return m.configureSandboxIf(ip) }); err != nil {
		return netip.Addr{}, "", fmt.Errorf("configure %s of sandbox %s: %w", sandboxIfName, id, err)
	}
	return ip, veth.Name, nil
}

// createVeth makes the veth pair: the host end up and a port of the bridge
// with index master, the peer eth0 in the namespace ns, down. A name
// already taken (4 random bytes: rare) is retried with another.
func createVeth(master, ns int) (*netlink.Veth, error) {
	for range 3 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("veth name: %w", err)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "veth" + hex.EncodeToString(b[:])
		attrs.MasterIndex = master
		attrs.Flags = net.FlagUp
		v := &netlink.Veth{LinkAttrs: attrs, PeerName: sandboxIfName, PeerTxQLen: -1, PeerNamespace: netlink.NsFd(ns)}
		err := netlink.LinkAdd(v)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create veth pair %s/%s: %v: %w", attrs.Name, sandboxIfName, err, errdefs.ErrUnavailable)
		}
		return v, nil
	}
	return nil, fmt.Errorf("create veth pair: a name was taken three times (a host interface of the random name, or %s already in the sandbox's namespace): %w", sandboxIfName, errdefs.ErrUnavailable)
}

// configureSandboxIf runs inside the sandbox's namespace: eth0 announces
// its address when it comes up, gets the address, comes up and routes
// everything through the gateway.
func (m *Manager) configureSandboxIf(ip netip.Addr) error {
	p := "/proc/sys/net/ipv4/conf/" + sandboxIfName + "/arp_notify"
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("set arp_notify: %w", err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE) // a socket of this thread's namespace
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(sandboxIfName)
	if err != nil {
		return fmt.Errorf("look up %s: %w", sandboxIfName, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(m.subnet.Bits(), 32)}}
	if err := h.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add address %s: %w", addr.IPNet, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", sandboxIfName, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: m.gateway.AsSlice()}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("add default route via %s: %w", m.gateway, err)
	}
	return nil
}

// leaseDir is host-local's directory of this network's leases.
func (m *Manager) leaseDir() string { return filepath.Join(m.ipamDir, m.network) }

// lastReservedFile is where host-local records the last address it gave
// out of its first (here: only) range, where the next search starts.
const lastReservedFile = "last_reserved_ip.0"

// lockLeases takes host-local's lock of the lease directory (flock on its
// "lock" file, which host-local holds for a whole allocation).
func (m *Manager) lockLeases() (unlock func(), err error) {
	dir := m.leaseDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create IPAM lease dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open IPAM lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock IPAM leases: %w", err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

// reserveAddr leases the next free address of the subnet to id, as
// host-local would: the search starts after the last address given out
// and wraps around; the network address, the gateway and the broadcast
// address are never given.
func (m *Manager) reserveAddr(id string) (netip.Addr, error) {
	unlock, err := m.lockLeases()
	if err != nil {
		return netip.Addr{}, err
	}
	defer unlock()
	dir := m.leaseDir()
	first, last := m.subnet.Addr().Next(), lastAddr(m.subnet).Prev()
	start := first
	if b, err := os.ReadFile(filepath.Join(dir, lastReservedFile)); err == nil {
		if a, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && a.Compare(first) >= 0 && a.Compare(last) <= 0 {
			start = a.Next()
			if start.Compare(last) > 0 {
				start = first
			}
		}
	}
	for a := start; ; {
		if a != m.gateway {
			f, err := os.OpenFile(filepath.Join(dir, a.String()), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
			switch {
			case err == nil:
				_, werr := f.WriteString(id + "\r\n" + sandboxIfName)
				if cerr := f.Close(); werr == nil {
					werr = cerr
				}
				if werr != nil {
					os.Remove(f.Name())
					return netip.Addr{}, fmt.Errorf("write IPAM lease %s: %w", a, werr)
				}
				// Only a hint for the next search: a failure costs nothing.
				_ = writeFileAtomic(filepath.Join(dir, lastReservedFile), []byte(a.String()), 0o644)
				return a, nil
			case !errors.Is(err, os.ErrExist):
				return netip.Addr{}, fmt.Errorf("create IPAM lease %s: %w", a, err)
			}
		}
		if a = a.Next(); a.Compare(last) > 0 {
			a = first
		}
		if a == start {
			return netip.Addr{}, fmt.Errorf("no address left in sandbox subnet %s: %w", m.subnet, errdefs.ErrResourceExhausted)
		}
	}
}

// releaseAddr removes id's lease of ip (not another sandbox's, should the
// file have changed hands).
func (m *Manager) releaseAddr(id string, ip netip.Addr) error {
	unlock, err := m.lockLeases()
	if err != nil {
		return err
	}
	defer unlock()
	p := filepath.Join(m.leaseDir(), ip.String())
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read IPAM lease %s: %w", ip, err)
	}
	if leaseOwner(b) != id {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove IPAM lease %s: %w", ip, err)
	}
	return nil
}

// lastAddr is the highest address of p (its broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	bits := p.Bits()
	for i := range 4 {
		hostBits := max(0, min(8, (i+1)*8-bits))
		b[i] |= byte(1<<hostBits - 1)
	}
	return netip.AddrFrom4(b)
}
