//go:build linux

package daemon_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/testenv"
)

// procStatus reads a field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// rssGrowth runs f and returns how far this process's resident memory
// (the in-process daemon, its containerd client and the test's client)
// peaked above where it started.
func rssGrowth(t *testing.T, f func()) int64 {
	t.Helper()
	// Return what the heap no longer uses, so the baseline is low; then
	// 5 resets the peak (VmHWM) to the current resident size.
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
	base := procStatus(t, "VmRSS")
	f()
	return procStatus(t, "VmHWM") - base
}

// maxGrowth bounds the daemon's memory while it moves a GiB or more: a
// whole-file buffer anywhere would be a GiB.
const maxGrowth = 192 << 20

// TestFilesLarge: 1 GiB up and down byte-exact, a 10 GB sparse file
// down, and a million-entry directory listed, with the daemon's memory
// bounded.
func TestFilesLarge(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	c := h.UnvalidatedClient()
	defer c.Close()
	id := h.Create("gina", &apitype.SandboxConfig{MemoryMB: 1024, CPU: 2}).SandboxID

	t.Run("1 GiB up and down", func(t *testing.T) {
		const size = 1 << 30
		up := sha256.New()
		var info *apitype.FileInfo
		var err error
		start := time.Now()
		grew := rssGrowth(t, func() {
			src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{1}), size), up)
			info, err = c.WriteFile(ctx, id, "/home/agent/big", src, client.WriteOptions{Size: size})
		})
		if err != nil || info == nil || info.Size != size {
			t.Fatalf("upload: %v %+v", err, info)
		}
		t.Logf("1 GiB up in %v, memory grew %d MiB", time.Since(start), grew>>20)
		if grew > maxGrowth {
			t.Errorf("memory grew %d MiB during a 1 GiB upload", grew>>20)
		}
		want := hex.EncodeToString(up.Sum(nil))
		if r := h.Exec(id, "sha256sum /home/agent/big"); !strings.HasPrefix(r.Stdout, want+" ") {
			t.Fatalf("the sandbox's copy differs: %q, want %s", r.Stdout, want)
		}
		down := sha256.New()
		var n int64
		start = time.Now()
		grew = rssGrowth(t, func() {
			r, err := c.ReadFile(ctx, id, "/home/agent/big", client.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			n, err = io.Copy(down, r)
			r.Close()
			if err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("1 GiB down in %v, memory grew %d MiB", time.Since(start), grew>>20)
		if n != size || hex.EncodeToString(down.Sum(nil)) != want {
			t.Fatalf("download of %d bytes differs from the upload", n)
		}
		if grew > maxGrowth {
			t.Errorf("memory grew %d MiB during a 1 GiB download", grew>>20)
		}
		if err := c.RemoveFile(ctx, id, "/home/agent/big", "", false); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("10 GB sparse file from /tmp", func(t *testing.T) {
		const size = 10_000_000_000
		h.Exec(id, "truncate -s "+strconv.Itoa(size)+" /tmp/sparse && echo -n end >> /tmp/sparse")
		var n int64
		var tail []byte
		start := time.Now()
		grew := rssGrowth(t, func() {
			r, err := c.ReadFile(ctx, id, "/tmp/sparse", client.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Length != size+3 {
				t.Fatalf("Content-Length %d", r.Length)
			}
			buf := make([]byte, 1<<20)
			for {
				k, err := r.Read(buf)
				n += int64(k)
				if k > 0 {
					tail = append(tail[:0], buf[max(0, k-8):k]...)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("after %d bytes: %v", n, err)
				}
			}
		})
		t.Logf("10 GB sparse down in %v, memory grew %d MiB", time.Since(start), grew>>20)
		if n != size+3 || !bytes.HasSuffix(tail, []byte("\x00end")) {
			t.Fatalf("got %d bytes ending %q", n, tail)
		}
		if grew > maxGrowth {
			t.Errorf("memory grew %d MiB during a 10 GB download", grew>>20)
		}
		h.Exec(id, "rm /tmp/sparse")
	})

	t.Run("a million entries in /tmp", func(t *testing.T) {
		const entries = 1_000_000
		h.Exec(id, "mkdir /tmp/million && touch /tmp/million/seed")
		// Made from the host, through the sandbox's root (test setup only:
		// a million link(2) calls take seconds; a million execs would not).
		dir := filepath.Join("/proc", strconv.Itoa(sandboxPID(t, h, id)), "root/tmp/million")
		linkAs(t, dir, entries)
		first, err := h.Client().ListFiles(ctx, id, "/tmp/million", client.ListFilesOptions{})
		if err != nil || len(first.Entries) != 1000 || !first.Truncated || first.Cursor == "" {
			t.Fatalf("first page: %v %d %v", err, len(first.Entries), first.Truncated)
		}
		// Pages of the largest size, each bounded, none repeating an entry
		// (the cursor's completeness at scale is fshelper's
		// TestListLargeDirectory: here each page costs an exec).
		seen := make([]bool, entries)
		count, pages := 0, 0
		start := time.Now()
		grew := rssGrowth(t, func() {
			cursor := first.Cursor
			for pages < 5 {
				l, err := c.ListFiles(ctx, id, "/tmp/million", client.ListFilesOptions{Limit: 10000, Cursor: cursor})
				if err != nil {
					t.Fatalf("page %d: %v", pages, err)
				}
				pages++
				if len(l.Entries) != 10000 || !l.Truncated {
					t.Fatalf("page %d: %d entries, truncated %v", pages, len(l.Entries), l.Truncated)
				}
				for _, e := range l.Entries {
					count++
					if e.Name == "seed" {
						continue
					}
					i, err := strconv.Atoi(strings.TrimPrefix(e.Name, "f"))
					if err != nil || i < 0 || i >= entries || seen[i] {
						t.Fatalf("entry %q unexpected or listed twice", e.Name)
					}
					seen[i] = true
				}
				cursor = l.Cursor
			}
		})
		t.Logf("%d pages of 10000 of a million entries in %v, memory grew %d MiB", pages, time.Since(start), grew>>20)
		if grew > maxGrowth {
			t.Errorf("memory grew %d MiB listing a million entries", grew>>20)
		}
		// find is bounded too.
		f, err := c.FindFiles(ctx, id, "/tmp/million", "f*", "", 0)
		if err != nil || len(f.Entries) != 1000 || !f.Truncated {
			t.Fatalf("find over a million entries: %v %+v", err, len(f.Entries))
		}
	})
	if hl, err := h.Client().Health(ctx); err != nil || hl.Status != "healthy" {
		t.Fatalf("daemon: %v %+v", err, hl)
	}
	_ = http.StatusOK
}

// sandboxPID is the host pid of a sandbox's PID 1 (for test setup that
// writes into the sandbox's filesystems from the host).
func sandboxPID(t *testing.T, h *daemontest.Harness, id string) int {
	t.Helper()
	cl, err := containerd.New(h.Env.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := namespaces.WithNamespace(context.Background(), daemontest.Namespace)
	ctr, err := cl.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return int(task.Pid())
}

// TestFilesColdStorage: the files API on /data/cold (a real s3fs FUSE
// mount of the user's cold prefix), across to /tmp and /home/agent.
func TestFilesColdStorage(t *testing.T) {
	testenv.BothContainerds(t)
	srv, bucket := s3Env(t)
	h := daemontest.Start(t, withS3(srv, bucket))
	ctx := context.Background()
	c := h.Client()
	id := h.Create("cora", nil).SandboxID
	info := putFile(t, c, id, "/data/cold/in/report.txt", "cold report\n", client.WriteOptions{Parents: true, Mode: "0644"})
	if info == nil || info.Size != 12 {
		t.Fatalf("upload to cold: %+v", info)
	}
	if b, ok := get(t, srv, bucket, "users/cora/cold/in/report.txt"); !ok || b != "cold report\n" {
		t.Fatalf("the object in the bucket: %q %v", b, ok)
	}
	if b, err := getFile(t, c, id, "/data/cold/in/report.txt", client.ReadOptions{}); err != nil || b != "cold report\n" {
		t.Fatalf("download from cold: %q %v", b, err)
	}
	if l, err := c.ListFiles(ctx, id, "/data/cold/in", client.ListFilesOptions{}); err != nil || !hasEntry(l, "report.txt") {
		t.Fatalf("list cold: %v %+v", err, l)
	}
	if g, err := c.GrepFiles(ctx, id, "/data/cold", "report", client.GrepOptions{}); err != nil || len(g.Matches) != 1 {
		t.Fatalf("grep cold: %v %+v", err, g)
	}
	// Across mounts both ways: FUSE → the home disk, tmpfs → FUSE.
	if _, err := c.MoveFile(ctx, id, "", apitype.MoveRequest{From: "/data/cold/in/report.txt", To: "/home/agent/report.txt"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := get(t, srv, bucket, "users/cora/cold/in/report.txt"); ok {
		t.Fatal("the cold object stayed after a move out")
	}
	putFile(t, c, id, "/tmp/scratch", "from tmp\n", client.WriteOptions{})
	if _, err := c.MoveFile(ctx, id, "", apitype.MoveRequest{From: "/tmp/scratch", To: "/data/cold/scratch"}); err != nil {
		t.Fatal(err)
	}
	if b, ok := get(t, srv, bucket, "users/cora/cold/scratch"); !ok || b != "from tmp\n" {
		t.Fatalf("moved into cold: %q %v", b, ok)
	}
	// Tar up into cold and back down.
	body := tarOf(t, tarEntry{hdr: tarHeader("t/a.txt"), body: "a"}, tarEntry{hdr: tarHeader("t/b/c.txt"), body: "c"})
	if _, err := c.WriteTar(ctx, id, "/data/cold/tree", bytes.NewReader(body), client.WriteOptions{Parents: true, Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	rc, err := c.ReadTar(ctx, id, "/data/cold/tree", "")
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Contains(tb, []byte("t/b/c.txt")) {
		t.Fatal("tar from cold lacks an entry")
	}
	// A watch on a FUSE path starts (events may not come: documented).
	w, err := c.WatchFiles(ctx, id, "/data/cold", "", false)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := c.RemoveFile(ctx, id, "/data/cold/tree", "", true); err != nil {
		t.Fatal(err)
	}
	_, err = c.StatFile(ctx, id, "/data/cold/tree", "")
	wantStatus(t, "removed cold tree", err, http.StatusNotFound)
}

func tarHeader(name string) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}
}

// linkAs makes n hard links to dir/seed named f0000000... from the host.
// The sandbox's tmpfs belongs to its user namespace, where host root is
// not mapped: the links are made with the seed's owner as the thread's
// filesystem identity.
func linkAs(t *testing.T, dir string, n int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir+"/seed", &st); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		// This thread's fs ids change; it is never given back to Go.
		goruntime.LockOSThread()
		unix.Setfsgid(int(st.Gid))
		unix.Setfsuid(int(st.Uid))
		dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(dfd)
		name := []byte("f0000000")
		for i := 0; i < n; i++ {
			for j, v := 7, i; j > 0; j, v = j-1, v/10 {
				name[j] = byte('0' + v%10)
			}
			if err := unix.Linkat(dfd, "seed", dfd, string(name), 0); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
