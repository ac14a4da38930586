package mounts_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/errclass"
	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/mounts"
	"github.com/matrx-dev/matrx/mounts/cold"
	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/testenv"
	"golang.org/x/sys/unix"
)

// storageEnv is a Storage on the local driver (a directory as the
// bucket, cold as a bind of it) whose hot dirs are real ext4 images.
type storageEnv struct {
	dir    string
	bucket *objstore.Local
	cold   *cold.Manager
}

func newStorageEnv(t *testing.T) *storageEnv {
	t.Helper()
	testenv.NeedRoot(t, "ext4 images on loop devices")
	dir := t.TempDir()
	t.Cleanup(func() { unmountUnder(filepath.Join(dir, "hot")) })
	bucket, err := objstore.NewLocal(filepath.Join(dir, "storage"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bucket.Close() })
	log := slog.New(slog.DiscardHandler)
	drv, err := cold.Select(cold.SelectConfig{Mode: "local", LocalStorageDir: filepath.Join(dir, "storage"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := cold.NewManager(context.Background(), cold.ManagerConfig{Dir: filepath.Join(dir, "cold"), Driver: drv, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close(context.Background()) })
	return &storageEnv{dir: dir, bucket: bucket, cold: cm}
}

// storage opens a Storage on the env's hot root: a second call is what a
// daemon restart (or any code path building a fresh one) sees.
func (e *storageEnv) storage(t *testing.T) *mounts.Storage {
	t.Helper()
	s, err := mounts.NewStorage(mounts.StorageConfig{Dir: filepath.Join(e.dir, "hot"), Store: e.bucket, Cold: e.cold, UID: 1000, GID: 1000,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *storageEnv) objects(t *testing.T, prefix string) []string {
	t.Helper()
	objs, err := objstore.ListAll(context.Background(), e.bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// TestSyncOfAnUnmountedRemovedImageDeletesNothing is issue 9's
// deterministic reproduction: a stopping sandbox's home is unmounted and
// its image removed, but manifest.json is still there; a sync from a
// fresh Storage (a checkpoint that raced RemoveHot, or a restart) walks
// the empty mount point. It must not delete the user's objects.
func TestSyncOfAnUnmountedRemovedImageDeletesNothing(t *testing.T) {
	e := newStorageEnv(t)
	s := e.storage(t)
	const id, user = "sbx-00000000a001", "u1"
	home, err := s.PrepareHot(id, user, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncDown(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := os.WriteFile(filepath.Join(home, fmt.Sprintf("f%d", i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SyncUp(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	if got := e.objects(t, "users/u1/hot/f"); len(got) != 10 {
		t.Fatalf("after the first sync: %v", got)
	}
	// What RemoveHot does, stopped half-way: unmount, image gone,
	// manifest left.
	if err := unmount(home); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(filepath.Dir(home), "home.img")); err != nil {
		t.Fatal(err)
	}
	fresh := e.storage(t)
	fresh.SyncUp(ctx(t), id, user) // may fail; must not delete
	if got := e.objects(t, "users/u1/hot/f"); len(got) != 10 {
		t.Fatalf("a sync of the unmounted, removed image deleted the user's files: %d of 10 objects left", len(got))
	}
}

// TestSyncOfASwappedRootDeletesNothing: the directory a sync walks is a
// fresh, empty filesystem (another image mounted in its place). Its
// device is not the sandbox's, and the sentinel written at PrepareHot is
// not on it: nothing is deleted.
func TestSyncOfASwappedRootDeletesNothing(t *testing.T) {
	e := newStorageEnv(t)
	s := e.storage(t)
	const id, user = "sbx-00000000a002", "u2"
	home, err := s.PrepareHot(id, user, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncDown(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	for i := range 120 {
		if err := os.WriteFile(filepath.Join(home, fmt.Sprintf("f%03d", i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SyncUp(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	// Mount an empty filesystem over the home (a tmpfs: another device).
	if err := mountTmpfs(home); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(home) })
	s.SyncUp(ctx(t), id, user)
	if got := e.objects(t, "users/u2/hot/f"); len(got) != 120 {
		t.Fatalf("a sync of a swapped root deleted the user's files: %d of 120 objects left", len(got))
	}
}

// TestRealDeletionsReachTheBucket: the guard does not keep what a user
// really deleted, however many: rm -rf ~/proj (200 files) propagates.
func TestRealDeletionsReachTheBucket(t *testing.T) {
	e := newStorageEnv(t)
	s := e.storage(t)
	const id, user = "sbx-00000000a003", "u3"
	home, err := s.PrepareHot(id, user, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncDown(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(home, "proj"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := os.WriteFile(filepath.Join(home, "proj", fmt.Sprintf("f%03d", i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(home, "keep"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncUp(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(home, "proj")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncUp(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	if got := e.objects(t, "users/u3/hot/proj/"); len(got) != 0 {
		t.Fatalf("rm -rf ~/proj did not reach the bucket: %d objects left", len(got))
	}
	if got := e.objects(t, "users/u3/hot/keep"); len(got) != 1 {
		t.Fatalf("keep: %v", got)
	}
}

// TestCheckpointRacingFinishHotDeletesNothing races checkpoints (SyncUp
// from the map's syncer and from fresh Storages) against FinishHot, many
// times: whatever interleaving happens, every object stays.
func TestCheckpointRacingFinishHotDeletesNothing(t *testing.T) {
	e := newStorageEnv(t)
	s := e.storage(t)
	for round := range 8 {
		id, user := fmt.Sprintf("sbx-00000000b%03d", round), ids.UserID("racer")
		home, err := s.PrepareHot(id, user, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.SyncDown(ctx(t), id, user); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("r%d", round)
		if err := os.WriteFile(filepath.Join(home, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 50 {
				s.SyncUp(ctx(t), id, user)
				e.storage(t).SyncUp(ctx(t), id, user)
			}
		}()
		// The fresh Storages stand for another process on the same state
		// dir (matrxd's state lock rules that out in production), whose
		// syncer, made before the tombstone, may still write its manifest
		// into the dir while it is removed: then FinishHot fails, the dir
		// stays, and the retry (as the stop path does) must finish it.
		_, err = s.FinishHot(ctx(t), id, user)
		<-done
		if err != nil {
			t.Logf("round %d: FinishHot beside a foreign sync: %v; retrying", round, err)
			if _, err := s.FinishHot(ctx(t), id, user); err != nil {
				t.Fatalf("round %d: FinishHot retry: %v", round, err)
			}
		}
		if s.HasHot(id) {
			t.Fatalf("round %d: hot dir still there after FinishHot", round)
		}
		for r := range round + 1 {
			if got := e.objects(t, fmt.Sprintf("users/racer/hot/r%d", r)); len(got) != 1 {
				t.Fatalf("round %d: r%d lost from the bucket", round, r)
			}
		}
	}
}

func unmount(dir string) error { return unix.Unmount(dir, unix.MNT_DETACH) }

func mountTmpfs(dir string) error { return unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16m") }

// unmountUnder detaches every mount below dir (the test's images and
// tmpfs), so that the temp dir can be removed.
func unmountUnder(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		home := filepath.Join(dir, e.Name(), "home")
		for range 4 {
			if unix.Unmount(home, unix.MNT_DETACH) != nil {
				break
			}
		}
	}
}

// TestColdReleaseWithoutAcquireKeepsOthersMount is defect 5: a sandbox
// whose cold acquire failed (at recovery, say) and that is later stopped
// must not take the mount of its user's other sandbox away.
func TestColdReleaseWithoutAcquireKeepsOthersMount(t *testing.T) {
	e := newStorageEnv(t)
	s := e.storage(t)
	mp, err := s.AcquireCold(ctx(t), "u5", "sbx-00000000c001")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.dir, "storage", "users", "u5", "cold"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "storage", "users", "u5", "cold", "data"), []byte("d"), 0o644); err != nil {
		t.Fatal(err)
	}
	// sbx-...c002 never acquired (its acquire failed); its stop releases.
	if err := s.ReleaseCold(ctx(t), "u5", "sbx-00000000c002"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mp, "data")); err != nil {
		t.Fatalf("the other sandbox's cold mount went away: %v", err)
	}
	// A second acquire by the same sandbox holds no second reference.
	if _, err := s.AcquireCold(ctx(t), "u5", "sbx-00000000c001"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseCold(ctx(t), "u5", "sbx-00000000c001"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mp, "data")); err == nil {
		t.Fatal("the mount outlived its only sandbox")
	}
}

// TestDiskAdmission is defect 6: a disk that, with what the disks already
// handed out may still grow by, does not fit the state filesystem's free
// space less the reserve is refused with ErrInsufficientStorage (naming the
// numbers), and nothing is left behind.
func TestDiskAdmission(t *testing.T) {
	e := newStorageEnv(t)
	s := e.storage(t)
	var st unix.Statfs_t
	if err := unix.Statfs(e.dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	big := (free - mounts.DefaultDiskReserve) * 6 / 10 &^ (1<<20 - 1)
	if _, err := s.PrepareHot("sbx-00000000d001", "u6", 2*big); !errclass.IsInsufficientStorage(err) || !strings.Contains(err.Error(), "GiB free") {
		t.Fatalf("a disk larger than the host: %v", err)
	}
	if s.HasHot("sbx-00000000d001") {
		t.Fatal("a refused create left its hot dir")
	}
	if _, err := s.PrepareHot("sbx-00000000d002", "u6", big); err != nil {
		t.Fatalf("a disk that fits: %v", err)
	}
	// The first disk is empty but may grow to its size: a second one of
	// the same size no longer fits.
	if _, err := s.PrepareHot("sbx-00000000d003", "u6", big); !errclass.IsInsufficientStorage(err) {
		t.Fatalf("a second disk that does not fit with the first: %v", err)
	}
	if err := s.RemoveHot(ctx(t), "sbx-00000000d002"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PrepareHot("sbx-00000000d003", "u6", big); err != nil {
		t.Fatalf("after the first was removed: %v", err)
	}
}

// TestDiskAdmissionOfConcurrentCreates: disks are made outside the
// admission lock (creates in a burst format and mount theirs at once), so
// what concurrent admissions see of each other is their reservations:
// of eight creates at once, each asking for 3/10 of the room, exactly
// three get a disk.
func TestDiskAdmissionOfConcurrentCreates(t *testing.T) {
	e := newStorageEnv(t)
	s := e.storage(t)
	var st unix.Statfs_t
	if err := unix.Statfs(e.dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	size := (free - mounts.DefaultDiskReserve) * 3 / 10 &^ (1<<20 - 1)
	var (
		wg            sync.WaitGroup
		mu            sync.Mutex
		made, refused int
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.PrepareHot(fmt.Sprintf("sbx-00000000f%03d", i), "u8", size)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				made++
			case errclass.IsInsufficientStorage(err):
				refused++
			default:
				t.Errorf("create %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if made != 3 || refused != 5 {
		t.Fatalf("%d disks made, %d refused: want 3 and 5", made, refused)
	}
}

// TestDiskAdmissionCountsProcessOutput: every sandbox's bound on host bytes
// beyond its disk (process output) counts, for the new one and for each
// existing one.
func TestDiskAdmissionCountsProcessOutput(t *testing.T) {
	e := newStorageEnv(t)
	var st unix.Statfs_t
	if err := unix.Statfs(e.dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	room := free - mounts.DefaultDiskReserve
	per := room * 6 / 10 &^ (1<<20 - 1)
	s, err := mounts.NewStorage(mounts.StorageConfig{Dir: filepath.Join(e.dir, "hot"), Store: e.bucket, Cold: e.cold, UID: 1000, GID: 1000,
		HostBytesPerSandbox: per, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	small := int64(64 << 20)
	if _, err := s.PrepareHot("sbx-00000000e001", "u7", small); err != nil {
		t.Fatalf("first sandbox (disk + output bound fit): %v", err)
	}
	// 2 × (output bound) + 2 small disks exceed the room: refused, though
	// the disks alone would fit many times over.
	if _, err := s.PrepareHot("sbx-00000000e002", "u7", small); !errclass.IsInsufficientStorage(err) {
		t.Fatalf("second sandbox: got %v, want insufficient storage (its output bound does not fit)", err)
	}
}

// TestTrashRestoreAndPrune: a file deleted in one sandbox (a real rm,
// propagated) comes back with RestoreHot, as of a given time too, and
// expired days are pruned.
func TestTrashRestoreAndPrune(t *testing.T) {
	e := newStorageEnv(t)
	s, err := mounts.NewStorage(mounts.StorageConfig{Dir: filepath.Join(e.dir, "hot"), Store: e.bucket, Cold: e.cold, UID: 1000, GID: 1000,
		TrashRetention: 7 * 24 * time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	const id, user = "sbx-00000000e001", "u7"
	home, err := s.PrepareHot(id, user, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncDown(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	write := func(body string) {
		if err := os.WriteFile(filepath.Join(home, "notes.md"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SyncUp(ctx(t), id, user); err != nil {
			t.Fatal(err)
		}
	}
	write("v1")
	t1 := time.Now()
	time.Sleep(10 * time.Millisecond)
	write("v2")
	if err := os.Remove(filepath.Join(home, "notes.md")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishHot(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	if got := e.objects(t, "users/u7/hot/notes.md"); len(got) != 0 {
		t.Fatalf("the deletion did not propagate: %v", got)
	}
	read := func() string {
		b, err := os.ReadFile(filepath.Join(e.dir, "storage", "users", "u7", "hot", "notes.md"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got, err := s.RestoreHot(ctx(t), user, "notes.md", time.Time{}); err != nil || len(got) != 1 || read() != "v2" {
		t.Fatalf("restore the last version: %v %v", err, got)
	}
	if _, err := s.RestoreHot(ctx(t), user, "notes.md", t1); err != nil || read() != "v1" {
		t.Fatalf("restore as of t1: %v", err)
	}
	if _, err := s.RestoreHot(ctx(t), user, "../etc", time.Time{}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("a path that escapes: %v", err)
	}
	if n, err := s.PruneTrash(ctx(t), user, time.Now()); err != nil || n != 0 {
		t.Fatalf("prune of fresh trash: %d %v", n, err)
	}
	if n, err := s.PruneTrash(ctx(t), user, time.Now().Add(9*24*time.Hour)); err != nil || n == 0 {
		t.Fatalf("prune of expired trash: %d %v", n, err)
	}
	if got := e.objects(t, "users/u7/trash/"); len(got) != 0 {
		t.Fatalf("expired trash left: %v", got)
	}
}

// TestInterruptedRemovalIsFinished: a removal cut short after its
// tombstone (a crash between the unmount and RemoveAll) is finished by the
// next FinishHot, never synced (its image is not mounted again).
func TestInterruptedRemovalIsFinished(t *testing.T) {
	e := newStorageEnv(t)
	s := e.storage(t)
	const id, user = "sbx-00000000f001", "u8"
	home, err := s.PrepareHot(id, user, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncDown(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(home), "removing"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unmount(home); err != nil {
		t.Fatal(err)
	}
	fresh := e.storage(t)
	if _, err := fresh.SyncUp(ctx(t), id, user); err == nil {
		t.Fatal("a hot dir being removed was synced")
	}
	if _, err := fresh.FinishHot(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	if fresh.HasHot(id) {
		t.Fatal("the interrupted removal was not finished")
	}
}

// TestPendingSweepsCutShortRemovals: a hot dir's removal moves it aside in
// one rename before deleting it, so one cut short (a crash, a file added
// meanwhile) leaves only that trash, never a dir without its tombstone or
// owner record; Pending deletes the trash and does not list it, and a
// FinishHot after a completed one finds nothing to do.
func TestPendingSweepsCutShortRemovals(t *testing.T) {
	e := newStorageEnv(t)
	s := e.storage(t)
	id, user := "sbx-00000000c001", ids.UserID("sweeper")
	home, err := s.PrepareHot(id, user, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncDown(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishHot(ctx(t), id, user); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "hot")); len(ents) != 0 {
		t.Fatalf("after FinishHot the hot root holds %v", ents)
	}
	if _, err := s.FinishHot(ctx(t), id, user); err == nil || !errdefs.IsNotFound(err) {
		t.Fatalf("FinishHot of a removed dir: %v, want not found", err)
	}
	if got := e.objects(t, "users/sweeper/hot/kept"); len(got) != 1 {
		t.Fatalf("kept: %v", got)
	}
	// What a removal cut short after its rename leaves.
	trash := filepath.Join(e.dir, "hot", ".removed-sbx-00000000c002-abcdefgh")
	if err := os.MkdirAll(filepath.Join(trash, "home", "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(trash, "home.img"), []byte("img"), 0o600); err != nil {
		t.Fatal(err)
	}
	pending, err := e.storage(t).Pending()
	if err != nil || len(pending) != 0 {
		t.Fatalf("Pending: %v %+v", err, pending)
	}
	if _, err := os.Stat(trash); !os.IsNotExist(err) {
		t.Fatalf("trash not swept: %v", err)
	}
}
