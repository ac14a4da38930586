package network

// Teardown: detaching a sandbox and deleting its rules, leases and
// legacy NAT chains.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
)

// detach is CNI DEL. With the namespace gone (a reboot leaves an empty
// file), DEL runs without one: the plugin then only releases the lease, and
// the sweeps below remove the rest.
func (m *Manager) detach(ctx context.Context, id, nsPath string) error {
	path := ""
	if isNetNS(nsPath) {
		path = nsPath
	}
	m.cniMu.RLock() // DEL never makes the bridge
	err := m.platform.cni.Remove(ctx, id, path)
	m.cniMu.RUnlock()
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
	if !m.detachDirect(id) {
		if err := m.detach(ctx, id, nsPath); err != nil {
			log.Warn("CNI delete failed; removing its leftovers directly", "error", err)
		}
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
