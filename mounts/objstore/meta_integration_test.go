package objstore_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/mounts/s3test"
)

// TestMetadataIsKept: user metadata given to Put comes back from Head,
// Get and Download, for single-part and multipart bodies, and travels
// with a server-side Copy. Hot sync keeps modes, mtimes and symlinks
// there (the s3fs/rclone x-amz-meta-mode/-mtime convention).
func TestMetadataIsKept(t *testing.T) {
	forEachStore(t, func(t *testing.T, s objstore.Store) {
		ctx := testCtx(t)
		meta := objstore.Metadata{"mode": "33261", "mtime": "1709294400.123456789", "matrx-writer": "sbx-a -"}
		for _, size := range []int{5, 6 << 20} { // single part; multipart at the 5 MiB part size
			body := randBytes(size, uint64(size))
			key := "m/small"
			if size > 1<<20 {
				key = "m/large"
			}
			if _, err := s.Put(ctx, key, bytes.NewReader(body), int64(size), objstore.Cond{}, meta); err != nil {
				t.Fatal(err)
			}
			info, err := s.Head(ctx, key)
			if err != nil || !sameMeta(info.Meta, meta) {
				t.Fatalf("head of %d bytes: %v %v", size, err, info.Meta)
			}
			f, _ := os.CreateTemp(t.TempDir(), "d")
			info, err = s.Download(ctx, key, int64(size), f)
			f.Close()
			if err != nil || !sameMeta(info.Meta, meta) {
				t.Fatalf("download of %d bytes: %v %v", size, err, info.Meta)
			}
			r, info, err := s.Get(ctx, key)
			if err != nil || !sameMeta(info.Meta, meta) {
				t.Fatalf("get of %d bytes: %v %v", size, err, info.Meta)
			}
			r.Close()
			cp, err := s.Copy(ctx, key, "trash/"+key, info.ETag)
			if err != nil {
				t.Fatal(err)
			}
			info, err = s.Head(ctx, "trash/"+key)
			if err != nil || !sameMeta(info.Meta, meta) || info.Size != int64(size) || cp.Key != "trash/"+key {
				t.Fatalf("copy of %d bytes: %v %+v", size, err, info)
			}
		}
		// A copy pinned to another version is refused.
		if _, err := s.Copy(ctx, "m/small", "trash/x", "0123456789abcdef0123456789abcdef"); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("copy with a stale If-Match: %v", err)
		}
		if _, err := s.Copy(ctx, "m/missing", "trash/y", ""); !errdefs.IsNotFound(err) {
			t.Fatalf("copy of a missing object: %v", err)
		}
		// Metadata that S3 cannot carry is refused before anything is sent.
		if _, err := s.Put(ctx, "m/bad", strings.NewReader(""), 0, objstore.Cond{}, objstore.Metadata{"name": "caf\xe9"}); !errdefs.IsInvalidArgument(err) {
			t.Fatalf("non-ASCII metadata: %v", err)
		}
	})
}

// TestVersitygwKeepsMetadataInXattrs: versitygw's posix backend stores
// user metadata as extended attributes of the object's file, so the
// bucket's filesystem must support user xattrs (ext4 and tmpfs do).
func TestVersitygwKeepsMetadataInXattrs(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	s := newS3(t, srv, bucket)
	if _, err := s.Put(testCtx(t), "x/obj", strings.NewReader("x"), 1, objstore.Cond{}, objstore.Metadata{"mode": "33188"}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(srv.Dir, bucket, "x", "obj")
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(p, "user.metadata", buf)
	if err != nil || !strings.Contains(strings.ToLower(string(buf[:n])), "mode") {
		t.Fatalf("the user.metadata xattr of %s does not hold the metadata: %v %q", p, err, buf[:max(n, 0)])
	}
}

func sameMeta(got, want objstore.Metadata) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// TestSilentServerTimesOut: a server that stops answering mid-request
// (a frozen proxy in front of versitygw) fails a request within its
// timeout instead of holding the caller forever.
func TestSilentServerTimesOut(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	proxy := s3test.NewProxy(t, srv)
	s, err := objstore.NewS3(t.Context(), objstore.S3Config{Bucket: bucket, Region: srv.Region, Endpoint: proxy.Endpoint,
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey},
		objstore.WithRequestTimeout(2*time.Second), objstore.WithResponseHeaderTimeout(time.Second), objstore.WithMaxAttempts(2))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := s.Put(ctx, "a", strings.NewReader("a"), 1, objstore.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	proxy.Freeze()
	for name, op := range map[string]func() error{
		"head":   func() error { _, err := s.Head(ctx, "a"); return err },
		"put":    func() error { _, err := s.Put(ctx, "b", strings.NewReader("b"), 1, objstore.Cond{}, nil); return err },
		"list":   func() error { _, err := objstore.ListAll(ctx, s, ""); return err },
		"delete": func() error { return s.Delete(ctx, "never-there", "") },
	} {
		start := time.Now()
		err := op()
		if err == nil || !errdefs.IsUnavailable(err) {
			t.Errorf("%s against a silent server: %v", name, err)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("%s took %v against a silent server", name, d)
		}
	}
	proxy.Thaw()
	if _, err := s.Head(ctx, "a"); err != nil {
		t.Fatalf("after thaw: %v", err)
	}
}
