//go:build linux

package daemon_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/mounts/s3test"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/testenv"
)

// TestMain starts the local S3 server on first use and stops it at the end.
//
// The heaviest end-to-end tests (production image imports, torture,
// streaming at scale, real-binary daemons) call t.Parallel(): each owns
// its containerd, daemon, bridge, subnet, state dir and bucket, and they
// take most of the package's time waiting on I/O and timers. Tests that
// measure the test process itself (TestFilesLarge's RSS) or assert a
// liveness deadline stay sequential; Go never runs those alongside the
// parallel ones.
func TestMain(m *testing.M) { s3test.Main(m) }

var exportCredentials sync.Once

// s3Env starts (once) the local S3 server, makes a fresh bucket and exports
// the credentials the way an operator would (standard AWS chain). The
// credentials are the one server's, so they are exported once for the
// whole process (t.Setenv is not allowed in parallel tests).
func s3Env(t *testing.T) (*s3test.Server, string) {
	srv := s3test.Start(t)
	if _, err := exec.LookPath("s3fs"); err != nil {
		containerdtest.Skip(t, "s3fs not installed")
	}
	bucket := srv.NewBucket(t)
	exportCredentials.Do(func() {
		os.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
		os.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	})
	return srv, bucket
}

func withS3(srv *s3test.Server, bucket string) func(*daemon.Config) {
	return func(c *daemon.Config) {
		c.Storage = daemon.StorageConfig{Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint, PathStyle: true,
			ColdDriver: "s3fs", CheckpointInterval: time.Hour, DiskOvercommit: 8}
	}
}

func put(t *testing.T, srv *s3test.Server, bucket, key, body string) {
	t.Helper()
	_, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(body)})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func get(t *testing.T, srv *s3test.Server, bucket, key string) (string, bool) {
	t.Helper()
	out, err := srv.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return "", false
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	return string(b), true
}

func TestS3HotAndColdStorage(t *testing.T) {
	testenv.BothContainerds(t)
	srv, bucket := s3Env(t)
	put(t, srv, bucket, "users/alice/hot/notes/a.txt", "from s3\n")
	put(t, srv, bucket, "users/alice/cold/data.bin", "cold bytes")
	h := daemontest.Start(t, withS3(srv, bucket))
	ctx := context.Background()
	s := h.Create("alice", nil)

	// Hot files are in place, owned by agent, before the sandbox is ready.
	if r := h.Exec(s.SandboxID, "cat /home/agent/notes/a.txt; stat -c %u:%g /home/agent/notes/a.txt"); r.Stdout != "from s3\n1000:1000\n" {
		t.Fatalf("hot files: %+v", r)
	}
	// Cold: an object that existed, one added after the mount, and a write
	// through the mount that lands in S3.
	if r := h.Exec(s.SandboxID, "cat /data/cold/data.bin"); r.Stdout != "cold bytes" {
		t.Fatalf("cold read: %+v", r)
	}
	put(t, srv, bucket, "users/alice/cold/later.txt", "late")
	if r := h.Exec(s.SandboxID, "cat /data/cold/later.txt"); r.Stdout != "late" {
		t.Fatalf("cold read of a new object: %+v", r)
	}
	if r := h.Exec(s.SandboxID, "echo written > /data/cold/out.txt && sync"); r.ExitCode != 0 {
		t.Fatalf("cold write: %+v", r)
	}
	waitObject(t, srv, bucket, "users/alice/cold/out.txt", "written\n")

	// The sandbox has no path to the host's FUSE or credentials.
	root := "root"
	r, err := h.Client().Exec(ctx, s.SandboxID, apitype.ExecRequest{User: root, Command: `
		for f in CapInh CapPrm CapEff CapBnd CapAmb; do
		  v=$(grep "^$f:" /proc/self/status | cut -f2); [ $(( 0x$v >> 21 & 1 )) -eq 0 ] || echo "SYS_ADMIN in $f"
		done
		test -e /dev/fuse && echo "/dev/fuse present"
		env | grep -i aws
		grep -rlsF "` + srv.SecretKey + `" /etc /home /tmp /run /var /root /.matrx 2>/dev/null
		true`})
	if err != nil || r.Stdout != "" {
		t.Fatalf("sandbox sees privileges or credentials: %v %+v", err, r)
	}

	// Changes and deletions reach S3 on shutdown; an object someone else
	// added meanwhile survives.
	h.Exec(s.SandboxID, "echo new > /home/agent/new.txt; rm /home/agent/notes/a.txt; mkdir -p /home/agent/__pycache__ && echo x > /home/agent/__pycache__/m.pyc")
	put(t, srv, bucket, "users/alice/hot/foreign.txt", "theirs")
	if err := h.Client().Delete(ctx, s.SandboxID, true); err != nil {
		t.Fatal(err)
	}
	if v, ok := get(t, srv, bucket, "users/alice/hot/new.txt"); !ok || v != "new\n" {
		t.Fatalf("new file not synced up: %q %v", v, ok)
	}
	if _, ok := get(t, srv, bucket, "users/alice/hot/notes/a.txt"); ok {
		t.Fatal("deleted file came back from S3")
	}
	if _, ok := get(t, srv, bucket, "users/alice/hot/__pycache__/m.pyc"); ok {
		t.Fatal("excluded file was uploaded")
	}
	if _, ok := get(t, srv, bucket, "users/alice/hot/foreign.txt"); !ok {
		t.Fatal("an object added by someone else was deleted")
	}
	got, _ := h.Client().Get(ctx, s.SandboxID)
	if got.HotSyncPending || got.HotSyncedAt == nil {
		t.Fatalf("sync state after stop: %+v", got)
	}
	st, err := h.Client().StorageStats(ctx, "alice")
	if err != nil || st.Hot.Objects < 2 || st.Cold.Objects < 3 {
		t.Fatalf("storage stats: %v %+v", err, st)
	}
	// No hot directory, FUSE mount or s3fs process is left for alice.
	if ents, _ := os.ReadDir(filepath.Join(h.Config.StateDir, "hot")); len(ents) != 0 {
		t.Fatalf("hot dirs left: %v", ents)
	}
	// Line by line: other tests' daemons run beside this one, and their
	// FUSE mounts are theirs.
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) > 4 && bytes.HasPrefix(f[4], []byte(filepath.Join(h.Config.StateDir, "cold")+"/")) && bytes.Contains(line, []byte(" - fuse")) {
			t.Fatalf("cold mount left: %s", line)
		}
	}
}

func waitObject(t *testing.T, srv *s3test.Server, bucket, key, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if v, ok := get(t, srv, bucket, key); ok && v == want {
			return
		}
		if time.Now().After(deadline) {
			v, ok := get(t, srv, bucket, key)
			t.Fatalf("object %s = %q (exists %v), want %q", key, v, ok, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestTwoSandboxesOfOneUserConflict(t *testing.T) {
	srv, bucket := s3Env(t)
	put(t, srv, bucket, "users/bob/hot/shared.txt", "v0")
	h := daemontest.Start(t, withS3(srv, bucket))
	ctx := context.Background()
	a := h.Create("bob", nil)
	b := h.Create("bob", nil)
	h.Exec(a.SandboxID, "printf A > shared.txt")
	h.Exec(b.SandboxID, "printf B > shared.txt")
	if err := h.Client().Delete(ctx, a.SandboxID, true); err != nil {
		t.Fatal(err)
	}
	if err := h.Client().Delete(ctx, b.SandboxID, true); err != nil {
		t.Fatal(err)
	}
	if v, _ := get(t, srv, bucket, "users/bob/hot/shared.txt"); v != "A" {
		t.Fatalf("first writer's version was overwritten: %q", v)
	}
	if v, ok := get(t, srv, bucket, "users/bob/hot/shared.txt.conflict-"+b.SandboxID); !ok || v != "B" {
		t.Fatalf("second writer's version not kept as a conflict copy: %q %v", v, ok)
	}
}

// TestCrashRecoverySyncsHotFiles kills -9 a real matrxd process while a
// sandbox has unsynced hot files, restarts it, and checks the files reach
// S3 without waiting for a checkpoint interval.
func TestCrashRecoverySyncsHotFiles(t *testing.T) {
	srv, bucket := s3Env(t)
	env := containerdtest.Start(t, daemontest.Namespace)
	bin := daemontest.BuildMatrxd(t, env.Dir)
	sock := filepath.Join(env.Dir, "d.sock")
	state := filepath.Join(env.Dir, "state")
	nc := daemontest.Network(t)
	daemontest.UninstallNetworkAtEnd(t, state, nc)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--socket", sock, "--containerd-address", env.Address, "--containerd-namespace", daemontest.Namespace, "--ssh-address=",
			"--state-dir", state, "--lock-dir", filepath.Join(env.Dir, "locks"), "--init-path", env.InitPath, "--image", containerdtest.MinimalImage,
			"--default-memory-mb", "256", "--default-cpu", "1", "--checkpoint-interval", "1h",
			"--s3-bucket", bucket, "--s3-endpoint", srv.Endpoint, "--s3-region", srv.Region, "--cold-driver", "s3fs",
			"--network", "on", "--network-bridge", nc.Bridge, "--network-subnet", nc.Subnet.String())
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			if t.Failed() {
				t.Logf("matrxd log:\n%s", logs.String())
			}
		})
		return cmd
	}
	d := start()
	c := client.New(sock, client.WithRetries(60), client.WithBackoff(50*time.Millisecond))
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("matrxd did not come up: %v", err)
	}
	f, _ := os.Open(env.ImageTar)
	if _, err := c.ImportImage(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err := c.Create(ctx, "carol", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := c.Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "mkdir -p work && echo precious > work/result.txt"}); err != nil || r.ExitCode != 0 {
		t.Fatalf("write: %v %+v", err, r)
	}
	if _, ok := get(t, srv, bucket, "users/carol/hot/work/result.txt"); ok {
		t.Fatal("file reached S3 before the crash; the test proves nothing")
	}
	d.Process.Signal(syscall.SIGKILL)
	d.Wait()
	start()
	waitObject(t, srv, bucket, "users/carol/hot/work/result.txt", "precious\n")
	// The sandbox survived the crash and still works.
	if r, err := c.Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "cat work/result.txt"}); err != nil || r.Stdout != "precious\n" {
		t.Fatalf("exec after crash: %v %+v", err, r)
	}
	if err := c.Delete(ctx, s.SandboxID, true); err != nil {
		t.Fatal(err)
	}
}

// stopWhileBucketAway creates a sandbox of user with an unsynced file and
// deletes it while the bucket's directory is moved away, so that its final
// sync fails. It returns the sandbox and what brings the bucket back.
func stopWhileBucketAway(t *testing.T, h *daemontest.Harness, srv *s3test.Server, bucket, user string) (*apitype.Sandbox, func()) {
	t.Helper()
	s := h.Create(user, nil)
	// The bucket goes before the file is written: a checkpoint tick between
	// the write and the bucket's going would upload it, and the final sync
	// would then rightly succeed (seen in CI with a 1 s checkpoint interval).
	bucketDir := filepath.Join(srv.Dir, bucket)
	if err := os.Rename(bucketDir, bucketDir+".away"); err != nil {
		t.Fatal(err)
	}
	h.Exec(s.SandboxID, "echo unsynced > keep.txt")
	if err := h.Client().Delete(context.Background(), s.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	return s, func() {
		t.Helper()
		if err := os.Rename(bucketDir+".away", bucketDir); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFailedFinalSyncIsRetried makes the bucket vanish while a sandbox
// stops: its hot files stay on the host, the record says so, and the next
// daemon start uploads them.
func TestFailedFinalSyncIsRetried(t *testing.T) {
	srv, bucket := s3Env(t)
	h := daemontest.Start(t, withS3(srv, bucket))
	ctx := context.Background()
	s, bucketBack := stopWhileBucketAway(t, h, srv, bucket, "dana")
	got, _ := h.Client().Get(ctx, s.SandboxID)
	if got.Status != "stopped" || !got.HotSyncPending || got.HotSyncError == "" {
		t.Fatalf("record after a failed final sync: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(h.Config.StateDir, "hot", s.SandboxID)); err != nil {
		t.Fatalf("hot files were removed before reaching S3: %v", err)
	}
	bucketBack()
	h.Stop()
	h.Start()
	// Recovery syncs in the background, right after the daemon serves.
	waitObject(t, srv, bucket, "users/dana/hot/keep.txt", "unsynced\n")
	waitRetried(t, h, s.SandboxID, "after the retry at restart")
}

// TestFailedFinalSyncIsRetriedWhileRunning: after a failed final sync the
// daemon keeps retrying on its checkpoint tick, so the files reach S3 once
// the bucket is back, without a restart.
func TestFailedFinalSyncIsRetriedWhileRunning(t *testing.T) {
	srv, bucket := s3Env(t)
	h := daemontest.Start(t, withS3(srv, bucket), func(c *daemon.Config) { c.Storage.CheckpointInterval = time.Second })
	ctx := context.Background()
	s, bucketBack := stopWhileBucketAway(t, h, srv, bucket, "erin")
	got, _ := h.Client().Get(ctx, s.SandboxID)
	if !got.HotSyncPending {
		t.Fatalf("final sync did not fail with the bucket away: %+v", got)
	}
	time.Sleep(2500 * time.Millisecond) // a few failing retries
	pending := func() float64 {
		out, err := h.Client().Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := sample(t, string(out), "matrx_hotsync_pending_sandboxes")
		return v
	}
	if n := pending(); n != 1 {
		t.Errorf("matrx_hotsync_pending_sandboxes = %v while the files wait, want 1", n)
	}
	if out, _, _ := h.CLI("ls", "--all"); !strings.Contains(out, "stopped (hot files not in S3 yet)") {
		t.Errorf("matrx ls --all does not show the pending files:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(h.Config.StateDir, "hot", s.SandboxID)); err != nil {
		t.Fatalf("hot files were removed while S3 was away: %v", err)
	}
	bucketBack()
	waitObject(t, srv, bucket, "users/erin/hot/keep.txt", "unsynced\n")
	waitRetried(t, h, s.SandboxID, "after the retry")
	if n := pending(); n != 0 {
		t.Errorf("matrx_hotsync_pending_sandboxes = %v after the retry, want 0", n)
	}
}

// waitRetried waits (30 s at most) until a stopped sandbox's pending final
// sync went through: the record says synced and its hot dir is gone.
func waitRetried(t *testing.T, h *daemontest.Harness, id, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ := h.Client().Get(context.Background(), id)
		_, statErr := os.Stat(filepath.Join(h.Config.StateDir, "hot", id))
		if got != nil && !got.HotSyncPending && got.HotSyncedAt != nil && os.IsNotExist(statErr) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: record %+v, hot dir: %v", what, got, statErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
