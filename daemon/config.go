package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/api"
	"github.com/matrx-dev/matrx/hostconfig"
	"github.com/matrx-dev/matrx/metrics"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/sandbox"
	"github.com/urfave/cli/v2"
)

// Config is matrxd's whole configuration, built from flags and MATRX_* env.
type Config struct {
	Socket              string
	SocketGroup         string
	ContainerdAddress   string
	ContainerdNamespace string
	StateDir            string
	InitPath            string
	RelayPath           string
	Store               string // bolt | memory
	LogLevel            slog.Level
	LogFormat           string // json | text
	ExpiryInterval      time.Duration
	// ReconcileInterval is how often supervision compares the registry
	// with containerd, mounts, networks and disks and repairs the
	// differences (it also runs at startup and after containerd returns);
	// 0 means 30 s.
	ReconcileInterval time.Duration
	// RecordRetention > 0 prunes stopped records older than that (0: keep
	// every record, for audit).
	RecordRetention time.Duration
	// LockDir holds the locks of host-wide resources (containerd
	// namespace, bridge and subnet); the state dir and the socket lock
	// next to themselves. matrxd's flag defaults it to /run/matrx; an
	// empty LockDir (a Config built in code) means <StateDir>/locks, which
	// only catches daemons that share the state dir.
	LockDir string
	// TCPMaxConns caps the TCP listener's connections (0: 128).
	TCPMaxConns int
	Limits      sandbox.Limits
	// Pools are the warm pools (sandbox package, pool.go): --warm-pool N
	// for the default image, --warm-pool-image IMAGE=N for others.
	Pools []sandbox.PoolSpec
	// ShimGroupSize > 1 puts that many sandboxes in one runc shim
	// (runtime.WithShimGroupSize: less memory per sandbox, shared fate).
	ShimGroupSize int
	Storage       StorageConfig
	UserNS        UserNSConfig
	Network       NetworkConfig
	Registry      RegistryConfig

	// OCIRuntime is the binary the runc shim runs sandboxes with: runc
	// (the default when empty) or crun (see package runtime).
	OCIRuntime string
	// NoExecAgent runs every exec through the OCI runtime instead of the
	// sandbox's exec agent (package runtime/execagent): for comparing the
	// two, or as a way out should the agent misbehave.
	NoExecAgent bool
	// KeepCgroupLocking leaves the host's cgroup2 mount as it is instead
	// of turning on favordynmods at startup (runtime.FavorCgroupDynMods
	// says what that buys and costs: a sandbox's first exec waited 4-14 ms
	// for an RCU grace period without it).
	KeepCgroupLocking bool

	// MetricsAddress, when set, is a loopback HOST:PORT where a second
	// listener serves only GET /metrics, for a scraper that cannot use the
	// socket. The socket always serves /metrics.
	MetricsAddress string
	// TCPAddress, when set, is where a TCP listener serves the whole API to
	// clients of the original service; each request must carry the key
	// held in APIKeyFile (X-API-Key). Off by default: the socket is the
	// recommended interface.
	TCPAddress string
	APIKeyFile string
	// MaxUploadMB caps one file upload's body (PUT .../files); 0 means
	// the default, 1024.
	MaxUploadMB int64
	// SandboxAPIPort is the TCP port of the sandbox listener on the bridge
	// gateway address (sandboxes without an address get a socket instead);
	// 0 turns the way back from inside sandboxes off.
	SandboxAPIPort int
	// PreviewAddress, when set, is where the preview listener serves
	// sandboxes' ports to browsers (Host: <port>-<sandbox id>.PreviewDomain),
	// each behind the sandbox's token unless in config.public_ports.
	PreviewAddress string
	PreviewDomain  string
	// SSHAddress, when set, is where the SSH gateway listens; clients are
	// told SSHPublicHost (default: SSHAddress's host).
	SSHAddress    string
	SSHPublicHost string
	// Metrics receives the daemon's metrics; nil makes Run create its own.
	// Tests pass one to share it across restarts.
	Metrics *metrics.Metrics
	// StreamKeepalive is how often an idle output follow gets a keepalive
	// line (0: 15 s). Not a flag: tests shorten it.
	StreamKeepalive time.Duration
}

// DefaultSandboxAPIPort is where sandboxes call home on the gateway.
const DefaultSandboxAPIPort = 8787

// flags are matrxd's command-line flags; each has a MATRX_* twin.
func flags() []cli.Flag {
	d := sandbox.DefaultLimits()
	return append(append(append(storageFlags(), networkFlags()...), registryFlags()...),
		&cli.StringFlag{Name: "socket", Value: hostconfig.Socket, EnvVars: []string{"MATRX_SOCKET"}, Usage: "API Unix socket (ignored when systemd passes one)"},
		&cli.StringFlag{Name: "socket-group", Value: hostconfig.SocketGroup, EnvVars: []string{"MATRX_SOCKET_GROUP"}, Usage: "group allowed to use the socket (name or gid); falls back to root's group if the named group does not exist"},
		&cli.StringFlag{Name: "containerd-address", Value: hostconfig.ContainerdAddress, EnvVars: []string{"MATRX_CONTAINERD_ADDRESS"}},
		&cli.BoolFlag{Name: "exec-agent", Value: true, EnvVars: []string{"MATRX_EXEC_AGENT"}, Usage: "start the agent user's execs through an exec agent inside each sandbox instead of the OCI runtime (faster; same privileges, see docs/security.md); --exec-agent=false uses the OCI runtime for every exec"},
		&cli.BoolFlag{Name: "cgroup-favordynmods", Value: true, EnvVars: []string{"MATRX_CGROUP_FAVORDYNMODS"}, Usage: "turn on the favordynmods option of the host's cgroup2 mount at startup (moving a process into a cgroup, as every create and exec does, then no longer waits for an RCU grace period; forks and exits host-wide take a slightly slower lock path); --cgroup-favordynmods=false leaves the mount alone"},
		&cli.StringFlag{Name: "oci-runtime", Value: runtime.OCIRuntimeRunc, EnvVars: []string{"MATRX_OCI_RUNTIME"}, Usage: "OCI runtime the containerd runc shim runs sandboxes with: runc or crun (must be installed); existing sandboxes keep the one they were created with"},
		&cli.StringFlag{Name: "containerd-namespace", Value: hostconfig.ContainerdNamespace, EnvVars: []string{"MATRX_CONTAINERD_NAMESPACE"}},
		&cli.StringFlag{Name: "state-dir", Value: hostconfig.StateDir, EnvVars: []string{"MATRX_STATE_DIR"}},
		&cli.StringFlag{Name: "init-path", EnvVars: []string{"MATRX_INIT_PATH"}, Usage: "static matrx-init binary (default: next to matrxd, else /usr/local/lib/matrx/matrx-init)"},
		&cli.StringFlag{Name: "relay-path", EnvVars: []string{"MATRX_RELAY_PATH"}, Usage: "static matrx-relay binary, the output relay of background processes (default: next to matrxd, else /usr/local/lib/matrx/matrx-relay)"},
		&cli.IntFlag{Name: "max-processes", Value: d.MaxProcesses, EnvVars: []string{"MATRX_MAX_PROCESSES"}, Usage: "running background processes per sandbox (blocking execs do not count)"},
		&cli.Int64Flag{Name: "process-output-limit", Value: d.ProcessOutputCap, EnvVars: []string{"MATRX_PROCESS_OUTPUT_LIMIT"}, Usage: "bytes of output kept per background process (oldest dropped beyond it)"},
		&cli.DurationFlag{Name: "process-retention", Value: d.ProcessRetention, EnvVars: []string{"MATRX_PROCESS_RETENTION"}, Usage: "how long ended background processes stay listed"},
		&cli.IntFlag{Name: "process-retain-count", Value: d.ProcessRetainCount, EnvVars: []string{"MATRX_PROCESS_RETAIN_COUNT"}, Usage: "ended background processes kept per sandbox"},
		&cli.Int64Flag{Name: "process-retain-bytes", Value: d.ProcessRetainBytes, EnvVars: []string{"MATRX_PROCESS_RETAIN_BYTES"}, Usage: "output of ended background processes kept per sandbox (oldest forgotten first)"},
		&cli.Int64Flag{Name: "max-process-timeout", Value: int64(d.MaxProcessTimeout / time.Second), EnvVars: []string{"MATRX_MAX_PROCESS_TIMEOUT"}, Usage: "largest background process timeout, seconds"},
		&cli.StringFlag{Name: "image", Value: d.DefaultImage, EnvVars: []string{"MATRX_IMAGE", "MATRX_SANDBOX_IMAGE"}, Usage: "default sandbox image"},
		&cli.StringFlag{Name: "store", Value: "bolt", EnvVars: []string{"MATRX_SANDBOX_STORE"}, Usage: "registry: bolt (alias persistent) or memory"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"MATRX_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "json", EnvVars: []string{"MATRX_LOG_FORMAT"}, Usage: "json or text"},
		&cli.Float64Flag{Name: "default-cpu", Value: d.DefaultCPU, EnvVars: []string{"MATRX_DEFAULT_CPU"}},
		&cli.Float64Flag{Name: "max-cpu", Value: d.MaxCPU, EnvVars: []string{"MATRX_MAX_CPU"}},
		&cli.Int64Flag{Name: "default-memory-mb", Value: d.DefaultMemoryMB, EnvVars: []string{"MATRX_DEFAULT_MEMORY_MB"}},
		&cli.Int64Flag{Name: "max-memory-mb", Value: d.MaxMemoryMB, EnvVars: []string{"MATRX_MAX_MEMORY_MB"}},
		&cli.Int64Flag{Name: "default-pids", Value: d.DefaultPids, EnvVars: []string{"MATRX_DEFAULT_PIDS"}},
		&cli.Int64Flag{Name: "max-pids", Value: d.MaxPids, EnvVars: []string{"MATRX_MAX_PIDS"}},
		&cli.Int64Flag{Name: "default-disk-mb", Value: d.DefaultDiskMB, EnvVars: []string{"MATRX_DEFAULT_DISK_MB"}, Usage: "home disk quota per sandbox (loop-mounted ext4 image); 0 turns quotas off"},
		&cli.Int64Flag{Name: "max-disk-mb", Value: d.MaxDiskMB, EnvVars: []string{"MATRX_MAX_DISK_MB"}},
		&cli.Int64Flag{Name: "default-ttl", Value: int64(d.DefaultTTL / time.Second), EnvVars: []string{"MATRX_DEFAULT_TTL", "MATRX_MAX_SESSION_DURATION"}, Usage: "seconds"},
		&cli.Int64Flag{Name: "max-ttl", Value: int64(d.MaxTTL / time.Second), EnvVars: []string{"MATRX_MAX_TTL"}, Usage: "seconds"},
		&cli.Int64Flag{Name: "shutdown-timeout", Value: int64(d.ShutdownTimeout / time.Second), EnvVars: []string{"MATRX_SHUTDOWN_TIMEOUT_SECONDS", "MATRX_SHUTDOWN_TIMEOUT"}, Usage: "seconds of SIGTERM grace on graceful stops"},
		&cli.IntFlag{Name: "max-command-length", Value: d.MaxCommandLength, EnvVars: []string{"MATRX_MAX_COMMAND_LENGTH"}},
		&cli.Int64Flag{Name: "command-timeout", Value: int64(d.DefaultCmdTimeout / time.Second), EnvVars: []string{"MATRX_COMMAND_TIMEOUT"}, Usage: "default exec timeout, seconds"},
		&cli.Int64Flag{Name: "max-command-timeout", Value: int64(d.MaxCmdTimeout / time.Second), EnvVars: []string{"MATRX_MAX_COMMAND_TIMEOUT"}, Usage: "seconds"},
		&cli.Int64Flag{Name: "max-upload-mb", Value: 1024, EnvVars: []string{"MATRX_MAX_UPLOAD_MB"}, Usage: "largest file upload body (PUT /sandboxes/{id}/files, a tar's unpacked size too); larger ones get 413"},
		&cli.Int64Flag{Name: "output-limit", Value: d.OutputLimit, EnvVars: []string{"MATRX_OUTPUT_LIMIT"}, Usage: "bytes kept of each of stdout and stderr per exec"},
		&cli.IntFlag{Name: "max-sandboxes", Value: d.MaxSandboxes, EnvVars: []string{"MATRX_MAX_SANDBOXES"}, Usage: "the host's sandbox slots: creates beyond this many live sandboxes answer 429 (0: no limit); a fleet node's capacity"},
		&cli.IntFlag{Name: "warm-pool", EnvVars: []string{"MATRX_WARM_POOL"}, Usage: "sandboxes of the default image kept started ahead of any request, claimed by creates that fit (default disk, at most the default cpu/memory/pids); 0: off"},
		&cli.IntFlag{Name: "shim-group-size", Value: 1, EnvVars: []string{"MATRX_SHIM_GROUP_SIZE"}, Usage: "sandboxes per runc shim (1: a shim each); more saves ~2.5 MiB per sandbox, but a group shares the shim's CPU and fate (see runtime/shimgroup.go)"},
		&cli.StringSliceFlag{Name: "warm-pool-image", EnvVars: []string{"MATRX_WARM_POOL_IMAGE"}, Usage: "IMAGE=N: a warm pool of N sandboxes of IMAGE (repeatable)"},
		&cli.DurationFlag{Name: "expiry-interval", Value: 10 * time.Second, EnvVars: []string{"MATRX_EXPIRY_INTERVAL"}, Usage: "how often TTLs, heartbeat and idle timeouts are checked"},
		&cli.DurationFlag{Name: "reconcile-interval", Value: 30 * time.Second, EnvVars: []string{"MATRX_RECONCILE_INTERVAL"}, Usage: "how often the registry is compared with containerd, mounts, networks and disks (and differences repaired)"},
		&cli.DurationFlag{Name: "record-retention", EnvVars: []string{"MATRX_RECORD_RETENTION"}, Usage: "prune stopped sandbox records older than this, e.g. 720h (default 0: keep every record)"},
		&cli.Int64Flag{Name: "default-heartbeat-timeout", EnvVars: []string{"MATRX_DEFAULT_HEARTBEAT_TIMEOUT"}, Usage: "seconds without a heartbeat before a sandbox fails (heartbeat_lost), for sandboxes whose config does not say; 0: off"},
		&cli.Int64Flag{Name: "default-idle-timeout", EnvVars: []string{"MATRX_DEFAULT_IDLE_TIMEOUT"}, Usage: "seconds without activity before a sandbox stops (idle), for sandboxes whose config does not say; 0: off"},
		&cli.StringFlag{Name: "lock-dir", Value: "/run/matrx", EnvVars: []string{"MATRX_LOCK_DIR"}, Usage: "where host-wide locks live (containerd namespace, bridge, subnet): one daemon per host state"},
		&cli.IntFlag{Name: "tcp-max-connections", Value: api.DefaultTCPMaxConns, EnvVars: []string{"MATRX_TCP_MAX_CONNECTIONS"}, Usage: "concurrent connections the TCP listener accepts"},
		&cli.StringFlag{Name: "metrics-address", EnvVars: []string{"MATRX_METRICS_ADDRESS"}, Usage: "loopback HOST:PORT serving only GET /metrics (default off; the socket always serves /metrics)"},
		&cli.StringFlag{Name: "tcp-address", EnvVars: []string{"MATRX_TCP_ADDRESS"}, Usage: "HOST:PORT of an optional TCP API listener for old clients, e.g. 127.0.0.1:8000 (default off; needs --api-key-file)"},
		&cli.StringFlag{Name: "api-key-file", EnvVars: []string{"MATRX_API_KEY_FILE"}, Usage: "file (mode 0600) holding the X-API-Key the TCP listener requires"},
		&cli.StringFlag{Name: "ssh-address", Value: "127.0.0.1:2222", EnvVars: []string{"MATRX_SSH_ADDRESS"}, Usage: "HOST:PORT of the SSH gateway (keys from POST /sandboxes/{id}/access); \"\" turns it off; bind a public address (or forward to it) to reach sandboxes from other machines"},
		&cli.StringFlag{Name: "ssh-public-host", EnvVars: []string{"MATRX_SSH_PUBLIC_HOST"}, Usage: "host name or address clients are told to connect to (default: the --ssh-address host)"},
		&cli.StringFlag{Name: "preview-address", EnvVars: []string{"MATRX_PREVIEW_ADDRESS"}, Usage: "HOST:PORT of the preview listener, e.g. 127.0.0.1:8443: serves http://<port>-<sandbox id>.<preview domain>/ to browsers, with the sandbox's token (POST /sandboxes/{id}/preview) unless the port is in config.public_ports (default off)"},
		&cli.StringFlag{Name: "preview-domain", Value: "localhost", EnvVars: []string{"MATRX_PREVIEW_DOMAIN"}, Usage: "domain of preview hosts (<port>-<sandbox id>.DOMAIN); localhost resolves to loopback in browsers"},
		&cli.IntFlag{Name: "sandbox-api-port", Value: DefaultSandboxAPIPort, EnvVars: []string{"MATRX_SANDBOX_API_PORT"}, Usage: "TCP port, on the sandbox bridge's gateway address only, where sandboxes call home (ORCHESTRATOR_URL: heartbeat, complete, error, their own record); sandboxes without an address get a socket (MATRX_API_SOCKET); 0 turns it off"},
	)
}

// configFrom turns parsed flags into a validated Config.
func configFrom(c *cli.Context) (Config, error) {
	cfg := Config{
		Socket:              c.String("socket"),
		SocketGroup:         c.String("socket-group"),
		ContainerdAddress:   c.String("containerd-address"),
		ContainerdNamespace: c.String("containerd-namespace"),
		StateDir:            c.String("state-dir"),
		InitPath:            c.String("init-path"),
		RelayPath:           c.String("relay-path"),
		Store:               strings.ToLower(c.String("store")),
		LogFormat:           strings.ToLower(c.String("log-format")),
		ExpiryInterval:      c.Duration("expiry-interval"),
		ReconcileInterval:   c.Duration("reconcile-interval"),
		RecordRetention:     c.Duration("record-retention"),
		LockDir:             c.String("lock-dir"),
		TCPMaxConns:         c.Int("tcp-max-connections"),
		MetricsAddress:      c.String("metrics-address"),
		TCPAddress:          c.String("tcp-address"),
		APIKeyFile:          c.String("api-key-file"),
		MaxUploadMB:         c.Int64("max-upload-mb"),
		SandboxAPIPort:      c.Int("sandbox-api-port"),
		PreviewAddress:      c.String("preview-address"),
		PreviewDomain:       c.String("preview-domain"),
		SSHAddress:          c.String("ssh-address"),
		SSHPublicHost:       c.String("ssh-public-host"),
		Limits: sandbox.Limits{
			DefaultImage:            c.String("image"),
			DefaultCPU:              c.Float64("default-cpu"),
			MaxCPU:                  c.Float64("max-cpu"),
			DefaultMemoryMB:         c.Int64("default-memory-mb"),
			MaxMemoryMB:             c.Int64("max-memory-mb"),
			DefaultPids:             c.Int64("default-pids"),
			MaxPids:                 c.Int64("max-pids"),
			DefaultDiskMB:           c.Int64("default-disk-mb"),
			MaxDiskMB:               c.Int64("max-disk-mb"),
			DefaultTTL:              time.Duration(c.Int64("default-ttl")) * time.Second,
			MaxTTL:                  time.Duration(c.Int64("max-ttl")) * time.Second,
			ShutdownTimeout:         time.Duration(c.Int64("shutdown-timeout")) * time.Second,
			MaxCommandLength:        c.Int("max-command-length"),
			DefaultCmdTimeout:       time.Duration(c.Int64("command-timeout")) * time.Second,
			MaxCmdTimeout:           time.Duration(c.Int64("max-command-timeout")) * time.Second,
			OutputLimit:             c.Int64("output-limit"),
			MaxProcesses:            c.Int("max-processes"),
			ProcessOutputCap:        c.Int64("process-output-limit"),
			ProcessRetention:        c.Duration("process-retention"),
			ProcessRetainCount:      c.Int("process-retain-count"),
			ProcessRetainBytes:      c.Int64("process-retain-bytes"),
			MaxProcessTimeout:       time.Duration(c.Int64("max-process-timeout")) * time.Second,
			DefaultHeartbeatTimeout: time.Duration(c.Int64("default-heartbeat-timeout")) * time.Second,
			DefaultIdleTimeout:      time.Duration(c.Int64("default-idle-timeout")) * time.Second,
			MaxSandboxes:            c.Int("max-sandboxes"),
		},
		Storage:       storageConfigFrom(c),
		Registry:      registryConfigFrom(c),
		Pools:         []sandbox.PoolSpec{{Size: c.Int("warm-pool")}},
		ShimGroupSize: c.Int("shim-group-size"),
		UserNS:        UserNSConfig{Mode: strings.ToLower(c.String("userns")), Base: uint32(c.Uint64("userns-base"))},
	}
	cfg.OCIRuntime = c.String("oci-runtime")
	cfg.NoExecAgent = !c.Bool("exec-agent")
	cfg.KeepCgroupLocking = !c.Bool("cgroup-favordynmods")
	cfg.Pools[0].Image = cfg.Limits.DefaultImage
	for _, v := range c.StringSlice("warm-pool-image") {
		p, err := parsePoolFlag(v)
		if err != nil {
			return cfg, err
		}
		cfg.Pools = append(cfg.Pools, p)
	}
	nc, err := networkConfigFrom(c)
	if err != nil {
		return cfg, err
	}
	cfg.Network = nc
	if err := cfg.LogLevel.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return cfg, fmt.Errorf("log level %q: want debug, info, warn or error: %w", c.String("log-level"), errdefs.ErrInvalidArgument)
	}
	if cfg.InitPath == "" {
		cfg.InitPath = defaultHelperPath("matrx-init")
	}
	if cfg.RelayPath == "" {
		cfg.RelayPath = defaultHelperPath("matrx-relay")
	}
	return cfg, cfg.Validate()
}

// Validate checks every value before anything is started.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	switch {
	case !filepath.IsAbs(c.Socket):
		return bad("socket %q must be an absolute path", c.Socket)
	case !filepath.IsAbs(c.StateDir):
		return bad("state dir %q must be an absolute path", c.StateDir)
	case c.ContainerdAddress == "":
		return bad("containerd address is empty")
	case c.ContainerdNamespace == "" || strings.ContainsAny(c.ContainerdNamespace, "/ \t"):
		return bad("containerd namespace %q is invalid", c.ContainerdNamespace)
	case c.Store != "bolt" && c.Store != "persistent" && c.Store != "memory":
		return bad("store %q: want bolt (persistent) or memory", c.Store)
	case c.LogFormat != "json" && c.LogFormat != "text":
		return bad("log format %q: want json or text", c.LogFormat)
	case c.ExpiryInterval < 100*time.Millisecond:
		return bad("expiry interval %v is too short (min 100ms)", c.ExpiryInterval)
	case c.MaxUploadMB < 0 || c.MaxUploadMB > 1<<30:
		return bad("max upload %d MB must be positive", c.MaxUploadMB)
	case c.SandboxAPIPort < 0 || c.SandboxAPIPort > 65535:
		return bad("sandbox api port %d: want 1-65535, or 0 for off", c.SandboxAPIPort)
	case c.ReconcileInterval != 0 && c.ReconcileInterval < time.Second:
		return bad("reconcile interval %v is too short (min 1s)", c.ReconcileInterval)
	case c.RecordRetention < 0 || c.RecordRetention > 0 && c.RecordRetention < time.Hour:
		return bad("record retention %v: want 0 (keep forever) or at least 1h", c.RecordRetention)
	case c.LockDir != "" && !filepath.IsAbs(c.LockDir):
		return bad("lock dir %q must be an absolute path", c.LockDir)
	case c.TCPMaxConns < 0:
		return bad("tcp max connections %d must be at least 1", c.TCPMaxConns)
	case c.ShimGroupSize < 0 || c.ShimGroupSize > 64:
		return bad("shim group size %d: want 1 (a shim per sandbox) to 64", c.ShimGroupSize)
	}
	switch c.UserNS.Mode {
	case "", "auto", "on", "off":
	default:
		return fmt.Errorf("userns %q: want auto, on or off: %w", c.UserNS.Mode, errdefs.ErrInvalidArgument)
	}
	if c.OCIRuntime != "" {
		if err := runtime.CheckOCIRuntime(c.OCIRuntime); err != nil {
			return err
		}
	}
	if c.UserNS.Mode != "off" && c.UserNS.Mode != "" {
		if _, err := runtime.NewUserNS(c.UserNS.Base); err != nil {
			return err
		}
	}
	if err := c.Network.Validate(); err != nil {
		return err
	}
	if err := c.Storage.Validate(); err != nil {
		return err
	}
	if err := c.Registry.Validate(); err != nil {
		return err
	}
	if err := c.validateListeners(); err != nil {
		return err
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	return sandbox.ValidatePools(c.Pools)
}

// parsePoolFlag parses one --warm-pool-image value, IMAGE=N.
func parsePoolFlag(v string) (sandbox.PoolSpec, error) {
	i := strings.LastIndexByte(v, '=')
	if i <= 0 {
		return sandbox.PoolSpec{}, fmt.Errorf("--warm-pool-image %q: want IMAGE=N: %w", v, errdefs.ErrInvalidArgument)
	}
	n, err := strconv.Atoi(v[i+1:])
	if err != nil || n < 0 || n > sandbox.MaxPoolSize {
		return sandbox.PoolSpec{}, fmt.Errorf("--warm-pool-image %q: N must be a whole number in [0, %d]: %w", v, sandbox.MaxPoolSize, errdefs.ErrInvalidArgument)
	}
	return sandbox.PoolSpec{Image: v[:i], Size: n}, nil
}

func (c Config) reconcileInterval() time.Duration {
	if c.ReconcileInterval == 0 {
		return 30 * time.Second
	}
	return c.ReconcileInterval
}

func (c Config) lockDir() string {
	if c.LockDir == "" {
		return filepath.Join(c.StateDir, "locks")
	}
	return c.LockDir
}

func (c Config) tcpMaxConns() int {
	if c.TCPMaxConns == 0 {
		return api.DefaultTCPMaxConns
	}
	return c.TCPMaxConns
}

// socketGID resolves the socket group: a gid, a group name, or root's group
// when the named group does not exist (a dev machine without bootstrap).
func (c Config) socketGID() (int, bool, error) {
	if c.SocketGroup == "" {
		return 0, false, nil
	}
	if gid, err := strconv.Atoi(c.SocketGroup); err == nil {
		return gid, true, nil
	}
	g, err := user.LookupGroup(c.SocketGroup)
	if err != nil {
		return 0, false, nil
	}
	gid, _ := strconv.Atoi(g.Gid)
	return gid, true, nil
}

// maxUploadBytes is the file upload limit in bytes.
func (c Config) maxUploadBytes() int64 {
	if c.MaxUploadMB == 0 {
		return 1 << 30
	}
	return c.MaxUploadMB << 20
}

// defaultHelperPath finds one of matrxd's static helpers (matrx-init,
// matrx-relay): next to matrxd, else where bootstrap/install.sh puts it.
func defaultHelperPath(name string) string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/usr/local/lib/matrx/" + name
}

// validateListeners checks the optional metrics and TCP listeners. The API
// key file's content and mode are checked by api.LoadAPIKey when Run starts.
func (c Config) validateListeners() error {
	if c.MetricsAddress != "" {
		host, port, err := net.SplitHostPort(c.MetricsAddress)
		if err != nil || port == "" {
			return fmt.Errorf("metrics address %q: want HOST:PORT on loopback, e.g. 127.0.0.1:9464: %w", c.MetricsAddress, errdefs.ErrInvalidArgument)
		}
		if !isLoopback(host) {
			return fmt.Errorf("metrics address %q is not a loopback address: the metrics listener has no authentication, so it binds only 127.0.0.0/8, ::1 or localhost (scrape over the socket or through a proxy instead): %w",
				c.MetricsAddress, errdefs.ErrInvalidArgument)
		}
	}
	if c.SSHAddress != "" {
		host, port, err := net.SplitHostPort(c.SSHAddress)
		if err != nil || port == "" || host == "" {
			return fmt.Errorf("ssh address %q: want HOST:PORT, e.g. 127.0.0.1:2222 (or \"\" for off): %w", c.SSHAddress, errdefs.ErrInvalidArgument)
		}
		for _, other := range []string{c.TCPAddress, c.MetricsAddress, c.PreviewAddress} {
			if other == c.SSHAddress {
				return fmt.Errorf("ssh address %q is also another listener's: %w", c.SSHAddress, errdefs.ErrInvalidArgument)
			}
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() && c.SSHPublicHost == "" {
			return fmt.Errorf("ssh address %q listens on every address: set --ssh-public-host to the name clients should connect to: %w", c.SSHAddress, errdefs.ErrInvalidArgument)
		}
	}
	if strings.ContainsAny(c.SSHPublicHost, " \t\n@/") {
		return fmt.Errorf("ssh public host %q is not a host name or address: %w", c.SSHPublicHost, errdefs.ErrInvalidArgument)
	}
	if c.PreviewAddress != "" {
		host, port, err := net.SplitHostPort(c.PreviewAddress)
		if err != nil || port == "" || host == "" {
			return fmt.Errorf("preview address %q: want HOST:PORT, e.g. 127.0.0.1:8443: %w", c.PreviewAddress, errdefs.ErrInvalidArgument)
		}
		if c.PreviewAddress == c.TCPAddress || c.PreviewAddress == c.MetricsAddress {
			return fmt.Errorf("preview address %q is also another listener's: %w", c.PreviewAddress, errdefs.ErrInvalidArgument)
		}
		if err := api.ValidPreviewDomain(c.previewDomain()); err != nil {
			return err
		}
	}
	if c.TCPAddress == "" {
		return nil
	}
	if c.APIKeyFile == "" {
		return fmt.Errorf("tcp address %q is set but no api key file is: every TCP request must carry an X-API-Key (set --api-key-file / MATRX_API_KEY_FILE to a mode 0600 file holding the key): %w",
			c.TCPAddress, errdefs.ErrInvalidArgument)
	}
	host, port, err := net.SplitHostPort(c.TCPAddress)
	switch {
	case err != nil || port == "":
		return fmt.Errorf("tcp address %q: want HOST:PORT, e.g. 127.0.0.1:8000: %w", c.TCPAddress, errdefs.ErrInvalidArgument)
	case host == "":
		return fmt.Errorf("tcp address %q has no host: name the interface to bind (127.0.0.1 for loopback only, 0.0.0.0 for every interface): %w", c.TCPAddress, errdefs.ErrInvalidArgument)
	case c.TCPAddress == c.MetricsAddress:
		return fmt.Errorf("tcp address and metrics address are both %q: %w", c.TCPAddress, errdefs.ErrInvalidArgument)
	}
	return nil
}

// previewDomain is the preview domain, "localhost" when unset.
func (c Config) previewDomain() string {
	if c.PreviewDomain == "" {
		return "localhost"
	}
	return c.PreviewDomain
}

// isLoopback reports whether host is "localhost" or a loopback IP literal.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
