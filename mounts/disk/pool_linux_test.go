package disk

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func waitReady(t *testing.T, p *Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for p.Ready() != n {
		if time.Now().After(deadline) {
			t.Fatalf("pool has %d ready images, want %d", p.Ready(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		size int64
		want int
	}{{1 << 20, 2}, {64 << 20, 0}, {64 << 20, 17}} {
		if _, err := NewPool(dir, c.size, 0, 0, 0, c.want, nil); !errdefs.IsInvalidArgument(err) {
			t.Errorf("NewPool(size %d, want %d) = %v, want invalid argument", c.size, c.want, err)
		}
	}
}

// TestPool: the pool fills itself, hands out each image once, refills,
// and after a restart keeps its complete images of the right size and
// drops the rest.
func TestPool(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "pool")
	const size = 64 << 20
	p, err := NewPool(dir, size, 1234, 5678, 0, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, p, 2)

	if p.Take(filepath.Join(base, "other.img"), 128<<20) {
		t.Fatal("took an image of another size")
	}
	// The destination exists: nothing is taken, nothing is lost.
	exists := filepath.Join(base, "exists.img")
	if err := os.WriteFile(exists, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if p.Take(exists, size) {
		t.Fatal("took an image onto an existing file")
	}
	waitReady(t, p, 2)

	img := filepath.Join(base, "home.img")
	if !p.Take(img, size) {
		t.Fatal("Take with a ready pool failed")
	}
	if fi, err := os.Stat(img); err != nil || fi.Size() != size {
		t.Fatalf("taken image: %v %v", fi, err)
	}
	waitReady(t, p, 2) // refilled
	if os.Geteuid() == 0 {
		home := filepath.Join(base, "home")
		if err := os.Mkdir(home, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := Attach(img, home); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { Unmount(home) })
		var st syscall.Stat_t
		if err := syscall.Stat(home, &st); err != nil || st.Uid != 1234 || st.Gid != 5678 {
			t.Fatalf("pooled disk root: %+v %v, want owner 1234:5678", st, err)
		}
		if ents, _ := os.ReadDir(home); len(ents) != 0 {
			t.Fatalf("pooled disk is not empty: %v", ents)
		}
	}

	// Restart with junk around: a partial image, one of an old size and
	// one made for other ids (another user-namespace base).
	p.Close()
	before := names(t, dir)
	for _, junk := range []string{"tmp-99.img", fmt.Sprintf("ready-%d-1234-5678-7.img", 128<<20), fmt.Sprintf("ready-%d-1000-1000-8.img", size)} {
		if err := os.WriteFile(filepath.Join(dir, junk), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p2, err := NewPool(dir, size, 1234, 5678, 0, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if got := names(t, dir); !slices.Equal(got, before) {
		t.Fatalf("after restart the pool holds %q, want the two complete images %q", got, before)
	}
	if p2.Ready() != 2 {
		t.Fatalf("restarted pool: %d ready", p2.Ready())
	}
	// Each image is handed out once.
	a, b := filepath.Join(base, "a.img"), filepath.Join(base, "b.img")
	if !p2.Take(a, size) || !p2.Take(b, size) {
		t.Fatal("Take from the restarted pool failed")
	}
	var sa, sb syscall.Stat_t
	syscall.Stat(a, &sa)
	syscall.Stat(b, &sb)
	if sa.Ino == sb.Ino {
		t.Fatal("the same image was handed out twice")
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestPoolConcurrentTakes: creates racing for a small pool each get a
// distinct image or a clean "no", and Close leaves only complete images.
func TestPoolConcurrentTakes(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "pool")
	const size = 32 << 20
	p, err := NewPool(dir, size, 0, 0, 0, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, p, 2)
	var wg sync.WaitGroup
	taken := make(chan string, 40)
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				img := filepath.Join(base, fmt.Sprintf("t%d-%d.img", g, i))
				if p.Take(img, size) {
					taken <- img
				}
			}
		})
	}
	wg.Wait()
	p.Close()
	close(taken)
	inodes := map[uint64]string{}
	for img := range taken {
		var st syscall.Stat_t
		if err := syscall.Stat(img, &st); err != nil || st.Size != size {
			t.Fatalf("taken image %s: %v (size %d)", img, err, st.Size)
		}
		if other, dup := inodes[st.Ino]; dup {
			t.Fatalf("%s and %s are the same image", img, other)
		}
		inodes[st.Ino] = img
	}
	if len(inodes) < 2 {
		t.Fatalf("only %d takes succeeded with 2 images ready", len(inodes))
	}
	for _, n := range names(t, dir) {
		if !strings.HasPrefix(n, "ready-") {
			t.Errorf("left in the pool after Close: %s", n)
		}
	}
}
