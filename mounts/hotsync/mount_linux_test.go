package hotsync_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/testenv"
)

// These tests mount small tmpfs filesystems (Linux, root).

// TestUnmountedDiskIsNotReadAsDeletion: with DirIsMount, a Dir whose disk
// has come unmounted (an empty mount point) is refused by Up and Down
// instead of being read as "every file deleted".
func TestUnmountedDiskIsNotReadAsDeletion(t *testing.T) {
	st := newLocal(t)
	for _, k := range []string{"a.txt", "dir/b.txt"} {
		putObject(t, st, k, []byte(k))
	}
	sb := newSandbox(t, st, "sbx-mnt", func(c *hotsync.Config) { c.DirIsMount = true })
	must(t, os.MkdirAll(sb.dir, 0o755))
	if os.Geteuid() == 0 {
		// Mounted, it syncs as usual.
		must(t, syscall.Mount("tmpfs", sb.dir, "tmpfs", 0, "size=16m"))
		t.Cleanup(func() { syscall.Unmount(sb.dir, syscall.MNT_DETACH) })
		sb.down(t)
		sb.write(t, "new.txt", []byte("new"))
		if res := sb.up(t); !slices.Equal(res.Uploaded, []string{"new.txt"}) {
			t.Fatalf("uploaded %q", res.Uploaded)
		}
		must(t, syscall.Unmount(sb.dir, 0))
	}
	// Now an empty, unmounted directory where the disk should be.
	if _, err := sb.Up(testCtx(t)); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("up on an unmounted disk: got %v, want failed precondition", err)
	}
	if _, err := sb.Down(testCtx(t)); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("down on an unmounted disk: got %v, want failed precondition", err)
	}
	got := slices.Sorted(maps.Keys(objects(t, st)))
	want := []string{"a.txt", "dir/b.txt"}
	if os.Geteuid() == 0 {
		want = append(want, "new.txt")
	}
	if !slices.Equal(got, want) {
		t.Fatalf("objects = %q, want %q", got, want)
	}
}

// TestSparseAndHardLinkedFilesCannotAmplifyUploads: on an 8 MiB disk, a
// 1 GiB sparse file and a dozen hard links of one file claim far more than
// the disk holds; they are reported and not uploaded (the sparse file's
// earlier object stays), while the real data syncs. Under the disk's size,
// a sparse file syncs as usual.
func TestSparseAndHardLinkedFilesCannotAmplifyUploads(t *testing.T) {
	testenv.NeedRoot(t, "mounts a small tmpfs")
	st := newLocal(t)
	putObject(t, st, "sparse.bin", []byte("earlier version"))
	sb := newSandbox(t, st, "sbx-amp", func(c *hotsync.Config) { c.DirIsMount = true })
	must(t, os.MkdirAll(sb.dir, 0o755))
	must(t, syscall.Mount("tmpfs", sb.dir, "tmpfs", 0, "size=8m"))
	t.Cleanup(func() { syscall.Unmount(sb.dir, syscall.MNT_DETACH) })
	sb.down(t)

	// Within the disk's size: a 3 MiB sparse file is just a file.
	must(t, os.Truncate(filepath.Join(sb.dir, "sparse.bin"), 3<<20))
	if res := sb.up(t); !slices.Equal(res.Uploaded, []string{"sparse.bin"}) || len(res.Rejected) != 0 {
		t.Fatalf("small sparse file: uploaded %q, rejected %v", res.Uploaded, res.Rejected)
	}

	must(t, os.Truncate(filepath.Join(sb.dir, "sparse.bin"), 1<<30))
	sb.write(t, "dense.bin", randBytes(1<<20, 9))
	sb.write(t, "small.txt", []byte("real data"))
	for i := range 12 {
		must(t, os.Link(filepath.Join(sb.dir, "dense.bin"), filepath.Join(sb.dir, fmt.Sprintf("link%02d", i))))
	}
	res, err := sb.Up(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Uploaded, []string{"dense.bin", "small.txt"}) {
		t.Fatalf("uploaded %q, want the real data only", res.Uploaded)
	}
	var rejected []string
	for _, r := range res.Rejected {
		rejected = append(rejected, r.Path)
	}
	if len(rejected) != 13 || rejected[len(rejected)-1] != "sparse.bin" {
		t.Fatalf("rejected %q, want 12 links and sparse.bin", rejected)
	}
	objs := objects(t, st)
	if len(objs["sparse.bin"]) != 3<<20 {
		t.Fatalf("sparse.bin object is %d bytes, want the earlier 3 MiB version kept", len(objs["sparse.bin"]))
	}
	if _, ok := objs["link00"]; ok {
		t.Fatal("a hard link was uploaded")
	}
}
