package cold

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/mounts/s3test"
	"golang.org/x/sys/unix"
)

// s3fsSetup starts (or reuses) the test S3 server, makes a bucket, and
// returns an s3fs driver for it.
func s3fsSetup(t *testing.T, secretKey string) (*S3FS, *s3test.Server, string) {
	t.Helper()
	requireFUSE(t)
	bin, err := exec.LookPath("s3fs")
	if err != nil {
		skipOrFail(t, "test needs s3fs (apt-get install s3fs): %v", err)
	}
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	if secretKey == "" {
		secretKey = srv.SecretKey
	}
	d, err := NewS3FS(FUSEConfig{
		S3: S3Config{
			Bucket:         bucket,
			Region:         srv.Region,
			Endpoint:       srv.Endpoint,
			ForcePathStyle: true,
			AccessKey:      srv.AccessKey,
			SecretKey:      secretKey,
		},
		Logger: testLogger(t),
	},
		WithBinary(bin),
		WithMetadataTTL(time.Second),
		WithStartTimeout(20*time.Second),
		WithStopTimeout(5*time.Second),
		WithProbeInterval(100*time.Millisecond, 5*time.Second),
		WithBackoff(50*time.Millisecond, time.Second),
	)
	if err != nil {
		t.Fatal(err)
	}
	return d, srv, bucket
}

func putObject(t *testing.T, c *s3.Client, bucket, key, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(body)}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func getObject(t *testing.T, c *s3.Client, bucket, key string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return "", err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	return string(b), err
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}

// TestS3FS mounts a user's cold prefix from a real S3 server (versitygw) with
// s3fs, and checks reads of objects put after the mount, writes through the
// mount, remounting after kill -9 (also inside an existing sandbox-style
// bind), refcounting, and that Release leaves nothing behind.
func TestS3FS(t *testing.T) {
	d, srv, bucket := s3fsSetup(t, "")
	client := srv.Client()
	ctx := context.Background()
	dir := testDir(t)
	m := newTestManager(t, dir, d)

	mp, err := m.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := topFSType(t, mp); got != "fuse.s3fs" {
		t.Fatalf("top mount on %s is %q, want fuse.s3fs", mp, got)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "cold", "secrets")); len(entries) != 0 {
		t.Fatalf("passwd file still present once the mount answers: %v", entries)
	}
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil || st.Uid != 1000 || st.Gid != 1000 || st.Mode&0o777 != 0o755 {
		t.Fatalf("mount root: %v, uid %d gid %d mode %o; want 1000:1000 0755", err, st.Uid, st.Gid, st.Mode&0o777)
	}

	t.Run("cold read of an object put after the mount", func(t *testing.T) {
		putObject(t, client, bucket, "users/alice/cold/late.txt", "late data")
		putObject(t, client, bucket, "users/alice/cold/datasets/v1/part-0.bin", "nested")
		putObject(t, client, bucket, "users/bob/cold/other.txt", "not alice's")
		if got := readFile(t, filepath.Join(mp, "late.txt")); got != "late data" {
			t.Fatalf("late.txt = %q", got)
		}
		if got := readFile(t, filepath.Join(mp, "datasets", "v1", "part-0.bin")); got != "nested" {
			t.Fatalf("nested object = %q", got)
		}
		if err := unix.Stat(filepath.Join(mp, "late.txt"), &st); err != nil || st.Uid != 1000 {
			t.Fatalf("late.txt owner: %v uid %d", err, st.Uid)
		}
		if _, err := os.Stat(filepath.Join(mp, "other.txt")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("another user's object is visible: %v", err)
		}
	})

	t.Run("cold write through the mount", func(t *testing.T) {
		body := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB
		if err := os.WriteFile(filepath.Join(mp, "written.bin"), body, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := getObject(t, client, bucket, "users/alice/cold/written.bin")
		if err != nil || got != string(body) {
			t.Fatalf("object written through the mount: %d bytes, %v", len(got), err)
		}
		if err := os.Remove(filepath.Join(mp, "written.bin")); err != nil {
			t.Fatal(err)
		}
		if _, err := getObject(t, client, bucket, "users/alice/cold/written.bin"); err == nil {
			t.Fatal("object still in S3 after deleting it through the mount")
		}
	})

	sandbox := filepath.Join(dir, "sandbox")
	bindLikeContainer(t, mp, sandbox)

	t.Run("kill -9 remounts", func(t *testing.T) {
		fm := fuseMountOf(t, m, "alice")
		old := fm.PID()
		if err := unix.Kill(old, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "remount", func() bool { return fm.Remounts() == 1 })
		if fm.PID() == old || alive(old) {
			t.Fatalf("serving pid %d, old %d alive=%v", fm.PID(), old, alive(old))
		}
		if got := readFile(t, filepath.Join(mp, "late.txt")); got != "late data" {
			t.Fatalf("late.txt after remount = %q", got)
		}
		if got := readFile(t, filepath.Join(sandbox, "late.txt")); got != "late data" {
			t.Fatalf("late.txt in the existing sandbox bind after remount = %q", got)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "cold", "secrets")); len(entries) != 0 {
			t.Fatalf("passwd file left by the remount: %v", entries)
		}
	})

	t.Run("refcount", func(t *testing.T) {
		again, err := m.Acquire(ctx, "alice")
		if err != nil || again != mp {
			t.Fatalf("second Acquire = %q, %v", again, err)
		}
		pid := fuseMountOf(t, m, "alice").PID()
		if err := m.Release(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if !alive(pid) {
			t.Fatal("daemon gone after the first of two Releases")
		}
		if got := readFile(t, filepath.Join(mp, "late.txt")); got != "late data" {
			t.Fatalf("late.txt after one Release = %q", got)
		}
	})

	pid := fuseMountOf(t, m, "alice").PID()
	if err := m.Release(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Errorf("s3fs %d alive after the last Release", pid)
	}
	if n := len(stackAt(mustMountinfo(t), mp)); n != 0 {
		t.Errorf("%d mounts left on %s", n, mp)
	}
	if _, err := os.Lstat(mp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mountpoint dir after Release: %v", err)
	}
	if err := unmountStack(sandbox); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, dir)
	// The data stays in S3.
	if got, err := getObject(t, client, bucket, "users/alice/cold/late.txt"); err != nil || got != "late data" {
		t.Errorf("late.txt in S3 after Release: %q, %v", got, err)
	}
}

// TestS3FSBadCredentials: s3fs refuses the credentials; Acquire reports its
// output and nothing is left behind.
func TestS3FSBadCredentials(t *testing.T) {
	d, _, _ := s3fsSetup(t, "not-the-secret")
	dir := testDir(t)
	m := newTestManager(t, dir, d)
	_, err := m.Acquire(context.Background(), "alice")
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("Acquire with a wrong secret = %v, want Unavailable", err)
	}
	t.Logf("error: %v", err)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, dir)
}

// TestS3FSAnsweredLater runs "Answered later" with the real s3fs: once a
// mount answered, a new user's start returns before s3fs has checked the
// bucket and its files read through at once; with credentials S3 refuses
// (the driver counting as proven, as if they had been revoked since), the
// start returns, the supervisor sees s3fs give up, and the next start
// waits for the answer and fails with s3fs's words.
func TestS3FSAnsweredLater(t *testing.T) {
	ctx := context.Background()
	t.Run("serves", func(t *testing.T) {
		d, srv, bucket := s3fsSetup(t, "")
		m := newTestManager(t, testDir(t), d)
		defer m.Close(ctx)
		if _, err := m.Acquire(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if !d.proven.Load() {
			t.Fatal("driver not proven after a mount answered")
		}
		putObject(t, srv.Client(), bucket, "users/bob/cold/notes.txt", "bob's notes")
		mp, err := m.Acquire(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(mp, "notes.txt")); got != "bob's notes" {
			t.Fatalf("notes.txt = %q", got)
		}
		for _, u := range []string{"alice", "bob"} {
			if err := m.Release(ctx, ids.UserID(u)); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		d, _, _ := s3fsSetup(t, "not-the-secret")
		dir := testDir(t)
		m := newTestManager(t, dir, d)
		d.proven.Store(true)
		// s3fs refuses within milliseconds of mounting, sometimes before
		// the mount is seen on the stage: then this start fails at once.
		// Either way the driver is no longer proven.
		_, err := m.Acquire(ctx, "alice")
		held := err == nil
		if !held && !errdefs.IsUnavailable(err) {
			t.Fatalf("Acquire with a proven driver = %v, want the mount in place or Unavailable", err)
		}
		eventually(t, 20*time.Second, "the driver no longer proven", func() bool { return !d.proven.Load() })
		_, err = m.Acquire(ctx, "bob")
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "invalid credentials") {
			t.Fatalf("Acquire once unproven = %v, want Unavailable with s3fs's output", err)
		}
		if held {
			if err := m.Release(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
		assertNoLeftovers(t, dir)
	})
}
