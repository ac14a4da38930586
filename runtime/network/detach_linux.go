package network

// Direct detach: what CNI DEL does for a sandbox attached by this version,
// without running the plugins.
//
// With ipMasq off, the bridge plugin's DEL deletes the veth pair and asks
// host-local to release the lease: two plugin processes (~15-25 ms of a
// destroy here, the longest part of a network teardown). Teardown already
// removes the lease itself (sweepLeases) and libcni's cache entry, so what
// is left is the veth pair, and deleting its host end deletes both ends at
// once, whatever still holds the namespace. Setup records the host end's
// name and ifindex (vethFile); a record that does not name a port of this
// bridge with that index, or a sandbox attached before records existed
// (possibly with a masquerade rule an older version let the plugin make),
// takes the plugin path as before.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

const vethFile = "veth" // "NAME IFINDEX" of the sandbox's host veth

func (m *Manager) vethPath(id string) string { return filepath.Join(m.filesPath(id), vethFile) }

// recordVeth writes the host veth's name and ifindex for Teardown.
func (m *Manager) recordVeth(id, veth string) error {
	b, err := os.ReadFile(filepath.Join("/sys/class/net", veth, "ifindex"))
	if err != nil {
		return fmt.Errorf("ifindex of host veth %s: %w", veth, err)
	}
	if err := writeFileAtomic(m.vethPath(id), []byte(veth+" "+strings.TrimSpace(string(b))+"\n"), 0o600); err != nil {
		return fmt.Errorf("record host veth of %s: %w", id, err)
	}
	return nil
}

// detachDirect deletes the sandbox's veth pair through netlink if its
// record names a port of this bridge by name and index, or reports it gone
// if that link no longer exists. false: use CNI DEL.
func (m *Manager) detachDirect(id string) bool {
	b, err := os.ReadFile(m.vethPath(id))
	if err != nil {
		return false
	}
	name, idx, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	index, err := strconv.Atoi(idx)
	if !ok || err != nil || index <= 0 || !validVethName(name) {
		return false
	}
	dir := filepath.Join("/sys/class/net", name)
	got, err := os.ReadFile(filepath.Join(dir, "ifindex"))
	if errors.Is(err, os.ErrNotExist) {
		// The pair went with its namespace, or an earlier teardown
		// deleted it: nothing of it is left.
		return true
	}
	if err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(index) {
		return false
	}
	if !m.isPort(name) {
		return false
	}
	if err := deleteLink(index); err != nil {
		m.log.Debug("direct veth delete failed; using CNI DEL", "sandbox_id", id, "veth", name, "error", err)
		return false
	}
	return true
}

// validVethName accepts what the bridge plugin names host veths
// ("veth" and 8 hex digits), nothing that could be another device.
func validVethName(name string) bool {
	if len(name) != 12 || !strings.HasPrefix(name, "veth") {
		return false
	}
	for _, c := range name[4:] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// deleteLink deletes the network interface with this index in the host's
// namespace (RTM_DELLINK) and waits for the kernel's answer.
func deleteLink(index int) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	// nlmsghdr (16 bytes) + ifinfomsg (16 bytes).
	msg := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfInfomsg)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.RTM_DELLINK)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], 1) // sequence number
	msg[16] = unix.AF_UNSPEC
	ne.PutUint32(msg[20:], uint32(int32(index)))
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq != 1 {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("netlink answer too short")
			}
			if errno := int32(ne.Uint32(m.Data[0:4])); errno != 0 {
				return syscall.Errno(-errno)
			}
			return nil
		}
	}
}
