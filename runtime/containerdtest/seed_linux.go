package containerdtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Seeds: a containerd root made once and reused by later tests.
//
// Why: a test of the production image (~520 MB, ~1.5 GB unpacked) spends
// about 80 s importing and unpacking it into its fresh containerd and, on
// containerd 1.6 with user namespaces, chowning a copy of it; its own
// checks take a few seconds. Four such tests in the first pass of `make
// test` and the hostile suites again in the later passes made a third of
// the run. A seed is that containerd root after the import, made
// by the first test that needs it and kept outside the clone (like the
// built tools), keyed by everything that shapes it: the seed's name and
// version, the containerd binary (its content) and the input files (size
// and mtime); not the OCI runtime, which a root does not depend on. A
// later test starts its containerd on a copy of it and still runs every
// step itself (its import finds the content and
// snapshots there and is quick), so a seed changes only how long a test
// takes, never what it checks.
//
// The copy shares file data with the seed (hard links) except the bolt
// databases, which containerd writes in place. Everything else containerd
// keeps in its root is written once (content blobs, committed snapshots)
// and only ever removed, which unlinks the copy's names and leaves the
// seed's; what a test writes lands in its own new snapshots.

// seedVersion changes whenever what a seed holds or how it is copied does.
const seedVersion = "2"

// Seed describes a root to make once.
type Seed struct {
	// Name names the seed (a directory name).
	Name string
	// Inputs are files whose identity is part of the key (an image archive).
	Inputs []string
	// Namespaces are cleaned when the making containerd stops.
	Namespaces []string
	// Prepare fills a fresh containerd (e's); it must leave no task
	// running. Whatever the root then holds is the seed.
	Prepare func(t testing.TB, e *Env)
}

// seedCache is where seeds live: MATRX_TEST_SEED_CACHE, else
// /var/cache/matrx/test-seeds (beside the cached tools).
func seedCache() string {
	if d := os.Getenv("MATRX_TEST_SEED_CACHE"); d != "" {
		return d
	}
	return "/var/cache/matrx/test-seeds"
}

// StartSeeded is Start on a copy of seed's root, making the seed first if
// it is not there (one maker at a time across test processes).
func StartSeeded(t testing.TB, seed Seed, nsToClean ...string) *Env {
	t.Helper()
	tar, bin, altDir := prerequisites(t)
	binKey, err := identity(bin)
	if err != nil {
		t.Fatalf("seed %s: %v", seed.Name, err)
	}
	key, err := seedKey(seed)
	if err != nil {
		t.Fatalf("seed %s: %v", seed.Name, err)
	}
	// One seed per containerd build (make test runs two): a new key for
	// one replaces only that build's older seeds.
	dir := filepath.Join(seedCache(), seed.Name+"-"+binKey[:8]+"-"+key)
	if err := os.MkdirAll(seedCache(), 0o700); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockFile(dir + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	complete := filepath.Join(dir, "complete")
	if _, err := os.Stat(complete); err != nil {
		start := time.Now()
		makeSeed(t, seed, tar, bin, altDir, dir)
		t.Logf("made containerd seed %s in %v", filepath.Base(dir), time.Since(start).Round(time.Millisecond))
	}
	// Its mtime says when it was last used (see makeSeed's cleanup).
	now := time.Now()
	os.Chtimes(complete, now, now)
	unlock()
	return start(t, tar, bin, altDir, func(root string) error { return cloneRoot(filepath.Join(dir, "root"), root) }, nsToClean)
}

func seedKey(seed Seed) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", seed.Name, seedVersion)
	for _, f := range seed.Inputs {
		// Size and mtime, not the path or inode: every clone of the
		// repository has its own build/images, linked or copied from the
		// same image cache, and must find the same seed.
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%d\x00%d\x00", st.Size(), st.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// identity names a binary by its content (each clone builds or links its
// own copy of the same containerd).
func identity(f string) (string, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// makeSeed runs Prepare on a fresh containerd, stops it and copies its
// root into dir. Older seeds of the same name and containerd build go
// (they are keyed by inputs that no longer exist), and so do those of
// other builds unused for a week.
func makeSeed(t testing.TB, seed Seed, tar, bin, altDir, dir string) {
	t.Helper()
	e := start(t, tar, bin, altDir, nil, seed.Namespaces)
	seed.Prepare(t, e)
	e.halt()
	prefix := strings.TrimSuffix(filepath.Base(dir), filepath.Base(dir)[strings.LastIndexByte(filepath.Base(dir), '-'):])
	old, _ := filepath.Glob(filepath.Join(seedCache(), prefix+"-*"))
	all, _ := filepath.Glob(filepath.Join(seedCache(), seed.Name+"-*"))
	for _, o := range all {
		if st, err := os.Stat(filepath.Join(o, "complete")); err == nil && time.Since(st.ModTime()) > 7*24*time.Hour {
			old = append(old, o)
		}
	}
	for _, o := range old {
		if o != dir && !strings.HasSuffix(o, ".lock") && !strings.HasSuffix(o, ".making") {
			os.RemoveAll(o)
			os.Remove(o + ".lock")
		}
	}
	os.RemoveAll(dir)
	tmp := dir + ".making"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", filepath.Join(e.Dir, "root"), filepath.Join(tmp, "root")).CombinedOutput(); err != nil {
		t.Fatalf("copy seed: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	e.stop(t)
}

// cloneRoot makes dst a copy of the seed root src: hard links, except the
// bolt databases (written in place), which are copied.
func cloneRoot(src, dst string) error {
	if out, err := exec.Command("cp", "-al", src, dst).CombinedOutput(); err != nil {
		// Another filesystem than the seed's: a full copy, slower.
		os.RemoveAll(dst)
		if out2, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s: %v: %s (hard links: %s)", src, err, out2, out)
		}
		return nil
	}
	return filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(d.Name(), ".db") {
			return err
		}
		tmp := p + ".copy"
		if out, err := exec.Command("cp", "-a", p, tmp).CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s: %v: %s", p, err, out)
		}
		return os.Rename(tmp, p)
	})
}

// halt stops containerd (not its shims: Prepare left no task) and waits.
func (e *Env) halt() {
	e.mu.Lock()
	cmd := e.cmd
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}
