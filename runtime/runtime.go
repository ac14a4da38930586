// Package runtime owns everything that talks to containerd: the one
// long-lived client, images, the hardened OCI spec, sandbox containers and
// their tasks, and exec. It knows nothing about HTTP, users' storage or the
// registry: callers hand it host paths to bind and get containers back.
//
// Decisions recorded here:
//   - PID 1 of every sandbox is matrx-init (cmd/matrx-init), our own static
//     binary bind-mounted read-only at /.matrx/init, running as nobody with no
//     capabilities. It reaps orphans and, on SIGTERM, exits once it is the
//     last process, so a graceful stop gives workloads their full grace time.
//   - Each sandbox is one container, one overlay snapshot (writable, but the
//     root filesystem is mounted read-only) and one task, all named by the
//     sandbox id, in the daemon's own containerd namespace, labelled with
//     matrx.sandbox_id, matrx.user_id and matrx.created_at.
//   - Each exec is tracked in a child cgroup of the sandbox (freezer on
//     cgroup v1, the unified hierarchy on v2), so a timeout kills the whole
//     process tree, including children that called setsid.
//   - Background processes (process.go) are execs whose output goes to
//     matrx-relay, the shim's binary logger (package runtime/relay), so
//     they, their output, stdin and terminal outlive matrxd; the runtime
//     adopts them again after a restart.
//   - The runc shim runs every sandbox; the OCI runtime binary it calls is
//     runc (the default) or crun (--oci-runtime), with no session keyring
//     per sandbox either way (ociruntime.go says why runc stays the
//     default and why no keyring).
//   - Supervision (watch.go) reads containerd's task events and polls task
//     status (events are not replayed after a reconnect) and tells the
//     caller, never deciding what a death means for a record; GC (gc.go)
//     removes what a caller's policy says no sandbox keeps, and never an
//     image snapshot or anything not named like a sandbox.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"github.com/matrx-dev/matrx/fault"
	"github.com/matrx-dev/matrx/undo"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/runtime/network"
	"github.com/matrx-dev/matrx/runtime/relay"
)

// Label keys on every sandbox container.
const (
	LabelSandboxID = "matrx.sandbox_id"
	LabelUserID    = "matrx.user_id"
	LabelCreatedAt = "matrx.created_at"
)

// Config holds the runtime's required dependencies.
type Config struct {
	// Address is containerd's socket.
	Address string
	// Namespace is the containerd namespace all of matrx's objects live in.
	Namespace string
	// StateDir holds per-sandbox control directories.
	StateDir string
	// InitPath is the static matrx-init binary on the host.
	InitPath string
	// RelayPath is the static matrx-relay binary on the host, which the
	// runc shim starts for each background process (optional: without it
	// StartProcess fails with NotImplemented).
	RelayPath string
	Logger    *slog.Logger
}

// Runtime is the daemon's single containerd client and the state it keeps
// per running sandbox.
type Runtime struct {
	client      *containerd.Client
	ns          string
	address     string // containerd's socket (whose shims GC may clean up after)
	stateDir    string
	initPath    string
	log         *slog.Logger
	snapshotter string
	tmpfs       TmpfsSizes
	swap        bool
	userns      UserNS
	idmapped    bool        // the snapshotter maps ids itself (idmapped mounts)
	ociRuntime  string      // runc or crun (ociruntime.go)
	ociBinary   string      // the shim's BinaryName: "" means runc on containerd's PATH
	noAgent     atomic.Bool // every exec through the OCI runtime (agentexec.go)
	net         *network.Manager
	registries  RegistryConfig
	regClient   *http.Client

	mu    sync.Mutex
	tasks map[string]*sandboxTask // live handles, rebuilt lazily after a restart

	groups shimGroups // opt-in shim grouping (shimgroup.go)

	relayPath string
	watcher   *relay.Watcher // nil: followers poll
	pmu       sync.Mutex
	procs     map[string]*sandboxProcs // background processes by sandbox
	ploadMu   sync.Mutex               // one adoption at a time
	connMu    sync.Mutex
	connErr   error // containerd's reachability as Watch last saw it

	// changing holds the sandboxes a Create or Destroy is working on: their
	// container may exist without a task for a while (before NewTask, after
	// task.Delete), which is not a lost task (see watcher.reportLost).
	// destroyed holds the ones Destroy removed in the last destroyedMemory,
	// for a poll that listed a container just before it went.
	changingMu sync.Mutex
	changing   map[string]int
	destroyed  map[string]time.Time
}

// destroyedMemory is how long a sandbox this runtime destroyed is not
// reported by the watcher (a poll lists every container, then asks about
// each: far less than this).
const destroyedMemory = time.Minute

// Option configures optional runtime knobs.
type Option func(*Runtime)

// WithSnapshotter selects the containerd snapshotter (default overlayfs).
func WithSnapshotter(name string) Option { return func(r *Runtime) { r.snapshotter = name } }

// WithNetwork gives sandboxes real networking through m (CNI bridge,
// egress rules). Without it every sandbox has loopback only.
func WithNetwork(m *network.Manager) Option { return func(r *Runtime) { r.net = m } }

// Networking reports whether sandboxes can get a network.
func (r *Runtime) Networking() bool { return r.net != nil }

// CheckNetwork validates a sandbox network policy against this runtime.
func (r *Runtime) CheckNetwork(p network.Policy) error {
	if r.net == nil {
		if p.Mode == network.ModeNone && len(p.Allow) == 0 {
			return nil
		}
		return fmt.Errorf("networking is off on this daemon; only network mode %q is available: %w", network.ModeNone, errdefs.ErrInvalidArgument)
	}
	return r.net.CheckPolicy(p)
}

// WithUserNS runs every sandbox in a user namespace with this mapping.
func WithUserNS(u UserNS) Option { return func(r *Runtime) { r.userns = u } }

// IDMapped reports whether sandboxes get idmapped mounts from the
// snapshotter (containerd ≥ 2) rather than a chowned copy of the image.
func (r *Runtime) IDMapped() bool { return r.idmapped }

// UserNS returns the sandboxes' id mapping (zero when off).
func (r *Runtime) UserNS() UserNS { return r.userns }

// WithTmpfsSizes overrides DefaultTmpfsSizes.
func WithTmpfsSizes(s TmpfsSizes) Option { return func(r *Runtime) { r.tmpfs = s } }

// New connects to containerd and checks it answers. The client is meant to
// live as long as the daemon; Close releases it.
func New(ctx context.Context, cfg Config, opts ...Option) (*Runtime, error) {
	if cfg.Address == "" || cfg.Namespace == "" || cfg.StateDir == "" || cfg.InitPath == "" {
		return nil, fmt.Errorf("runtime config needs address, namespace, state dir and init path: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := os.Stat(cfg.InitPath)
	if err != nil {
		return nil, fmt.Errorf("sandbox init binary %s: %w", cfg.InitPath, errdefs.ErrFailedPrecondition)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("sandbox init binary %s is not an executable file: %w", cfg.InitPath, errdefs.ErrFailedPrecondition)
	}
	r := &Runtime{
		ns:          cfg.Namespace,
		address:     cfg.Address,
		stateDir:    cfg.StateDir,
		initPath:    cfg.InitPath,
		log:         cfg.Logger,
		snapshotter: "overlayfs",
		tmpfs:       DefaultTmpfsSizes,
		swap:        swapAccounting(),
		tasks:       map[string]*sandboxTask{},
		procs:       map[string]*sandboxProcs{},
		regClient:   newRegistryClient(),
	}
	if cfg.RelayPath != "" {
		st, err := os.Stat(cfg.RelayPath)
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("process relay binary %s is not an executable file: %w", cfg.RelayPath, errdefs.ErrFailedPrecondition)
		}
		r.relayPath = cfg.RelayPath
	}
	for _, o := range opts {
		o(r)
	}
	if err := r.resolveOCIRuntime(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("create runtime state dir: %w", err)
	}
	if _, err := os.Stat(cfg.Address); err != nil {
		return nil, fmt.Errorf("containerd socket %s: %v: %w", cfg.Address, err, errdefs.ErrUnavailable)
	}
	client, err := containerd.New(cfg.Address,
		containerd.WithDefaultNamespace(cfg.Namespace),
		containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %v: %w", cfg.Address, err, errdefs.ErrUnavailable)
	}
	r.client = client
	if w, err := relay.NewWatcher(); err == nil {
		r.watcher = w
	} else {
		r.log.Warn("no inotify: process output followers poll", "error", err)
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := r.Version(vctx); err != nil {
		client.Close()
		if r.watcher != nil {
			r.watcher.Close()
		}
		return nil, err
	}
	if r.userns.Enabled() {
		caps, _ := client.GetSnapshotterCapabilities(vctx, r.snapshotter)
		r.idmapped = snapshotterRemaps(caps)
		if r.idmapped {
			r.log.Info("user namespaces: the snapshotter maps ids with idmapped mounts", "snapshotter", r.snapshotter)
		} else {
			r.log.Info("user namespaces: the snapshotter cannot map ids; images are chowned once per image into a kept copy", "snapshotter", r.snapshotter)
		}
	}
	return r, nil
}

// Close releases the containerd connection. Sandboxes and their background
// processes keep running; their supervisors stop (the next daemon adopts
// the processes).
func (r *Runtime) Close() error {
	r.pmu.Lock()
	for _, sp := range r.procs {
		for _, p := range sp.byID {
			if p.cancel != nil {
				p.cancel()
			}
		}
	}
	r.pmu.Unlock()
	if r.watcher != nil {
		r.watcher.Close()
	}
	return r.client.Close()
}

// Version reports containerd's version.
func (r *Runtime) Version(ctx context.Context) (string, error) {
	v, err := r.client.Version(ctx)
	if err != nil {
		return "", fmt.Errorf("containerd did not answer: %v: %w", err, errdefs.ErrUnavailable)
	}
	return v.Version, nil
}

// CreateRequest describes one sandbox container.
type CreateRequest struct {
	ID        string
	UserID    string
	Image     string
	Resources Resources
	Mounts    []Mount
	Env       map[string]string
	// Network is the sandbox's egress policy (ignored without networking,
	// where only mode "none" is accepted by CheckNetwork).
	Network   network.Policy
	CreatedAt time.Time
}

// Create makes the container, snapshot and task for a sandbox and starts it.
// On any failure everything it made is removed again.
func (r *Runtime) Create(ctx context.Context, req CreateRequest) (err error) {
	ctx = r.nsCtx(ctx)
	done := r.markChanging(req.ID)
	defer func() { done(err != nil) }()
	var rollback undo.Stack
	defer func() {
		if err != nil {
			rollback.Run(ctx, r.log.With("sandbox_id", req.ID))
		}
	}()

	img, err := r.resolveImage(ctx, req.Image)
	if err != nil {
		return err
	}
	control := r.controlDir(req.ID)
	if err := os.MkdirAll(filepath.Dir(control), 0o711); err != nil {
		return fmt.Errorf("create control dir parent: %w", err)
	}
	if err := os.Mkdir(control, 0o1777); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("control dir for %s already exists: %w", req.ID, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("create control dir: %w", err)
	}
	rollback.Push("remove control dir", func(context.Context) error { return removeControlDir(control) })
	// The sandbox can write here, so it is a tiny tmpfs of its own, never
	// the host's state disk: a sandbox filling it fills 1 MiB of memory.
	// Sticky and world-writable so agent and root execs can both leave
	// their cwd files.
	if err := mountControlDir(control); err != nil {
		return err
	}
	if err := makeStdinDir(control); err != nil {
		return err
	}
	fault.At(ctx, "create/control-dir")

	base, err := imageEnv(ctx, img)
	if err != nil {
		return err
	}
	in := SpecInput{
		ID:              req.ID,
		Env:             mergeEnv(base, envList(req.Env)),
		Resources:       req.Resources,
		Mounts:          req.Mounts,
		Tmpfs:           r.tmpfs.Within(req.Resources.MemoryBytes),
		InitHostPath:    r.initPath,
		ControlHostPath: control,
		SwapAccounting:  r.swap,
		UserNS:          r.userns,
	}
	// Networking: runc creates the sandbox's network namespace (inside its
	// user namespace, which must own it for sysfs and for runc exec to
	// join it), and the network manager attaches it to the bridge between
	// task create and start. resolv.conf and hosts exist before that, so
	// the spec can bind them.
	withNet := r.net != nil && req.Network.Mode != network.ModeNone
	if withNet {
		if err := r.net.PrepareFiles(req.ID, req.Network); err != nil {
			return fmt.Errorf("network files for %s: %w", req.ID, err)
		}
		rollback.Push("tear down network", func(ctx context.Context) error { return r.net.Teardown(ctx, req.ID) })
		in.ResolvConf, in.Hosts = r.net.Files(req.ID)
	}
	labels := map[string]string{
		LabelSandboxID: req.ID,
		LabelUserID:    req.UserID,
		LabelCreatedAt: req.CreatedAt.UTC().Format(time.RFC3339Nano),
	}
	if r.groups.enabled() {
		group, err := r.groups.take(ctx, r, req.ID)
		if err != nil {
			return err
		}
		rollback.Push("leave shim group", func(context.Context) error { r.groups.release(req.ID); return nil })
		labels[LabelShimGroup] = group
		in.ShimGroup = group
	}
	snapshot := containerd.WithNewSnapshot(req.ID, img)
	switch {
	case r.userns.Enabled() && r.idmapped:
		// containerd ≥ 2 with an idmap-capable snapshotter: the mapping is
		// applied at mount time, nothing is copied.
		snapshot = containerd.WithNewSnapshot(req.ID, img,
			containerd.WithUserNSRemapperLabels(r.userns.mappings(), r.userns.mappings()))
	case r.userns.Enabled():
		// The image is chowned into the sandbox id range once per image;
		// later sandboxes reuse the remapped parent (see remap_linux.go).
		snapshot = r.withRemappedSnapshot(req.ID, img)
	}
	// Phase timings for a debug line: where a create's container time goes.
	t0 := time.Now()
	var took [4]time.Duration // container, task, network, start
	container, err := r.client.NewContainer(ctx, req.ID,
		containerd.WithContainerLabels(labels),
		containerd.WithImage(img),
		containerd.WithSnapshotter(r.snapshotter),
		snapshot,
		r.withShimOptions(),
		containerd.WithNewSpec(append(specOpts(in), r.withSpecVersion())...),
	)
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("container %s: %w", req.ID, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("create container %s: %w", req.ID, err)
	}
	rollback.Push("delete container", func(ctx context.Context) error {
		return container.Delete(ctx, containerd.WithSnapshotCleanup)
	})
	fault.At(ctx, "create/container")
	took[0], t0 = time.Since(t0), time.Now()

	task, err := container.NewTask(ctx, nullIO)
	if err != nil {
		return fmt.Errorf("create task for %s: %v: %w", req.ID, err, errdefs.ErrUnavailable)
	}
	rollback.Push("delete task", func(ctx context.Context) error {
		_, err := task.Delete(ctx, containerd.WithProcessKill)
		return err
	})
	var ip netip.Addr
	fault.At(ctx, "create/task")
	took[1], t0 = time.Since(t0), time.Now()
	if withNet {
		nsSrc := fmt.Sprintf("/proc/%d/ns/net", task.Pid())
		att, err := r.net.SetupIn(ctx, req.ID, req.Network, nsSrc)
		if err != nil {
			return fmt.Errorf("network for %s: %w", req.ID, err)
		}
		ip = att.IPv4
		fault.At(ctx, "create/network")
	}
	took[2], t0 = time.Since(t0), time.Now()
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start task for %s: %v: %w", req.ID, err, errdefs.ErrUnavailable)
	}
	if err := waitInitExeced(ctx, int(task.Pid()), r.initPath); err != nil {
		return fmt.Errorf("start task for %s: %w", req.ID, err)
	}
	fault.At(ctx, "create/started")
	took[3] = time.Since(t0)
	r.log.Debug("sandbox container started", "sandbox_id", req.ID,
		"container_ms", ms(took[0]), "task_ms", ms(took[1]), "network_ms", ms(took[2]), "start_ms", ms(took[3]))
	st := &sandboxTask{task: task, shell: detectShell(int(task.Pid())), ip: ip, env: in.Env}
	r.mu.Lock()
	r.tasks[req.ID] = st
	r.mu.Unlock()
	return nil
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// imageEnv is the environment the image's config asks for (PATH, LANG,
// ...), the base of PID 1's and every exec's environment; matrx's own
// variables go on top. HOME is not taken from the image: the runtime sets
// it per exec user. An image without PATH gets defaultPath.
func imageEnv(ctx context.Context, img containerd.Image) ([]string, error) {
	spec, err := img.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("read config of image %s: %w", img.Name(), err)
	}
	env := []string{"PATH=" + defaultPath}
	for _, kv := range spec.Config.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || k == "HOME" || strings.IndexByte(kv, 0) >= 0 {
			continue
		}
		env = mergeEnv(env, []string{kv})
	}
	return env, nil
}

// mergeEnv returns base with every KEY=VALUE of over applied in order: a
// key already in base is replaced in place, a new one appended.
func mergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	idx := map[string]int{}
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		idx[k] = i
	}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// Destroy stops and removes a sandbox's task, container and snapshot. With a
// grace period, every process gets SIGTERM first and SIGKILL once grace runs
// out; with zero grace it is SIGKILL at once. A sandbox that is already gone
// is not an error.
func (r *Runtime) Destroy(ctx context.Context, id string, grace time.Duration) error {
	return r.DestroyThen(ctx, id, grace, nil)
}

// DestroyThen is Destroy, calling stopped as soon as no process of the
// sandbox is left (PID 1 exited, and with it the whole PID namespace; or
// there was no task), on a goroutine of its own, while the rest of the
// teardown (task, network, container, snapshot) goes on: work that only
// needs the sandbox's files to be quiescent (the final sync) overlaps it
// instead of following it. It returns once both are done. On a nil error
// stopped has run exactly once; on an error it ran only if every process
// was gone before the failure.
func (r *Runtime) DestroyThen(ctx context.Context, id string, grace time.Duration, stopped func()) (err error) {
	ctx = r.nsCtx(ctx)
	done := r.markChanging(id)
	defer func() { done(err == nil) }()
	var quiet sync.WaitGroup
	defer quiet.Wait()
	quiescent := func() {
		if stopped != nil {
			quiet.Go(stopped)
			stopped = nil
		}
	}
	r.forget(id)
	defer r.groups.release(id)
	// Background processes die with the task; their supervisors must not
	// record that as their exit, and their directories go with the sandbox.
	r.cancelProcesses(id)
	defer r.forgetProcesses(id)
	defer removeControlDir(r.controlDir(id))
	container, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		quiescent()
		return r.teardownNetwork(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("load container %s: %w", id, err)
	}
	task, err := container.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
		quiescent()
	case err != nil:
		return fmt.Errorf("load task %s: %w", id, err)
	default:
		t0 := time.Now()
		if err := stopTask(ctx, task, grace, r.initPath); err != nil {
			return fmt.Errorf("stop task %s: %w", id, err)
		}
		fault.At(ctx, "task-killed")
		quiescent()
		killed := time.Since(t0)
		// Every process is gone (PID 1 exited, so the kernel killed the
		// rest of the PID namespace): the network goes while containerd
		// reaps the shim and removes the container. Measured here: task
		// delete 35-50 ms, network 27-50 ms, container ~4 ms, final sync
		// (the caller's stopped) ~20 ms, all side by side after a 4-9 ms
		// kill (the "sandbox torn down" debug line).
		netDone := make(chan error, 1)
		var netTook time.Duration
		go func() {
			n0 := time.Now()
			err := r.teardownNetwork(ctx, id)
			netTook = time.Since(n0)
			netDone <- err
		}()
		t1 := time.Now()
		// No WithProcessKill: the task has exited (stopTask waited for
		// it), and that option runs a `runc kill --all` all the same
		// (a runc process and a cgroup freeze, 10-20 ms), only to be told
		// the process is already gone.
		_, terr := task.Delete(ctx)
		if terr != nil && !errdefs.IsNotFound(terr) {
			return errors.Join(fmt.Errorf("delete task %s: %w", id, terr), <-netDone)
		}
		fault.At(ctx, "task-deleted")
		taskTook, t2 := time.Since(t1), time.Now()
		if err := container.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			return errors.Join(fmt.Errorf("delete container %s: %w", id, err), <-netDone)
		}
		fault.At(ctx, "container-deleted")
		containerTook := time.Since(t2)
		err := <-netDone
		r.log.Debug("sandbox torn down", "sandbox_id", id, "kill_ms", ms(killed), "task_delete_ms", ms(taskTook),
			"container_delete_ms", ms(containerTook), "network_ms", ms(netTook), "total_ms", ms(time.Since(t0)))
		return err
	}
	if err := container.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	return r.teardownNetwork(ctx, id)
}

// markChanging records that a Create or Destroy of id is under way, until
// the returned function is called (with destroyed: the sandbox is gone).
func (r *Runtime) markChanging(id string) func(destroyed bool) {
	r.changingMu.Lock()
	if r.changing == nil {
		r.changing, r.destroyed = map[string]int{}, map[string]time.Time{}
	}
	r.changing[id]++
	r.changingMu.Unlock()
	return func(destroyed bool) {
		r.changingMu.Lock()
		defer r.changingMu.Unlock()
		if r.changing[id]--; r.changing[id] <= 0 {
			delete(r.changing, id)
		}
		if !destroyed {
			return
		}
		now := time.Now()
		for d, at := range r.destroyed {
			if now.Sub(at) > destroyedMemory {
				delete(r.destroyed, d)
			}
		}
		r.destroyed[id] = now
	}
}

// ownChange reports whether this runtime is creating or destroying id, or
// destroyed it within destroyedMemory: what the watcher would see of it
// then is this runtime's own doing.
func (r *Runtime) ownChange(id string) bool {
	r.changingMu.Lock()
	defer r.changingMu.Unlock()
	at, gone := r.destroyed[id]
	return r.changing[id] > 0 || gone && time.Since(at) <= destroyedMemory
}

func (r *Runtime) teardownNetwork(ctx context.Context, id string) error {
	if r.net == nil {
		return nil
	}
	if err := r.net.Teardown(ctx, id); err != nil {
		return fmt.Errorf("tear down network of %s: %w", id, err)
	}
	return nil
}

func stopTask(ctx context.Context, task containerd.Task, grace time.Duration, initPath string) error {
	// Opened before the status below, which then vouches for it.
	pid1 := openInit(task.Pid(), initPath)
	defer pid1.close()
	st, err := task.Status(ctx)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return err
	}
	if st.Status == containerd.Stopped {
		return nil
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	if grace > 0 {
		if err := task.Kill(ctx, syscall.SIGTERM, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		select {
		case <-exited:
			return nil
		case <-time.After(grace):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// PID 1 alone: every process of a sandbox is in its PID namespace
	// (execs, background processes and the exec agent join it), and when
	// a namespace's init dies the kernel SIGKILLs the rest and PID 1's
	// exit is reported only after they are gone. runc's "kill --all"
	// would freeze and thaw the cgroup around signalling each process
	// (cgroup v1), ~10-20 ms of a destroy here; through the pidfd it is
	// not even a `runc kill`.
	if !pid1.kill() {
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	}
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("task did not exit 10s after SIGKILL: %w", errdefs.ErrUnavailable)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Running reports whether the sandbox's task exists and is running.
func (r *Runtime) Running(ctx context.Context, id string) (bool, error) {
	st, err := r.sandbox(r.nsCtx(ctx), id)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s, err := st.task.Status(r.nsCtx(ctx))
	if errdefs.IsNotFound(err) {
		r.forget(id)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("task status %s: %w", id, err)
	}
	return s.Status == containerd.Running, nil
}

// Info is a sandbox container as containerd knows it.
type Info struct {
	ID        string
	UserID    string
	CreatedAt time.Time
}

// List returns every sandbox container in the daemon's namespace.
func (r *Runtime) List(ctx context.Context) ([]Info, error) {
	cs, err := r.client.Containers(r.nsCtx(ctx))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []Info
	for _, c := range cs {
		labels, err := c.Labels(r.nsCtx(ctx))
		if err != nil {
			continue
		}
		t, _ := time.Parse(time.RFC3339Nano, labels[LabelCreatedAt])
		out = append(out, Info{ID: c.ID(), UserID: labels[LabelUserID], CreatedAt: t})
	}
	return out, nil
}

// sandboxTask is the cached handle of a running sandbox.
type sandboxTask struct {
	task  containerd.Task
	shell string
	ip    netip.Addr // set by Create; unknown for a task loaded after a restart
	env   []string   // PID 1's environment: the base of every exec's
	agent agentState // the exec agent (agentexec.go)
}

// IPv4 is the bridge address Create gave sandbox id, while this Runtime
// holds the handle Create made (the caller records it: after a restart the
// runtime does not know it). Invalid without networking.
func (r *Runtime) IPv4(id string) netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.tasks[id]; st != nil {
		return st.ip
	}
	return netip.Addr{}
}

// sandbox returns the cached task handle, loading it from containerd after
// a daemon restart.
func (r *Runtime) sandbox(ctx context.Context, id string) (*sandboxTask, error) {
	r.mu.Lock()
	st, ok := r.tasks[id]
	r.mu.Unlock()
	if ok {
		return st, nil
	}
	container, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("sandbox %s has no container: %w", id, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("load container %s: %w", id, err)
	}
	task, err := container.Task(ctx, nil)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("sandbox %s has no task: %w", id, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("load task %s: %w", id, err)
	}
	spec, err := container.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("load spec of %s: %w", id, err)
	}
	var env []string
	if spec.Process != nil {
		env = spec.Process.Env
	}
	st = &sandboxTask{task: task, shell: detectShell(int(task.Pid())), env: env}
	r.mu.Lock()
	r.tasks[id] = st
	r.mu.Unlock()
	return st, nil
}

// forget drops in-memory state of a sandbox (the old system leaked it).
func (r *Runtime) forget(id string) {
	r.mu.Lock()
	st := r.tasks[id]
	delete(r.tasks, id)
	r.mu.Unlock()
	if st != nil {
		st.agent.close()
	}
}

func (r *Runtime) controlDir(id string) string {
	return filepath.Join(r.stateDir, "sandboxes", id)
}

func (r *Runtime) nsCtx(ctx context.Context) context.Context {
	return withNamespace(ctx, r.ns)
}

func swapAccounting() bool {
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
		return true
	}
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers") // pure cgroup v2
	return err == nil
}

func trimNewline(s string) string { return strings.TrimSuffix(s, "\n") }

// ms is d in milliseconds with 0.1 ms resolution, for log lines.
func ms(d time.Duration) float64 { return float64(d.Microseconds()/100) / 10 }
