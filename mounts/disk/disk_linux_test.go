package disk

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/testenv"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "loop-mounted disks")
}

func TestMakeRejectsTinyDisk(t *testing.T) {
	dir := t.TempDir()
	err := Make(filepath.Join(dir, "img"), dir, 1<<20, 0, 0, 0)
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("1 MiB disk: got %v, want invalid argument", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused disk left its image behind: %v", err)
	}
}

// TestMakeMountUnmount: the image is a filesystem of its own, owned by the
// given ids, without lost+found, full at its size, and gone from the mount
// table (loop device freed) after Unmount; Mount brings the data back.
func TestMakeMountUnmount(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	img, dir := filepath.Join(base, "home.img"), filepath.Join(base, "home")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Make(img, dir, 32<<20, 1234, 5678, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unmount(dir) })
	if !IsMounted(dir) {
		t.Fatal("Make returned but nothing is mounted")
	}
	// The loop device frees itself on unmount and bypasses the host's
	// page cache.
	dev := loopOf(t, dir)
	for attr, want := range map[string]string{"autoclear": "1", "dio": "1", "backing_file": img} {
		if b, err := os.ReadFile("/sys/block/" + dev + "/loop/" + attr); err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s %s = %q (%v), want %q", dev, attr, strings.TrimSpace(string(b)), err, want)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1234 || st.Gid != 5678 {
		t.Fatalf("disk root owned by %d:%d, want 1234:5678", st.Uid, st.Gid)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("fresh disk is not empty: %v", ents)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if total := int64(fs.Blocks) * fs.Bsize; total > 32<<20 || total < 16<<20 {
		t.Fatalf("disk has %d bytes, want about 32 MiB", total)
	}
	if err := os.WriteFile(filepath.Join(dir, "kept"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 64<<20)
	if err := os.WriteFile(filepath.Join(dir, "big"), big, 0o644); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 64 MiB into a 32 MiB disk: got %v, want ENOSPC", err)
	}

	if err := Unmount(dir); err != nil {
		t.Fatal(err)
	}
	if IsMounted(dir) {
		t.Fatal("still mounted after Unmount")
	}
	if b, err := os.ReadFile("/sys/block/" + dev + "/loop/backing_file"); err == nil && strings.TrimSpace(string(b)) == img {
		t.Fatalf("%s still holds the image after Unmount", dev)
	}
	if err := Unmount(dir); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	if err := Mount(img, dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "kept")); err != nil || string(b) != "data" {
		t.Fatalf("after remount: %q, %v", b, err)
	}
}

// loopOf returns the loop device ("loop3") mounted at dir.
func loopOf(t *testing.T, dir string) string {
	t.Helper()
	ms, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Mountpoint == dir && strings.HasPrefix(m.Source, "/dev/loop") {
			return strings.TrimPrefix(m.Source, "/dev/")
		}
	}
	t.Fatalf("no loop device mounted at %s", dir)
	return ""
}

// TestMountFailureFreesTheLoopDevice: an image that is not a filesystem
// fails to mount and leaves no loop device bound to it.
func TestMountFailureFreesTheLoopDevice(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	img, dir := filepath.Join(base, "junk.img"), filepath.Join(base, "home")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Mount(img, dir); err == nil {
		Unmount(dir)
		t.Fatal("a zero-filled image mounted")
	}
	if IsMounted(dir) {
		t.Fatal("mounted after a failed Mount")
	}
	backs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, b := range backs {
		if data, err := os.ReadFile(b); err == nil && strings.TrimSpace(string(data)) == img {
			t.Fatalf("%s is still bound to the image", b)
		}
	}
}

// TestInodesMatchTheNamesCap: a disk made for a names cap has about that
// many inodes (mkfs rounds up to whole groups), not mkfs's one per 16 KiB:
// hard links aside, a sandbox cannot make more entries than hot sync
// syncs.
func TestInodesMatchTheNamesCap(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	img, dir := filepath.Join(base, "home.img"), filepath.Join(base, "home")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 1 << 30
	want := Inodes(size, 5000)
	if want != 5000 || Inodes(64<<20, 200_000) != 4096 {
		t.Fatalf("Inodes = %d, %d", want, Inodes(64<<20, 200_000))
	}
	if err := Make(img, dir, size, 0, 0, want); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unmount(dir) })
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Files < uint64(want) || st.Files > uint64(want)+8192 {
		t.Fatalf("%d inodes, want about %d (mkfs's default would be %d)", st.Files, want, size/(16<<10))
	}
}
