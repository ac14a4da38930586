package objstore_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/mounts/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newS3(t *testing.T, srv *s3test.Server, bucket string, opts ...objstore.S3Option) *objstore.S3 {
	t.Helper()
	s, err := objstore.NewS3(t.Context(), objstore.S3Config{
		Bucket:    bucket,
		Region:    srv.Region,
		Endpoint:  srv.Endpoint,
		PathStyle: true,
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newLocal(t *testing.T) *objstore.Local {
	t.Helper()
	l, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// forEachStore runs fn against a fresh bucket of the test's versitygw and a
// fresh Local store: both must honour the same contract.
func forEachStore(t *testing.T, fn func(t *testing.T, s objstore.Store)) {
	t.Run("local", func(t *testing.T) { fn(t, newLocal(t)) })
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		fn(t, newS3(t, srv, srv.NewBucket(t), objstore.WithPartSize(5<<20)))
	})
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

func put(t *testing.T, s objstore.Store, key string, body []byte, cond objstore.Cond) objstore.ObjectInfo {
	t.Helper()
	info, err := s.Put(testCtx(t), key, bytes.NewReader(body), int64(len(body)), cond, nil)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return info
}

func get(t *testing.T, s objstore.Store, key string) []byte {
	t.Helper()
	r, _, err := s.Get(testCtx(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	forEachStore(t, func(t *testing.T, s objstore.Store) {
		ctx := testCtx(t)
		objects := map[string][]byte{
			"users/u1/hot/a-c":             []byte("dash"),
			"users/u1/hot/a/b":             []byte("nested"),
			"users/u1/hot/a0":              []byte("zero"),
			"users/u1/hot/deep/er/x.bin":   randBytes(70_000, 1),
			"users/u1/hot/empty":           nil,
			"users/u1/hotter/not-in-hot":   []byte("x"),
			"users/u1/hot/ünïcode name.md": []byte("ok"),
		}
		for k, v := range objects {
			info := put(t, s, k, v, objstore.Cond{})
			if info.ETag != md5hex(v) {
				t.Errorf("put %s: ETag %s, want md5 %s", k, info.ETag, md5hex(v))
			}
		}
		for k, v := range objects {
			if got := get(t, s, k); !bytes.Equal(got, v) {
				t.Errorf("get %s: %d bytes, want %d", k, len(got), len(v))
			}
			info, err := s.Head(ctx, k)
			if err != nil || info.Size != int64(len(v)) || info.ETag != md5hex(v) {
				t.Errorf("head %s = %+v, %v", k, info, err)
			}
		}

		list, err := objstore.ListAll(ctx, s, "users/u1/hot/")
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, o := range list {
			keys = append(keys, o.Key)
			if o.ETag != md5hex(objects[o.Key]) || o.Size != int64(len(objects[o.Key])) {
				t.Errorf("list entry %+v does not match the object", o)
			}
		}
		want := []string{
			"users/u1/hot/a-c", "users/u1/hot/a/b", "users/u1/hot/a0",
			"users/u1/hot/deep/er/x.bin", "users/u1/hot/empty", "users/u1/hot/ünïcode name.md",
		}
		if !slices.Equal(keys, want) {
			t.Errorf("list = %q\nwant   %q (S3 key order)", keys, want)
		}
		// A prefix need not end at a "/".
		list, err = objstore.ListAll(ctx, s, "users/u1/hot")
		if err != nil || len(list) != len(objects) {
			t.Errorf("list users/u1/hot = %d objects, %v; want %d", len(list), err, len(objects))
		}
		list, err = objstore.ListAll(ctx, s, "users/nobody/")
		if err != nil || len(list) != 0 {
			t.Errorf("list of an empty prefix = %v, %v", list, err)
		}

		if _, err := s.Head(ctx, "users/u1/hot/missing"); !errdefs.IsNotFound(err) {
			t.Errorf("head missing = %v, want NotFound", err)
		}
		if _, _, err := s.Get(ctx, "users/u1/hot/missing"); !errdefs.IsNotFound(err) {
			t.Errorf("get missing = %v, want NotFound", err)
		}
	})
}

func TestConditionalPut(t *testing.T) {
	forEachStore(t, func(t *testing.T, s objstore.Store) {
		ctx := testCtx(t)
		const key = "k/obj"
		v1 := put(t, s, key, []byte("v1"), objstore.IfNoneMatch("*"))
		tests := []struct {
			name    string
			key     string
			cond    objstore.Cond
			body    string
			wantErr func(error) bool
		}{
			{"create-only on existing fails", key, objstore.IfNoneMatch("*"), "x", errdefs.IsFailedPrecondition},
			{"if-match stale etag fails", key, objstore.IfMatch(md5hex([]byte("other"))), "x", errdefs.IsFailedPrecondition},
			{"if-match on missing key is not found", "k/missing", objstore.IfMatch(v1.ETag), "x", errdefs.IsNotFound},
			{"if-none-match other than * is invalid", key, objstore.IfNoneMatch(v1.ETag), "x", errdefs.IsInvalidArgument},
			{"both conditions are invalid", key, objstore.Cond{IfMatch: v1.ETag, IfNoneMatch: "*"}, "x", errdefs.IsInvalidArgument},
			{"if-match current etag (quoted) replaces", key, objstore.IfMatch(`"` + v1.ETag + `"`), "v2", nil},
			{"create-only on missing creates", "k/new", objstore.IfNoneMatch("*"), "new", nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before, _ := s.Head(ctx, tt.key)
				_, err := s.Put(ctx, tt.key, strings.NewReader(tt.body), int64(len(tt.body)), tt.cond, nil)
				if tt.wantErr == nil {
					if err != nil {
						t.Fatalf("put: %v", err)
					}
					if got := string(get(t, s, tt.key)); got != tt.body {
						t.Fatalf("after put: %q, want %q", got, tt.body)
					}
					return
				}
				if !tt.wantErr(err) {
					t.Fatalf("put error = %v", err)
				}
				after, _ := s.Head(ctx, tt.key)
				if before.ETag != after.ETag {
					t.Fatalf("a refused put changed the object: %s -> %s", before.ETag, after.ETag)
				}
			})
		}
	})
}

func TestConditionalDelete(t *testing.T) {
	forEachStore(t, func(t *testing.T, s objstore.Store) {
		ctx := testCtx(t)
		info := put(t, s, "d/obj", []byte("content"), objstore.Cond{})
		if err := s.Delete(ctx, "d/obj", md5hex([]byte("stale"))); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("delete with stale etag = %v, want FailedPrecondition", err)
		}
		if _, err := s.Head(ctx, "d/obj"); err != nil {
			t.Fatalf("object gone after a refused delete: %v", err)
		}
		if err := s.Delete(ctx, "d/obj", info.ETag); err != nil {
			t.Fatalf("delete with current etag: %v", err)
		}
		if _, err := s.Head(ctx, "d/obj"); !errdefs.IsNotFound(err) {
			t.Fatalf("head after delete = %v", err)
		}
		if err := s.Delete(ctx, "d/obj", ""); err != nil {
			t.Fatalf("delete of a missing object: %v", err)
		}
		if err := s.Delete(ctx, "d/obj", info.ETag); err != nil {
			t.Fatalf("conditional delete of a missing object: %v", err)
		}
	})
}

// TestConcurrentCreateOnly races create-only writers: exactly one wins.
func TestConcurrentCreateOnly(t *testing.T) {
	forEachStore(t, func(t *testing.T, s objstore.Store) {
		ctx := testCtx(t)
		const n = 8
		var (
			wg             sync.WaitGroup
			mu             sync.Mutex
			wins, refusals int
		)
		for i := range n {
			wg.Go(func() {
				body := bytes.Repeat([]byte{byte('a' + i)}, 1000)
				_, err := s.Put(ctx, "race/obj", bytes.NewReader(body), int64(len(body)), objstore.IfNoneMatch("*"), nil)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errdefs.IsFailedPrecondition(err):
					refusals++
				default:
					t.Errorf("put: %v", err)
				}
			})
		}
		wg.Wait()
		if wins != 1 || refusals != n-1 {
			t.Fatalf("wins=%d refusals=%d, want 1 and %d", wins, refusals, n-1)
		}
	})
}

func TestLargeObject(t *testing.T) {
	forEachStore(t, func(t *testing.T, s objstore.Store) {
		ctx := testCtx(t)
		data := randBytes(23<<20+123, 7) // 5 parts of 5 MiB on S3
		f := filepath.Join(t.TempDir(), "src")
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		src, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		info, err := s.Put(ctx, "big/obj", src, int64(len(data)), objstore.IfNoneMatch("*"), nil)
		if err != nil {
			t.Fatal(err)
		}
		// A sequential (non-ReaderAt) body of the same size works too, and
		// the If-Match on completion accepts the current ETag.
		info2, err := s.Put(ctx, "big/obj", io.MultiReader(bytes.NewReader(data)), int64(len(data)), objstore.IfMatch(info.ETag), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, "big/obj", src, int64(len(data)), objstore.IfNoneMatch("*"), nil); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("create-only multipart put over an existing object = %v", err)
		}

		for _, hint := range []int64{int64(len(data)), -1, 0} {
			out, err := os.Create(filepath.Join(t.TempDir(), "dst"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Download(ctx, "big/obj", hint, out)
			if err != nil {
				t.Fatalf("download (hint %d): %v", hint, err)
			}
			out.Close()
			b, _ := os.ReadFile(out.Name())
			if !bytes.Equal(b, data) {
				t.Fatalf("download (hint %d): content differs (%d bytes, want %d)", hint, len(b), len(data))
			}
			if got.ETag != info2.ETag || got.Size != int64(len(data)) {
				t.Fatalf("download info %+v, want etag %s", got, info2.ETag)
			}
		}
		// An object that became empty after it was listed as large.
		put(t, s, "big/empty", nil, objstore.Cond{})
		out, _ := os.Create(filepath.Join(t.TempDir(), "empty"))
		defer out.Close()
		if info, err := s.Download(ctx, "big/empty", 64<<20, out); err != nil || info.Size != 0 {
			t.Fatalf("download of an empty object with a large hint = %+v, %v", info, err)
		}
	})
}

func TestPrefixHelpers(t *testing.T) {
	forEachStore(t, func(t *testing.T, s objstore.Store) {
		ctx := testCtx(t)
		if err := objstore.EnsurePrefix(ctx, s, "users/u1/hot/"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Head(ctx, "users/u1/hot/.keep"); err != nil {
			t.Fatalf("no .keep in an empty prefix: %v", err)
		}
		if err := objstore.EnsurePrefix(ctx, s, "users/u1/hot/"); err != nil {
			t.Fatalf("second EnsurePrefix: %v", err)
		}
		put(t, s, "users/u1/cold/data.bin", randBytes(1000, 2), objstore.Cond{})
		if err := objstore.EnsurePrefix(ctx, s, "users/u1/cold/"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Head(ctx, "users/u1/cold/.keep"); !errdefs.IsNotFound(err) {
			t.Fatalf(".keep written into a non-empty prefix: %v", err)
		}
		put(t, s, "users/u1/cold/sub/more.bin", randBytes(24, 3), objstore.Cond{})
		put(t, s, "users/u2/hot/other", []byte("u2"), objstore.Cond{})
		// A key that only shares the prefix's letters does not fill it.
		put(t, s, "users/u3/hot.bak", []byte("u3"), objstore.Cond{})
		if err := objstore.EnsurePrefix(ctx, s, "users/u3/hot/"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Head(ctx, "users/u3/hot/.keep"); err != nil {
			t.Fatalf("no .keep in a prefix only a sibling key shares letters with: %v", err)
		}
		must(t, s.Delete(ctx, "users/u3/hot/.keep", ""))
		must(t, s.Delete(ctx, "users/u3/hot.bak", ""))

		u, err := objstore.Stats(ctx, s, "users/u1/")
		if err != nil || u != (objstore.Usage{Objects: 3, Bytes: 1024}) {
			t.Fatalf("stats = %+v, %v; want 3 objects, 1024 bytes", u, err)
		}
		for _, bad := range []string{"", "users/u1", "/users/u1/"} {
			if _, err := objstore.DeletePrefix(ctx, s, bad); !errdefs.IsInvalidArgument(err) {
				t.Fatalf("DeletePrefix(%q) = %v, want InvalidArgument", bad, err)
			}
			if err := objstore.EnsurePrefix(ctx, s, bad); !errdefs.IsInvalidArgument(err) {
				t.Fatalf("EnsurePrefix(%q) = %v, want InvalidArgument", bad, err)
			}
		}
		n, err := objstore.DeletePrefix(ctx, s, "users/u1/")
		if err != nil || n != 3 {
			t.Fatalf("DeletePrefix = %d, %v; want 3", n, err)
		}
		if u, _ := objstore.Stats(ctx, s, "users/u1/"); u.Objects != 0 {
			t.Fatalf("objects left after DeletePrefix: %+v", u)
		}
		if got := string(get(t, s, "users/u2/hot/other")); got != "u2" {
			t.Fatalf("DeletePrefix touched another user: %q", got)
		}
	})
}
