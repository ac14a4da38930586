//go:build linux

package daemon_test

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/registry"
)

// containerdClient is a client of the harness's private containerd, for
// making leftovers behind the daemon's back.
func containerdClient(t *testing.T, h *daemontest.Harness) (*containerd.Client, context.Context) {
	t.Helper()
	c, err := containerd.New(h.Env.Address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, namespaces.WithNamespace(context.Background(), daemontest.Namespace)
}

// editRecord changes a record in the stopped daemon's registry.
func editRecord(t *testing.T, h *daemontest.Harness, id string, fn func(*registry.Record)) {
	t.Helper()
	ctx := context.Background()
	s, err := registry.OpenBolt(ctx, filepath.Join(h.Config.StateDir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Update(ctx, id, func(r *registry.Record) error { fn(r); return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestReconcileRepairsLeftovers: what a crash or an operator leaves behind
// the daemon's back is repaired at startup and on the reconcile interval,
// each repair logged, counted and published: a container whose record
// says stopped is removed after its hot files are synced; a record whose
// container vanished fails (runtime_lost) after its files are synced; an
// orphan snapshot, control dir, network and a stale cold mount go.
func TestReconcileRepairsLeftovers(t *testing.T) {
	h := daemontest.Start(t, func(c *daemon.Config) { c.ReconcileInterval = time.Second })
	ctx := context.Background()
	cl := h.Client()
	state := h.Config.StateDir
	orphan := h.Create("rec-orphan", nil)
	h.Exec(orphan.SandboxID, "echo orphan-work > work.txt")
	vanished := h.Create("rec-vanished", nil)
	h.Exec(vanished.SandboxID, "echo vanished-work > work.txt")
	h.Stop()

	// The orphan's record says stopped while its container runs on.
	editRecord(t, h, orphan.SandboxID, func(r *registry.Record) {
		now := time.Now().UTC()
		r.Status, r.StoppedAt, r.StopReason = registry.StatusStopped, &now, "admin"
	})
	// The other one's container is deleted behind the daemon's back.
	cc, nctx := containerdClient(t, h)
	ctr, err := cc.LoadContainer(nctx, vanished.SandboxID)
	if err != nil {
		t.Fatal(err)
	}
	if task, err := ctr.Task(nctx, nil); err == nil {
		task.Kill(nctx, syscall.SIGKILL)
		if ch, err := task.Wait(nctx); err == nil {
			<-ch
		}
		task.Delete(nctx)
	}
	if err := ctr.Delete(nctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
	// An active snapshot, a control dir, a network and a cold mount that
	// no record names.
	const ghost = "sbx-00000000dead"
	// Under a lease, as a crash in the middle of NewContainer leaves it
	// (containerd's own GC keeps leased snapshots for the lease's 24 h).
	lctx, _, err := cc.WithLease(nctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.SnapshotService("overlayfs").Prepare(lctx, ghost, ""); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(state, "runtime", "sandboxes", ghost)
	netFiles := filepath.Join(state, "network", "sandboxes", ghost)
	coldMP := filepath.Join(state, "cold", "mnt", "users", "rec-ghost", "cold")
	for _, d := range []string{ctl, netFiles, coldMP} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", ctl, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", coldMP, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(ctl, unix.MNT_DETACH); unix.Unmount(coldMP, unix.MNT_DETACH) })

	since := time.Now()
	h.Start()
	local := filepath.Join(state, "storage", "users")
	deadline := time.Now().Add(15 * time.Second)
	for {
		var left []string
		if _, err := cc.LoadContainer(nctx, orphan.SandboxID); !errdefs.IsNotFound(err) {
			left = append(left, "orphan container")
		}
		if _, err := cc.SnapshotService("overlayfs").Stat(nctx, ghost); !errdefs.IsNotFound(err) {
			left = append(left, "orphan snapshot")
		}
		for _, p := range []string{ctl, netFiles, filepath.Join(state, "hot", orphan.SandboxID), filepath.Join(state, "hot", vanished.SandboxID)} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				left = append(left, p)
			}
		}
		if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), coldMP) || strings.Contains(string(mi), state+"/cold/mnt/users/rec-orphan/cold") {
			left = append(left, "stale cold mounts")
		}
		for _, f := range []string{"rec-orphan/hot/work.txt", "rec-vanished/hot/work.txt"} {
			if _, err := os.Stat(filepath.Join(local, f)); err != nil {
				left = append(left, "file not in the bucket: "+f)
			}
		}
		if s, err := cl.Get(ctx, vanished.SandboxID); err != nil || s.Status != "failed" || s.StopReason == nil || *s.StopReason != "runtime_lost" {
			left = append(left, "record of the vanished container not failed/runtime_lost")
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not repaired within 15 s: %v", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err := cl.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"container", "snapshot", "control_dir", "network", "hot_dir", "cold_mount"} {
		if v, _ := sample(t, string(out), `matrx_reconcile_repairs_total{kind="`+kind+`"}`); v < 1 {
			t.Errorf("matrx_reconcile_repairs_total{kind=%q} = %v, want at least 1", kind, v)
		}
	}
	st, err := cl.Events(ctx, since)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	repaired := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			e, err := st.Next()
			if err != nil {
				return
			}
			if e.Type == "repaired" {
				repaired[e.Repair] = true
			}
			if len(repaired) >= 6 {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		st.Close()
		<-done
	}
	if len(repaired) < 6 {
		t.Errorf("repaired events replayed with since: %v, want every kind", repaired)
	}
	if n := strings.Count(h.Logs(), `"msg":"reconcile: repaired"`); n < 6 {
		t.Errorf("%d repair log lines, want one per repair", n)
	}
}

// TestCorruptRecordQuarantined: records that no longer decode do not
// brick startup or listing: they are quarantined (logged, skipped, kept
// byte for byte) and listed by the admin route to root on the socket.
func TestCorruptRecordQuarantined(t *testing.T) {
	h := daemontest.Start(t)
	ctx := context.Background()
	live := h.Create("q-live", nil)
	gone := h.Create("q-gone", nil)
	if err := h.Client().Delete(ctx, gone.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	h.Stop()
	const fake = "sbx-00000000fa4e"
	db, err := bolt.Open(filepath.Join(h.Config.StateDir, "registry.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("sandboxes")).Put([]byte(gone.SandboxID), []byte("\x00\x01 not json")); err != nil {
			return err
		}
		// A record the live index names: startup's recovery reads it.
		if err := tx.Bucket([]byte("sandboxes")).Put([]byte(fake), []byte(`{"sandbox_id":"`+fake+`","status":`)); err != nil {
			return err
		}
		return tx.Bucket([]byte("live")).Put([]byte(fake), []byte("running"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	l, err := h.Client().List(ctx, "", true)
	if err != nil || l.Total != 1 || l.Sandboxes[0].SandboxID != live.SandboxID {
		t.Fatalf("list with corrupt records: %v %+v", err, l)
	}
	if r := h.Exec(live.SandboxID, "echo fine"); r.Stdout != "fine\n" {
		t.Fatalf("the healthy sandbox: %+v", r)
	}
	if _, err := h.Client().Get(ctx, gone.SandboxID); !errdefs.IsNotFound(err) {
		t.Errorf("get of a quarantined record: %v, want 404", err)
	}
	q, err := h.Client().Quarantine(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw := map[string]string{}
	for _, r := range q.Records {
		b, _ := base64.StdEncoding.DecodeString(r.Raw)
		raw[r.SandboxID] = string(b)
	}
	if raw[gone.SandboxID] != "\x00\x01 not json" || raw[fake] == "" || len(q.Records) != 2 {
		t.Errorf("quarantine: %+v", q.Records)
	}
	if n := strings.Count(h.Logs(), "quarantined"); n < 2 {
		t.Errorf("quarantines not logged (%d lines)", n)
	}
	if h, err := h.Client().Health(ctx); err != nil || h.ActiveSandboxes != 1 {
		t.Errorf("health: %v %+v", err, h)
	}
}
