package cold

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
	"golang.org/x/sys/unix"
)

// # Slots: cold storage bound in after a sandbox started
//
// A warm-pool sandbox starts before anyone owns it, so no user's mountpoint
// can be bound at its /data/cold; and a normal create does not wait for a
// new user's FUSE daemon (15-30 ms) before starting its container, but
// mounts it while the container starts. Either binds its own empty slot,
// Dir/mnt/slots/SANDBOX (rbind,rslave like a mountpoint: the slot is a
// directory of the shared Dir/mnt mount, so the container's copy is a
// slave of it). BindSlot later bind-mounts the user's mountpoint onto the
// slot and makes it a slave of the user's mount; the bind propagates into
// the container. A remount stacked on the mountpoint (see "Propagation and
// remounting") reaches the slot and, through it, the container, exactly as
// it reaches a sandbox that bound the mountpoint itself. A slave, not a
// peer: as a peer, unmounting a remount's copy from the slot at its removal
// would unmount the remount from the user's mountpoint too, under all of
// their other sandboxes (TestSlotPropagation checks both). A slot is root's and 0755, so nothing in
// the sandbox can write into it before the user's files cover it.

// SlotPath is the slot of a sandbox (which may not exist).
func (m *Manager) SlotPath(sandboxID string) (string, error) {
	if sandboxID == "" || sandboxID == "." || sandboxID == ".." || strings.ContainsAny(sandboxID, "/\x00") || len(sandboxID) > 255 {
		return "", fmt.Errorf("cold: sandbox id %q cannot name a slot: %w", sandboxID, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(m.root, "slots", sandboxID), nil
}

// MakeSlot creates a sandbox's empty slot and returns it, to bind at
// /data/cold with rbind,rslave.
func (m *Manager) MakeSlot(sandboxID string) (string, error) {
	p, err := m.SlotPath(sandboxID)
	if err != nil {
		return "", err
	}
	if err := ensureDir(filepath.Dir(p), 0o711); err != nil {
		return "", err
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("cold: slot of %s already exists: %w", sandboxID, errdefs.ErrAlreadyExists)
		}
		return "", fmt.Errorf("cold: create slot: %w: %w", err, errdefs.ErrUnavailable)
	}
	return p, nil
}

// BindSlot shows userID's cold files in a sandbox's slot. The caller holds
// a reference on userID's mount (Acquire) for as long as the slot is bound.
func (m *Manager) BindSlot(userID ids.UserID, sandboxID string) error {
	p, err := m.SlotPath(sandboxID)
	if err != nil {
		return err
	}
	mp, err := m.Mountpoint(userID)
	if err != nil {
		return err
	}
	switch bound, err := mountedAt(p); {
	case err != nil:
		return err
	case bound:
		return fmt.Errorf("cold: slot of %s is already bound: %w", sandboxID, errdefs.ErrAlreadyExists)
	}
	switch mounted, err := mountedAt(mp); {
	case err != nil:
		return err
	case !mounted:
		return fmt.Errorf("cold: %s's cold storage is not mounted: %w", userID, errdefs.ErrFailedPrecondition)
	}
	if err := unix.Mount(mp, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("cold: bind %s's cold storage into the slot of %s: %w: %w", userID, sandboxID, err, errdefs.ErrUnavailable)
	}
	// A slave of the user's mount, not a peer: remounts stacked on the
	// mountpoint still arrive, but nothing done on the slot (its removal
	// unmounting a remount's copy) goes back to the mountpoint.
	if err := unix.Mount("", p, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		err = fmt.Errorf("cold: make the slot of %s a slave: %w: %w", sandboxID, err, errdefs.ErrUnavailable)
		return errors.Join(err, unix.Unmount(p, unix.MNT_DETACH))
	}
	return nil
}

// SlotBound reports whether a sandbox's slot has a user's files bound.
func (m *Manager) SlotBound(sandboxID string) bool {
	p, err := m.SlotPath(sandboxID)
	if err != nil {
		return false
	}
	bound, err := mountedAt(p)
	return err == nil && bound
}

// RemoveSlot unbinds whatever is on a sandbox's slot and removes it (a
// slot that does not exist is not an error). Call it once the sandbox's
// container is gone.
func (m *Manager) RemoveSlot(sandboxID string) error {
	p, err := m.SlotPath(sandboxID)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unmountStack(p); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cold: remove slot of %s: %w: %w", sandboxID, err, errdefs.ErrUnavailable)
	}
	return nil
}

// Slots lists the sandboxes that have a slot.
func (m *Manager) Slots() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(m.root, "slots"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cold: list slots: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
