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

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

const nsLinks = "bench-links"

// BenchmarkHardLinks measures what one sandbox costs the daemon when it
// multiplies names with hard links: a matrxd process (built from this
// tree, local storage driver, default disk) runs one sandbox that makes
// 65,000 names (four empty files hard-linked 16,250 times each), then one
// that makes 260,000 (the same four at ext4's 65,000 links each, over
// the default names cap of 200,000); each sandbox is deleted. It prints
// matrxd's RSS before and its peak (VmHWM) after, how long the DELETE (the
// final sync, within its 30 s budget) took, and what the record says.
// Issue 9 records the numbers before and after the names cap.
func BenchmarkHardLinks(b *testing.B) {
	fmt.Printf("\nhard-linked names, one sandbox per run (local driver, default disk)\n")
	fmt.Printf("%-9s %10s %10s %12s  %s\n", "names", "RSS before", "peak RSS", "DELETE s", "record")
	for _, copies := range []int{64, 259} {
		hardLinks(b, copies)
	}
}

func hardLinks(b *testing.B, copies int) {
	env := containerdtest.Start(b, nsLinks)
	ctx := context.Background()
	bin := filepath.Join(env.Dir, "matrxd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/matrxd")
	build.Dir = containerdtest.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build matrxd: %v\n%s", err, out)
	}
	sock := filepath.Join(env.Dir, "matrxd.sock")
	cmd := exec.Command(bin, "--socket", sock, "--containerd-address", env.Address, "--containerd-namespace", nsLinks, "--ssh-address=",
		"--state-dir", filepath.Join(env.Dir, "state"), "--lock-dir", filepath.Join(env.Dir, "locks"), "--init-path", env.InitPath, "--network", "off",
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
	// l/ holds 1,000 names of four files; then copies hard-linked copies
	// of l/.
	r, err := c.Exec(ctx, s.SandboxID, apitype.ExecRequest{Timeout: &timeout, Command: fmt.Sprintf(`mkdir l && cd l && touch f g h i && n=1 && `+
		`while [ $n -lt 250 ]; do ln f f$n; ln g g$n; ln h h$n; ln i i$n; n=$((n+1)); done && cd .. && `+
		`for j in $(seq %d); do cp -al l l$j; done && find . | wc -l`, copies)})
	if err != nil || r.ExitCode != 0 {
		b.Fatalf("make links: %v %+v", err, r)
	}
	names := strings.TrimSpace(r.Stdout)
	t0 := time.Now()
	if err := c.Delete(ctx, s.SandboxID, false); err != nil {
		b.Fatal(err)
	}
	took := time.Since(t0)
	got, _ := c.Get(ctx, s.SandboxID)
	_, peak := procStatus(cmd.Process.Pid)
	state := "synced"
	if got.HotSyncPending {
		state = "pending: " + got.HotSyncError
	}
	fmt.Printf("%-9s %10s %10s %12.1f  %s\n", names, mib(rssBefore), mib(peak), took.Seconds(), state)
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
