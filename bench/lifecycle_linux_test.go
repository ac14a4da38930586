package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

const (
	nsBare    = "bench-bare"
	nsCrun    = "bench-crun"
	nsNoAgent = "bench-noagent"
	rounds    = 20
	execs     = 100
)

type series []time.Duration

func (s series) pct(p float64) time.Duration {
	c := append(series(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c[int(float64(len(c)-1)*p)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// BenchmarkLifecycle runs create→ready, exec of `true` and destroy through
// matrxd's API and the bare containerd equivalents (container+task create
// and start; task exec; task kill+delete and container delete) against one
// private containerd, interleaved, and prints p50/p90 of each. A second
// matrxd on the same containerd runs its sandboxes with crun
// (--oci-runtime crun) when this host can run crun; "bare" is runc with the
// default spec either way.
func BenchmarkLifecycle(b *testing.B) {
	env := containerdtest.Start(b, daemontest.Namespace, nsBare, nsCrun)
	ctx := context.Background()
	// Production defaults: user namespaces and networking on (on a
	// bench-only bridge, removed afterwards), checkpoints off.
	h := daemontest.StartIn(b, env, func(c *daemon.Config) {
		c.Limits.DefaultMemoryMB = 512
		c.ExpiryInterval = time.Minute
		c.UserNS = daemon.UserNSConfig{Mode: "auto", Base: runtime.DefaultUserNSBase}
	})
	c := h.UnvalidatedClient(client.WithRetries(50), client.WithBackoff(20*time.Millisecond))
	defer c.Close()
	// The same daemon with every exec through runc (--exec-agent=false):
	// the OCI runtime's exec path beside the agent's.
	hr := daemontest.StartIn(b, env, func(c *daemon.Config) {
		c.Limits.DefaultMemoryMB = 512
		c.ExpiryInterval = time.Minute
		c.UserNS = daemon.UserNSConfig{Mode: "auto", Base: runtime.DefaultUserNSBase}
		c.NoExecAgent = true
		c.ContainerdNamespace = nsNoAgent
		c.Socket = filepath.Join(env.Dir, "noagent.sock")
		c.StateDir = filepath.Join(env.Dir, "noagent-state")
		c.LockDir = filepath.Join(env.Dir, "noagent-locks")
	})
	rc := hr.UnvalidatedClient(client.WithRetries(50), client.WithBackoff(20*time.Millisecond))
	defer rc.Close()
	var cc *client.Client
	if why := crunUnavailable(); why != "" {
		fmt.Printf("crun rows skipped: %s\n", why)
	} else {
		hc := daemontest.StartIn(b, env, func(c *daemon.Config) {
			c.Limits.DefaultMemoryMB = 512
			c.ExpiryInterval = time.Minute
			c.UserNS = daemon.UserNSConfig{Mode: "auto", Base: runtime.DefaultUserNSBase}
			c.OCIRuntime = runtime.OCIRuntimeCrun
			c.NoExecAgent = true // the rows measure crun's own exec
			c.ContainerdNamespace = nsCrun
			c.Socket = filepath.Join(env.Dir, "crun.sock")
			c.StateDir = filepath.Join(env.Dir, "crun-state")
			c.LockDir = filepath.Join(env.Dir, "crun-locks")
		})
		cc = hc.UnvalidatedClient(client.WithRetries(50), client.WithBackoff(20*time.Millisecond))
		defer cc.Close()
	}

	bare, err := containerd.New(env.Address)
	if err != nil {
		b.Fatal(err)
	}
	defer bare.Close()
	bctx := namespaces.WithNamespace(ctx, nsBare)
	f, _ := os.Open(env.ImageTar)
	imgs, err := bare.Import(bctx, f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	img := containerd.NewImage(bare, imgs[0])
	if err := img.Unpack(bctx, "overlayfs"); err != nil {
		b.Fatal(err)
	}

	var rCreate, rExec, rDestroy, cCreate, cExec, cDestroy, mCreate, mExec, mDestroy, bCreate, bExec, bDestroy, hCreate, hExec, hDestroy series
	// bareRound creates a container with the given spec options, runs
	// execs of /bin/true in it, and destroys it, timing each step.
	bareRound := func(id string, opts []oci.SpecOpts, create, execd, destroy *series) {
		t0 := time.Now()
		ctr, err := bare.NewContainer(bctx, id,
			containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
			containerd.WithNewSpec(append([]oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs("/bin/sleep", "100000")}, opts...)...))
		if err != nil {
			b.Fatal(err)
		}
		task, err := ctr.NewTask(bctx, cio.NullIO)
		if err != nil {
			b.Fatal(err)
		}
		if err := task.Start(bctx); err != nil {
			b.Fatal(err)
		}
		*create = append(*create, time.Since(t0))
		spec, _ := ctr.Spec(bctx)
		for j := 0; j < execs/rounds; j++ {
			t0 = time.Now()
			p := *spec.Process
			p.Args = []string{"/bin/true"}
			proc, err := task.Exec(bctx, fmt.Sprintf("e%d", j), &p, cio.NullIO)
			if err != nil {
				b.Fatal(err)
			}
			ch, _ := proc.Wait(bctx)
			if err := proc.Start(bctx); err != nil {
				b.Fatal(err)
			}
			<-ch
			proc.Delete(bctx)
			*execd = append(*execd, time.Since(t0))
		}
		t0 = time.Now()
		ch, _ := task.Wait(bctx)
		task.Kill(bctx, syscall.SIGKILL, containerd.WithKillAll)
		<-ch
		task.Delete(bctx)
		ctr.Delete(bctx, containerd.WithSnapshotCleanup)
		*destroy = append(*destroy, time.Since(t0))
	}
	// The same security settings matrx applies, without matrx: separates
	// the cost of hardening (runc compiles the seccomp filter on every
	// exec...) from matrx's own overhead.
	hardened := []oci.SpecOpts{oci.WithRootFSReadonly(), oci.WithNoNewPrivileges, oci.WithUIDGID(1000, 1000),
		oci.WithCapabilities(nil), seccomp.WithDefaultProfile()}

	// matrxRound creates a sandbox through one daemon's API, runs execs
	// of `true` in it and destroys it, timing each step.
	matrxRound := func(c *client.Client, create, execd, destroy *series) {
		t0 := time.Now()
		s, err := c.Create(ctx, "bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		*create = append(*create, time.Since(t0))
		// Steady state: two untimed execs (the exec agent starts after a
		// sandbox's second) and time for the agent to start; every daemon
		// gets the same, so the runc-path and crun rows are unchanged.
		for j := 0; j < 2; j++ {
			if r, err := c.Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "true"}); err != nil || r.ExitCode != 0 {
				b.Fatalf("warm-up exec: %v %+v", err, r)
			}
		}
		time.Sleep(300 * time.Millisecond)
		for j := 0; j < execs/rounds; j++ {
			t0 = time.Now()
			r, err := c.Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: "true"})
			if err != nil || r.ExitCode != 0 {
				b.Fatalf("exec: %v %+v", err, r)
			}
			*execd = append(*execd, time.Since(t0))
		}
		t0 = time.Now()
		if err := c.Delete(ctx, s.SandboxID, false); err != nil {
			b.Fatal(err)
		}
		*destroy = append(*destroy, time.Since(t0))
	}

	for i := 0; i < b.N*rounds; i++ {
		matrxRound(c, &mCreate, &mExec, &mDestroy)
		matrxRound(rc, &rCreate, &rExec, &rDestroy)
		if cc != nil {
			matrxRound(cc, &cCreate, &cExec, &cDestroy)
		}
		bareRound(fmt.Sprintf("bare-%d", i), nil, &bCreate, &bExec, &bDestroy)
		bareRound(fmt.Sprintf("hard-%d", i), hardened, &hCreate, &hExec, &hDestroy)
	}
	b.StopTimer()
	if os.Getenv("MATRX_BENCH_PHASES") != "" {
		// Where a destroy goes (runtime's "sandbox torn down", sandbox's
		// "sandbox stopped"), for the default daemon.
		for name, d := range map[string]*daemontest.Harness{"exec agent": h, "runc path": hr} {
			for _, l := range strings.Split(d.Logs(), "\n") {
				if strings.Contains(l, `"sandbox torn down"`) || strings.Contains(l, `"sandbox stopped"`) {
					fmt.Println(name+":", l)
				}
			}
		}
	}
	fmt.Printf("\nmatrxd vs bare containerd (%d sandboxes, %d execs; minimal image; ms)\n", len(mCreate), len(mExec))
	fmt.Println("matrx: through the API, with user namespace, network, disk quota and storage sync (runc, execs through the exec agent;")
	fmt.Println("  \"runc path\" rows: matrxd --exec-agent=false; \"crun\" rows: matrxd --oci-runtime crun --exec-agent=false);")
	fmt.Println("  each sandbox's exec rows come after two untimed execs and 300 ms (its agent starts after the second)")
	fmt.Println("bare: containerd client, default spec; bare+hardening: bare with matrx's seccomp, no_new_privs, uid, read-only root")
	fmt.Printf("%-14s %9s %9s %9s %9s %9s %9s %8s %8s\n", "operation", "matrx p50", "matrx p90", "bare p50", "bare p90", "hard p50", "hard p90", "x bare", "x hard")
	row := func(name string, m, bb, hh series) {
		fmt.Printf("%-14s %9s %9s %9s %9s %9s %9s %8.2f %8.2f\n", name, ms(m.pct(.5)), ms(m.pct(.9)), ms(bb.pct(.5)), ms(bb.pct(.9)),
			ms(hh.pct(.5)), ms(hh.pct(.9)), float64(m.pct(.5))/float64(bb.pct(.5)), float64(m.pct(.5))/float64(hh.pct(.5)))
	}
	row("create→ready", mCreate, bCreate, hCreate)
	row("exec true", mExec, bExec, hExec)
	row("destroy", mDestroy, bDestroy, hDestroy)
	row("exec (runc path)", rExec, bExec, hExec)
	if cc != nil {
		row("create (crun)", cCreate, bCreate, hCreate)
		row("exec (crun)", cExec, bExec, hExec)
		row("destroy (crun)", cDestroy, bDestroy, hDestroy)
	}
	ratio := func(m, bb series) float64 { return float64(m.pct(.5)) / float64(bb.pct(.5)) }
	vsBare := func(name string, m series, want float64) {
		r := ratio(m, bExec)
		target(name, fmt.Sprintf("%.2f× (%s vs %s ms)", r, ms(m.pct(.5)), ms(bExec.pct(.5))), fmt.Sprintf("≤ %.1f× bare", want), r <= want)
	}
	vsBare("exec `true` p50 vs bare, matrxd (exec agent, runc)", mExec, 1.0)
	vsBare("exec `true` p50 vs bare, runc path (--exec-agent=false)", rExec, 1.0)
	if cc != nil {
		vsBare("exec `true` p50 vs bare, crun path (--exec-agent=false)", cExec, 1.0)
	}
	target("create→ready p50 vs bare (runc)", fmt.Sprintf("%.2f×", ratio(mCreate, bCreate)), "(reported)", true)
	target("destroy p50 vs bare (runc)", fmt.Sprintf("%.2f×", ratio(mDestroy, bDestroy)), "≤ 1.5× bare", ratio(mDestroy, bDestroy) <= 1.5)
	if cc != nil {
		target("create→ready p50 vs bare (crun)", fmt.Sprintf("%.2f×", ratio(cCreate, bCreate)), "(reported)", true)
		target("destroy p50 vs bare (crun)", fmt.Sprintf("%.2f×", ratio(cDestroy, bDestroy)), "≤ 1.5× bare", ratio(cDestroy, bDestroy) <= 1.5)
	}
}

// crunUnavailable says why matrxd cannot run sandboxes with crun here (""
// when it can): not installed, or a hybrid cgroup host whose cgroup2 holds
// controllers, which crun refuses (run the bench as make bench does, in a
// mount namespace without /sys/fs/cgroup/unified).
func crunUnavailable() string {
	if _, err := exec.LookPath("crun"); err != nil {
		return "crun is not installed"
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return "hybrid cgroup host with cgroup2 controllers (" + strings.TrimSpace(string(b)) + "); run in `unshare -m` without /sys/fs/cgroup/unified"
	}
	return ""
}
