package objstore_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/objstore"
)

func TestLocalRejectsBadKeys(t *testing.T) {
	l := newLocal(t)
	ctx := testCtx(t)
	for _, key := range []string{"../x", "/etc/passwd", "a/../../x", "a//b", "a//", ".objstore/tmp/x", "a\x00b", ""} {
		t.Run(key, func(t *testing.T) {
			if _, err := l.Put(ctx, key, strings.NewReader("x"), 1, objstore.Cond{}, nil); !errdefs.IsInvalidArgument(err) {
				t.Errorf("put %q = %v, want InvalidArgument", key, err)
			}
			if _, err := l.Head(ctx, key); !errdefs.IsInvalidArgument(err) {
				t.Errorf("head %q = %v, want InvalidArgument", key, err)
			}
			if err := l.Delete(ctx, key, ""); !errdefs.IsInvalidArgument(err) {
				t.Errorf("delete %q = %v, want InvalidArgument", key, err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(l.Dir()), "x")); err == nil {
		t.Fatal("a put escaped the store")
	}
}

// TestLocalSymlinksStayInside plants symlinks in the tree (as a sandbox could
// in a bind-mounted cold directory): none of them leads outside.
func TestLocalSymlinksStayInside(t *testing.T) {
	l := newLocal(t)
	ctx := testCtx(t)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	cold := filepath.Join(l.Dir(), "users", "u", "cold")
	if err := os.MkdirAll(cold, 0o755); err != nil {
		t.Fatal(err)
	}
	must(t, os.Symlink(outside, filepath.Join(cold, "dirlink")))
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(cold, "filelink")))
	must(t, os.WriteFile(filepath.Join(cold, "real"), []byte("real"), 0o644))

	if _, _, err := l.Get(ctx, "users/u/cold/dirlink/secret"); err == nil {
		t.Fatal("read through a symlink to outside the store")
	}
	if _, _, err := l.Get(ctx, "users/u/cold/filelink"); err == nil {
		t.Fatal("read a symlink to a file outside the store")
	}
	if _, err := l.Put(ctx, "users/u/cold/dirlink/new", strings.NewReader("x"), 1, objstore.Cond{}, nil); err == nil {
		t.Fatal("wrote through a symlink to outside the store")
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Fatal("file created outside the store")
	}
	list, err := objstore.ListAll(ctx, l, "users/u/cold/")
	if err != nil || len(list) != 1 || list[0].Key != "users/u/cold/real" {
		t.Fatalf("list = %+v, %v; want only the regular file", list, err)
	}
	if _, err := objstore.DeletePrefix(ctx, l, "users/u/"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "secret")); err != nil || string(b) != "secret" {
		t.Fatalf("DeletePrefix reached outside the store: %q, %v", b, err)
	}
}

// TestLocalETagFollowsContent edits a file behind the store's back (as the
// sandbox does in a bind-mounted cold directory): the cached ETag must not
// be served.
func TestLocalETagFollowsContent(t *testing.T) {
	l := newLocal(t)
	ctx := testCtx(t)
	info := put(t, l, "f", []byte("aaaa"), objstore.Cond{})
	p := filepath.Join(l.Dir(), "f")
	must(t, os.WriteFile(p, []byte("bbbb"), 0o644))
	// Same size; make sure the mtime moves even on a coarse clock.
	must(t, os.Chtimes(p, time.Now(), time.Now().Add(time.Second)))
	head, err := l.Head(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if head.ETag == info.ETag || head.ETag != md5hex([]byte("bbbb")) {
		t.Fatalf("ETag %s after an external edit, want %s", head.ETag, md5hex([]byte("bbbb")))
	}
	if _, err := l.Put(ctx, "f", strings.NewReader("cccc"), 4, objstore.IfMatch(info.ETag), nil); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("If-Match with the pre-edit ETag = %v, want FailedPrecondition", err)
	}
}

func TestLocalCheck(t *testing.T) {
	l := newLocal(t)
	must(t, l.Check(testCtx(t)))
	must(t, os.RemoveAll(l.Dir()))
	if err := l.Check(testCtx(t)); !errdefs.IsNotFound(err) {
		t.Fatalf("Check of a removed store = %v, want NotFound", err)
	}
}

func TestLocalFileDirectoryClash(t *testing.T) {
	l := newLocal(t)
	ctx := testCtx(t)
	put(t, l, "a/b", []byte("x"), objstore.Cond{})
	if _, err := l.Put(ctx, "a", strings.NewReader("x"), 1, objstore.Cond{}, nil); !errdefs.IsConflict(err) {
		t.Fatalf("put of a key that is a directory of keys = %v, want Conflict", err)
	}
	if _, err := l.Put(ctx, "a/b/c", strings.NewReader("x"), 1, objstore.Cond{}, nil); err == nil {
		t.Fatal("put below a key that is a file succeeded")
	}
	// Deleting the last key removes the directories it left empty.
	must(t, l.Delete(ctx, "a/b", ""))
	if _, err := os.Stat(filepath.Join(l.Dir(), "a")); !os.IsNotExist(err) {
		t.Fatalf("empty directory left behind: %v", err)
	}
	if _, err := l.Put(ctx, "x", strings.NewReader("short"), 10, objstore.Cond{}, nil); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("put with a short body = %v, want InvalidArgument", err)
	}
	if _, err := l.Head(ctx, "x"); !errdefs.IsNotFound(err) {
		t.Fatalf("a failed put left an object: %v", err)
	}
	tmp, _ := os.ReadDir(filepath.Join(l.Dir(), ".objstore", "tmp"))
	if len(tmp) != 0 {
		t.Fatalf("temp files left behind: %v", tmp)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestLocalDirectoryMarkers: a key ending in "/" (s3fs's directory
// marker, how hot sync keeps empty directories and directories' modes) is
// a directory carrying the marker's metadata; it is listed before the keys
// below it, outlives the deletion of its last file, and its deletion
// removes the directory once empty.
func TestLocalDirectoryMarkers(t *testing.T) {
	l := newLocal(t)
	ctx := testCtx(t)
	meta := objstore.Metadata{"mode": "16877", "mtime": "1.5"}
	if _, err := l.Put(ctx, "u/d/", strings.NewReader(""), 0, objstore.Cond{}, meta); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(ctx, "u/d/f", strings.NewReader("x"), 1, objstore.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(ctx, "u/e/", strings.NewReader("x"), 1, objstore.Cond{}, nil); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("a marker with a body: %v", err)
	}
	objs, err := objstore.ListAll(ctx, l, "u/")
	if err != nil || len(objs) != 2 || objs[0].Key != "u/d/" || objs[1].Key != "u/d/f" {
		t.Fatalf("list: %v %+v", err, objs)
	}
	info, err := l.Head(ctx, "u/d/")
	if err != nil || info.Meta["mode"] != "16877" || info.Size != 0 {
		t.Fatalf("head of the marker: %v %+v", err, info)
	}
	if err := l.Delete(ctx, "u/d/f", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Head(ctx, "u/d/"); err != nil {
		t.Fatalf("the marker went with the last file: %v", err)
	}
	if err := l.Delete(ctx, "u/d/", info.ETag); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(l.Dir(), "u", "d")); !os.IsNotExist(err) {
		t.Fatalf("the empty marker directory stayed: %v", err)
	}
}
