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
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/matrx-dev/matrx/api"
	"github.com/matrx-dev/matrx/registry"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/sandbox"
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
func Run(ctx context.Context, cfg Config, log *slog.Logger) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	var store registry.Store
	if cfg.Store == "memory" {
		log.Warn("registry is in memory: sandbox records are lost on restart")
		store = registry.NewMemory()
	} else {
		b, err := registry.OpenBolt(ctx, filepath.Join(cfg.StateDir, "registry.db"))
		if err != nil {
			return err
		}
		store = b
	}
	defer store.Close()

	rt, err := runtime.New(ctx, runtime.Config{
		Address: cfg.ContainerdAddress, Namespace: cfg.ContainerdNamespace,
		StateDir: filepath.Join(cfg.StateDir, "runtime"), InitPath: cfg.InitPath, Logger: log,
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	ctrdVersion, _ := rt.Version(ctx)
	log.Info("connected to containerd", "address", cfg.ContainerdAddress, "namespace", cfg.ContainerdNamespace, "containerd_version", ctrdVersion)
	if ok, err := rt.HasImage(ctx, cfg.Limits.DefaultImage); err == nil && !ok {
		log.Warn("default image is not imported yet; creates without config.image will fail until it is", "image", cfg.Limits.DefaultImage)
	}

	mgr, err := sandbox.New(sandbox.Config{
		Store: store, Runtime: rt, HomeRoot: filepath.Join(cfg.StateDir, "homes"), Limits: cfg.Limits, Logger: log,
	})
	if err != nil {
		return err
	}
	if err := mgr.Recover(ctx); err != nil {
		return fmt.Errorf("recover sandboxes: %w", err)
	}
	defer mgr.Wait()

	srv, err := api.NewServer(api.Config{Manager: mgr, Images: rt, Logger: log, Version: version.Version})
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
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	bg, cancelBG := context.WithCancel(ctx)
	defer cancelBG()
	go mgr.RunExpiry(bg, cfg.ExpiryInterval)
	go watchdog(bg)

	log.Info("matrxd serving", "socket", l.Addr().String(), "version", version.Version)
	sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	// In-flight execs may run up to the max command timeout; give them that
	// long to finish before the listener closes hard.
	err = api.Serve(ctx, httpSrv, l, cfg.Limits.MaxCmdTimeout+5*time.Second)
	sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	log.Info("matrxd stopping; sandboxes keep running")
	return err
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
