package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/api"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

const nsLinks = "bench-links"

// BenchmarkHardLinks measures what one sandbox costs the daemon when it
// hard-links one empty file 65,000 times (ext4's limit per inode): a
// matrxd process (built from this tree, local storage driver, default
// disk) runs one sandbox that makes the links, then the sandbox is
// deleted. It prints matrxd's RSS before and its peak (VmHWM) after, and
// how long the DELETE (which runs the final sync) took. Issue 9 records
// the numbers before and after the names cap.
func BenchmarkHardLinks(b *testing.B) {
	env := containerdtest.Start(b, nsLinks)
	ctx := context.Background()
	bin := filepath.Join(env.Dir, "matrxd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/matrxd")
	build.Dir = containerdtest.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build matrxd: %v\n%s", err, out)
	}
	sock := filepath.Join(env.Dir, "matrxd.sock")
	cmd := exec.Command(bin, "--socket", sock, "--containerd-address", env.Address, "--containerd-namespace", nsLinks,
		"--state-dir", filepath.Join(env.Dir, "state"), "--init-path", env.InitPath, "--network", "off",
		"--image", containerdtest.MinimalImage, "--default-memory-mb", "256", "--default-cpu", "1",
		"--checkpoint-interval", "1h", "--log-format", "text", "--log-level", "warn")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if b.Failed() {
			b.Logf("matrxd log:\n%s", logs.String())
		}
	}()
	c := client.New(sock, client.WithRetries(100), client.WithBackoff(50*time.Millisecond))
	defer c.Close()
	if _, err := c.Health(ctx); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(env.ImageTar)
	if err != nil {
		b.Fatal(err)
	}
	_, err = c.ImportImage(ctx, f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	s, err := c.Create(ctx, "links", nil)
	if err != nil {
		b.Fatal(err)
	}
	rssBefore, _ := procStatus(cmd.Process.Pid)
	timeout := 600
	// 1,000 names in l/, then 64 hard-linked copies of l/: 65,000 names
	// of one inode.
	r, err := c.Exec(ctx, s.SandboxID, api.ExecRequest{Timeout: &timeout, Command: `mkdir l && cd l && touch f && i=1 && ` +
		`while [ $i -lt 1000 ]; do ln f f$i; i=$((i+1)); done && cd .. && for j in $(seq 64); do cp -al l l$j; done && stat -c %h l/f`})
	if err != nil || r.ExitCode != 0 {
		b.Fatalf("make links: %v %+v", err, r)
	}
	links := strings.TrimSpace(r.Stdout)
	t0 := time.Now()
	if err := c.Delete(ctx, s.SandboxID, false); err != nil {
		b.Fatal(err)
	}
	took := time.Since(t0)
	got, _ := c.Get(ctx, s.SandboxID)
	_, peak := procStatus(cmd.Process.Pid)
	fmt.Printf("\none sandbox, one empty file hard-linked %s times (local driver, default disk)\n", links)
	fmt.Printf("%-22s %10s\n", "matrxd RSS before", mib(rssBefore))
	fmt.Printf("%-22s %10s\n", "matrxd peak RSS", mib(peak))
	fmt.Printf("%-22s %10.1f s\n", "DELETE (final sync)", took.Seconds())
	fmt.Printf("%-22s %10v %s\n", "hot sync pending", got.HotSyncPending, got.HotSyncError)
}

// procStatus returns VmRSS and VmHWM of pid, in KiB.
func procStatus(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

func mib(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }
