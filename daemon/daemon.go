// Package daemon is matrxd's wiring: it turns flags into a Config, opens the
// registry, connects the runtime, builds the sandbox manager and the API,
// and runs them until SIGTERM. It holds no logic of its own beyond ordering
// startup and shutdown.
//
// Shutdown contract: stop accepting, let in-flight requests finish, close
// the containerd client and the registry, and leave sandboxes running; the
// next start recovers them (sandbox.Manager.Recover).
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/matrx-dev/matrx/api"
	"github.com/matrx-dev/matrx/metrics"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/network"
	"github.com/matrx-dev/matrx/sandbox"
	"github.com/matrx-dev/matrx/sshgate"
	"github.com/matrx-dev/matrx/version"
	"github.com/urfave/cli/v2"
)

// App is the matrxd command.
func App() *cli.App {
	return &cli.App{
		Name:    "matrxd",
		Usage:   "sandbox runtime daemon: hardened containerd sandboxes behind a Unix-socket API",
		Version: version.Version,
		Flags:   flags(),
		Action: func(c *cli.Context) error {
			cfg, err := configFrom(c)
			if err != nil {
				return cli.Exit("matrxd: invalid configuration: "+err.Error(), 2)
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if err := Run(ctx, cfg, newLogger(cfg)); err != nil {
				return cli.Exit("matrxd: "+err.Error(), 1)
			}
			return nil
		},
	}
}

func newLogger(cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// Run starts matrxd and blocks until ctx ends.
//
// Startup order: claim the host state (one daemon per state dir, socket,
// containerd namespace and bridge/subnet), open the registry, connect to
// containerd, open storage (a bucket that does not answer within 2 s
// starts the daemon degraded rather than blocking it), recover records
// (fast: containerd only; storage recovery continues in the background),
// start supervision, serve, and only then say READY=1.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	apiKey, err := loadAPIKey(cfg) // metrics & optional listeners: see below Run
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	release, err := holdLocks(cfg, cfg.Network.Mode != "off")
	if err != nil {
		return err
	}
	defer release()
	store, err := openRegistry(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	mx := daemonMetrics(cfg, store, log)

	ns, err := cfg.UserNS.resolve(log)
	if err != nil {
		return err
	}
	if ns.Enabled() {
		// runc's init, an unprivileged host uid under user namespaces, must
		// reach rootfs paths below containerd's state dir (the socket's dir
		// by default).
		changed, err := runtime.EnsureTraversable(filepath.Dir(cfg.ContainerdAddress))
		if err != nil {
			return fmt.Errorf("user namespaces: %w", err)
		}
		for _, d := range changed {
			log.Warn("made directory traversable (o+x) for user-namespaced sandboxes", "dir", d)
		}
	}
	if !cfg.KeepCgroupLocking {
		favorCgroupDynMods(log)
	}
	netMgr, err := openNetwork(ctx, cfg, log)
	if err != nil {
		return err
	}
	regs, err := openRegistries(cfg.Registry, log)
	if err != nil {
		return err
	}
	rtOpts := []runtime.Option{runtime.WithUserNS(ns), runtime.WithRegistries(regs), runtime.WithShimGroupSize(cfg.ShimGroupSize),
		runtime.WithOCIRuntime(cfg.OCIRuntime)}
	if cfg.NoExecAgent {
		rtOpts = append(rtOpts, runtime.WithoutExecAgent())
	}
	if netMgr != nil {
		rtOpts = append(rtOpts, runtime.WithNetwork(netMgr))
	}
	rt, err := runtime.New(ctx, runtime.Config{
		Address: cfg.ContainerdAddress, Namespace: cfg.ContainerdNamespace,
		StateDir: filepath.Join(cfg.StateDir, "runtime"), InitPath: cfg.InitPath, RelayPath: cfg.RelayPath, Logger: log,
	}, rtOpts...)
	if err != nil {
		return err
	}
	defer rt.Close()
	ctrdVersion, _ := rt.Version(ctx)
	log.Info("connected to containerd", "address", cfg.ContainerdAddress, "namespace", cfg.ContainerdNamespace, "containerd_version", ctrdVersion, "oci_runtime", rt.OCIRuntime())

	st, err := openStorage(ctx, cfg, ns, mx, log)
	if err != nil {
		return err
	}
	// Cold mounts are deliberately not unmounted on exit: running sandboxes
	// keep using them, and the next start re-acquires them.
	defer st.close()
	home, err := openSandboxAPI(cfg, netMgr, ns, log)
	if err != nil {
		return err
	}
	mcfg := sandbox.Config{Store: store, Runtime: rt, Storage: st.storage, Limits: cfg.Limits, Logger: log, Metrics: mx,
		PinnedImages: cfg.Registry.PinnedImages, Pools: cfg.Pools}
	if home != nil {
		mcfg.Home = home
	}
	mgr, err := sandbox.New(mcfg)
	if err != nil {
		return err
	}
	if ok, err := rt.HasImage(ctx, mgr.Limits().DefaultImage); err == nil && !ok {
		log.Warn("default image is not present yet; the first create without config.image pulls it (or fails with config.pull never)", "image", mgr.Limits().DefaultImage)
	}
	if st.unreachable != nil {
		mgr.SetCondition(sandbox.ConditionS3, st.unreachable)
	}
	bg, cancelBG := context.WithCancel(ctx)
	defer cancelBG()
	// Background work (storage recovery, supervised stops) is waited for
	// after the listeners closed and the loops were cancelled.
	defer mgr.Wait()
	defer cancelBG()
	if err := mgr.Recover(bg); err != nil {
		return fmt.Errorf("recover sandboxes: %w", err)
	}

	srvOpts := []api.Option{api.WithMetrics(mx), api.WithKeepalive(cfg.StreamKeepalive), api.WithMaxUploadBytes(cfg.maxUploadBytes())}
	previewL, err := openPreview(cfg, log)
	if err != nil {
		return err
	}
	if previewL != nil {
		key, err := api.LoadPreviewKey(filepath.Join(cfg.StateDir, "preview.key"))
		if err != nil {
			previewL.Close()
			return fmt.Errorf("preview listener: %w", err)
		}
		srvOpts = append(srvOpts, api.WithPreview(api.PreviewConfig{
			Domain: cfg.previewDomain(), Key: key, Port: previewL.Addr().(*net.TCPAddr).Port,
		}))
	}
	gate, err := openSSH(cfg, mgr, log)
	if err != nil {
		return err
	}
	if gate != nil {
		defer gate.l.Close()
		srvOpts = append(srvOpts, api.WithSSH(gate.info))
	}
	host := hostCapacity(log)
	if netMgr != nil {
		host.NetworkSubnet = netMgr.Subnet().String()
	}
	srv, err := api.NewServer(api.Config{Manager: mgr, Images: rt, Logger: log, Version: version.Version, Host: host}, srvOpts...)
	if err != nil {
		return err
	}
	l, err := listener(cfg, log)
	if err != nil {
		return err
	}
	httpSrv := &http.Server{
		Handler:           srv,
		ConnContext:       api.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Output follows, attaches and file watches last as long as their
	// process or client: a shutdown ends them (clients resume after the
	// restart) instead of waiting out the drain.
	httpSrv.RegisterOnShutdown(srv.CloseStreams)
	waitListeners, err := serveOptionalListeners(ctx, cfg, srv, mx, apiKey, previewL, log)
	if err != nil {
		l.Close()
		return err
	}
	defer waitListeners()
	if gate != nil {
		gctx, stopGate := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := gate.gw.Serve(gctx, gate.l); err != nil {
				log.Error("ssh gateway stopped", "error", err)
			}
		}()
		// The gateway's sessions end with the daemon (their processes are
		// hung up), like output follows.
		defer func() { stopGate(); <-done }()
	}
	if home != nil {
		stopHome, err := home.Start(srv)
		if err != nil {
			l.Close()
			return err
		}
		defer stopHome(5 * time.Second)
	}

	loops := startLoops(bg, cfg, mgr, st)
	defer loops.Wait()

	log.Info("matrxd serving", "socket", l.Addr().String(), "version", version.Version)
	sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	// In-flight execs may run up to the max command timeout; give them that
	// long to finish before the listener closes hard.
	err = api.Serve(ctx, httpSrv, l, cfg.Limits.MaxCmdTimeout+5*time.Second)
	sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	log.Info("matrxd stopping; sandboxes keep running")
	cancelBG()
	return err
}

// openSandboxAPI prepares the sandbox listener (nil when it is off): on
// the gateway address when sandboxes have networking, and per-sandbox
// sockets under the state dir for those without an address. Its sockets
// belong to the sandboxes' root and agent group, in host ids.

// openRegistry opens the sandbox records: bbolt under the state dir, or
// memory (tests; records are lost on restart).
func openRegistry(ctx context.Context, cfg Config, log *slog.Logger) (registry.Store, error) {
	if cfg.Store == "memory" {
		log.Warn("registry is in memory: sandbox records are lost on restart")
		return registry.NewMemory(), nil
	}
	b, err := registry.OpenBolt(ctx, filepath.Join(cfg.StateDir, "registry.db"), registry.WithLogger(log))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// startLoops starts the manager's periodic work: supervision, TTL expiry,
// heartbeat and idle deadlines, reconcile, record pruning, the bucket
// probe, checkpoints and sync retries, and the systemd watchdog. They end
// when bg does; the caller waits for them.
func startLoops(bg context.Context, cfg Config, mgr *sandbox.Manager, st *openedStorage) *sync.WaitGroup {
	var loops sync.WaitGroup
	loops.Go(func() { mgr.Supervise(bg, 0) })
	loops.Go(func() { mgr.RunExpiry(bg, cfg.ExpiryInterval) })
	loops.Go(func() { mgr.RunDeadlines(bg, cfg.ExpiryInterval) })
	loops.Go(func() {
		// The startup reconcile ends Recover's background work.
		<-mgr.Recovered()
		mgr.RunReconcile(bg, cfg.reconcileInterval())
	})
	if cfg.RecordRetention > 0 {
		loops.Go(func() {
			mgr.PruneRecords(bg, cfg.RecordRetention)
			runEvery(bg, time.Hour, func(ctx context.Context) { mgr.PruneRecords(ctx, cfg.RecordRetention) })
		})
	}
	if st.probe != nil {
		loops.Go(func() {
			runEvery(bg, bucketProbeInterval, func(ctx context.Context) { mgr.SetCondition(sandbox.ConditionS3, st.probe(ctx)) })
		})
	}
	// Failed final syncs are retried on the checkpoint tick, and every
	// 5 minutes even with checkpoints turned off: files waiting on the
	// host are never left to the next restart.
	retryEvery := cfg.Storage.CheckpointInterval
	if retryEvery <= 0 {
		retryEvery = 5 * time.Minute
	}
	loops.Go(func() { mgr.RunStorageTasks(bg, cfg.Storage.CheckpointInterval, retryEvery) })
	loops.Go(func() { mgr.RunPool(bg) })
	loops.Go(func() { watchdog(bg) })
	return &loops
}

func openSandboxAPI(cfg Config, netMgr *network.Manager, ns runtime.UserNS, log *slog.Logger) (*api.SandboxAPI, error) {
	if cfg.SandboxAPIPort == 0 {
		log.Info("sandbox listener off: sandboxes cannot call home")
		return nil, nil
	}
	sc := api.SandboxAPIConfig{
		SocketDir: filepath.Join(cfg.StateDir, "sandbox-api"),
		SocketUID: int(ns.HostID(0)), SocketGID: int(ns.HostID(runtime.AgentGID)), Logger: log,
	}
	if netMgr != nil {
		sc.Gateway = netip.AddrPortFrom(netMgr.Gateway(), uint16(cfg.SandboxAPIPort))
		sc.Lookup = netMgr.SandboxAt
	}
	return api.NewSandboxAPI(sc)
}

// sshGate is the SSH gateway, bound, and how clients reach it.
type sshGate struct {
	gw   *sshgate.Gateway
	l    net.Listener
	info api.SSHInfo
}

// openSSH binds the SSH gateway (nil when it is off) with the host key
// kept under the state dir (made the first time).
func openSSH(cfg Config, mgr *sandbox.Manager, log *slog.Logger) (*sshGate, error) {
	if cfg.SSHAddress == "" {
		log.Info("ssh gateway off")
		return nil, nil
	}
	key, err := sshgate.LoadHostKey(filepath.Join(cfg.StateDir, "ssh"))
	if err != nil {
		return nil, err
	}
	gw, err := sshgate.New(sshgate.Config{Manager: mgr, HostKey: key, Logger: log})
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", cfg.SSHAddress)
	if err != nil {
		return nil, fmt.Errorf("ssh gateway: listen on %s: %w", cfg.SSHAddress, err)
	}
	host, _, _ := net.SplitHostPort(cfg.SSHAddress)
	if cfg.SSHPublicHost != "" {
		host = cfg.SSHPublicHost
	}
	port := l.Addr().(*net.TCPAddr).Port
	log.Info("ssh gateway serving", "address", l.Addr().String(), "public_host", host, "host_key", gw.Fingerprint())
	return &sshGate{gw: gw, l: l, info: api.SSHInfo{
		Host: host, Port: port, KnownHosts: gw.KnownHosts(host, port), Fingerprint: gw.Fingerprint(),
	}}, nil
}

// openPreview binds the preview listener (nil when it is off) before the
// server is built, so that the URLs it hands out carry the real port.
func openPreview(cfg Config, log *slog.Logger) (net.Listener, error) {
	if cfg.PreviewAddress == "" {
		return nil, nil
	}
	l, err := api.ListenTCP(cfg.PreviewAddress)
	if err != nil {
		return nil, fmt.Errorf("preview listener: %w", err)
	}
	if host, _, _ := net.SplitHostPort(cfg.PreviewAddress); !isLoopback(host) {
		log.Warn("preview listener is not on loopback: sandboxes' apps are served to the network behind their tokens, in plain HTTP; put a TLS proxy in front", "address", l.Addr().String())
	}
	return l, nil
}

// bucketProbeInterval is how often the bucket is asked whether it answers
// (s3_unreachable comes and goes with it).
const bucketProbeInterval = 10 * time.Second

// runEvery calls fn every interval until ctx ends.
func runEvery(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

// listener takes the socket from systemd socket activation when there is
// one, and creates its own otherwise.
func listener(cfg Config, log *slog.Logger) (net.Listener, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("systemd socket activation: %w", err)
	}
	for _, l := range ls {
		if l != nil {
			log.Info("using socket passed by systemd", "socket", l.Addr().String())
			return l, nil
		}
	}
	gid, ok, err := cfg.socketGID()
	if err != nil {
		return nil, err
	}
	if !ok {
		log.Warn("socket group not found; socket is root-only", "group", cfg.SocketGroup)
	}
	return api.ListenUnix(cfg.Socket, 0o660, gid)
}

// watchdog pings systemd at half its WatchdogSec, if one is set.
func watchdog(ctx context.Context) {
	interval, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sddaemon.SdNotify(false, sddaemon.SdNotifyWatchdog)
		}
	}
}

// --- metrics and optional listeners ----------------------------------------

// loadAPIKey reads the TCP listener's key at startup, before anything runs,
// so that a bad key file fails fast. No TCP listener, no key.
func loadAPIKey(cfg Config) ([]byte, error) {
	if cfg.TCPAddress == "" {
		return nil, nil
	}
	key, err := api.LoadAPIKey(cfg.APIKeyFile)
	if err != nil {
		return nil, fmt.Errorf("tcp listener: %w", err)
	}
	return key, nil
}

// daemonMetrics returns the metrics (cfg.Metrics, or new ones) with
// matrx_sandboxes and matrx_hotsync_pending_sandboxes counted from the
// registry at scrape time.
func daemonMetrics(cfg Config, store registry.Store, log *slog.Logger) *metrics.Metrics {
	mx := cfg.Metrics
	if mx == nil {
		mx = metrics.New(metrics.WithLogger(log))
	}
	mx.SetSandboxStatus(func(ctx context.Context) (metrics.Snapshot, error) {
		c, err := store.Counts(ctx) // the registry's indexes: no record is decoded
		if err != nil {
			return metrics.Snapshot{}, err
		}
		snap := metrics.Snapshot{ByStatus: map[string]int{}, HotSyncPending: c.TerminalPending}
		for _, s := range registry.Statuses() {
			snap.ByStatus[string(s)] = c.ByStatus[s] // every status is exported, zero included
		}
		return snap, nil
	})
	return mx
}

// serveOptionalListeners starts the loopback metrics listener and the TCP
// API listener when they are configured. They stop when ctx ends or when
// the returned wait func is called, which blocks until they have drained.
func serveOptionalListeners(ctx context.Context, cfg Config, srv *api.Server, mx *metrics.Metrics, apiKey []byte, previewL net.Listener, log *slog.Logger) (wait func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wait = func() { cancel(); wg.Wait() }
	serve := func(name string, l net.Listener, h http.Handler, drain time.Duration) {
		hs := api.TCPServer(h, log)
		hs.RegisterOnShutdown(srv.CloseStreams)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := api.Serve(ctx, hs, l, drain); err != nil {
				log.Error(name+" listener stopped", "address", l.Addr().String(), "error", err)
			}
		}()
	}
	if cfg.MetricsAddress != "" {
		l, err := api.ListenTCP(cfg.MetricsAddress)
		if err != nil {
			wait()
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", mx.Handler())
		log.Info("metrics listener serving", "address", l.Addr().String())
		serve("metrics", l, mux, 5*time.Second)
	}
	if previewL != nil {
		log.Info("preview listener serving (a sandbox token required unless a port is public)", "address", previewL.Addr().String(), "domain", cfg.previewDomain())
		serve("preview", previewL, srv.PreviewHandler(), 5*time.Second)
	}
	if cfg.TCPAddress != "" {
		h, err := srv.TCPHandler(apiKey)
		if err == nil {
			var l net.Listener
			if l, err = api.ListenTCP(cfg.TCPAddress); err == nil {
				l = api.LimitListener(l, cfg.tcpMaxConns())
				if host, _, _ := net.SplitHostPort(cfg.TCPAddress); !isLoopback(host) {
					log.Warn("tcp api listener is not on loopback: it speaks plain HTTP with a shared key; prefer the unix socket or a TLS proxy", "address", l.Addr().String())
				}
				log.Info("tcp api listener serving (X-API-Key required)", "address", l.Addr().String())
				serve("tcp api", l, h, cfg.Limits.MaxCmdTimeout+5*time.Second)
			}
		}
		if err != nil {
			wait()
			return nil, fmt.Errorf("tcp listener: %w", err)
		}
	}
	return wait, nil
}
