package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// BenchmarkDensity is issue 16's density guard: it starts N idle sandboxes
// (200, or MATRX_BENCH_DENSITY) of the production image (the minimal one
// when build/images/sandbox.tar is missing), each with a 64 MiB disk, and
// prints the host memory each costs (MemAvailable before and after, over
// N: shims, loop devices and their page cache, kernel objects) and the
// daemon's RSS (in-process here: this test process, whose own part is a
// client). Targets: ≤ 4 MiB per sandbox, ≤ 80 MiB matrxd.
func BenchmarkDensity(b *testing.B) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("MATRX_BENCH_DENSITY")); err == nil && v > 0 {
		n = v
	}
	group, _ := strconv.Atoi(os.Getenv("MATRX_BENCH_SHIM_GROUP"))
	h := daemontest.Start(b, func(c *daemon.Config) {
		c.ExpiryInterval = time.Minute
		c.Storage.DiskOvercommit = 100 // idle sandboxes write nothing
		c.ShimGroupSize = group
	})
	ctx := context.Background()
	c := h.UnvalidatedClient(client.WithRetries(50), client.WithBackoff(20*time.Millisecond))
	defer c.Close()
	image := containerdtest.MinimalImage
	if prod := filepath.Join(containerdtest.RepoRoot(), "build", "images", "sandbox.tar"); fileExists(prod) {
		f, err := os.Open(prod)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.ImportImage(ctx, f); err != nil {
			b.Fatal(err)
		}
		f.Close()
		image = "localhost/matrx/sandbox:latest"
	}
	// Page cache (the image's layers, the disk images' blocks) comes and
	// goes with whatever else the host does, and MemAvailable counts only
	// part of it as available: both measurements start from a dropped
	// cache, so the difference is what the sandboxes hold.
	settle := func() {
		goruntime.GC()
		time.Sleep(3 * time.Second)
		syscall.Sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			b.Logf("drop caches: %v (the figure includes page cache noise)", err)
		}
		time.Sleep(time.Second)
	}
	settle()
	memBefore, rssBefore := memAvailableKiB(), selfRSSKiB()
	infoBefore := meminfo()
	start := time.Now()
	ids := make([]string, n)
	work := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failed   int
		firstErr error
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				s, err := c.Create(ctx, fmt.Sprintf("dense%d", i%20), &apitype.SandboxConfig{Image: image, CPU: 0.1, MemoryMB: 128, DiskMB: 64})
				if err != nil {
					// A limit of the host is a finding, not a failed
					// benchmark: it is printed with the table.
					mu.Lock()
					if failed++; firstErr == nil {
						firstErr = fmt.Errorf("create %d: %w", i, err)
					}
					mu.Unlock()
					continue
				}
				ids[i] = s.SandboxID
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	took := time.Since(start)
	settle()
	memAfter, rssAfter := memAvailableKiB(), selfRSSKiB()
	infoAfter := meminfo()
	shims, shimPSS := pssOf(func(cmdline string) bool {
		return strings.Contains(cmdline, "containerd-shim") && strings.Contains(cmdline, h.Env.Address)
	})
	inits, initPSS := pssOf(func(cmdline string) bool { return strings.HasPrefix(cmdline, "/.matrx/init") })
	up := 0
	for _, id := range ids {
		if id != "" {
			up++
		}
	}
	fmt.Printf("\ndensity: %d idle sandboxes of %s (64 MiB disks), started in %.1f s (8 at a time), shim group size %d (MATRX_BENCH_SHIM_GROUP)\n", up, image, took.Seconds(), max(group, 1))
	fmt.Printf("%-34s %10s %10s\n", "", "measured", "target")
	fmt.Printf("%-34s %10.1f %10s\n", "host memory per sandbox (MiB)", float64(memBefore-memAfter)/1024/float64(max(up, 1)), "≤ 4")
	fmt.Printf("%-34s %10.0f %10s\n", "matrxd RSS with them (MiB)", float64(rssAfter)/1024, "≤ 80")
	fmt.Printf("%-34s %10.0f %10s\n", "matrxd RSS before (MiB)", float64(rssBefore)/1024, "")
	fmt.Printf("%-34s %10.1f %10s\n", fmt.Sprintf("of which shims, PSS (%d shims)", shims), float64(shimPSS)/1024/float64(max(up, 1)), "")
	fmt.Printf("%-34s %10.1f %10s\n", fmt.Sprintf("of which PID 1s, PSS (%d)", inits), float64(initPSS)/1024/float64(max(up, 1)), "")
	// Where the rest goes, from /proc/meminfo (the kernel's own objects
	// are most of what is neither a shim nor PID 1).
	perKind := func(k string) float64 { return float64(infoAfter[k]-infoBefore[k]) / 1024 / float64(max(up, 1)) }
	unreclaimable := 0.0
	for _, k := range []string{"AnonPages", "Shmem", "SUnreclaim", "KernelStack", "PageTables", "Percpu"} {
		unreclaimable += perKind(k)
	}
	fmt.Printf("%-34s %10.1f %10s\n", "of which unreclaimable (MiB)", unreclaimable, "")
	for _, k := range []string{"AnonPages", "SUnreclaim", "SReclaimable", "KernelStack", "PageTables", "Percpu", "Cached"} {
		fmt.Printf("%-34s %10.2f %10s\n", "  /proc/meminfo "+k, perKind(k), "")
	}
	perSandbox := float64(memBefore-memAfter) / 1024 / float64(max(up, 1))
	target(fmt.Sprintf("host memory per idle sandbox (%d, shim group %d)", up, max(group, 1)), fmt.Sprintf("%.1f MiB", perSandbox), "≤ 4 MiB", perSandbox <= 4 && up == n)
	target("matrxd RSS with them", fmt.Sprintf("%.0f MiB", float64(rssAfter)/1024), "≤ 80 MiB", rssAfter <= 80*1024)
	if failed > 0 {
		fmt.Printf("%d of %d creates failed; the first: %v\n", failed, n, firstErr)
	}
	for _, id := range ids {
		if id != "" {
			c.Delete(ctx, id, false)
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// memAvailableKiB is /proc/meminfo's MemAvailable.
func memAvailableKiB() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// meminfo is /proc/meminfo's fields, in KiB.
func meminfo() map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		out[k] = n
	}
	return out
}

func selfRSSKiB() int64 {
	rss, _ := procStatus(os.Getpid())
	return rss
}

// pssOf sums the proportional set size of the processes whose command line
// match selects (each process's share of pages it shares with others).
func pssOf(match func(cmdline string) bool) (procs int, kib int64) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !match(strings.ReplaceAll(string(cmd), "\x00", " ")) {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Pss:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				kib += n
				procs++
			}
		}
	}
	return procs, kib
}
