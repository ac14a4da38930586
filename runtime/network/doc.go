// Package network owns the network of every sandbox: one network namespace
// per sandbox, attached to a dedicated Linux bridge (the first one on a new
// bridge through CNI: go-cni and the Debian containernetworking plugins,
// bridge and host-local IPAM, which make the bridge; every later one
// directly through netlink and host-local's lease directory, the same
// result without two plugin processes per create: attach_linux.go), and
// the iptables rules that decide where a sandbox
// may send traffic. It also writes each sandbox's resolv.conf and hosts
// files. It must not talk to containerd, build OCI specs, know about users,
// HTTP or the registry, touch /etc/cni or /var/lib/cni/networks, or change
// any firewall rule it did not create (its own chains and the jumps into
// them are the only rules it adds, deletes or flushes).
//
// # Wiring (runtime/runtime.go)
//
// runc creates each sandbox's network namespace (inside the sandbox's user
// namespace, so that sysfs mounts and runc exec work). The runtime:
//
//  1. calls PrepareFiles and binds the files Files names read-only at
//     /etc/resolv.conf and /etc/hosts in the spec;
//  2. creates the task (runc makes the namespace) and calls SetupIn with
//     /proc/<init pid>/ns/net: the namespace is bind-mounted at the
//     sandbox's netns path (so it outlives the container until Teardown),
//     loopback is brought up, CNI attaches it to the bridge and its rules
//     go in;
//  3. starts the task; Teardown runs after the container is deleted (and
//     on every failure path of Create).
//
// The daemon creates one Manager at startup (StateDir e.g.
// /var/lib/matrx/network), calls GC with "is this sandbox still known"
// before serving, and never calls Uninstall on shutdown: sandboxes and their
// rules outlive the daemon.
//
// # What a sandbox can reach
//
// Mode "default": anything except the always-blocked destinations. Mode
// "none": loopback only (a namespace with no CNI attachment). A non-empty
// Policy.Allow: only those IPv4 prefixes, still never an always-blocked one
// unless the operator lists it in Config.AllowInternal. In every mode with
// a network, TCP and UDP port 53 to the configured upstream resolvers is
// allowed (even when a resolver is in a private range, as cloud VPC
// resolvers are) — only to those addresses and only that port.
//
// Always blocked (rejected with ICMP admin-prohibited so clients fail fast):
//   - the host itself: every packet from the bridge to a host address (the
//     bridge gateway, 127.0.0.0/8 is unreachable anyway, the public
//     address, a metadata alias on a dummy interface, the daemon, a local
//     S3 endpoint...) goes through INPUT and is rejected unless it answers a
//     connection the host opened, or is TCP to Config.GatewayPort on the
//     gateway address (matrxd's sandbox listener, which tells sandboxes
//     apart with SandboxAt; that one port, that one address, nothing
//     else);
//   - other sandboxes: the bridge subnet is rejected in FORWARD (routed and,
//     with br_netfilter, bridged frames) and every host-side veth is an
//     isolated bridge port (IFLA_BRPORT_ISOLATED), so sandboxes cannot even
//     ARP each other, whatever br_netfilter's sysctls say;
//   - 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10 (CGNAT), 127.0.0.0/8,
//     169.254.0.0/16 (link-local, including the cloud metadata service
//     169.254.169.254), 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/4
//     (multicast) and 240.0.0.0/4 (reserved and broadcast), except prefixes
//     in Config.AllowInternal (never the bridge subnet);
//   - all IPv6, hence ULA fc00::/7, fe80::/10, multicast and the IPv6
//     metadata address fd00:ec2::254: IPv6 is disabled inside every sandbox
//     namespace (net.ipv6.conf.{all,default}.disable_ipv6=1, before any
//     interface exists), and ip6tables drops everything to or from the
//     bridge as a second layer.
//
// Rules are keyed by the sandbox's IPv4 address. A sandbox cannot borrow a
// neighbour's address to get its neighbour's policy: unprivileged programs
// cannot send from a non-local source (IP_FREEBIND binds, but routing
// refuses), and, should a sandbox process ever hold CAP_NET_RAW, an OUTPUT
// rule inside its namespace drops every packet whose source is not an
// address of the namespace (only the sandbox's own; CAP_NET_ADMIN, which
// could add one, is never granted).
//
// # Firewall layout (chain prefix P = "MATRX" for the default bridge)
//
//	filter FORWARD: -i BR -j P-FWD ; -o BR -j P-FWD        (inserted first)
//	filter INPUT:   -i BR -j P-IN
//	P-FWD:   ESTABLISHED,RELATED accept; -i BR -j P-SBX; drop (unsolicited inbound)
//	P-SBX:   per sandbox, comment "matrx-sandbox=<id>":
//	           -s IP -j P-BLOCK ; then -s IP -j ACCEPT (default mode)
//	           or -s IP -d CIDR -j ACCEPT for each allowed CIDR;
//	         tail: reject (an address without rules gets nothing)
//	P-BLOCK: reject bridge subnet; accept DNS to resolvers; return for
//	         AllowInternal; reject always-blocked ranges
//	P-IN:    ESTABLISHED,RELATED accept; TCP to GATEWAY:Config.GatewayPort
//	         accept (when set); reject
//	ip6 filter FORWARD/INPUT: -i/-o BR -j P-V6 (drop)
//	nat POSTROUTING: -s SUBNET -j P-NAT
//	P-NAT:   return for the subnet and multicast; masquerade the rest
//	         (the bridge plugin's per-sandbox ipMasq is off; CNI-* chains
//	         of sandboxes made by an earlier matrxd are still swept)
//
// State on disk (under Config.StateDir): cni/<network>.conflist (written by
// New and loaded from there), ipam/<network>/ (host-local leases), netns/<id>
// (bind-mounted namespaces; the directory is a shared mount so that unmounts
// propagate), sandboxes/<id>/{resolv.conf,hosts,rules,veth}. libcni keeps its result
// cache in /var/lib/cni/results (go-cni offers no way to move it); Teardown
// and GC remove this network's entries there too. Teardown detaches a
// sandbox whose host veth is recorded (veth) without the plugins, through
// netlink (detach_linux.go), and takes CNI DEL otherwise.
//
// New enables net.ipv4.ip_forward (and logs it) because egress is routed
// through the host; it never turns it off again. Changing the bridge subnet
// of an existing installation needs Uninstall first (the bridge keeps its
// old gateway address). The upstream resolvers are read once, in New.
//
// Attaches (CNI or direct) of different sandboxes run at once (a burst of creates queued
// behind one lock here: ~1 s of a 3.6 s create with 50 at once), except
// while the bridge is missing or lacks its gateway address, when one setup
// runs alone so that concurrent bridge plugins do not race to make it
// (cniLock). Under -race go-cni swaps its RWMutex for go-deadlock's, whose
// lock-order check cannot tell goroutines apart on this Go version; a
// race-only init turns that check off (deadlock_race.go), so the tests run
// CNI concurrently as production does.
package network
