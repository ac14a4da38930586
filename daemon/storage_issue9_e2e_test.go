//go:build linux

package daemon_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/errclass"
	"github.com/matrx-dev/matrx/mounts/s3test"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// importProduction imports the production image (git, GNU find, python)
// into the harness's daemon.
func importProduction(t *testing.T, h *daemontest.Harness) string {
	t.Helper()
	prod := filepath.Join(containerdtest.RepoRoot(), "build", "images", "sandbox.tar")
	if _, err := os.Stat(prod); err != nil {
		containerdtest.Skip(t, "production image %s missing (run make image)", prod)
	}
	f, err := os.Open(prod)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := h.Client().ImportImage(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	return "localhost/matrx/sandbox:latest"
}

// TestRoundTripKeepsAUsersFilesAsLeft is issue 9's "done means": what a
// new user does in a sandbox (git init and commit, chmod +x, a venv's
// symlinks, an empty directory, a file whose name is not valid UTF-8)
// comes back in the user's next sandbox exactly as it was left: the
// `find -printf '%p %y %m %T@ %l'` listings of both sandboxes are equal
// (modes, types, nanosecond mtimes of files, directories and symlinks,
// link targets), git sees the same clean history, and the script runs.
func TestRoundTripKeepsAUsersFilesAsLeft(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	srv, bucket := s3Env(t)
	h := daemontest.StartProduction(t, withS3(srv, bucket))
	image := importProduction(t, h)
	ctx := context.Background()
	cfg := &apitype.SandboxConfig{Image: image, MemoryMB: 512, DiskMB: 256}
	a := h.Create("rita", cfg)
	setup := `set -e; cd /home/agent
mkdir -p proj/src empty-dir venv/lib/python3.11/site-packages
cd proj
git init -q -b main
git config user.email rita@example.com; git config user.name Rita
printf '#!/bin/sh\necho ran\n' > run.sh; chmod +x run.sh
echo 'print(1)' > src/main.py
git add -A; git commit -qm first
echo 'print(2)' >> src/main.py; git commit -qam second
cd ..
ln -s /usr/bin/python3 venv/python3; ln -s python3 venv/python; ln -s ../../nowhere venv/dangling
printf 'x' > "$(printf 'caf\351.txt')"
chmod 0700 empty-dir
touch -h -d '2020-01-02 03:04:05.123456789' venv/python
echo done`
	if r := h.Exec(a.SandboxID, setup); r.ExitCode != 0 || !strings.HasSuffix(r.Stdout, "done\n") {
		t.Fatalf("setup: %+v", r)
	}
	const list = `cd /home/agent && LC_ALL=C find . -mindepth 1 -printf '%p %y %m %T@ %l\n' | LC_ALL=C sort`
	const gitState = `cd /home/agent/proj && git status --porcelain && git log --format='%H %s' && git fsck --no-progress 2>&1 && ./run.sh`
	// git status refreshes .git/index: list after it here, and before it
	// in the next sandbox.
	gitBefore := h.Exec(a.SandboxID, gitState)
	if gitBefore.ExitCode != 0 {
		t.Fatalf("git before: %+v", gitBefore)
	}
	before := h.Exec(a.SandboxID, list)
	if err := h.Client().Delete(ctx, a.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.Client().Get(ctx, a.SandboxID); got.HotSyncPending || got.HotSyncRejectedCount != 0 {
		t.Fatalf("final sync: %+v", got)
	}
	b := h.Create("rita", cfg)
	t.Cleanup(func() { h.Client().Delete(context.Background(), b.SandboxID, false) })
	after := h.Exec(b.SandboxID, list)
	if after.Stdout != before.Stdout {
		t.Fatalf("the tree changed across sandboxes:\nbefore:\n%s\nafter:\n%s", before.Stdout, after.Stdout)
	}
	gitAfter := h.Exec(b.SandboxID, gitState)
	if gitAfter.ExitCode != 0 || gitAfter.Stdout != gitBefore.Stdout {
		t.Fatalf("git differs: before %+v\nafter %+v", gitBefore, gitAfter)
	}
	if !strings.Contains(gitAfter.Stdout, "ran\n") || strings.Count(gitAfter.Stdout, " ") < 2 {
		t.Fatalf("git status/log/run: %q", gitAfter.Stdout)
	}
	// Other S3 tools see sensible objects: the script carries its mode.
	info, err := srv.Client().HeadObject(ctx, headInput(bucket, "users/rita/hot/proj/run.sh"))
	if err != nil || info.Metadata["mode"] != "33261" {
		t.Fatalf("run.sh object metadata: %v %v", err, info)
	}
}

// TestHardLinkedNamesAreCapped is defect 2 end to end: a sandbox that
// hard-links one empty file more times than --hot-max-names is not synced
// past the cap; the final sync does not delete or lose anything, keeps
// the directory on the host, and the record (matrx inspect, matrx ls) says
// so.
func TestHardLinkedNamesAreCapped(t *testing.T) {
	h := daemontest.Start(t, func(c *daemon.Config) { c.Storage.MaxNames = 1000 })
	ctx := context.Background()
	s := h.Create("harry", &apitype.SandboxConfig{DiskMB: 64})
	if r := h.Exec(s.SandboxID, `cd /home/agent && echo keep > keep && touch f && i=0 && while [ $i -lt 1500 ]; do ln f l$i; i=$((i+1)); done && echo ok`); r.Stdout != "ok\n" {
		t.Fatalf("links: %+v", r)
	}
	if err := h.Client().Delete(ctx, s.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	got, err := h.Client().Get(ctx, s.SandboxID)
	if err != nil || !got.HotSyncPending || !strings.Contains(got.HotSyncOverLimit, "limit 1000") {
		t.Fatalf("record after the final sync: %v %+v", err, got)
	}
	out, _, code := h.CLI("ls", "--all", "--user", "harry")
	if code != 0 || !strings.Contains(out, "too many hot files") {
		t.Fatalf("matrx ls: %d %q", code, out)
	}
	hot := filepath.Join(h.Config.StateDir, "storage", "users", "harry", "hot")
	if _, err := os.Stat(filepath.Join(hot, "f")); err != nil {
		t.Fatalf("the first names were not synced: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.Config.StateDir, "hot", s.SandboxID)); err != nil {
		t.Fatalf("the hot dir left the host with names not synced: %v", err)
	}
}

// TestDiskAdmissionAnswers507 is defect 6 end to end: a disk the state
// filesystem cannot hold is refused with 507 naming the sizes (not 429),
// and nothing is left behind.
func TestDiskAdmissionAnswers507(t *testing.T) {
	h := daemontest.Start(t, func(c *daemon.Config) {
		c.Storage.DiskOvercommit = 1
		c.Limits.MaxDiskMB = 1 << 30 // a PiB
	})
	_, err := h.Client().Create(context.Background(), "ida", &apitype.SandboxConfig{DiskMB: 512 << 20}) // 512 TiB
	if !errclass.IsInsufficientStorage(err) || !strings.Contains(err.Error(), "GiB free") {
		t.Fatalf("create with a disk larger than the host: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.Config.StateDir, "hot")); len(ents) != 0 {
		t.Fatalf("a refused create left %d hot dirs", len(ents))
	}
	s := h.Create("ida", &apitype.SandboxConfig{DiskMB: 64})
	h.Client().Delete(context.Background(), s.SandboxID, false)
}

// TestDeleteWithAFrozenBucketEndsInTime is defect 3 end to end: with the
// S3 endpoint silent (a frozen proxy in front of versitygw) a DELETE ends
// within its final-sync budget, the record says the files are pending,
// nothing is lost, and once the endpoint answers again the retry puts
// them in the bucket.
func TestDeleteWithAFrozenBucketEndsInTime(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	srv, bucket := s3Env(t)
	proxy := s3test.NewProxy(t, srv)
	h := daemontest.Start(t, func(c *daemon.Config) {
		c.Storage = daemon.StorageConfig{Bucket: bucket, Region: srv.Region, Endpoint: proxy.Endpoint, PathStyle: true,
			ColdDriver: "s3fs", CheckpointInterval: 2 * time.Second, DiskOvercommit: 8}
	})
	ctx := context.Background()
	s := h.Create("fred", &apitype.SandboxConfig{DiskMB: 64})
	h.Exec(s.SandboxID, "echo precious > /home/agent/precious")
	proxy.Freeze()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- h.Client().Delete(ctx, s.SandboxID, false) }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
	case <-time.After(90 * time.Second): // the 30 s final-sync budget, the container's stop, and slack
		t.Fatal("DELETE with a frozen bucket did not end within 90 s")
	}
	t.Logf("DELETE with a frozen bucket took %v", time.Since(start))
	got, _ := h.Client().Get(ctx, s.SandboxID)
	if got.Status != "stopped" || !got.HotSyncPending {
		t.Fatalf("after the delete: %+v", got)
	}
	proxy.Thaw()
	waitObject(t, srv, bucket, "users/fred/hot/precious", "precious\n")
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, _ = h.Client().Get(ctx, s.SandboxID)
		if !got.HotSyncPending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retry never completed: %+v", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRestoreFromTrash: a file a user really deleted (the deletion
// reached the bucket) comes back with matrx storage restore, refused while
// the user has a live sandbox.
func TestRestoreFromTrash(t *testing.T) {
	h := daemontest.Start(t, func(c *daemon.Config) { c.Storage.TrashRetention = 24 * time.Hour })
	ctx := context.Background()
	a := h.Create("tess", &apitype.SandboxConfig{DiskMB: 64})
	h.Exec(a.SandboxID, "mkdir -p /home/agent/proj && echo v1 > /home/agent/proj/notes.md")
	if err := h.Client().Delete(ctx, a.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	b := h.Create("tess", &apitype.SandboxConfig{DiskMB: 64})
	h.Exec(b.SandboxID, "rm -rf /home/agent/proj")
	if _, stderr, code := h.CLI("storage", "restore", "tess", "proj/notes.md"); code == 0 || !strings.Contains(stderr, "active sandbox") {
		t.Fatalf("restore with a live sandbox: %d %q", code, stderr)
	}
	if err := h.Client().Delete(ctx, b.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	hot := filepath.Join(h.Config.StateDir, "storage", "users", "tess", "hot", "proj", "notes.md")
	if _, err := os.Stat(hot); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the deletion did not reach the bucket: %v", err)
	}
	out, stderr, code := h.CLI("storage", "restore", "tess", "proj")
	if code != 0 || out != "restored proj/notes.md\n" {
		t.Fatalf("restore: %d %q %q", code, out, stderr)
	}
	c := h.Create("tess", &apitype.SandboxConfig{DiskMB: 64})
	if r := h.Exec(c.SandboxID, "cat /home/agent/proj/notes.md"); r.Stdout != "v1\n" {
		t.Fatalf("restored file: %+v", r)
	}
	if _, _, code := h.CLI("storage", "restore", "tess", "never/there"); code == 0 {
		t.Fatal("restore of a path never trashed succeeded")
	}
	h.Client().Delete(ctx, c.SandboxID, false)
}

func headInput(bucket, key string) *s3.HeadObjectInput {
	return &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
}
