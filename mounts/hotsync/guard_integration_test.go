package hotsync_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/mounts/s3test"
)

// TestUnverifiedRootDeletesNothing: a Dir without the sandbox's sentinel
// (a directory recreated in place of the home) deletes nothing, says why,
// and a later pass on the verified home applies the deletions.
func TestUnverifiedRootDeletesNothing(t *testing.T) {
	st := newLocal(t)
	a := newSandbox(t, st, "sbx-a")
	for i := range 5 {
		a.write(t, fmt.Sprintf("f%d", i), []byte("x"))
	}
	a.up(t)
	// The home is replaced by an empty directory of the same name.
	must(t, os.Rename(a.dir, a.dir+".real"))
	must(t, os.Mkdir(a.dir, 0o755))
	res, err := a.Up(testCtx(t))
	var held *hotsync.HeldError
	if !errors.As(err, &held) || !errdefs.IsFailedPrecondition(err) || len(res.Deleted) != 0 || res.Held == "" {
		t.Fatalf("up of a replaced root: %v %+v", err, res)
	}
	if n := len(objects(t, st)); n != 5 {
		t.Fatalf("%d of 5 objects left", n)
	}
	// Back on the real home, where f0 really was deleted.
	must(t, os.Remove(a.dir))
	must(t, os.Rename(a.dir+".real", a.dir))
	must(t, os.Remove(filepath.Join(a.dir, "f0")))
	if res := a.up(t); !slices.Equal(res.Deleted, []string{"f0"}) {
		t.Fatalf("deleted %q", res.Deleted)
	}
}

// TestEmptiedTreeIsHeldOnePass is the mass-deletion guard: a verified
// walk that finds nothing while 100 or more entries were synced holds the
// deletions for one pass; the next pass that still finds the tree empty
// applies them (the user really emptied it).
func TestEmptiedTreeIsHeldOnePass(t *testing.T) {
	st := newLocal(t)
	a := newSandbox(t, st, "sbx-a")
	for i := range hotsync.MassDeletionMin {
		a.write(t, fmt.Sprintf("f%03d", i), []byte("x"))
	}
	a.up(t)
	ents, _ := os.ReadDir(a.dir)
	for _, e := range ents {
		must(t, os.RemoveAll(filepath.Join(a.dir, e.Name())))
	}
	res, err := a.Up(testCtx(t))
	if !errdefs.IsFailedPrecondition(err) || len(res.Deleted) != 0 || !strings.Contains(res.Held, "mass-deletion") {
		t.Fatalf("first pass over an emptied tree: %v %+v", err, res)
	}
	if n := len(objects(t, st)); n != hotsync.MassDeletionMin {
		t.Fatalf("%d objects left after the held pass", n)
	}
	res = a.up(t)
	if len(res.Deleted) != hotsync.MassDeletionMin {
		t.Fatalf("second pass deleted %d", len(res.Deleted))
	}
}

// TestNamesCap: over MaxNames, a pass uploads changes among the first
// names (walk order), deletes nothing, and says so; under it again, the
// deletions go through.
func TestNamesCap(t *testing.T) {
	st := newLocal(t)
	a := newSandbox(t, st, "sbx-a", func(c *hotsync.Config) { c.MaxNames = 10 })
	for i := range 8 {
		a.write(t, fmt.Sprintf("a%d", i), []byte("x"))
	}
	a.up(t)
	must(t, os.Remove(filepath.Join(a.dir, "a7")))
	// 1 file hard-linked 20 times: 20 names of one inode.
	a.write(t, "z/orig", []byte("linked"))
	for i := range 20 {
		must(t, os.Link(filepath.Join(a.dir, "z/orig"), filepath.Join(a.dir, fmt.Sprintf("z/l%02d", i))))
	}
	a.write(t, "a0", []byte("changed"))
	res, err := a.Up(testCtx(t))
	if !errdefs.IsFailedPrecondition(err) || res.OverLimit == nil || res.OverLimit.MaxNames != 10 || len(res.Deleted) != 0 {
		t.Fatalf("over the cap: %v %+v", err, res)
	}
	if !slices.Contains(res.Uploaded, "a0") || slices.Contains(res.Uploaded, "z/l19") {
		t.Fatalf("uploaded %q", res.Uploaded)
	}
	if _, ok := objects(t, st)["a7"]; !ok {
		t.Fatal("a deletion was sent over the cap")
	}
	must(t, os.RemoveAll(filepath.Join(a.dir, "z")))
	if res := a.up(t); !slices.Contains(res.Deleted, "a7") || res.OverLimit != nil {
		t.Fatalf("under the cap again: %+v", res)
	}
	for k := range objects(t, st) {
		if k == "a7" || strings.HasPrefix(k, "z/") {
			t.Fatalf("%s is still in the bucket under the cap", k)
		}
	}
}

// TestTrashKeepsDeletedAndOverwrittenVersions: with a trash prefix, every
// object Up deletes or overwrites is first copied there.
func TestTrashKeepsDeletedAndOverwrittenVersions(t *testing.T) {
	forEachStore(t, func(t *testing.T, st hotsync.Store) {
		const trash = "users/u1/trash/"
		a := newSandbox(t, st, "sbx-a", func(c *hotsync.Config) { c.TrashPrefix = trash })
		a.write(t, "gone.txt", []byte("v1 of gone"))
		a.write(t, "edited.txt", []byte("v1 of edited"))
		a.up(t)
		must(t, os.Remove(filepath.Join(a.dir, "gone.txt")))
		a.write(t, "edited.txt", []byte("v2 of edited"))
		a.up(t)
		got := map[string]string{}
		for obj, err := range st.List(testCtx(t), trash) {
			must(t, err)
			at, rel, ok := hotsync.ParseTrashKey(trash, obj.Key)
			if !ok || time.Since(at) > time.Minute {
				t.Fatalf("trash key %q: %v %v", obj.Key, at, ok)
			}
			f, _ := os.CreateTemp(t.TempDir(), "x")
			_, err := st.Download(testCtx(t), obj.Key, obj.Size, f)
			must(t, err)
			b, _ := os.ReadFile(f.Name())
			f.Close()
			got[rel] = string(b)
		}
		if got["gone.txt"] != "v1 of gone" || got["edited.txt"] != "v1 of edited" || len(got) != 2 {
			t.Fatalf("trash holds %q", got)
		}
	})
}

// TestLockWaitHonoursContext: a sync waiting for the one in progress
// gives up when its context ends.
func TestLockWaitHonoursContext(t *testing.T) {
	srv := s3test.Start(t)
	proxy := s3test.NewProxy(t, srv)
	s3, err := objstore.NewS3(t.Context(), objstore.S3Config{Bucket: srv.NewBucket(t), Region: srv.Region, Endpoint: proxy.Endpoint,
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey},
		objstore.WithRequestTimeout(3*time.Second), objstore.WithResponseHeaderTimeout(2*time.Second), objstore.WithMaxAttempts(1))
	must(t, err)
	a := newSandbox(t, s3, "sbx-a")
	a.write(t, "f", []byte("x"))
	proxy.Freeze()
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := a.Up(ctx)
		first <- err
	}()
	time.Sleep(200 * time.Millisecond) // the first Up holds the lock, stuck on the frozen server
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := a.Up(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Up while the first is stuck: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the lock wait ignored its context for %v", d)
	}
	// The stuck one ends too, within its requests' deadlines.
	select {
	case err := <-first:
		if err == nil {
			t.Fatal("an Up against a frozen server succeeded")
		}
	case <-time.After(45 * time.Second):
		t.Fatal("an Up against a frozen server did not end within its request deadlines")
	}
	// Thawed, the held PUT may land late: the next Up recognises it as
	// its own either way.
	proxy.Thaw()
	if res := a.up(t); len(res.Conflicts) != 0 || string(objects(t, s3)["f"]) != "x" {
		t.Fatalf("after thaw: %+v", res)
	}
}

// TestDownStopsAtTheNamesCap: a bucket prefix holding more objects than
// MaxNames (written before the cap, or by another tool) comes down up to
// the cap; the rest is reported, not dropped silently.
func TestDownStopsAtTheNamesCap(t *testing.T) {
	st := newLocal(t)
	for i := range 12 {
		putObject(t, st, fmt.Sprintf("f%02d", i), []byte("x"))
	}
	a := newSandbox(t, st, "sbx-a", func(c *hotsync.Config) { c.MaxNames = 10 })
	res := a.down(t)
	if len(res.Downloaded) != 10 || len(res.Rejected) != 2 || !strings.Contains(res.Rejected[0].Reason, "limit of 10") {
		t.Fatalf("down over the cap: %+v", res)
	}
}
