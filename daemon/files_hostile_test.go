//go:build linux

package daemon_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// canary is a host directory and file that no file operation may touch:
// inotify reports any open, read, write, listing, creation or removal of
// them, from any mount namespace.
type canary struct {
	dir, file string
	fd        int
}

const canaryText = "host canary: never to be read through a sandbox\n"

func newCanary(t *testing.T) *canary {
	t.Helper()
	dir, err := os.MkdirTemp("", "matrx-canary-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &canary{dir: dir, file: filepath.Join(dir, "secret")}
	if err := os.WriteFile(c.file, []byte(canaryText), 0o644); err != nil {
		t.Fatal(err)
	}
	// Readable by everyone, as a careless host file would be.
	os.Chmod(dir, 0o755)
	c.fd, err = unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(c.fd) })
	for _, p := range []string{dir, c.file} {
		if _, err := unix.InotifyAddWatch(c.fd, p, unix.IN_ALL_EVENTS); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// check fails t if anything touched the canary since it was made.
func (c *canary) check(t *testing.T) {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Read(c.fd, buf)
	if err == unix.EAGAIN {
		return
	}
	if err != nil {
		t.Fatalf("read canary events: %v", err)
	}
	var evs []string
	for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
		mask := binary.NativeEndian.Uint32(b[4:8])
		l := int(binary.NativeEndian.Uint32(b[12:16]))
		evs = append(evs, fmt.Sprintf("mask %#x name %q", mask, strings.TrimRight(string(b[16:16+l]), "\x00")))
		b = b[16+l:]
	}
	t.Fatalf("the host canary %s was touched: %v", c.dir, evs)
	if b, _ := os.ReadFile(c.file); string(b) != canaryText {
		t.Fatalf("the host canary changed: %q", b)
	}
}

// TestFilesHostile runs the files API against a hostile sandbox of the
// production image, with a canary file on the host that nothing may touch.
func TestFilesHostile(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	prod := productionImage(t)
	h := daemontest.StartProduction(t)
	importImage(t, h, prod)
	t.Run("symlinks in every position", func(t *testing.T) { testHostileSymlinks(t, h) })
	t.Run("symlink swapped in a loop", func(t *testing.T) { testSymlinkRace(t, h) })
	t.Run("FIFOs, sockets and devices", func(t *testing.T) { testSpecialFiles(t, h) })
}

// testHostileSymlinks: symlinks that point at the host's files (by
// absolute path, by climbing with .., through /proc/1/root), in every
// position of a path, with every route. Every operation resolves inside
// the sandbox: the host canary is never opened, listed or written, and
// what comes back is the sandbox's own.
func testHostileSymlinks(t *testing.T, h *daemontest.Harness) {
	ctx := context.Background()
	c := h.Client()
	s := h.Create("mallory", &apitype.SandboxConfig{Image: "localhost/matrx/sandbox:latest", MemoryMB: 1024})
	id := s.SandboxID
	can := newCanary(t)
	// The canary's host paths exist in the sandbox too (its own /tmp), so
	// that operations through the symlinks succeed, inside the sandbox.
	climb := strings.Repeat("../", 12) + strings.TrimPrefix(can.dir, "/")
	h.Exec(id, fmt.Sprintf(`mkdir -p %[1]s && echo sandbox copy > %[1]s/secret && mkdir -p /home/agent/h && cd /home/agent/h &&
ln -s /etc/shadow shadow && ln -s /proc/1/root/etc p1etc && ln -s /proc/1/root p1root && ln -s ../../../../ up &&
ln -s %[1]s/secret canfile && ln -s %[1]s candir && ln -s %[2]s canclimb`, can.dir, climb))

	// x -> /etc/shadow: the sandbox's shadow, for root only.
	_, err := getFile(t, c, id, "/home/agent/h/shadow", client.ReadOptions{})
	wantStatus(t, "agent reads shadow", err, http.StatusForbidden)
	shadow, err := getFile(t, c, id, "/home/agent/h/shadow", client.ReadOptions{User: "root"})
	if err != nil || shadow != rootExec(t, h, id, "cat /etc/shadow").Stdout {
		t.Fatalf("root reads the sandbox's shadow: %v", err)
	}
	if host, _ := os.ReadFile("/etc/shadow"); len(host) > 0 && string(host) == shadow {
		t.Fatal("the host's /etc/shadow came back")
	}
	// x -> /proc/1/root/etc: PID 1 is nobody's; neither user may enter.
	for _, user := range []string{"agent", "root"} {
		for _, p := range []string{"/home/agent/h/p1etc/passwd", "/home/agent/h/p1root/etc/hostname"} {
			_, err := getFile(t, c, id, p, client.ReadOptions{User: user})
			wantStatus(t, user+" reads "+p, err, http.StatusForbidden)
		}
		_, err := c.ListFiles(ctx, id, "/home/agent/h/p1etc", client.ListFilesOptions{User: user})
		wantStatus(t, user+" lists p1etc", err, http.StatusForbidden)
		_, err = c.WriteFile(ctx, id, "/home/agent/h/p1etc/x", strings.NewReader("x"), client.WriteOptions{User: user, Size: 1})
		wantStatus(t, user+" writes through p1etc", err, http.StatusForbidden)
	}
	// x -> ../../../../ climbs to the sandbox's root, not the host's.
	hostname := h.Exec(id, "cat /etc/hostname").Stdout
	for _, p := range []string{"/home/agent/h/up/etc/hostname", "/home/agent/h/up/home/agent/h/up/etc/hostname", "/home/agent/h/candir/../../../../etc/hostname"} {
		if b, err := getFile(t, c, id, p, client.ReadOptions{}); err != nil || b != hostname {
			t.Fatalf("%s: %q %v (the sandbox's is %q)", p, b, err, hostname)
		}
	}
	l, err := c.ListFiles(ctx, id, "/home/agent/h/up", client.ListFilesOptions{})
	if err != nil || !hasEntry(l, ".matrx") {
		t.Fatalf("up lists the sandbox's root (it has /.matrx): %v %+v", err, l)
	}
	putFile(t, c, id, "/home/agent/h/up/tmp/through-up", "in the sandbox", client.WriteOptions{})
	if r := h.Exec(id, "cat /tmp/through-up"); r.Stdout != "in the sandbox" {
		t.Fatalf("a write through up: %q", r.Stdout)
	}
	// x -> the canary's host path, by absolute path and by climbing, as the
	// last element and in the middle, with every route.
	for _, link := range []string{"candir", "canclimb"} {
		base := "/home/agent/h/" + link
		if b, err := getFile(t, c, id, base+"/secret", client.ReadOptions{}); err != nil || b != "sandbox copy\n" {
			t.Fatalf("%s/secret: %q %v", base, b, err)
		}
		if b, err := getFile(t, c, id, "/home/agent/h/canfile", client.ReadOptions{}); err != nil || b != "sandbox copy\n" {
			t.Fatalf("canfile: %q %v", b, err)
		}
		putFile(t, c, id, base+"/new", "x", client.WriteOptions{})
		if _, err := c.StatFile(ctx, id, base+"/new", ""); err != nil {
			t.Fatal(err)
		}
		if l, err := c.ListFiles(ctx, id, base, client.ListFilesOptions{}); err != nil || !hasEntry(l, "new") || !hasEntry(l, "secret") {
			t.Fatalf("list %s: %v %+v", base, err, l)
		}
		if _, err := c.Mkdir(ctx, id, "", apitype.MkdirRequest{Path: base + "/d", Parents: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.MoveFile(ctx, id, "", apitype.MoveRequest{From: base + "/new", To: base + "/d/moved"}); err != nil {
			t.Fatal(err)
		}
		if f, err := c.FindFiles(ctx, id, base, "*", "", 0); err != nil || len(f.Entries) != 3 {
			t.Fatalf("find in %s: %v %+v", base, err, f)
		}
		if g, err := c.GrepFiles(ctx, id, base, "canary|copy", client.GrepOptions{}); err != nil || len(g.Matches) != 1 || g.Matches[0].Text != "sandbox copy" {
			t.Fatalf("grep in %s: %v %+v", base, err, g)
		}
		rc, err := c.ReadTar(ctx, id, base, "")
		if err != nil {
			t.Fatal(err)
		}
		tb, _ := io.ReadAll(rc)
		rc.Close()
		if bytes.Contains(tb, []byte("host canary")) || !bytes.Contains(tb, []byte("sandbox copy")) {
			t.Fatal("a tar through the link holds the host's canary, or not the sandbox's copy")
		}
		if err := c.RemoveFile(ctx, id, base+"/d", "", true); err != nil {
			t.Fatal(err)
		}
	}
	putFile(t, c, id, "/home/agent/h/canfile", "rewritten", client.WriteOptions{})
	if r := h.Exec(id, "cat "+can.file+"; readlink /home/agent/h/canfile"); r.Stdout != "rewritten"+can.file+"\n" {
		t.Fatalf("a write to canfile landed elsewhere: %q", r.Stdout)
	}
	// A watch through the link watches the sandbox's directory.
	w, err := c.WatchFiles(ctx, id, "/home/agent/h/candir", "", false)
	if err != nil {
		t.Fatal(err)
	}
	h.Exec(id, "touch "+can.dir+"/seen")
	if ev, err := w.Next(); err != nil || ev.Path != "/home/agent/h/candir/seen" {
		t.Fatalf("watch through the link: %v %+v", err, ev)
	}
	w.Close()
	// Deleting the links removes the links.
	for _, l := range []string{"shadow", "p1etc", "up", "canfile", "candir"} {
		if err := c.RemoveFile(ctx, id, "/home/agent/h/"+l, "", true); err != nil {
			t.Fatalf("remove %s: %v", l, err)
		}
	}
	if r := h.Exec(id, "cat "+can.file+" /etc/hostname >/dev/null && echo kept"); r.Stdout != "kept\n" {
		t.Fatalf("removing a link removed its target: %q", r.Stdout)
	}
	// A tar of the links holds links, never what they point to.
	rc, err := c.ReadTar(ctx, id, "/home/agent/h", "")
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeSymlink {
			t.Fatalf("tar entry %s is not a symlink: %q", hdr.Name, hdr.Typeflag)
		}
	}
	rc.Close()
	// Tar uploads cannot write through links, old or new, nor outside.
	for name, entries := range map[string][]tarEntry{
		"through an existing link": {{hdr: tar.Header{Name: "canclimb/evil", Typeflag: tar.TypeReg}, body: "x"}},
		"link then write":          {{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: can.dir}}, {hdr: tar.Header{Name: "l/evil", Typeflag: tar.TypeReg}, body: "x"}},
		"dot-dot":                  {{hdr: tar.Header{Name: "../../../../" + strings.TrimPrefix(can.dir, "/") + "/evil", Typeflag: tar.TypeReg}, body: "x"}},
		"absolute":                 {{hdr: tar.Header{Name: can.dir + "/evil", Typeflag: tar.TypeReg}, body: "x"}},
		"hard link to shadow":      {{hdr: tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}}},
		"hard link out":            {{hdr: tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../../../etc/shadow"}}},
		"device":                   {{hdr: tar.Header{Name: "mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1}}},
	} {
		b := tarOf(t, entries...)
		_, err := c.WriteTar(ctx, id, "/home/agent/h", bytes.NewReader(b), client.WriteOptions{User: "root", Size: int64(len(b))})
		wantStatus(t, "tar "+name, err, http.StatusBadRequest)
	}
	if r := h.Exec(id, "ls -A /home/agent/h; ls "+can.dir); r.Stdout != "canclimb\np1root\nsecret\nseen\n" {
		t.Fatalf("a refused tar left something: %q", r.Stdout)
	}
	can.check(t)
}

// testSymlinkRace swaps a symlink between a real directory and the
// host canary's path (absolute, climbing with .., through /proc/self/root,
// and /proc/1/root) in a tight loop while uploads, downloads, lists, tars, moves and removes run
// through it. The race is the sandbox's own to win: every outcome is the
// sandbox's file or an error, and the host canary is never touched.
func testSymlinkRace(t *testing.T, h *daemontest.Harness) {
	ctx := context.Background()
	c := h.Client()
	s := h.Create("mallory", &apitype.SandboxConfig{Image: "localhost/matrx/sandbox:latest", MemoryMB: 1024, CPU: 2})
	id := s.SandboxID
	can := newCanary(t)
	climb := strings.Repeat("../", 12) + strings.TrimPrefix(can.dir, "/")
	swapper := fmt.Sprintf(`import os, time
os.makedirs("/home/agent/race/real", exist_ok=True)
os.makedirs(%[1]q, exist_ok=True)
open(%[1]q + "/secret", "w").write("sandbox copy\n")
targets = ["/home/agent/race/real", %[1]q, %[2]q, "/proc/1/root/etc", "/proc/self/root" + %[1]q, "real/../real"]
end = time.time() + 10
i = 0
while time.time() < end:
    t = targets[i %% len(targets)]
    i += 1
    try:
        os.symlink(t, "/home/agent/race/.next")
    except FileExistsError:
        os.unlink("/home/agent/race/.next")
        continue
    os.replace("/home/agent/race/.next", "/home/agent/race/x")
    if i %% 16 == 0:
        time.sleep(0.001)  # hundreds of swaps per operation, and CPU left for the helper
`, can.dir, climb)
	h.Exec(id, "cat > /tmp/swap.py <<'EOF'\n"+swapper+"EOF\nsetsid python3 /tmp/swap.py >/dev/null 2>&1 </dev/null &\nsleep 0.5")
	tarBody := tarOf(t, tarEntry{hdr: tar.Header{Name: "t/f", Typeflag: tar.TypeReg}, body: "tar"})
	var mu sync.Mutex
	codes := map[int]int{}
	record := func(err error) {
		code := http.StatusOK
		if err != nil {
			code = statusOf(err)
		}
		mu.Lock()
		codes[code]++
		mu.Unlock()
	}
	ops := []func(){
		func() {
			_, err := c.WriteFile(ctx, id, "/home/agent/race/x/f", strings.NewReader("race"), client.WriteOptions{Size: 4, Parents: true})
			record(err)
		},
		func() {
			_, err := c.WriteFile(ctx, id, "/home/agent/race/x/secret", strings.NewReader("overwritten"), client.WriteOptions{Size: 11, User: "root"})
			record(err)
		},
		func() {
			r, err := c.ReadFile(ctx, id, "/home/agent/race/x/secret", client.ReadOptions{})
			if err == nil {
				b, _ := io.ReadAll(r)
				r.Close()
				if strings.Contains(string(b), "host canary") {
					t.Errorf("the host canary came back through the race")
				}
			}
			record(err)
		},
		func() {
			_, err := c.ListFiles(ctx, id, "/home/agent/race/x", client.ListFilesOptions{Depth: 2})
			record(err)
		},
		func() {
			rc, err := c.ReadTar(ctx, id, "/home/agent/race/x", "root")
			if err == nil {
				b, _ := io.ReadAll(rc)
				rc.Close()
				if bytes.Contains(b, []byte("host canary")) {
					t.Errorf("the host canary came back in a tar")
				}
			}
			record(err)
		},
		func() {
			_, err := c.WriteTar(ctx, id, "/home/agent/race/x", bytes.NewReader(tarBody), client.WriteOptions{Size: int64(len(tarBody))})
			record(err)
		},
		func() {
			_, err := c.MoveFile(ctx, id, "", apitype.MoveRequest{From: "/home/agent/race/x/f", To: "/home/agent/race/x/g", Overwrite: true})
			record(err)
		},
		func() { record(c.RemoveFile(ctx, id, "/home/agent/race/x/g", "", false)) },
		func() { _, err := c.StatFile(ctx, id, "/home/agent/race/x/secret", ""); record(err) },
		func() {
			_, err := c.GrepFiles(ctx, id, "/home/agent/race/x", "canary", client.GrepOptions{})
			record(err)
		},
	}
	var wg sync.WaitGroup
	end := time.Now().Add(7 * time.Second)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; time.Now().Before(end); i++ {
				ops[i%len(ops)]()
			}
		}(g)
	}
	wg.Wait()
	t.Logf("statuses during the race: %v", codes)
	total, ok := 0, codes[http.StatusOK]
	for code, n := range codes {
		total += n
		if code == 0 || code >= 500 {
			t.Errorf("%d operations failed with status %d", n, code)
		}
	}
	if total < 40 || ok == 0 {
		t.Fatalf("the race ran %d operations, %d succeeded: too few to mean anything", total, ok)
	}
	can.check(t)
	if hl, err := c.Health(ctx); err != nil || hl.Status != "healthy" {
		t.Fatalf("daemon after the race: %v %+v", err, hl)
	}
}

// testSpecialFiles: FIFOs, sockets and devices are refused at once,
// never read, whatever points at them; the daemon stays responsive.
func testSpecialFiles(t *testing.T, h *daemontest.Harness) {
	ctx := context.Background()
	c := h.Client()
	id := h.Create("mallory", &apitype.SandboxConfig{Image: "localhost/matrx/sandbox:latest"}).SandboxID
	h.Exec(id, `mkdir -p /tmp/sp && mkfifo /tmp/sp/fifo && python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("/tmp/sp/sock")' && ln -s /tmp/sp/fifo /home/agent/fifolink && echo text > /tmp/sp/file`)
	for _, p := range []string{"/tmp/sp/fifo", "/tmp/sp/sock", "/home/agent/fifolink", "/dev/zero", "/dev/null", "/dev/urandom", "/dev/full", "/dev/tty", "/dev/ptmx"} {
		for _, user := range []string{"agent", "root"} {
			start := time.Now()
			_, err := getFile(t, c, id, p, client.ReadOptions{User: user})
			wantStatus(t, user+" downloads "+p, err, http.StatusBadRequest)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("%s took %v", p, d)
			}
		}
	}
	// A tar of a directory with them skips them; grep skips them too.
	rc, err := c.ReadTar(ctx, id, "/tmp/sp", "")
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(rc)
	var names []string
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, hdr.Name)
	}
	rc.Close()
	if strings.Join(names, ",") != "file" {
		t.Fatalf("tar of special files: %v", names)
	}
	if g, err := c.GrepFiles(ctx, id, "/tmp/sp", "text", client.GrepOptions{}); err != nil || len(g.Matches) != 1 {
		t.Fatalf("grep beside a FIFO: %v %+v", err, g)
	}
	_, err = c.GrepFiles(ctx, id, "/tmp/sp/fifo", "x", client.GrepOptions{})
	wantStatus(t, "grep a FIFO", err, http.StatusBadRequest)
	// An upload to a FIFO's path replaces it (rename), never writes into it.
	putFile(t, c, id, "/tmp/sp/fifo", "now a file", client.WriteOptions{})
	if r := h.Exec(id, "test -p /tmp/sp/fifo || cat /tmp/sp/fifo"); r.Stdout != "now a file" {
		t.Fatalf("after an upload over a FIFO: %q", r.Stdout)
	}
	if hl, err := c.Health(ctx); err != nil || hl.Status != "healthy" {
		t.Fatalf("daemon: %v %+v", err, hl)
	}
}

type tarEntry struct {
	hdr  tar.Header
	body string
}

func tarOf(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.body))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return b.Bytes()
}

func hasEntry(l *apitype.FileList, name string) bool {
	for _, e := range l.Entries {
		if e.Name == name {
			return true
		}
	}
	return false
}

// productionImage is build/images/sandbox.tar (make image).
func productionImage(t *testing.T) string {
	t.Helper()
	prod := filepath.Join(containerdtest.RepoRoot(), "build", "images", "sandbox.tar")
	if _, err := os.Stat(prod); err != nil {
		containerdtest.Skip(t, "production image %s missing (run make image)", prod)
	}
	return prod
}

func importImage(t *testing.T, h *daemontest.Harness, archive string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := h.Client().ImportImage(context.Background(), f); err != nil {
		t.Fatal(err)
	}
}
