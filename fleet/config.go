package fleet

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"

	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/version"
)

// Config is the provider's whole configuration, from flags and MATRX_VK_*.
type Config struct {
	// Kubeconfig is the cluster credentials file; empty: in-cluster.
	Kubeconfig string
	// Socket is the host's matrxd API socket.
	Socket string
	// NodeName is the node to register (default matrx-<hostname>).
	NodeName string
	// Host is the host's name, the node's matrx.dev/host label.
	Host string
	// Slots is the node's matrx.dev/sandbox capacity; 0 takes matrxd's
	// --max-sandboxes. It may not exceed them.
	Slots int
	// NodeIP is where the API server reaches this provider (exec, logs).
	NodeIP string
	// ListenAddress serves the kubelet API (HTTPS).
	ListenAddress string
	// TLSCertFile and TLSKeyFile are the kubelet API's serving
	// certificate; without them a self-signed one is made at start.
	TLSCertFile string
	TLSKeyFile  string
	// ClientCAFile verifies client certificates (the API server's
	// --kubelet-client-certificate); without it only bearer tokens
	// (TokenReview) authenticate.
	ClientCAFile string
	// StatusInterval is how often matrxd is asked about the node and its
	// sandboxes.
	StatusInterval time.Duration
	// Workers is how many Pods Virtual Kubelet syncs at once.
	Workers   int
	LogLevel  slog.Level
	LogFormat string
}

// flags are the provider's flags; each has a MATRX_VK_* twin.
func flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "kubeconfig", EnvVars: []string{"MATRX_VK_KUBECONFIG", "KUBECONFIG"}, Usage: "kubeconfig of the cluster (default: in-cluster service account)"},
		&cli.StringFlag{Name: "socket", Value: client.DefaultSocket, EnvVars: []string{"MATRX_VK_SOCKET"}, Usage: "the host's matrxd API socket"},
		&cli.StringFlag{Name: "node-name", EnvVars: []string{"MATRX_VK_NODE_NAME"}, Usage: "node to register (default matrx-<hostname>)"},
		&cli.StringFlag{Name: "host", EnvVars: []string{"MATRX_VK_HOST"}, Usage: "the host's name, the node's matrx.dev/host label (default: hostname)"},
		&cli.IntFlag{Name: "slots", EnvVars: []string{"MATRX_VK_SLOTS"}, Usage: "sandbox slots the node offers (matrx.dev/sandbox); default: matrxd's --max-sandboxes, which it may not exceed"},
		&cli.StringFlag{Name: "node-ip", EnvVars: []string{"MATRX_VK_NODE_IP"}, Usage: "address the API server reaches this provider on for exec and logs (default: the host's first non-loopback IPv4)"},
		&cli.StringFlag{Name: "listen-address", Value: ":10250", EnvVars: []string{"MATRX_VK_LISTEN_ADDRESS"}, Usage: "HOST:PORT of the kubelet API (HTTPS)"},
		&cli.StringFlag{Name: "tls-cert-file", EnvVars: []string{"MATRX_VK_TLS_CERT_FILE"}, Usage: "kubelet API serving certificate (default: self-signed at start)"},
		&cli.StringFlag{Name: "tls-key-file", EnvVars: []string{"MATRX_VK_TLS_KEY_FILE"}, Usage: "its key"},
		&cli.StringFlag{Name: "client-ca-file", EnvVars: []string{"MATRX_VK_CLIENT_CA_FILE"}, Usage: "CA of client certificates the kubelet API accepts (the API server's kubelet client certificate)"},
		&cli.DurationFlag{Name: "status-interval", Value: 2 * time.Second, EnvVars: []string{"MATRX_VK_STATUS_INTERVAL"}, Usage: "how often matrxd is asked about the node and its sandboxes"},
		&cli.IntFlag{Name: "workers", Value: 10, EnvVars: []string{"MATRX_VK_WORKERS"}, Usage: "Pods synced at once"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"MATRX_VK_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "json", EnvVars: []string{"MATRX_VK_LOG_FORMAT"}, Usage: "json or text"},
	}
}

// App is the matrx-vk command.
func App() *cli.App {
	return &cli.App{
		Name:    "matrx-vk",
		Usage:   "registers this host's matrxd as a Kubernetes node (Virtual Kubelet) and runs the Pods bound to it as sandboxes",
		Version: version.Version,
		Flags:   flags(),
		Description: "Examples:\n" +
			"   matrx-vk --kubeconfig /etc/matrx/kubeconfig --slots 50 --node-ip 10.0.0.5 \\\n" +
			"     --tls-cert-file /etc/matrx/vk.crt --tls-key-file /etc/matrx/vk.key --client-ca-file /etc/matrx/cluster-ca.crt\n" +
			"   MATRX_VK_KUBECONFIG=/etc/matrx/kubeconfig MATRX_VK_SLOTS=50 matrx-vk\n\n" +
			"See docs/fleet.md.",
		Action: func(c *cli.Context) error {
			cfg, err := configFrom(c)
			if err != nil {
				return cli.Exit("matrx-vk: invalid configuration: "+err.Error(), 2)
			}
			log := newLogger(cfg)
			// client-go logs through klog: into the same log.
			klog.SetSlogLogger(log.With("component", "client-go"))
			if err := Run(c.Context, cfg, log); err != nil {
				return cli.Exit("matrx-vk: "+err.Error(), 1)
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

// configFrom turns parsed flags into a validated Config.
func configFrom(c *cli.Context) (Config, error) {
	cfg := Config{
		Kubeconfig: c.String("kubeconfig"), Socket: c.String("socket"), NodeName: c.String("node-name"),
		Host: c.String("host"), Slots: c.Int("slots"), NodeIP: c.String("node-ip"),
		ListenAddress: c.String("listen-address"), TLSCertFile: c.String("tls-cert-file"), TLSKeyFile: c.String("tls-key-file"),
		ClientCAFile: c.String("client-ca-file"), StatusInterval: c.Duration("status-interval"), Workers: c.Int("workers"),
		LogFormat: strings.ToLower(c.String("log-format")),
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return cfg, fmt.Errorf("log level %q: want debug, info, warn or error: %w", c.String("log-level"), errdefs.ErrInvalidArgument)
	}
	if err := cfg.defaults(); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// defaults fills the host name, node name and node IP from the host.
func (c *Config) defaults() error {
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("hostname: %w (set --host)", err)
		}
		c.Host = strings.ToLower(h)
	}
	if c.NodeName == "" {
		c.NodeName = "matrx-" + c.Host
	}
	if c.NodeIP == "" {
		c.NodeIP = firstIPv4()
	}
	return nil
}

// firstIPv4 is the host's first non-loopback IPv4 address ("" if none).
func firstIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// Validate checks every value before anything starts.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	if errs := validation.IsDNS1123Subdomain(c.NodeName); len(errs) > 0 {
		return bad("node name %q: %s", c.NodeName, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(c.Host); len(errs) > 0 {
		return bad("host %q is not a label value (%s): set --host", c.Host, strings.Join(errs, "; "))
	}
	switch {
	case !filepath.IsAbs(c.Socket):
		return bad("socket %q must be an absolute path", c.Socket)
	case c.Slots < 0:
		return bad("slots %d must be 0 (matrxd's --max-sandboxes) or positive", c.Slots)
	case c.NodeIP == "":
		return bad("no node IP: the host has no non-loopback IPv4 address; set --node-ip")
	case net.ParseIP(c.NodeIP) == nil:
		return bad("node ip %q is not an IP address", c.NodeIP)
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return bad("--tls-cert-file and --tls-key-file go together")
	case c.StatusInterval < 100*time.Millisecond:
		return bad("status interval %v is too short (min 100ms)", c.StatusInterval)
	case c.Workers < 1:
		return bad("workers %d must be positive", c.Workers)
	case c.LogFormat != "json" && c.LogFormat != "text":
		return bad("log format %q: want json or text", c.LogFormat)
	}
	if _, port, err := net.SplitHostPort(c.ListenAddress); err != nil || port == "" {
		return bad("listen address %q: want HOST:PORT (port 0: any free port; the node advertises the one it got)", c.ListenAddress)
	}
	for _, f := range []struct{ name, path string }{{"tls-cert-file", c.TLSCertFile}, {"tls-key-file", c.TLSKeyFile}, {"client-ca-file", c.ClientCAFile}, {"kubeconfig", c.Kubeconfig}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return bad("--%s %s: %v", f.name, f.path, err)
		}
	}
	return nil
}

// slots is the node's slot count given matrxd's --max-sandboxes (0: none).
func (c Config) slots(matrxd int64) (int, error) {
	switch {
	case c.Slots == 0 && matrxd == 0:
		return 0, fmt.Errorf("no slot count: set --slots, or matrxd's --max-sandboxes: %w", errdefs.ErrInvalidArgument)
	case c.Slots == 0:
		return int(matrxd), nil
	case matrxd > 0 && int64(c.Slots) > matrxd:
		return 0, fmt.Errorf("--slots %d exceeds matrxd's --max-sandboxes %d: the scheduler would place Pods matrxd refuses: %w", c.Slots, matrxd, errdefs.ErrInvalidArgument)
	}
	return c.Slots, nil
}
