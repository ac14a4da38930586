package cold

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// TestSlotPropagation: a sandbox that bound its empty slot before it had a
// user sees the user's cold files once BindSlot binds them, sees a remount
// stacked on the user's mountpoint later (as a sandbox that bound the
// mountpoint itself does), and removing the slot leaves the user's own
// mountpoint as it was (remount included).
func TestSlotPropagation(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	root := filepath.Join(dir, "root")
	mp := filepath.Join(root, "users", "alice", "cold")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := bindSelf(root, unix.MS_SHARED); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unmountStack(root) })
	m := &Manager{root: root}
	if _, err := m.MakeSlot("../x"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("slot for ../x: %v, want InvalidArgument", err)
	}
	slot, err := m.MakeSlot("sbx-000000000001")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.MakeSlot("sbx-000000000001"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second slot: %v, want AlreadyExists", err)
	}
	if st, _ := os.Stat(slot); st.Mode().Perm() != 0o755 {
		t.Fatalf("slot mode %v, want 0755 (root's: a sandbox cannot write into it)", st.Mode())
	}
	sandbox := filepath.Join(dir, "sandbox")
	bindLikeContainer(t, slot, sandbox)
	if err := m.BindSlot("alice", "sbx-000000000001"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("bind before the user's mount exists: %v, want FailedPrecondition", err)
	}

	mountTmpfs(t, mp, "gen1")
	if err := m.BindSlot("alice", "sbx-000000000001"); err != nil {
		t.Fatal(err)
	}
	if !m.SlotBound("sbx-000000000001") {
		t.Fatal("SlotBound = false after BindSlot")
	}
	if err := m.BindSlot("alice", "sbx-000000000001"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second bind: %v, want AlreadyExists", err)
	}
	if got := readID(t, sandbox); got != "gen1" {
		t.Fatalf("sandbox shows %q after the bind, want gen1", got)
	}
	mountTmpfs(t, mp, "gen2") // a remount, stacked as the supervisor does
	if got := readID(t, sandbox); got != "gen2" {
		t.Fatalf("sandbox shows %q after a stacked remount, want gen2", got)
	}
	if ids, err := m.Slots(); err != nil || len(ids) != 1 || ids[0] != "sbx-000000000001" {
		t.Fatalf("slots = %v, %v", ids, err)
	}
	// The sandbox ends (its container goes first), then its slot.
	if err := unmountStack(sandbox); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveSlot("sbx-000000000001"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(slot); !os.IsNotExist(err) {
		t.Fatalf("slot still there: %v", err)
	}
	if err := m.RemoveSlot("sbx-000000000001"); err != nil {
		t.Fatalf("removing a removed slot: %v", err)
	}
	if got := readID(t, mp); got != "gen2" {
		t.Fatalf("the user's own mountpoint shows %q after the slot went, want gen2", got)
	}
	if err := unmountStack(mp); err != nil {
		t.Fatal(err)
	}
}
