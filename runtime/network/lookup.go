package network

import (
	"bytes"
	"io"
	"net/netip"
	"os"
	"path/filepath"
)

// SandboxAt names the sandbox that holds addr on the bridge, from the IPAM
// lease CNI took for it (so it holds across daemon restarts). It is how
// the host tells which sandbox a connection to the gateway comes from: a
// sandbox cannot send from an address other than its own (see the source
// guard in the package doc), and the lease is released only after the
// sandbox's processes are gone.
func (m *Manager) SandboxAt(addr netip.Addr) (string, bool) {
	addr = addr.Unmap()
	if !addr.Is4() || !m.subnet.Contains(addr) || addr == m.gateway || addr == m.subnet.Addr() {
		return "", false
	}
	// The lease directory is the daemon's own (mode 0700); sandboxes
	// never write there.
	f, err := os.Open(filepath.Join(m.ipamDir, m.network, addr.String()))
	if err != nil {
		return "", false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 512))
	if err != nil {
		return "", false
	}
	owner, _, _ := bytes.Cut(b, []byte("\n"))
	id := string(bytes.TrimSpace(owner))
	if validateID(id) != nil {
		return "", false
	}
	return id, true
}
