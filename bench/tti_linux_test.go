package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/mounts/s3test"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/sandbox"
)

const prodImage = "localhost/matrx/sandbox:latest"

// BenchmarkTTI measures time to interactive, the public ComputeSDK sandbox
// benchmark's metric: from the create call to the first successful `node
// -v` in the new sandbox, through the API, with the production image,
// local S3 (versitygw, s3fs cold mounts), user namespaces, networking and
// 256 MiB disks. Each figure is measured without a warm pool and with one
// of 50 (refilled between sequential creates, as a pool is between
// requests): sequentially for new users (20) and for a user with 2,000 hot
// files (5), and as a burst of 50 creates at once. Sandboxes are deleted
// after each measurement, untimed.
func BenchmarkTTI(b *testing.B) {
	tar := filepath.Join(containerdtest.RepoRoot(), "build", "images", "sandbox.tar")
	if !fileExists(tar) {
		containerdtest.Skip(b, "production image %s missing (make image)", tar)
	}
	srv := s3test.Start(b)
	bucket := srv.NewBucket(b)
	os.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	os.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	ctx := context.Background()
	const heavyFiles = 2000
	putHotFiles(b, srv, bucket, "heavy", heavyFiles)

	env := containerdtest.Start(b, daemontest.Namespace)
	h := daemontest.StartIn(b, env, func(c *daemon.Config) {
		c.Storage = daemon.StorageConfig{Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint, PathStyle: true,
			ColdDriver: "s3fs", CheckpointInterval: time.Hour, DiskOvercommit: 8}
		c.Limits.DefaultImage = prodImage
		c.Limits.DefaultDiskMB, c.Limits.DefaultMemoryMB = 256, 512
		c.ExpiryInterval = time.Minute
	})
	f, err := os.Open(tar)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := h.Client().ImportImage(ctx, f); err != nil {
		b.Fatal(err)
	}
	f.Close()

	newClient := func() *client.Client {
		return h.UnvalidatedClient(client.WithRetries(50), client.WithBackoff(20*time.Millisecond))
	}
	c := newClient()
	// createCalls collects, beside each sequential TTI, how long its
	// create call alone took (the rest is the first `node -v`).
	var (
		ccMu        sync.Mutex
		createCalls series
	)
	tti := func(user string) (time.Duration, string) {
		t0 := time.Now()
		s, err := c.Create(ctx, user, nil)
		if err != nil {
			b.Fatalf("create for %s: %v", user, err)
		}
		created := time.Since(t0)
		for {
			r, err := c.Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "node -v"})
			if err == nil && r.ExitCode == 0 && strings.HasPrefix(r.Stdout, "v") {
				ccMu.Lock()
				createCalls = append(createCalls, created)
				ccMu.Unlock()
				return time.Since(t0), s.SandboxID
			}
			if time.Since(t0) > time.Minute {
				b.Fatalf("node -v in %s: %v %+v", s.SandboxID, err, r)
			}
		}
	}
	seq := func(n int, user func(i int) string, before func()) series {
		var out series
		createCalls = nil
		for i := 0; i < n; i++ {
			if before != nil {
				before()
			}
			d, id := tti(user(i))
			out = append(out, d)
			c.Delete(ctx, id, false)
		}
		return out
	}
	// burst runs n creates at once; timed, when set, is called once they
	// have all answered, before the untimed deletes.
	burst := func(n int, tag string, timed func()) (series, time.Duration) {
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			out series
			ids []string
		)
		t0 := time.Now()
		for i := 0; i < n; i++ {
			wg.Go(func() {
				d, id := tti(fmt.Sprintf("burst-%s-%d", tag, i))
				mu.Lock()
				out, ids = append(out, d), append(ids, id)
				mu.Unlock()
			})
		}
		wg.Wait()
		took := time.Since(t0)
		if timed != nil {
			timed()
		}
		for _, id := range ids {
			c.Delete(ctx, id, false)
		}
		return out, took
	}
	fresh := func(tag string) func(int) string {
		return func(i int) string { return fmt.Sprintf("tti-%s-%d", tag, i) }
	}
	heavy := func(int) string { return "heavy" }

	// Untimed: the first sandbox of an image on containerd 1.6 makes the
	// image's chowned copy for the user namespace (once per image, ~30 s
	// for this one), and the first exec warms the page cache.
	seq(1, fresh("warmup"), nil)
	noSeq := seq(benchN(20), fresh("np"), nil)
	noHeavy := seq(benchN(5), heavy, nil)
	noBurst, noBurstTook := burst(benchN(50), "np", nil)

	// The same daemon state, restarted with a pool of 50.
	const poolSize = 50
	c.Close()
	h.Stop()
	h.Config.Pools = []sandbox.PoolSpec{{Image: prodImage, Size: poolSize}}
	h.Start()
	c = newClient()
	defer c.Close()
	// full waits for the pool and, with per-user cold mounts, for its cold
	// spare daemons (one per pooled sandbox by default) to be ready.
	full := func() {
		deadline := time.Now().Add(5 * time.Minute)
		wantSpares := poolSize
		if h.Config.Storage.ColdShared {
			wantSpares = 0
		}
		for {
			hl, err := c.Health(ctx)
			if err == nil && hl.PooledSandboxes >= poolSize && coldSpares(b, c, "ready") >= wantSpares {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("the pool did not fill to %d (and %d cold spares) in 5 min: %v %+v", poolSize, wantSpares, err, hl)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	fillStart := time.Now()
	full()
	fillTook := time.Since(fillStart)
	poolSeq := seq(benchN(20), fresh("p"), full)
	if os.Getenv("MATRX_BENCH_PHASES") != "" {
		for _, l := range strings.Split(h.Logs(), "\n") {
			if strings.Contains(l, `"sandbox ready"`) || strings.Contains(l, `"cold mount ready"`) {
				fmt.Println(l)
			}
		}
	}
	poolHeavy := seq(benchN(5), heavy, full)
	// What a TTI is made of once the sandbox is ready: an exec of `true`
	// (the runtime's exec path) and of `node -v` (plus node's startup).
	s, err := c.Create(ctx, "tti-exec", nil)
	if err != nil {
		b.Fatal(err)
	}
	var execTrue, execNode series
	for i := 0; i < benchN(20); i++ {
		for _, x := range []struct {
			cmd string
			s   *series
		}{{"true", &execTrue}, {"node -v", &execNode}} {
			t0 := time.Now()
			if r, err := c.Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: x.cmd}); err != nil || r.ExitCode != 0 {
				b.Fatalf("exec %s: %v %+v", x.cmd, err, r)
			}
			*x.s = append(*x.s, time.Since(t0))
		}
	}
	c.Delete(ctx, s.SandboxID, false)
	full()
	takenBefore := coldSpares(b, c, "taken_total")
	poolBurst, poolBurstTook := burst(benchN(50), "p", func() {
		fmt.Printf("burst of 50, pool of 50: %d new users' cold storage came from a spare daemon\n", coldSpares(b, c, "taken_total")-takenBefore)
	})

	// The same pool with --cold-shared: one FUSE daemon for every user, so
	// a claim binds a directory instead of starting a daemon.
	c.Close()
	h.Stop()
	h.Config.Storage.ColdShared = true
	h.Start()
	c = newClient()
	full()
	sharedSeq := seq(benchN(20), fresh("sh"), full)
	sharedCreate := createCalls
	if os.Getenv("MATRX_BENCH_PHASES") != "" {
		for _, l := range strings.Split(h.Logs(), "\n") {
			if strings.Contains(l, `"sandbox ready"`) && strings.Contains(l, `"tti-sh-`) || strings.Contains(l, `"sandbox claimed"`) {
				fmt.Println(l)
			}
		}
	}
	full()
	// MATRX_BENCH_PROFILE=DIR: perf and Go profiles of this burst.
	prof := startProfiles(b, os.Getenv("MATRX_BENCH_PROFILE"))
	sharedBurst, sharedBurstTook := burst(benchN(50), "sh", prof.stop)
	if os.Getenv("MATRX_BENCH_PHASES") != "" {
		for _, l := range strings.Split(h.Logs(), "\n") {
			if strings.Contains(l, `"sandbox ready"`) && strings.Contains(l, `"burst-sh-`) {
				fmt.Println(l)
			}
		}
		if p := os.Getenv("MATRX_BENCH_LOG"); p != "" {
			os.WriteFile(p, []byte(h.Logs()), 0o600)
		}
	}
	h.Config.Storage.ColdShared = false

	// The same, with crun as the OCI runtime (its exec skips runc's
	// per-exec seccomp compile and re-exec), when this host can run it.
	var crunSeq series
	crunWhy := crunUnavailable()
	if crunWhy == "" {
		c.Close()
		h.Stop()
		h.Config.OCIRuntime = runtime.OCIRuntimeCrun
		h.Start()
		c = newClient()
		full()
		crunSeq = seq(benchN(20), fresh("crun"), full)
	}
	b.StopTimer()

	fmt.Printf("\nTTI: create call to the first successful `node -v` (production image, local S3, 256 MiB disks; ms)\n")
	fmt.Printf("%-44s %8s %8s %8s %8s\n", "", "p50", "p95", "max", "wall")
	row := func(name string, s series, wall time.Duration) {
		w := ""
		if wall > 0 {
			w = fmt.Sprintf("%.0f", float64(wall.Milliseconds()))
		}
		fmt.Printf("%-44s %8s %8s %8s %8s\n", name, ms(s.pct(.5)), ms(s.pct(.95)), ms(s.pct(1)), w)
	}
	row("sequential, new user, no pool (20)", noSeq, 0)
	row(fmt.Sprintf("sequential, %d hot files, no pool (5)", heavyFiles), noHeavy, 0)
	row("burst of 50, no pool", noBurst, noBurstTook)
	row("sequential, new user, pool of 50 (20)", poolSeq, 0)
	row(fmt.Sprintf("sequential, %d hot files, pool of 50 (5)", heavyFiles), poolHeavy, 0)
	row("burst of 50, pool of 50", poolBurst, poolBurstTook)
	row("sequential, new user, pool, cold shared (20)", sharedSeq, 0)
	row("  of which the create call", sharedCreate, 0)
	row("burst of 50, pool of 50, cold shared", sharedBurst, sharedBurstTook)
	if crunSeq != nil {
		row("sequential, new user, pool of 50, crun (20)", crunSeq, 0)
	} else {
		fmt.Printf("crun row skipped: %s\n", crunWhy)
	}
	row("exec true in a ready sandbox (20)", execTrue, 0)
	row("exec node -v in a ready sandbox (20)", execNode, 0)
	fmt.Printf("pool of %d filled in %.1f s (%.0f ms per sandbox, one at a time)\n", poolSize, fillTook.Seconds(), float64(fillTook.Milliseconds())/poolSize)

	msf := func(d time.Duration) string { return ms(d) + " ms" }
	target("TTI sequential p50, pool (new user)", msf(poolSeq.pct(.5)), "≤ 25 ms", poolSeq.pct(.5) <= 25*time.Millisecond)
	target("TTI sequential p95, pool (new user)", msf(poolSeq.pct(.95)), "(reported)", true)
	if crunSeq != nil {
		target("TTI sequential p50, pool, crun (new user)", msf(crunSeq.pct(.5)), "≤ 25 ms", crunSeq.pct(.5) <= 25*time.Millisecond)
	}
	target("TTI sequential p50, no pool (new user)", msf(noSeq.pct(.5)), "(reported)", true)
	target(fmt.Sprintf("TTI sequential p50, pool (%d hot files)", heavyFiles), msf(poolHeavy.pct(.5)), "(reported)", true)
	target("TTI burst of 50 p50, pool of 50", msf(poolBurst.pct(.5)), "≤ 300 ms", poolBurst.pct(.5) <= 300*time.Millisecond)
	target("TTI sequential p50, pool, --cold-shared", msf(sharedSeq.pct(.5)), "≤ 25 ms", sharedSeq.pct(.5) <= 25*time.Millisecond)
	target("TTI burst of 50 p50, pool, --cold-shared", msf(sharedBurst.pct(.5)), "≤ 300 ms", sharedBurst.pct(.5) <= 300*time.Millisecond)
	target("TTI burst of 50 p50, no pool", msf(noBurst.pct(.5)), "(reported)", true)
	rate := 50 / noBurstTook.Seconds()
	target("creates/s, burst of 50, no pool (to node -v)", fmt.Sprintf("%.1f/s", rate), "≥ 25/s", rate >= 25)
}

// coldSpares reads matrx_cold_spares_<name> ("ready", "taken_total") from
// the daemon's metrics.
func coldSpares(b *testing.B, c *client.Client, name string) int {
	b.Helper()
	mx, err := c.Metrics(context.Background())
	if err != nil {
		b.Fatalf("metrics: %v", err)
	}
	for _, l := range strings.Split(string(mx), "\n") {
		if v, ok := strings.CutPrefix(l, "matrx_cold_spares_"+name+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("metrics line %q: %v", l, err)
			}
			return int(n)
		}
	}
	b.Fatalf("no matrx_cold_spares_%s in the metrics", name)
	return 0
}

// putHotFiles gives user n small hot files in the bucket.
func putHotFiles(b *testing.B, srv *s3test.Server, bucket, user string, n int) {
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Go(func() {
			for i := range work {
				key := fmt.Sprintf("users/%s/hot/project/d%02d/f%04d.txt", user, i%50, i)
				if _, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(key)}); err != nil {
					b.Errorf("put %s: %v", key, err)
				}
			}
		})
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// benchN is n, or fewer with MATRX_BENCH_QUICK=1 (a look at the phases,
// not a measurement).
func benchN(n int) int {
	if os.Getenv("MATRX_BENCH_QUICK") != "" {
		return max(1, n/10)
	}
	return n
}
