package hotsync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/mounts/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

const prefix = "users/u1/hot/"

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// forEachStore runs fn against a fresh versitygw bucket and a fresh Local
// store.
func forEachStore(t *testing.T, fn func(t *testing.T, st hotsync.Store)) {
	t.Run("local", func(t *testing.T) { fn(t, newLocal(t)) })
	t.Run("s3", func(t *testing.T) { fn(t, newS3(t)) })
}

func newLocal(t *testing.T) *objstore.Local {
	l, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newS3(t *testing.T) *objstore.S3 {
	srv := s3test.Start(t)
	s, err := objstore.NewS3(t.Context(), objstore.S3Config{
		Bucket: srv.NewBucket(t), Region: srv.Region, Endpoint: srv.Endpoint, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type sandbox struct {
	*hotsync.Syncer
	dir      string
	manifest string
	sentinel string
}

// newSandbox is one sandbox of user u1: its own Dir and manifest.
func newSandbox(t *testing.T, st hotsync.Store, id string, mod ...func(*hotsync.Config)) sandbox {
	t.Helper()
	base := t.TempDir()
	cfg := hotsync.Config{
		Store:        st,
		Prefix:       prefix,
		Dir:          filepath.Join(base, "home"),
		ManifestPath: filepath.Join(base, "state", "hot-manifest.json"),
		SandboxID:    id,
		KeepOwner:    os.Geteuid() != 0,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	// The home as mounts.Storage makes it: a directory carrying the
	// sentinel Up verifies before it deletes anything.
	must(t, os.MkdirAll(cfg.Dir, 0o755))
	must(t, os.MkdirAll(filepath.Dir(cfg.ManifestPath), 0o700))
	cfg.Sentinel = "sentinel-" + id
	must(t, hotsync.WriteSentinel(cfg.Dir, cfg.Sentinel))
	for _, m := range mod {
		m(&cfg)
	}
	s, err := hotsync.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return sandbox{Syncer: s, dir: cfg.Dir, manifest: cfg.ManifestPath, sentinel: cfg.Sentinel}
}

func (sb sandbox) down(t *testing.T) hotsync.Result {
	t.Helper()
	res, err := sb.Down(testCtx(t))
	if err != nil {
		t.Fatalf("down: %v", err)
	}
	return res
}

func (sb sandbox) up(t *testing.T) hotsync.Result {
	t.Helper()
	res, err := sb.Up(testCtx(t))
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	return res
}

func (sb sandbox) write(t *testing.T, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(sb.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readTree returns the regular files below dir.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			out[filepath.ToSlash(rel)] = b
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// objects returns the store's objects under the prefix (key minus
// prefix), without directory markers.
func objects(t *testing.T, st hotsync.Store) map[string][]byte {
	t.Helper()
	ctx := testCtx(t)
	out := map[string][]byte{}
	for obj, err := range st.List(ctx, prefix) {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(obj.Key, "/") {
			continue
		}
		var buf bytes.Buffer
		f, err := os.CreateTemp(t.TempDir(), "obj")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Download(ctx, obj.Key, obj.Size, f); err != nil {
			t.Fatal(err)
		}
		f.Seek(0, io.SeekStart)
		io.Copy(&buf, f)
		f.Close()
		out[strings.TrimPrefix(obj.Key, prefix)] = buf.Bytes()
	}
	return out
}

func putObject(t *testing.T, st hotsync.Store, rel string, data []byte) objstore.ObjectInfo {
	t.Helper()
	info, err := st.Put(testCtx(t), prefix+rel, bytes.NewReader(data), int64(len(data)), objstore.Cond{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func sameTree(t *testing.T, got, want map[string][]byte) {
	t.Helper()
	gk, wk := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))
	if !slices.Equal(gk, wk) {
		t.Fatalf("files = %q\nwant    %q", gk, wk)
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Fatalf("%s: %d bytes differ from the %d expected", k, len(got[k]), len(v))
		}
	}
}

func TestRoundTrip(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		tree := map[string][]byte{
			"notes.md":                    []byte("# notes\n"),
			".config/tool/settings.json":  []byte(`{"a":1}`),
			"code/proj/src/main.py":       []byte("print('hi')\n"),
			"code/proj/data/blob.bin":     randBytes(300_000, 1),
			"code/proj/empty":             nil,
			"deep/a/b/c/d/e/f/g/leaf.txt": []byte("leaf"),
			"ünïcode dir/file with space": []byte("ok"),
			"big/model.bin":               randBytes(40<<20+17, 2), // multipart on S3
		}
		a := newSandbox(t, st, "sbx-a")
		if err := os.MkdirAll(a.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for k, v := range tree {
			a.write(t, k, v)
		}
		res := a.up(t)
		if len(res.Uploaded) != len(tree) || len(res.Conflicts) != 0 || len(res.Rejected) != 0 {
			t.Fatalf("first up: %+v", res)
		}
		sameTree(t, objects(t, st), tree)

		b := newSandbox(t, st, "sbx-b")
		res = b.down(t)
		if len(res.Downloaded) != len(tree) || len(res.Rejected) != 0 {
			t.Fatalf("down: %+v", res)
		}
		sameTree(t, readTree(t, b.dir), tree)

		if os.Geteuid() == 0 {
			err := filepath.WalkDir(b.dir, func(p string, d fs.DirEntry, err error) error {
				fi, _ := d.Info()
				sys := fi.Sys().(*syscall.Stat_t)
				if sys.Uid != 1000 || sys.Gid != 1000 {
					t.Errorf("%s is owned by %d:%d, want 1000:1000", p, sys.Uid, sys.Gid)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		// The manifest is JSON lines: a header, then one entry per line.
		raw, err := os.ReadFile(b.manifest)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		var header struct {
			Version int `json:"version"`
		}
		if err := dec.Decode(&header); err != nil || header.Version != 2 {
			t.Fatalf("manifest header: %v %+v", err, header)
		}
		files := 0
		for {
			var e struct {
				Key  string `json:"k"`
				Kind string `json:"kind"`
				ETag string `json:"etag"`
			}
			if err := dec.Decode(&e); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			if e.Kind == "" {
				files++
			}
		}
		if files != len(tree) {
			t.Fatalf("manifest has %d files, want %d", files, len(tree))
		}

		// Nothing changed: Up after Down, and a repeated Up, transfer nothing.
		for range 2 {
			res = b.up(t)
			if len(res.Uploaded)+len(res.Deleted)+len(res.Conflicts) != 0 || res.Unchanged != len(tree) || res.Bytes != 0 {
				t.Fatalf("up without changes: %+v", res)
			}
		}
	})
}

func TestCheckpointUploadsOnlyChanges(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		a := newSandbox(t, st, "sbx-a")
		for i := range 20 {
			a.write(t, "f"+string(rune('a'+i)), randBytes(1000+i, uint64(i)))
		}
		a.up(t)
		a.write(t, "fc", []byte("changed"))
		a.write(t, "new/file", []byte("new"))
		// Touched, same content: the mtime is synced too (it comes back
		// on the next sandbox), so it is uploaded again.
		p := filepath.Join(a.dir, "fd")
		future := time.Now().Add(time.Hour)
		if err := os.Chtimes(p, future, future); err != nil {
			t.Fatal(err)
		}
		// Same content, mode and mtime, only the ctime moved: hashed,
		// not uploaded.
		must(t, os.Chmod(filepath.Join(a.dir, "fe"), 0o644))
		res := a.up(t)
		if !slices.Equal(res.Uploaded, []string{"fc", "fd", "new/file"}) || res.Unchanged != 18 {
			t.Fatalf("checkpoint: %+v", res)
		}
		if res := a.up(t); len(res.Uploaded) != 0 || res.Unchanged != 21 {
			t.Fatalf("second checkpoint: %+v", res)
		}
	})
}

func TestDeletionPropagates(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		for _, k := range []string{"keep.txt", "gone.txt", "dir/a", "dir/sub/b", "other/c"} {
			putObject(t, st, k, []byte(k))
		}
		a := newSandbox(t, st, "sbx-a")
		a.down(t)
		must(t, os.Remove(filepath.Join(a.dir, "gone.txt")))
		must(t, os.RemoveAll(filepath.Join(a.dir, "dir")))
		res := a.up(t)
		if !slices.Equal(res.Deleted, []string{"dir/a", "dir/sub/b", "gone.txt"}) {
			t.Fatalf("deleted = %q", res.Deleted)
		}
		got := slices.Sorted(maps.Keys(objects(t, st)))
		if !slices.Equal(got, []string{"keep.txt", "other/c"}) {
			t.Fatalf("objects left = %q", got)
		}
		// Repeated Up does not try again.
		if res := a.up(t); len(res.Deleted) != 0 {
			t.Fatalf("second up deleted %q", res.Deleted)
		}
	})
}

// TestTwoSandboxesEditOneFile: sandboxes A and B of one user edit the same
// file; the first Up wins, the second lands as NAME.conflict-B.
func TestTwoSandboxesEditOneFile(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		putObject(t, st, "shared/notes.md", []byte("base"))
		putObject(t, st, "other.txt", []byte("other"))
		a, b := newSandbox(t, st, "sbx-a"), newSandbox(t, st, "sbx-b")
		a.down(t)
		b.down(t)
		a.write(t, "shared/notes.md", []byte("from A"))
		b.write(t, "shared/notes.md", []byte("from B, longer"))
		if res := a.up(t); !slices.Equal(res.Uploaded, []string{"shared/notes.md"}) {
			t.Fatalf("A: %+v", res)
		}
		res := b.up(t)
		if !slices.Equal(res.Conflicts, []string{"shared/notes.md"}) || len(res.Uploaded) != 0 {
			t.Fatalf("B: %+v", res)
		}
		sameTree(t, objects(t, st), map[string][]byte{
			"shared/notes.md":                []byte("from A"),
			"shared/notes.md.conflict-sbx-b": []byte("from B, longer"),
			"other.txt":                      []byte("other"),
		})
		// B's next checkpoint does not upload the conflict copy again...
		if res := b.up(t); len(res.Conflicts)+len(res.Uploaded) != 0 {
			t.Fatalf("B again: %+v", res)
		}
		// ...but a further edit in B refreshes it, still without touching A's.
		b.write(t, "shared/notes.md", []byte("from B, v2"))
		if res := b.up(t); !slices.Equal(res.Conflicts, []string{"shared/notes.md"}) {
			t.Fatalf("B v2: %+v", res)
		}
		objs := objects(t, st)
		if string(objs["shared/notes.md"]) != "from A" || string(objs["shared/notes.md.conflict-sbx-b"]) != "from B, v2" {
			t.Fatalf("after B v2: notes=%q conflict=%q", objs["shared/notes.md"], objs["shared/notes.md.conflict-sbx-b"])
		}

		// B deletes a file A changed: A's version stays.
		a.write(t, "other.txt", []byte("other, edited by A"))
		a.up(t)
		must(t, os.Remove(filepath.Join(b.dir, "other.txt")))
		res = b.up(t)
		if !slices.Equal(res.Conflicts, []string{"other.txt"}) || len(res.Deleted) != 0 {
			t.Fatalf("B delete of a changed file: %+v", res)
		}
		if got := string(objects(t, st)["other.txt"]); got != "other, edited by A" {
			t.Fatalf("other.txt = %q", got)
		}

		// Both create the same new file: one wins, the other is a conflict.
		a.write(t, "brand-new", []byte("A"))
		b.write(t, "brand-new", []byte("B"))
		a.up(t)
		if res := b.up(t); !slices.Equal(res.Conflicts, []string{"brand-new"}) {
			t.Fatalf("B create race: %+v", res)
		}
		objs = objects(t, st)
		if string(objs["brand-new"]) != "A" || string(objs["brand-new.conflict-sbx-b"]) != "B" {
			t.Fatalf("brand-new=%q conflict=%q", objs["brand-new"], objs["brand-new.conflict-sbx-b"])
		}
	})
}

// TestChangeWinsOverDeleteElsewhere: B deleted a file that A changed; A's
// change is recreated.
func TestChangeWinsOverDeleteElsewhere(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		putObject(t, st, "f", []byte("base"))
		a, b := newSandbox(t, st, "sbx-a"), newSandbox(t, st, "sbx-b")
		a.down(t)
		b.down(t)
		must(t, os.Remove(filepath.Join(b.dir, "f")))
		b.up(t)
		a.write(t, "f", []byte("changed by A"))
		if res := a.up(t); !slices.Equal(res.Uploaded, []string{"f"}) {
			t.Fatalf("A: %+v", res)
		}
		if got := string(objects(t, st)["f"]); got != "changed by A" {
			t.Fatalf("f = %q", got)
		}
	})
}

// TestForeignObjectSurvives: an object added by someone else after Down is
// not deleted by Up, and one replaced by someone else is not deleted either.
func TestForeignObjectSurvives(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		putObject(t, st, "mine", []byte("mine"))
		putObject(t, st, "replaced", []byte("v1"))
		a := newSandbox(t, st, "sbx-a")
		a.down(t)
		putObject(t, st, "added-later", []byte("theirs"))
		putObject(t, st, "replaced", []byte("v2 from elsewhere"))
		must(t, os.Remove(filepath.Join(a.dir, "replaced")))
		res := a.up(t)
		if len(res.Deleted) != 0 || !slices.Equal(res.Conflicts, []string{"replaced"}) {
			t.Fatalf("up: %+v", res)
		}
		sameTree(t, objects(t, st), map[string][]byte{
			"mine":        []byte("mine"),
			"added-later": []byte("theirs"),
			"replaced":    []byte("v2 from elsewhere"),
		})
	})
}

func TestSymlinksAndSpecialFilesAreNotFollowed(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		outside := t.TempDir()
		must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret"), 0o600))
		must(t, os.Mkdir(filepath.Join(outside, "dir"), 0o755))
		must(t, os.WriteFile(filepath.Join(outside, "dir", "inner"), []byte("inner"), 0o600))

		a := newSandbox(t, st, "sbx-a")
		a.write(t, "real.txt", []byte("real"))
		must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(a.dir, "secret-link")))
		must(t, os.Symlink(filepath.Join(outside, "dir"), filepath.Join(a.dir, "dir-link")))
		must(t, os.Symlink("real.txt", filepath.Join(a.dir, "inside-link")))
		must(t, syscall.Mkfifo(filepath.Join(a.dir, "fifo"), 0o644))

		res := a.up(t)
		var rejected []string
		for _, r := range res.Rejected {
			rejected = append(rejected, r.Path)
		}
		// Symlinks are stored as links (their targets), never followed;
		// the FIFO cannot be stored and is reported.
		if !slices.Equal(rejected, []string{"fifo"}) {
			t.Fatalf("rejected = %+v", res.Rejected)
		}
		sameTree(t, objects(t, st), map[string][]byte{
			"real.txt":    []byte("real"),
			"secret-link": []byte(filepath.Join(outside, "secret")),
			"dir-link":    []byte(filepath.Join(outside, "dir")),
			"inside-link": []byte("real.txt"),
		})

		// Down never writes through a symlink that is in the way (the
		// bucket says dir-link is a directory now, secret-link a file).
		must(t, st.Delete(testCtx(t), prefix+"dir-link", ""))
		putObject(t, st, "dir-link/inner", []byte("overwritten?"))
		putObject(t, st, "secret-link", []byte("overwritten?"))
		a.down(t)
		if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "host secret" {
			t.Fatalf("Down wrote through a symlink: %q", b)
		}
		if b, _ := os.ReadFile(filepath.Join(outside, "dir", "inner")); string(b) != "inner" {
			t.Fatalf("Down wrote through a directory symlink: %q", b)
		}
	})
}

func TestExcludes(t *testing.T) {
	files := []string{
		"keep.py", "a.tmp", ".DS_Store", "sub/.DS_Store", "__pycache__/m.cpython-311.pyc",
		"pkg/__pycache__/x.pyc", "pkg/mod.pyc", ".git/config", "proj/.git/HEAD", "proj/main.go",
		".keep", "tmp.d/file",
	}
	tests := []struct {
		name     string
		excludes []string
		want     []string
	}{
		{"defaults", nil, []string{".git/config", "keep.py", "pkg/mod.pyc", "proj/.git/HEAD", "proj/main.go", "tmp.d/file"}},
		{"none", []string{}, []string{
			".DS_Store", ".git/config", "__pycache__/m.cpython-311.pyc", "a.tmp", "keep.py",
			"pkg/__pycache__/x.pyc", "pkg/mod.pyc", "proj/.git/HEAD", "proj/main.go", "sub/.DS_Store", "tmp.d/file",
		}},
		{"custom", []string{"proj/", "*.py", "tmp.d"}, []string{
			".DS_Store", ".git/config", "__pycache__/m.cpython-311.pyc", "a.tmp",
			"pkg/__pycache__/x.pyc", "pkg/mod.pyc", "sub/.DS_Store",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newLocal(t)
			a := newSandbox(t, st, "sbx-a", func(c *hotsync.Config) { c.Excludes = tt.excludes })
			for _, f := range files {
				a.write(t, f, []byte(f))
			}
			res := a.up(t)
			if !slices.Equal(res.Uploaded, tt.want) {
				t.Fatalf("uploaded = %q\nwant       %q", res.Uploaded, tt.want)
			}
			if !slices.Contains(res.Skipped, ".keep") {
				t.Fatalf("the reserved .keep was not reported as skipped: %q", res.Skipped)
			}
			// Excluded files that exist locally are not deletions.
			if res := a.up(t); len(res.Deleted)+len(res.Uploaded) != 0 {
				t.Fatalf("second up: %+v", res)
			}
		})
	}
}

// memStore holds keys that neither versitygw's posix backend nor Local can
// store but AWS S3 can ("../x", "a//b", both "x" and "x/y"). It is the one
// in-memory fake of these tests, used only where no real server can hold the
// data.
type memStore struct {
	objs map[string][]byte
}

func (m *memStore) List(_ context.Context, p string) iter.Seq2[objstore.ObjectInfo, error] {
	return func(yield func(objstore.ObjectInfo, error) bool) {
		for _, k := range slices.Sorted(maps.Keys(m.objs)) {
			if strings.HasPrefix(k, p) && !yield(objstore.ObjectInfo{Key: k, Size: int64(len(m.objs[k])), ETag: "e-" + k}, nil) {
				return
			}
		}
	}
}

func (m *memStore) Head(_ context.Context, k string) (objstore.ObjectInfo, error) {
	b, ok := m.objs[k]
	if !ok {
		return objstore.ObjectInfo{}, errdefs.ErrNotFound
	}
	return objstore.ObjectInfo{Key: k, Size: int64(len(b)), ETag: "e-" + k}, nil
}

func (m *memStore) Download(ctx context.Context, k string, _ int64, w io.WriterAt) (objstore.ObjectInfo, error) {
	info, err := m.Head(ctx, k)
	if err == nil {
		_, err = w.WriteAt(m.objs[k], 0)
	}
	return info, err
}

func (m *memStore) Put(context.Context, string, io.Reader, int64, objstore.Cond, objstore.Metadata) (objstore.ObjectInfo, error) {
	return objstore.ObjectInfo{}, errdefs.ErrNotImplemented
}

func (m *memStore) Copy(context.Context, string, string, string) (objstore.ObjectInfo, error) {
	return objstore.ObjectInfo{}, errdefs.ErrNotImplemented
}

func (m *memStore) Delete(context.Context, string, string) error { return errdefs.ErrNotImplemented }

// TestDownRejectsBadKeys: keys that are not plain relative paths are
// reported and never written.
func TestDownRejectsBadKeys(t *testing.T) {
	st := &memStore{objs: map[string][]byte{}}
	for k, v := range map[string]string{
		"ok/file": "ok", "x": "x", "x/y": "y",
		"../escape": "bad", "a/../../escape": "bad", "a//b": "bad", "./dot": "bad", "/abs": "bad",
		"made-dir/": "", ".keep": "",
	} {
		st.objs[prefix+k] = []byte(v)
	}
	a := newSandbox(t, st, "sbx-a")
	res := a.down(t)
	var rejected []string
	for _, r := range res.Rejected {
		rejected = append(rejected, strings.TrimPrefix(r.Path, prefix))
	}
	// "x/y" is valid, but then "x" cannot be a file: "x" is reported.
	want := []string{"../escape", "./dot", "/abs", "a/../../escape", "a//b", "x"}
	if !slices.Equal(rejected, want) {
		t.Fatalf("rejected = %q\nwant       %q", rejected, want)
	}
	sameTree(t, readTree(t, a.dir), map[string][]byte{"ok/file": []byte("ok"), "x/y": []byte("y")})
	if fi, err := os.Stat(filepath.Join(a.dir, "made-dir")); err != nil || !fi.IsDir() {
		t.Fatalf("directory marker not materialized: %v", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(a.dir), "escape")); err == nil {
		t.Fatal("a key escaped Dir")
	}
}

// TestUpReportsNamesThatCannotBeKeys: nothing is dropped silently.
func TestUpReportsNamesThatCannotBeKeys(t *testing.T) {
	st := newLocal(t)
	a := newSandbox(t, st, "sbx-a")
	a.write(t, "fine", []byte("fine"))
	a.write(t, "bad\xffname", []byte("latin-1"))
	long := strings.Repeat(strings.Repeat("d", 200)+"/", 6) + "file" // key > 1024 bytes
	a.write(t, long, []byte("deep"))
	res := a.up(t)
	// A name that is not valid UTF-8 is stored (escaped, see
	// TestMetadataRoundTrip); a key over 1024 bytes cannot be.
	if !slices.Equal(res.Uploaded, []string{"bad\xffname", "fine"}) {
		t.Fatalf("uploaded %q", res.Uploaded)
	}
	if len(res.Rejected) != 1 || !strings.HasSuffix(res.Rejected[0].Path, strings.Repeat("d", 200)) {
		t.Fatalf("rejected = %+v, want the directory whose key is too long", res.Rejected)
	}
	for _, r := range res.Rejected {
		t.Logf("rejected %q: %s", r.Path, r.Reason)
	}
}

// TestCrashBeforeManifestWrite: an Up whose manifest was lost is redone
// without conflicts, because the objects already hold our content.
func TestCrashBeforeManifestWrite(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		putObject(t, st, "existing", []byte("v1"))
		a := newSandbox(t, st, "sbx-a")
		a.down(t)
		a.write(t, "existing", []byte("v2"))
		a.write(t, "created", []byte("new"))
		a.up(t)
		must(t, os.Remove(a.manifest))
		res := a.up(t)
		if len(res.Conflicts)+len(res.Uploaded) != 0 || res.Unchanged != 2 {
			t.Fatalf("redo: %+v", res)
		}
		if _, ok := objects(t, st)["created.conflict-sbx-a"]; ok {
			t.Fatal("conflict copy of our own upload")
		}
	})
}

func TestUpNeedsDir(t *testing.T) {
	st := newLocal(t)
	putObject(t, st, "precious", []byte("x"))
	a := newSandbox(t, st, "sbx-a")
	a.down(t)
	must(t, os.RemoveAll(a.dir))
	if _, err := a.Up(testCtx(t)); !errdefs.IsNotFound(err) {
		t.Fatalf("up without Dir = %v, want NotFound", err)
	}
	if len(objects(t, st)) != 1 {
		t.Fatal("a missing Dir deleted objects")
	}
}

func TestCancelledContext(t *testing.T) {
	st := newLocal(t)
	a := newSandbox(t, st, "sbx-a")
	for i := range 50 {
		a.write(t, "f"+string(rune('A'+i)), []byte("x"))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := a.Up(ctx); err == nil || !strings.Contains(err.Error(), context.Canceled.Error()) {
		t.Fatalf("up with a cancelled context = %v", err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	st := newLocal(t)
	dir := t.TempDir()
	ok := hotsync.Config{Store: st, Prefix: prefix, Dir: filepath.Join(dir, "home"), ManifestPath: filepath.Join(dir, "m.json"), SandboxID: "sbx-1"}
	tests := []struct {
		name string
		mod  func(*hotsync.Config)
	}{
		{"no store", func(c *hotsync.Config) { c.Store = nil }},
		{"prefix without slash", func(c *hotsync.Config) { c.Prefix = "users/u1/hot" }},
		{"absolute prefix", func(c *hotsync.Config) { c.Prefix = "/users/u1/hot/" }},
		{"no dir", func(c *hotsync.Config) { c.Dir = "" }},
		{"no manifest", func(c *hotsync.Config) { c.ManifestPath = "" }},
		{"manifest inside dir", func(c *hotsync.Config) { c.ManifestPath = filepath.Join(c.Dir, ".manifest.json") }},
		{"no sandbox id", func(c *hotsync.Config) { c.SandboxID = "" }},
		{"sandbox id with slash", func(c *hotsync.Config) { c.SandboxID = "a/b" }},
		{"bad exclude", func(c *hotsync.Config) { c.Excludes = []string{"[unclosed"} }},
		{"empty exclude", func(c *hotsync.Config) { c.Excludes = []string{"/"} }},
	}
	if _, err := hotsync.New(ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.mod(&cfg)
			if _, err := hotsync.New(cfg); !errdefs.IsInvalidArgument(err) {
				t.Fatalf("New = %v, want InvalidArgument", err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// countingStore wraps a real store and records how many large downloads
// run at once; each is held a moment so that overlaps show.
type countingStore struct {
	hotsync.Store
	mu        sync.Mutex
	now, peak int
}

func (c *countingStore) Download(ctx context.Context, k string, size int64, w io.WriterAt) (objstore.ObjectInfo, error) {
	if size >= objstore.DefaultPartSize {
		c.mu.Lock()
		c.now++
		c.peak = max(c.peak, c.now)
		c.mu.Unlock()
		time.Sleep(30 * time.Millisecond)
		defer func() { c.mu.Lock(); c.now--; c.mu.Unlock() }()
	}
	return c.Store.Download(ctx, k, size, w)
}

// TestLargeFilesAreBoundedInFlight: many small files move at once, but at
// most LargeInFlight large ones (each already moves in parallel ranges).
func TestLargeFilesAreBoundedInFlight(t *testing.T) {
	local := newLocal(t)
	big := randBytes(int(objstore.DefaultPartSize), 5)
	for i := range 3 * hotsync.LargeInFlight {
		putObject(t, local, fmt.Sprintf("big/%02d.bin", i), big)
	}
	for i := range 50 {
		putObject(t, local, fmt.Sprintf("small/%02d.txt", i), []byte("x"))
	}
	st := &countingStore{Store: local}
	sb := newSandbox(t, st, "sbx-big")
	res := sb.down(t)
	if len(res.Downloaded) != 3*hotsync.LargeInFlight+50 {
		t.Fatalf("downloaded %d files", len(res.Downloaded))
	}
	// At most the gate's width; at least two, or the files were not
	// moving in parallel at all (exactly the width is typical).
	if st.peak > hotsync.LargeInFlight || st.peak < 2 {
		t.Fatalf("%d large downloads at once, want 2 to %d", st.peak, hotsync.LargeInFlight)
	}
}

// A new user's Down writes no manifest (nothing came down, and a missing
// manifest means what an empty one would); Up then counts every file as
// new. A Down that finds the prefix empty while a manifest is there
// rewrites it: its old entries must not read as files deleted here.
// Result.PrefixEmpty says whether the listing found any object at all
// (the .keep marker counts: its caller writes it when the prefix is empty).
func TestEmptyDownAndTheManifest(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		sb := newSandbox(t, st, "sb-empty")
		if res := sb.down(t); len(res.Downloaded) != 0 || res.Dirs != 0 || !res.PrefixEmpty {
			t.Fatalf("down of an empty prefix: %+v, want nothing and PrefixEmpty", res)
		}
		putObject(t, st, objstore.KeepMarker, nil)
		if res := sb.down(t); len(res.Downloaded) != 0 || res.PrefixEmpty {
			t.Fatalf("down of a prefix holding only .keep: %+v, want nothing and not PrefixEmpty", res)
		}
		if _, err := os.Lstat(sb.manifest); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a down of only .keep left a manifest (or cannot tell): %v", err)
		}
		must(t, st.Delete(testCtx(t), prefix+objstore.KeepMarker, ""))
		if _, err := os.Lstat(sb.manifest); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("an empty down left a manifest (or cannot tell): %v", err)
		}
		sb.write(t, "a", []byte("one"))
		if res := sb.up(t); !slices.Equal(res.Uploaded, []string{"a"}) {
			t.Fatalf("up after an empty down uploaded %v, want [a]", res.Uploaded)
		}

		// sb2 has a as synced; then a is deleted from the bucket elsewhere.
		sb2 := newSandbox(t, st, "sb-two")
		if res := sb2.down(t); !slices.Equal(res.Downloaded, []string{"a"}) {
			t.Fatalf("down: %v, want [a]", res.Downloaded)
		}
		must(t, os.Remove(filepath.Join(sb.dir, "a")))
		if res := sb.up(t); !slices.Equal(res.Deleted, []string{"a"}) {
			t.Fatalf("up after rm deleted %v, want [a]", res.Deleted)
		}
		sb2.down(t)
		raw, err := os.ReadFile(sb2.manifest)
		if err != nil {
			t.Fatalf("a down with a manifest there must rewrite it: %v", err)
		}
		if n := bytes.Count(raw, []byte("\n")); n != 1 {
			t.Fatalf("manifest after an empty down has %d lines, want the header alone:\n%s", n, raw)
		}
	})
}

// A sync that ends after the manifest's directory was removed (another
// writer removing the sandbox's hot dir under a syncer made before) fails
// and does not bring the directory back: mounts.Storage's removal would
// otherwise leave a hot dir behind that it had reported gone.
func TestManifestDirIsNeverMade(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		sb := newSandbox(t, st, "sb-gone")
		sb.down(t)
		sb.write(t, "a", []byte("one"))
		stateDir := filepath.Dir(sb.manifest)
		must(t, os.RemoveAll(stateDir))
		if _, err := sb.Up(testCtx(t)); err == nil {
			t.Fatal("up with its manifest's directory gone succeeded")
		}
		if _, err := os.Lstat(stateDir); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("up brought the manifest's directory back: %v", err)
		}
	})
}
