//go:build linux

package daemon_test

// The crash-injection suite (issue 10). A matrxd built with the matrxfault
// tag kills itself (SIGKILL, as kill -9 would) at a named step of create,
// exec, stop, final sync or checkpoint (package fault); the suite arms one
// point at a time right before the operation, restarts the daemon, lets
// recovery and one reconcile run, and checks, for every point:
//
//   - leaks: nothing of a sandbox without a live record remains (container,
//     task, snapshot, mount, loop device, netns, veth, firewall rule, IP
//     lease, control dir, hot dir, cold mount);
//   - registry: every ready/running record has a running task and every
//     container a live record, and no record is stuck mid-transition;
//   - files: every file written before the crash is in the bucket, or on
//     the host with the record saying so (live, or hot_sync_pending);
//   - execs: every running sandbox still execs.
//
// Also: containerd itself killed -9 during a create and during an exec,
// the FUSE process of a cold mount killed, and the bucket frozen while a
// final sync runs (with matrxd killed then). The table is written to
// build/crash-injection.txt and logged; the README quotes its totals.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/mounts/s3test"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// crashPoints is every fault.At name in the tree, by operation (a test
// below keeps this list and the source in step).
var crashPoints = []string{
	"create/recorded", "create/hot-prepared", "create/cold-acquired", "create/starting", "create/control-dir",
	"create/container", "create/task", "create/network", "create/started", "create/synced-down", "create/ready",
	"exec/started", "exec/exited", "exec/done",
	"stop/shutting-down", "stop/task-killed", "stop/task-deleted", "stop/container-deleted", "stop/synced",
	"stop/cold-released", "stop/recorded",
	"final-sync/uploaded-file", "final-sync/manifest-saved", "final-sync/synced",
	"checkpoint/uploaded-file", "checkpoint/manifest-saved", "checkpoint/synced",
}

var crashChecks = []string{"leaks", "registry=containerd", "files safe", "execs"}

// stepOps says under which operations (fault.With) a point named by its
// step alone runs: hot sync steps run for final syncs and checkpoints, the
// hot dir removal after a final sync, and the runtime's destroy steps for
// stops.
var stepOps = map[string][]string{
	"uploaded-file":     {"final-sync", "checkpoint"},
	"manifest-saved":    {"final-sync", "checkpoint"},
	"synced":            {"final-sync"},
	"task-killed":       {"stop"},
	"task-deleted":      {"stop"},
	"container-deleted": {"stop"},
}

// TestCrashPointsCoverTheSource: every fault.At in the code is armed by
// the suite, and the suite arms no point the code lacks.
func TestCrashPointsCoverTheSource(t *testing.T) {
	root := containerdtest.RepoRoot()
	at := regexp.MustCompile(`fault\.At\([a-zA-Z]+, "([^"]+)"\)`)
	with := regexp.MustCompile(`fault\.With\([a-zA-Z]+, "([^"]+)"\)`)
	inSource := map[string]bool{}
	ops := map[string]bool{}
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (d.Name() == "build" || d.Name() == ".git") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, m := range at.FindAllStringSubmatch(string(b), -1) {
			if strings.Contains(m[1], "/") {
				inSource[m[1]] = true
				continue
			}
			if stepOps[m[1]] == nil {
				t.Errorf("%s: fault point %q has no operation in stepOps", p, m[1])
			}
			for _, op := range stepOps[m[1]] {
				inSource[op+"/"+m[1]] = true
			}
		}
		for _, m := range with.FindAllStringSubmatch(string(b), -1) {
			ops[m[1]] = true
		}
		return nil
	})
	for _, list := range stepOps {
		for _, op := range list {
			if !ops[op] {
				t.Errorf("stepOps names operation %q, which no fault.With sets", op)
			}
		}
	}
	armed := map[string]bool{}
	for _, p := range crashPoints {
		armed[p] = true
		if !inSource[p] {
			t.Errorf("the suite arms %s, which no fault.At names", p)
		}
	}
	for p := range inSource {
		if !armed[p] {
			t.Errorf("fault point %s is in the source but the suite never arms it", p)
		}
	}
	if len(inSource) < 20 {
		t.Fatalf("found only %d fault points in the source: the scan is broken", len(inSource))
	}
}

// crashSuite is the state shared by the rows of the table.
type crashSuite struct {
	t         *testing.T
	d         *binDaemon
	c, op     *client.Client // op: no retries (the daemon dies under it)
	srv       *s3test.Server
	bucket    string
	proxy     *s3test.Proxy
	env       *containerdtest.Env
	arm       string
	environ   []string
	cc        *containerd.Client
	nctx      context.Context
	bystander string
	witnesses []witness
	n         int
	rows      []crashRow
}

type witness struct{ user, sandbox, path, content string }

type crashRow struct {
	name    string
	results []string // one per check: "ok" or why not
	took    time.Duration
}

const crashUser = "crash"

func TestCrashInjection(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	srv, bucket := s3Env(t)
	proxy := s3test.NewProxy(t, srv)
	env := containerdtest.Start(t, daemontest.Namespace)
	prod := daemontest.BuildMatrxd(t, env.Dir)
	bin := daemontest.BuildMatrxd(t, env.Dir, "matrxfault")
	// The production binary carries none of it; the fault build does.
	pb, _ := os.ReadFile(prod)
	fb, _ := os.ReadFile(bin)
	for _, s := range []string{"MATRX_FAULT_FILE", "matrx fault: ", "create/recorded", "final-sync"} {
		if bytes.Contains(pb, []byte(s)) {
			t.Errorf("the production matrxd contains %q", s)
		}
		if !bytes.Contains(fb, []byte(s)) {
			t.Errorf("the matrxfault build lacks %q: the check above proves nothing", s)
		}
	}
	x := &crashSuite{t: t, srv: srv, bucket: bucket, proxy: proxy, env: env, arm: filepath.Join(env.Dir, "fault-point")}
	x.environ = []string{"MATRX_FAULT_FILE=" + x.arm}
	x.d = newBinDaemon(t, env, bin, "--s3-bucket", bucket, "--s3-endpoint", proxy.Endpoint, "--s3-region", srv.Region,
		"--cold-driver", "s3fs", "--checkpoint-interval", "1h", "--reconcile-interval", "1s",
		"--default-disk-mb", "64", "--disk-pool", "2")
	x.c = x.d.client(client.WithRetries(20), client.WithBackoff(50*time.Millisecond))
	x.op = x.d.client(client.WithRetries(0))
	var err error
	x.cc, err = containerd.New(env.Address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer x.cc.Close()
	x.nctx = namespaces.WithNamespace(context.Background(), daemontest.Namespace)
	x.startClean()
	f, _ := os.Open(env.ImageTar)
	if _, err := x.c.ImportImage(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	x.bystander = x.create()
	x.write(x.bystander, "before-anything")
	x.selfTest()

	for _, p := range crashPoints {
		x.point(p)
	}
	x.containerdKilled("containerd kill -9 during a create", func(done chan<- struct{}) {
		defer close(done)
		x.op.Create(context.Background(), crashUser, nil)
	}, 150*time.Millisecond)
	x.containerdKilled("containerd kill -9 during an exec", func(done chan<- struct{}) {
		defer close(done)
		x.op.Exec(context.Background(), x.bystander, apitype.ExecRequest{Command: "sleep 1; echo late >> late.txt"})
	}, 400*time.Millisecond)
	x.fuseKilled()
	x.s3Frozen()
	x.report()
}

// selfTest proves the checks can fail: a leftover netns file, a paused
// task and a file that is nowhere must each be reported.
func (x *crashSuite) selfTest() {
	x.t.Helper()
	leak := filepath.Join(x.d.state, "network", "netns", "sbx-00000000c0de")
	z := x.create()
	task, err := x.loadTask(z)
	if err != nil {
		x.t.Fatal(err)
	}
	if err := task.Pause(x.nctx); err != nil {
		x.t.Fatal(err)
	}
	x.witnesses = append(x.witnesses, witness{user: crashUser, sandbox: x.bystander, path: "never-written.txt", content: "x"})
	// The daemon's 1 s reconcile removes the planted leak (rightly) when
	// it runs between the plant and the check: plant again then.
	var res []string
	for try := 0; try < 5; try++ {
		if err := os.WriteFile(leak, nil, 0o600); err != nil {
			x.t.Fatal(err)
		}
		res = x.check()
		if _, err := os.Stat(leak); strings.Contains(res[0], "sbx-00000000c0de") || err == nil {
			break
		}
	}
	x.witnesses = x.witnesses[:len(x.witnesses)-1]
	task.Resume(x.nctx)
	os.Remove(leak)
	if !strings.Contains(res[0], "sbx-00000000c0de") || !strings.Contains(res[1], z) || !strings.Contains(res[2], "never-written.txt") {
		x.t.Fatalf("the checks do not catch a leak, a task that is not running and a lost file: %q", res)
	}
	if err := x.c.Delete(context.Background(), z, false); err != nil {
		x.t.Fatal(err)
	}
}

func (x *crashSuite) loadTask(id string) (containerd.Task, error) {
	ctr, err := x.cc.LoadContainer(x.nctx, id)
	if err != nil {
		return nil, err
	}
	return ctr.Task(x.nctx, nil)
}

// startClean (re)starts the daemon with nothing armed and waits until its
// recovery finished.
func (x *crashSuite) startClean() {
	x.t.Helper()
	if err := os.WriteFile(x.arm, nil, 0o600); err != nil {
		x.t.Fatal(err)
	}
	x.d.start(x.environ...)
	x.d.up(x.c)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(x.d.logs.String(), `"msg":"recovery finished"`) {
		if time.Now().After(deadline) {
			x.t.Fatal("recovery did not finish within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (x *crashSuite) create() string {
	x.t.Helper()
	s, err := x.c.Create(context.Background(), crashUser, nil)
	if err != nil {
		x.t.Fatalf("create: %v", err)
	}
	return s.SandboxID
}

// write makes a file in a sandbox's home through exec and remembers it.
func (x *crashSuite) write(id, what string) {
	x.t.Helper()
	x.n++
	w := witness{user: crashUser, sandbox: id, path: fmt.Sprintf("w/%03d-%s.txt", x.n, what), content: fmt.Sprintf("%s %d\n", what, x.n)}
	r, err := x.c.Exec(context.Background(), id, apitype.ExecRequest{Command: fmt.Sprintf("mkdir -p w && printf '%%s' '%s' > %s", w.content, w.path)})
	if err != nil || r.ExitCode != 0 {
		x.t.Fatalf("write witness: %v %+v", err, r)
	}
	x.witnesses = append(x.witnesses, w)
}

// point runs one row: arm, operate, wait for the daemon's death, restart
// clean, audit.
func (x *crashSuite) point(p string) {
	x.t.Helper()
	start := time.Now()
	ctx := context.Background()
	x.write(x.bystander, "bystander")
	op, rest, _ := strings.Cut(p, "/")
	var run func()
	switch op {
	case "create":
		run = func() { x.op.Create(ctx, crashUser, nil) }
	case "exec":
		run = func() {
			x.op.Exec(ctx, x.bystander, apitype.ExecRequest{Command: "echo crash-exec >> exec.log"})
		}
	case "stop", "final-sync":
		victim := x.create()
		x.write(victim, "victim-"+rest)
		run = func() { x.op.Delete(ctx, victim, false) }
	case "checkpoint":
		// A checkpoint of every running sandbox: the restarted daemon's
		// recovery runs one at once (the periodic one is the same code).
		x.d.stop()
		if err := os.WriteFile(x.arm, []byte(p), 0o600); err != nil {
			x.t.Fatal(err)
		}
		x.d.start(x.environ...)
		x.waitDeath(p, start)
		return
	}
	if err := os.WriteFile(x.arm, []byte(p), 0o600); err != nil {
		x.t.Fatal(err)
	}
	go run()
	x.waitDeath(p, start)
}

func (x *crashSuite) waitDeath(p string, start time.Time) {
	x.t.Helper()
	if !x.d.exited(30 * time.Second) {
		x.d.kill9()
		x.startClean()
		x.audit(p+" (NOT REACHED)", start, "point not reached")
		return
	}
	if !strings.Contains(x.d.logs.String(), "matrx fault: "+p) {
		x.t.Errorf("%s: the daemon died, but not at the point:\n%s", p, tail(x.d.logs.String(), 20))
	}
	x.d.cmd = nil
	x.startClean()
	x.audit(p, start, "")
}

// containerdKilled kills containerd -9 while op runs, restarts it, and
// audits.
func (x *crashSuite) containerdKilled(name string, op func(done chan<- struct{}), after time.Duration) {
	x.t.Helper()
	start := time.Now()
	x.write(x.bystander, "containerd")
	done := make(chan struct{})
	go op(done)
	time.Sleep(after)
	x.env.Kill(x.t)
	time.Sleep(1500 * time.Millisecond)
	x.env.Restart(x.t)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		x.t.Errorf("%s: the operation did not end after containerd came back", name)
	}
	x.waitHealthy()
	x.audit(name, start, "")
}

func (x *crashSuite) waitHealthy() {
	x.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, err := x.c.Health(context.Background())
		if err == nil && h.Status == "healthy" {
			return
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("not healthy again: %v %+v", err, h)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fuseKilled kills the s3fs process of the user's cold mount: the mount is
// supervised and comes back, and running sandboxes see it again.
func (x *crashSuite) fuseKilled() {
	x.t.Helper()
	start := time.Now()
	ctx := context.Background()
	x.write(x.bystander, "fuse")
	if r, err := x.c.Exec(ctx, x.bystander, apitype.ExecRequest{Command: "echo cold-before > /data/cold/fuse.txt && sync"}); err != nil || r.ExitCode != 0 {
		x.t.Fatalf("cold write: %v %+v", err, r)
	}
	waitObject(x.t, x.srv, x.bucket, "users/"+crashUser+"/cold/fuse.txt", "cold-before\n")
	pid := fusePID(x.bucket, crashUser)
	if pid == 0 {
		x.t.Fatalf("no s3fs process for user %s", crashUser)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	result := "ok"
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := x.c.Exec(ctx, x.bystander, apitype.ExecRequest{Command: "cat /data/cold/fuse.txt"})
		if err == nil && r.Stdout == "cold-before\n" {
			break
		}
		if time.Now().After(deadline) {
			result = fmt.Sprintf("cold files not back 20 s after the FUSE process died: %v %+v", err, r)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	x.audit("FUSE process killed", start, "", result)
}

// fusePID finds the s3fs process of a bucket prefix.
func fusePID(bucket, user string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		// s3fs rewrites its argv: BUCKET:/PATH shows as BUCKET /PATH.
		args := strings.Split(string(b), "\x00")
		if len(args) > 2 && strings.HasSuffix(args[0], "s3fs") &&
			(args[1] == bucket+":/users/"+user+"/cold" || args[1] == bucket && args[2] == "/users/"+user+"/cold") {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			return pid
		}
	}
	return 0
}

// s3Frozen freezes the bucket while a sandbox's final sync runs, kills
// matrxd -9 then, thaws, restarts: the files reach the bucket.
func (x *crashSuite) s3Frozen() {
	x.t.Helper()
	start := time.Now()
	victim := x.create()
	x.write(victim, "frozen")
	x.proxy.Freeze()
	go x.op.Delete(context.Background(), victim, false)
	time.Sleep(1500 * time.Millisecond)
	x.d.kill9()
	x.proxy.Thaw()
	x.startClean()
	x.audit("S3 frozen during a final sync, then kill -9", start, "")
}

// audit waits (up to 20 s) for the checks to pass and records the row.
// forced, when set, fails the leaks column (the point was not reached);
// extra, when not "ok", fails the files column (a cold file not back).
func (x *crashSuite) audit(name string, start time.Time, forced string, extra ...string) {
	x.t.Helper()
	var res []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		res = x.check()
		if forced != "" {
			res[0] = forced
		}
		for _, e := range extra {
			if e != "ok" {
				res[2] = e
			}
		}
		bad := false
		for _, r := range res {
			bad = bad || r != "ok"
		}
		if !bad || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	x.rows = append(x.rows, crashRow{name: name, results: res, took: time.Since(start)})
	for i, r := range res {
		if r != "ok" {
			x.t.Errorf("%s: %s: %s", name, crashChecks[i], r)
		}
	}
}

// check runs the four checks once.
func (x *crashSuite) check() []string {
	ctx := context.Background()
	out := []string{"ok", "ok", "ok", "ok"}
	l, err := x.c.List(ctx, "", true)
	if err != nil {
		return []string{"list: " + err.Error(), "list: " + err.Error(), "list: " + err.Error(), "list: " + err.Error()}
	}
	recs := map[string]apitype.Sandbox{}
	live := map[string]bool{}    // has (or may have) a container
	hotOK := map[string]bool{}   // may have a hot dir
	running := map[string]bool{} // ready or running
	users := map[string]bool{}   // users with a live sandbox
	var transitional []string
	for _, s := range l.Sandboxes {
		recs[s.SandboxID] = s
		switch s.Status {
		case "ready", "running":
			live[s.SandboxID], hotOK[s.SandboxID], running[s.SandboxID], users[s.UserID] = true, true, true, true
		case "creating", "starting", "shutting_down":
			live[s.SandboxID], hotOK[s.SandboxID] = true, true
			transitional = append(transitional, s.SandboxID+" "+s.Status)
		default:
			if s.HotSyncPending {
				hotOK[s.SandboxID] = true
			}
		}
	}
	var leaks []string
	cs, err := x.cc.Containers(x.nctx)
	if err != nil {
		return []string{"containerd: " + err.Error(), "containerd: " + err.Error(), "ok", "ok"}
	}
	containers := map[string]bool{}
	var reg []string
	for _, ctr := range cs {
		containers[ctr.ID()] = true
		if !live[ctr.ID()] {
			leaks = append(leaks, "container "+ctr.ID())
		}
		task, err := ctr.Task(x.nctx, nil)
		if err != nil {
			if running[ctr.ID()] {
				reg = append(reg, ctr.ID()+" has no task")
			}
			continue
		}
		st, err := task.Status(x.nctx)
		if running[ctr.ID()] && (err != nil || st.Status != containerd.Running) {
			reg = append(reg, fmt.Sprintf("%s task %v %v", ctr.ID(), st.Status, err))
		}
		if !live[ctr.ID()] {
			leaks = append(leaks, "task "+ctr.ID())
		}
	}
	for id := range running {
		if !containers[id] {
			reg = append(reg, id+" is "+recs[id].Status+" without a container")
		}
	}
	if len(transitional) > 0 {
		reg = append(reg, "stuck: "+strings.Join(transitional, ", "))
	}
	x.cc.SnapshotService("overlayfs").Walk(x.nctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive && strings.HasPrefix(info.Name, "sbx-") && !containers[info.Name] {
			leaks = append(leaks, "snapshot "+info.Name)
		}
		return nil
	})
	state := x.d.state
	owner := regexp.MustCompile(`^` + regexp.QuoteMeta(state) + `/(hot|runtime/sandboxes|network/netns)/(sbx-[0-9a-f]{12})(/|$)`)
	coldRe := regexp.MustCompile(`^` + regexp.QuoteMeta(state) + `/cold/mnt/users/([^/]+)/cold$`)
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := f[4]
		if m := owner.FindStringSubmatch(mp); m != nil {
			ok := live[m[2]] || m[1] == "hot" && hotOK[m[2]]
			if !ok {
				leaks = append(leaks, "mount "+strings.TrimPrefix(mp, state+"/"))
			}
		}
		if m := coldRe.FindStringSubmatch(mp); m != nil && !users[m[1]] {
			leaks = append(leaks, "cold mount of "+m[1])
		}
	}
	hotOwner := regexp.MustCompile(`^` + regexp.QuoteMeta(state) + `/hot/(sbx-[0-9a-f]{12})/`)
	if b, err := exec.Command("losetup", "-l", "-n", "-O", "BACK-FILE").Output(); err == nil {
		for _, bf := range strings.Fields(string(b)) {
			if m := hotOwner.FindStringSubmatch(bf); m != nil && !hotOK[m[1]] {
				leaks = append(leaks, "loop device on "+strings.TrimPrefix(bf, state+"/"))
			}
		}
	}
	dirs := map[string]map[string]bool{
		"hot": hotOK, "runtime/sandboxes": live, "network/netns": live, "network/sandboxes": live,
	}
	for dir, allowed := range dirs {
		ents, _ := os.ReadDir(filepath.Join(state, dir))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "sbx-") && !allowed[e.Name()] {
				leaks = append(leaks, dir+"/"+e.Name())
			}
		}
	}
	if b, _ := exec.Command("ip", "-o", "link", "show", "master", x.d.nc.Bridge).Output(); strings.Count(string(b), "\n") > len(live) {
		leaks = append(leaks, fmt.Sprintf("%d veths for %d live sandboxes", strings.Count(string(b), "\n"), len(live)))
	}
	rule := regexp.MustCompile(`matrx-sandbox=(sbx-[0-9a-f]{12})`)
	b, _ := exec.Command("iptables", "-S", "MATRX-"+x.d.nc.Bridge+"-SBX").Output()
	for _, m := range rule.FindAllStringSubmatch(string(b), -1) {
		if !live[m[1]] {
			leaks = append(leaks, "rule of "+m[1])
		}
	}
	filepath.WalkDir(filepath.Join(state, "network", "ipam"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "10.") {
			if b, _ := os.ReadFile(p); !live[strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])] {
				leaks = append(leaks, "lease "+d.Name())
			}
		}
		return nil
	})
	if len(leaks) > 0 {
		sort.Strings(leaks)
		out[0] = strings.Join(dedupe(leaks), "; ")
	}
	if len(reg) > 0 {
		out[1] = strings.Join(reg, "; ")
	}
	var lost []string
	for _, w := range x.witnesses {
		if v, ok := get(x.t, x.srv, x.bucket, "users/"+w.user+"/hot/"+w.path); ok && v == w.content {
			continue
		}
		r := recs[w.sandbox]
		host, err := os.ReadFile(filepath.Join(state, "hot", w.sandbox, "home", w.path))
		if err == nil && string(host) == w.content && (running[w.sandbox] || r.HotSyncPending) {
			continue
		}
		lost = append(lost, fmt.Sprintf("%s of %s (%s)", w.path, w.sandbox, r.Status))
	}
	if len(lost) > 0 {
		out[2] = "lost: " + strings.Join(lost, ", ")
	}
	var broken []string
	for id := range running {
		r, err := x.c.Exec(ctx, id, apitype.ExecRequest{Command: "true"})
		if err != nil || r.ExitCode != 0 {
			broken = append(broken, fmt.Sprintf("%s: %v", id, err))
		}
	}
	if len(broken) > 0 {
		out[3] = strings.Join(broken, "; ")
	}
	return out
}

func dedupe(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// report prints the table and writes it to build/crash-injection.txt.
func (x *crashSuite) report() {
	var b strings.Builder
	fmt.Fprintf(&b, "| point | %s | s |\n|---|%s---|\n", strings.Join(crashChecks, " | "), strings.Repeat("---|", len(crashChecks)))
	pass, total := 0, 0
	for _, r := range x.rows {
		cells := make([]string, len(r.results))
		for i, v := range r.results {
			total++
			if v == "ok" {
				pass++
				cells[i] = "ok"
			} else {
				cells[i] = "FAIL"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f |\n", r.name, strings.Join(cells, " | "), r.took.Seconds())
	}
	fmt.Fprintf(&b, "\n%d rows (%d fault points, %d other crashes) × %d checks: %d of %d passed; witness files: %d, lost: %d\n",
		len(x.rows), len(crashPoints), len(x.rows)-len(crashPoints), len(crashChecks), pass, total, len(x.witnesses), x.lost())
	x.t.Logf("crash-injection table:\n%s", b.String())
	dir := filepath.Join(containerdtest.RepoRoot(), "build")
	if os.MkdirAll(dir, 0o755) == nil {
		os.WriteFile(filepath.Join(dir, "crash-injection.txt"), []byte(b.String()), 0o644)
	}
}

func (x *crashSuite) lost() int {
	n := 0
	for _, r := range x.rows {
		if len(r.results) > 2 && r.results[2] != "ok" {
			n++
		}
	}
	return n
}
