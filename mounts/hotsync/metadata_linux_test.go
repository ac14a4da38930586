package hotsync_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/mounts/objstore"
)

// node is what `find -printf '%p %y %m %T@ %l'` shows of one entry, with
// the mtime to the nanosecond.
type node struct {
	kind    byte // f, d, l
	perm    os.FileMode
	mtimeNs int64
	target  string
	data    string
}

// lsTree describes every entry below dir, without following symlinks.
func lsTree(t *testing.T, dir string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		n := node{perm: os.FileMode(st.Mode & 0o7777), mtimeNs: st.Mtim.Nano()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			n.kind = 'd'
		case unix.S_IFLNK:
			n.kind = 'l'
			n.target, _ = os.Readlink(p)
		case unix.S_IFREG:
			n.kind = 'f'
			b, _ := os.ReadFile(p)
			n.data = string(b)
		default:
			n.kind = '?'
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func setMtime(t *testing.T, p string, ns int64) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
}

// TestMetadataRoundTrip is issue 9's defect 7 at the sync level: modes
// (executable bits), mtimes to the nanosecond (files', directories' and
// symlinks' own), symlinks as links, empty directories, .git and a name
// that is not valid UTF-8 come back as they were left; setuid bits do
// not, and nothing else a sandbox can make is dropped silently.
func TestMetadataRoundTrip(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		a := newSandbox(t, st, "sbx-a")
		must(t, os.MkdirAll(a.dir, 0o755))
		a.down(t)
		a.write(t, "proj/run.sh", []byte("#!/bin/sh\necho hi\n"))
		must(t, os.Chmod(filepath.Join(a.dir, "proj/run.sh"), 0o755))
		a.write(t, "proj/secret.key", []byte("k"))
		must(t, os.Chmod(filepath.Join(a.dir, "proj/secret.key"), 0o600))
		a.write(t, "proj/.git/HEAD", []byte("ref: refs/heads/main\n"))
		a.write(t, "proj/.git/objects/ab/cdef", []byte("blob"))
		must(t, os.MkdirAll(filepath.Join(a.dir, "proj/.git/refs/tags"), 0o755)) // empty, as git makes it
		must(t, os.MkdirAll(filepath.Join(a.dir, "proj/empty"), 0o700))
		must(t, os.MkdirAll(filepath.Join(a.dir, "venv/bin"), 0o755))
		a.write(t, "venv/lib/python", []byte("py"))
		must(t, os.Symlink("../lib/python", filepath.Join(a.dir, "venv/bin/python")))
		must(t, os.Symlink("/usr/bin/python3", filepath.Join(a.dir, "venv/bin/python3")))
		must(t, os.Symlink("dangling", filepath.Join(a.dir, "venv/bin/nothing")))
		a.write(t, "caf\xe9.txt", []byte("latin-1 name"))
		must(t, os.MkdirAll(filepath.Join(a.dir, "d\xff\xfe"), 0o755))
		a.write(t, "d\xff\xfe/inner", []byte("below a non-UTF-8 directory"))
		a.write(t, "suid", []byte("x"))
		must(t, os.Chmod(filepath.Join(a.dir, "suid"), 0o4755))
		must(t, syscall.Mkfifo(filepath.Join(a.dir, "fifo"), 0o644))
		// Distinct nanosecond mtimes everywhere, directories last.
		ns := time.Date(2024, 3, 1, 12, 0, 0, 123456789, time.UTC).UnixNano()
		var dirs []string
		filepath.WalkDir(a.dir, func(p string, d fs.DirEntry, err error) error {
			if p == a.dir || err != nil {
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
				return nil
			}
			ns += 1001
			setMtime(t, p, ns)
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			ns += 1001
			setMtime(t, d, ns)
		}
		want := lsTree(t, a.dir)
		res := a.up(t)
		if len(res.Conflicts) != 0 {
			t.Fatalf("up: %+v", res)
		}
		// The FIFO cannot be stored: reported, never dropped silently.
		var rejected []string
		for _, r := range res.Rejected {
			rejected = append(rejected, r.Path)
		}
		if !slices.Equal(rejected, []string{"fifo"}) {
			t.Fatalf("rejected = %q, want only the fifo", rejected)
		}

		b := newSandbox(t, st, "sbx-b")
		b.down(t)
		got := lsTree(t, b.dir)
		delete(want, "fifo")
		// setuid is never restored.
		if n := got["suid"]; n.perm != 0o755 {
			t.Errorf("suid came back %o, want 0755", n.perm)
		}
		w := want["suid"]
		w.perm = 0o755
		want["suid"] = w
		for p, wn := range want {
			gn, ok := got[p]
			if !ok {
				t.Errorf("%q is missing after the round trip", p)
				continue
			}
			if gn != wn {
				t.Errorf("%q: got %c %o %d %q, want %c %o %d %q", p, gn.kind, gn.perm, gn.mtimeNs, gn.target, wn.kind, wn.perm, wn.mtimeNs, wn.target)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok {
				t.Errorf("%q appeared after the round trip", p)
			}
		}
		if os.Geteuid() == 0 {
			filepath.WalkDir(b.dir, func(p string, d fs.DirEntry, err error) error {
				var st unix.Stat_t
				if err == nil && unix.Lstat(p, &st) == nil && (st.Uid != 1000 || st.Gid != 1000) {
					t.Errorf("%s is owned by %d:%d, want the sandbox user", p, st.Uid, st.Gid)
				}
				return err
			})
		}
		// Other S3 tools see sensible objects: the script's object carries
		// the s3fs/rclone mode and mtime.
		if s3, ok := st.(interface {
			Head(context.Context, string) (objstore.ObjectInfo, error)
		}); ok {
			info, err := s3.Head(testCtx(t), prefix+"proj/run.sh")
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != int64(len("#!/bin/sh\necho hi\n")) {
				t.Fatalf("run.sh object: %+v", info)
			}
		}
		// Nothing changed: a second Up moves nothing.
		res = b.up(t)
		if len(res.Uploaded)+len(res.Deleted)+len(res.Conflicts) != 0 {
			t.Fatalf("up after down uploaded %q, deleted %q, conflicts %q", res.Uploaded, res.Deleted, res.Conflicts)
		}
		// A chmod alone is a change that reaches the bucket.
		must(t, os.Chmod(filepath.Join(b.dir, "proj/secret.key"), 0o644))
		if res := b.up(t); !slices.Contains(res.Uploaded, "proj/secret.key") {
			t.Fatalf("chmod not synced: %+v", res)
		}
		c := newSandbox(t, st, "sbx-c")
		c.down(t)
		if n := lsTree(t, c.dir)["proj/secret.key"]; n.perm != 0o644 {
			t.Fatalf("chmod did not come back: %o", n.perm)
		}
	})
}

// TestGitIsSyncedByDefault: the default excludes are exactly the old
// system's (*.tmp, .DS_Store, __pycache__/*).
func TestGitIsSyncedByDefault(t *testing.T) {
	if !slices.Equal(hotsync.DefaultExcludes, []string{"*.tmp", ".DS_Store", "__pycache__/"}) {
		t.Fatalf("default excludes = %q", hotsync.DefaultExcludes)
	}
	st := newLocal(t)
	a := newSandbox(t, st, "sbx-a")
	a.write(t, ".git/config", []byte("[core]"))
	a.write(t, "x.pyc", []byte("pyc"))
	a.write(t, "__pycache__/m.cpython-311.pyc", []byte("pyc"))
	a.write(t, "a.tmp", []byte("t"))
	res := a.up(t)
	if !slices.Equal(res.Uploaded, []string{".git/config", "x.pyc"}) {
		t.Fatalf("uploaded %q", res.Uploaded)
	}
}

// lostResponseStore wraps a real store: the first Put of a key matching
// victim reaches the server, but its response is "lost" (the caller gets
// a transient error), as after a dropped connection.
type lostResponseStore struct {
	hotsync.Store
	victim string
	lost   atomic.Int32
}

func (s *lostResponseStore) Put(ctx context.Context, key string, body io.Reader, size int64, cond objstore.Cond, meta objstore.Metadata) (objstore.ObjectInfo, error) {
	info, err := s.Store.Put(ctx, key, body, size, cond, meta)
	if err == nil && strings.HasSuffix(key, s.victim) && s.lost.Add(1) == 1 {
		return objstore.ObjectInfo{}, fmt.Errorf("connection reset after the request was sent: %w", errdefs.ErrUnavailable)
	}
	return info, err
}

// TestLostPutResponseIsRecognisedAsOurs is defect 4: after a PUT whose
// response was lost (or a daemon killed mid-upload), a file over 16 MiB
// is recognised as our own earlier upload, not turned into a conflict
// copy for the rest of the sandbox's life.
func TestLostPutResponseIsRecognisedAsOurs(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		big := randBytes(17<<20, 9)
		putObject(t, st, "model.bin", randBytes(1000, 1))
		ls := &lostResponseStore{Store: st, victim: "model.bin"}
		a := newSandbox(t, ls, "sbx-a")
		a.down(t)
		a.write(t, "model.bin", big)
		res, err := a.Up(testCtx(t))
		if err != nil || len(res.Conflicts) != 0 {
			t.Fatalf("up after a lost response: %v %+v", err, res)
		}
		// Later edits go to the file itself, not to conflict copies.
		big[0]++
		a.write(t, "model.bin", big)
		res = a.up(t)
		if len(res.Conflicts) != 0 || !slices.Equal(res.Uploaded, []string{"model.bin"}) {
			t.Fatalf("edit after: %+v", res)
		}
		objs := objects(t, st)
		for k := range objs {
			if strings.Contains(k, ".conflict-") {
				t.Fatalf("conflict copy %s made of our own upload", k)
			}
		}
		if string(objs["model.bin"]) != string(big) {
			t.Fatal("the bucket does not hold the last edit")
		}
	})
}

// killedStore fails every Put after it reached the server with an error
// that is not retried, as when the daemon dies before it hears back.
type killedStore struct{ hotsync.Store }

func (s killedStore) Put(ctx context.Context, key string, body io.Reader, size int64, cond objstore.Cond, meta objstore.Metadata) (objstore.ObjectInfo, error) {
	if _, err := s.Store.Put(ctx, key, body, size, cond, meta); err != nil {
		return objstore.ObjectInfo{}, err
	}
	return objstore.ObjectInfo{}, errors.New("killed before the response was read")
}

// TestUploadBeforeACrashIsRecognisedAsOurs: the daemon died after a large
// file's upload reached the server but before the manifest recorded it;
// the next sync (a new Syncer on the same manifest) must not make a
// conflict copy of it.
func TestUploadBeforeACrashIsRecognisedAsOurs(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		putObject(t, st, "data.bin", []byte("old"))
		base := t.TempDir()
		mk := func(s hotsync.Store) *hotsync.Syncer {
			sy, err := hotsync.New(hotsync.Config{Store: s, Prefix: prefix, Dir: filepath.Join(base, "home"),
				ManifestPath: filepath.Join(base, "manifest.json"), SandboxID: "sbx-k", KeepOwner: os.Geteuid() != 0})
			must(t, err)
			return sy
		}
		if _, err := mk(st).Down(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		must(t, os.WriteFile(filepath.Join(base, "home", "data.bin"), randBytes(20<<20, 3), 0o644))
		if _, err := mk(killedStore{st}).Up(testCtx(t)); err == nil {
			t.Fatal("the killed upload reported success")
		}
		res, err := mk(st).Up(testCtx(t))
		if err != nil || len(res.Conflicts) != 0 {
			t.Fatalf("sync after the crash: %v %+v", err, res)
		}
		for k := range objects(t, st) {
			if strings.Contains(k, ".conflict-") {
				t.Fatalf("conflict copy %s made of our own upload", k)
			}
		}
	})
}
