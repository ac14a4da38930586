//go:build linux

package daemon_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/mounts/s3test"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// notifySocket listens where systemd would, and reports when READY=1
// arrives.
func notifySocket(t *testing.T, dir string) (string, <-chan time.Time) {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ready := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				select {
				case ready <- time.Now():
				default:
				}
			}
		}
	}()
	return path, ready
}

// TestStartupNeverHangs: with 50 sandboxes that survived a kill -9 and an
// S3 endpoint that gives no answer, a restarted matrxd says READY=1 and
// serves within 5 s, degraded (s3_unreachable: creates 503), with every
// record usable (list, get, exec) while its storage recovery waits; once
// the bucket answers again, recovery finishes and the daemon is healthy.
// A bucket that answers definitely (missing) still fails startup fast.
func TestStartupNeverHangs(t *testing.T) {
	srv, bucket := s3Env(t)
	proxy := s3test.NewProxy(t, srv)
	env := containerdtest.Start(t, daemontest.Namespace)
	bin := daemontest.BuildMatrxd(t, env.Dir)
	s3flags := []string{"--s3-bucket", bucket, "--s3-endpoint", proxy.Endpoint, "--s3-region", srv.Region, "--cold-driver", "s3fs",
		"--checkpoint-interval", "1h", "--default-disk-mb", "64", "--disk-pool", "4"}
	d := newBinDaemon(t, env, bin, s3flags...)
	d.start()
	c := d.client(client.WithRetries(0))
	defer c.Close()
	d.up(c)
	ctx := context.Background()
	f, _ := os.Open(env.ImageTar)
	if _, err := c.ImportImage(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	const n = 50
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := range work {
				s, err := c.Create(ctx, "survivor", nil)
				if err != nil {
					errs <- fmt.Errorf("create %d: %w", i, err)
					continue
				}
				ids[i] = s.SandboxID
			}
		})
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if r, err := c.Exec(ctx, ids[0], apitype.ExecRequest{Command: "echo survived > s.txt"}); err != nil || r.ExitCode != 0 {
		t.Fatalf("write: %v %+v", err, r)
	}

	d.kill9()
	proxy.Freeze()
	sock, ready := notifySocket(t, env.Dir)
	start := time.Now()
	d.start("NOTIFY_SOCKET=" + sock)
	select {
	case at := <-ready:
		took := at.Sub(start)
		t.Logf("READY=1 %v after start, with %d survivors and a silent bucket", took.Round(time.Millisecond), n)
		if took > 5*time.Second {
			t.Errorf("READY=1 took %v, want at most 5 s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no READY=1 within 5 s of start (50 survivors, silent bucket)\n%s", d.logs.String())
	}
	h, err := c.Health(ctx)
	if err != nil || h.Status != "degraded" || !contains(h.Reasons, "s3_unreachable") || h.ActiveSandboxes != n {
		t.Fatalf("health with a silent bucket: %v %+v", err, h)
	}
	l, err := c.List(ctx, "survivor", false)
	if err != nil || l.Total != n {
		t.Fatalf("list while storage recovery waits: %v %+v", err, l)
	}
	if s, err := c.Get(ctx, ids[7]); err != nil || s.Status != "ready" && s.Status != "running" {
		t.Fatalf("get while storage recovery waits: %v %+v", err, s)
	}
	if r, err := c.Exec(ctx, ids[0], apitype.ExecRequest{Command: "cat s.txt"}); err != nil || r.Stdout != "survived\n" {
		t.Fatalf("exec while storage recovery waits: %v %+v", err, r)
	}
	if _, err := c.Create(ctx, "survivor", nil); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "s3_unreachable") {
		t.Fatalf("create with a silent bucket: %v, want 503 naming s3_unreachable", err)
	}

	proxy.Thaw()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(d.logs.String(), `"msg":"recovery finished"`) {
		if time.Now().After(deadline) {
			t.Fatal("storage recovery did not finish within 60 s of the bucket coming back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if h, err := c.Health(ctx); err != nil || h.Status != "healthy" {
		t.Errorf("health after the bucket came back: %v %+v", err, h)
	}
	waitObject(t, srv, bucket, "users/survivor/hot/s.txt", "survived\n") // the survivors' checkpoint
	if s, err := c.Create(ctx, "survivor", nil); err != nil || s.Status != "ready" {
		t.Errorf("create after the bucket came back: %v %+v", err, s)
	}
	d.stop()

	// A definite answer still fails fast: a bucket that does not exist.
	miss := newBinDaemon(t, env, bin, "--s3-bucket", "no-such-bucket-here", "--s3-endpoint", srv.Endpoint, "--s3-region", srv.Region)
	miss.sock, miss.state = filepath.Join(env.Dir, "miss.sock"), filepath.Join(env.Dir, "miss-state")
	start = time.Now()
	miss.start()
	if !miss.exited(10 * time.Second) {
		t.Fatal("matrxd with a missing bucket did not exit")
	}
	if out := miss.logs.String(); !strings.Contains(out, "does not exist") {
		t.Errorf("missing bucket: exit after %v without saying so:\n%s", time.Since(start), out)
	}
	miss.cmd = nil
}
