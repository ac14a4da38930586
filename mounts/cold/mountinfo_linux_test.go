package cold

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

const sampleMountinfo = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
63 22 254:0 /tmp/d/mnt /tmp/d/mnt rw,relatime shared:2 - ext4 /dev/vda rw
64 22 254:0 /tmp/d/stage /tmp/d/stage rw,relatime - ext4 /dev/vda rw
70 63 0:41 / /tmp/d/mnt/users/alice/cold rw,nosuid,nodev,relatime shared:3 - fuse.s3fs s3fs rw,user_id=0,group_id=0,allow_other
71 70 0:45 / /tmp/d/mnt/users/alice/cold rw,nosuid,nodev,relatime shared:4 - fuse.s3fs s3fs rw,user_id=0,group_id=0,allow_other
69 71 0:47 / /tmp/d/mnt/users/alice/cold rw,nosuid,nodev,relatime shared:5 - fuse mountpoint-s3 rw
80 22 0:50 / /tmp/with\040space\011tab\134back rw master:3 - tmpfs a\040b rw
`

func TestParseMountinfo(t *testing.T) {
	ms, err := parseMountinfo(strings.NewReader(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 7 {
		t.Fatalf("parsed %d entries, want 7", len(ms))
	}
	if m := ms[3]; m.ID != 70 || m.Parent != 63 || m.FSType != "fuse.s3fs" || m.Source != "s3fs" || !m.Shared() {
		t.Errorf("entry 70 = %+v", m)
	}
	if ms[2].Shared() {
		t.Errorf("private mount reported shared: %+v", ms[2])
	}
	if m := ms[6]; m.Mountpoint != "/tmp/with space\ttab\\back" || m.Source != "a b" || m.Shared() {
		t.Errorf("escaped entry = %+v", m)
	}

	st := stackAt(ms, "/tmp/d/mnt/users/alice/cold")
	var ids []int
	for _, m := range st {
		ids = append(ids, m.ID)
	}
	if !slices.Equal(ids, []int{70, 71, 69}) {
		t.Errorf("stack = %v, want bottom-to-top [70 71 69]", ids)
	}
	if got := len(below(ms, "/tmp/d/mnt")); got != 3 {
		t.Errorf("below(/tmp/d/mnt) = %d entries, want 3", got)
	}
	if got := len(below(ms, "/tmp/d/mnt/users/alice/cold")); got != 0 {
		t.Errorf("below(mountpoint) = %d, want 0 (the mountpoint itself is not below itself)", got)
	}
	if top, ok := containingMount(ms, "/tmp/d/mnt/users/bob"); !ok || top.ID != 63 {
		t.Errorf("containing mount of /tmp/d/mnt/users/bob = %+v, %v", top, ok)
	}
	if top, ok := containingMount(ms, "/tmp/d/mnt/users/alice/cold/x"); !ok || top.ID != 69 {
		t.Errorf("containing mount of a path in the stack = %+v, want the top (69)", top)
	}

	// (moby/sys/mountinfo ignores unparsable mount ids, which the kernel
	// never writes; too few fields and a missing separator are refused.)
	for _, bad := range []string{"1 2 3", "1 1 0:1 / / rw shared:1 ext4 a b"} {
		if _, err := parseMountinfo(strings.NewReader(bad + "\n")); !errdefs.IsDataLoss(err) {
			t.Errorf("parse %q: %v, want DataLoss", bad, err)
		}
	}
}

func FuzzParseMountinfo(f *testing.F) {
	for _, l := range strings.Split(sampleMountinfo, "\n") {
		f.Add(l)
	}
	f.Add(`1 1 0:1 \ \0 \777\1234 rw - a b c`)
	f.Fuzz(func(t *testing.T, line string) {
		ms, err := parseMountinfo(strings.NewReader(line))
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.FSType == "" {
				t.Fatalf("parsed %q with an empty fstype", line)
			}
		}
		_ = stackAt(ms, "/")
	})
}

// TestMountedAt checks the one-lookup mount check against the mount table,
// and that a FUSE mount whose daemon never answers (not even its INIT)
// does not stall it: the check must not call into the file system.
func TestMountedAt(t *testing.T) {
	requireFUSE(t)
	dir := testDir(t)
	plain, bound, tmpfs, hung := filepath.Join(dir, "plain"), filepath.Join(dir, "bound"), filepath.Join(dir, "tmpfs"), filepath.Join(dir, "hung")
	for _, d := range []string{plain, bound, tmpfs, hung} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(plain, bound, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	inside := filepath.Join(tmpfs, "inside")
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	fuse, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fuse.Close() // aborts the connection once the test detached it
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fuse.Fd())
	if err := unix.Mount("hung", hung, "fuse.hung", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(hung, unix.MNT_DETACH)

	table, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want bool
	}{{plain, false}, {bound, true}, {tmpfs, true}, {inside, false}, {hung, true}, {dir, false}} {
		if inTable := len(stackAt(table, c.path)) > 0; inTable != c.want {
			t.Fatalf("mount table says %s mounted=%v, the test made it %v", c.path, inTable, c.want)
		}
		got := make(chan bool, 1)
		go func() {
			m, ok := mountedByLookup(c.path)
			if !ok {
				t.Errorf("the lookup could not tell for %s", c.path)
			}
			got <- m
		}()
		select {
		case m := <-got:
			if m != c.want {
				t.Errorf("mountedByLookup(%s) = %v, want %v", c.path, m, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("mountedByLookup(%s) did not return: it called into the file system", c.path)
		}
		if m, err := mountedAt(c.path); err != nil || m != c.want {
			t.Errorf("mountedAt(%s) = %v, %v; want %v", c.path, m, err, c.want)
		}
	}
	// What the lookup cannot tell goes to the table.
	for _, p := range []string{"relative", dir + "/../" + filepath.Base(dir), filepath.Join(dir, "missing", "x")} {
		if _, ok := mountedByLookup(p); ok {
			t.Errorf("mountedByLookup(%q) claimed to tell", p)
		}
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(bound, link); err != nil {
		t.Fatal(err)
	}
	if m, err := mountedAt(link); err != nil || m {
		t.Errorf("mountedAt(symlink to a mount) = %v, %v; want false (the symlink itself is no mount point)", m, err)
	}
}
