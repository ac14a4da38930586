// Package apitype holds the wire format of matrxd's HTTP API: the JSON
// bodies of requests and responses, the error body, and the header names.
// It is what a program needs to speak the API, and nothing else: it imports
// only the standard library, so api/client (and any program built on it)
// never links the daemon (containerd, bbolt, the AWS SDK, CNI). The server
// (package api) converts between these types and the lifecycle's own at its
// edge. A deps test in archtest keeps it so.
//
// The JSON shapes are the compatibility contract of the original service
// (api/openapi.yaml is the published document); fields are only ever added.
package apitype

import "time"

// DefaultSocket is where matrxd serves its API unless told otherwise.
const DefaultSocket = "/run/matrx/matrxd.sock"

// Header names.
const (
	// APIKeyHeader carries the API key on the optional TCP listener.
	APIKeyHeader = "X-API-Key"
	// RequestIDHeader carries a caller-chosen request id (echoed back, or
	// made up by the server when absent or malformed).
	RequestIDHeader = "X-Request-ID"
	// IdempotencyKeyHeader on POST /sandboxes makes a retried create (same
	// key, within 24 h) return the sandbox the first one made.
	IdempotencyKeyHeader = "Idempotency-Key"
	// PreviewTokenHeader carries a sandbox's preview token on the preview
	// listener (POST /sandboxes/{id}/preview hands it out).
	PreviewTokenHeader = "X-Matrx-Preview-Token"
)

// ErrorResponse is every error body.
type ErrorResponse struct {
	Detail string `json:"detail"`
}

// Health answers GET /health. Status is "healthy", or "degraded" with
// Reasons naming why (containerd_unavailable, s3_unreachable) and Detail
// saying what was seen. A degraded daemon still answers get and list from
// its registry; creates (and, without containerd, execs) answer 503.
type Health struct {
	Status           string   `json:"status"`
	ActiveSandboxes  int      `json:"active_sandboxes"`
	PooledSandboxes  int      `json:"pooled_sandboxes,omitempty"`
	UptimeSeconds    float64  `json:"uptime_seconds"`
	Version          string   `json:"version,omitempty"`
	ContainerdStatus string   `json:"containerd,omitempty"`
	Reasons          []string `json:"reasons,omitempty"`
	Detail           string   `json:"detail,omitempty"`
}

// SandboxConfig is the create request's config object and the config echoed
// back on a sandbox. On create, zero values take the daemon's defaults.
type SandboxConfig struct {
	Image      string            `json:"image,omitempty"`
	CPU        float64           `json:"cpu,omitempty"`
	MemoryMB   int64             `json:"memory_mb,omitempty"`
	Pids       int64             `json:"pids,omitempty"`
	DiskMB     int64             `json:"disk_mb,omitempty"`
	TTLSeconds int64             `json:"ttl_seconds,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Network    *NetworkConfig    `json:"network,omitempty"`
	// PublicPorts are served by the preview listener without a token.
	PublicPorts []int `json:"public_ports,omitempty"`
	// HeartbeatTimeoutSeconds: no heartbeat for that long stops the
	// sandbox as failed (heartbeat_lost). IdleTimeoutSeconds: no activity
	// (API call about it, heartbeat, process output, attach, SSH, proxied
	// request) for that long stops it (idle). 0: the daemon's default.
	HeartbeatTimeoutSeconds int64 `json:"heartbeat_timeout_seconds,omitempty"`
	IdleTimeoutSeconds      int64 `json:"idle_timeout_seconds,omitempty"`
	// Pull is when the image is pulled from its registry: if_not_present
	// (default), always, or never (it must have been pulled or imported).
	Pull string `json:"pull,omitempty"`
}

// NetworkConfig is a sandbox's egress policy: mode "default" (the internet,
// minus cloud metadata, the host, other sandboxes and private ranges) or
// "none" (loopback only). A non-empty allow list of CIDRs switches to
// deny-by-default.
type NetworkConfig struct {
	Mode  string   `json:"mode,omitempty"`
	Allow []string `json:"allow,omitempty"`
}

// CreateSandboxRequest is the body of POST /sandboxes.
type CreateSandboxRequest struct {
	UserID string         `json:"user_id"`
	Config *SandboxConfig `json:"config"`
}

// Sandbox is one sandbox as the API shows it.
type Sandbox struct {
	SandboxID       string        `json:"sandbox_id"`
	UserID          string        `json:"user_id"`
	Status          string        `json:"status"`
	ContainerID     string        `json:"container_id"`
	CreatedAt       time.Time     `json:"created_at"`
	HotPath         string        `json:"hot_path"`
	ColdPath        string        `json:"cold_path"`
	Config          SandboxConfig `json:"config"`
	SSHPort         *int          `json:"ssh_port"`
	TTLSeconds      int64         `json:"ttl_seconds"`
	Image           string        `json:"image"`
	ExpiresAt       time.Time     `json:"expires_at"`
	LastHeartbeatAt *time.Time    `json:"last_heartbeat_at"`
	StoppedAt       *time.Time    `json:"stopped_at"`
	StopReason      *string       `json:"stop_reason"`
	Error           string        `json:"error,omitempty"`
	// Hot storage: when the hot files last reached the bucket, and whether
	// some are still waiting on the host after a failed sync.
	HotSyncedAt    *time.Time `json:"hot_synced_at"`
	HotSyncError   string     `json:"hot_sync_error,omitempty"`
	HotSyncPending bool       `json:"hot_sync_pending"`
	// HotSyncOverLimit: the home holds more files, directories and
	// symlinks than the daemon syncs; what is and is not synced.
	HotSyncOverLimit string `json:"hot_sync_over_limit,omitempty"`
	// HotSyncRejectedCount entries of the home cannot be stored (FIFOs,
	// sockets, devices, keys over 1024 bytes); HotSyncRejected lists the
	// first ones as "PATH: REASON".
	HotSyncRejectedCount int      `json:"hot_sync_rejected_count,omitempty"`
	HotSyncRejected      []string `json:"hot_sync_rejected,omitempty"`
	// IPAddress is the sandbox's address on its host's bridge; absent
	// without networking.
	IPAddress string `json:"ip_address,omitempty"`
	// ImageDigest is the digest of the image the sandbox started from.
	ImageDigest string `json:"image_digest,omitempty"`
	// Supervision: PID 1's exit status once it exited or was killed, the
	// OOM kills seen inside, the last activity, and when idleness stops
	// the sandbox (null without an idle timeout).
	ExitCode       *int       `json:"exit_code"`
	OOMKills       int        `json:"oom_kills"`
	LastActivityAt *time.Time `json:"last_activity_at"`
	IdleExpiresAt  *time.Time `json:"idle_expires_at"`
}

// UpdateSandboxRequest is the body of PATCH /sandboxes/{id}: TTLSeconds
// makes the sandbox expire that many seconds from now (its ttl_seconds
// becomes expires_at − created_at, at most the daemon's maximum).
type UpdateSandboxRequest struct {
	TTLSeconds *int64 `json:"ttl_seconds"`
}

// Event is one line of GET /events (application/x-ndjson).
type Event struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Type      string    `json:"type"`
	SandboxID string    `json:"sandbox_id,omitempty"`
	UserID    string    `json:"user_id,omitempty"`
	Status    string    `json:"status,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	Repair    string    `json:"repair,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}

// QuarantinedRecord is a registry record that failed to decode, kept for
// an operator: Raw holds its bytes, base64-encoded.
type QuarantinedRecord struct {
	SandboxID     string    `json:"sandbox_id"`
	Raw           string    `json:"raw_b64"`
	Error         string    `json:"error"`
	QuarantinedAt time.Time `json:"quarantined_at"`
}

// QuarantineList answers GET /admin/quarantine.
type QuarantineList struct {
	Records []QuarantinedRecord `json:"records"`
}

// SandboxList answers GET /sandboxes, newest first. Total counts every
// match; with ?limit= the list is one page and NextCursor, when not empty,
// is the ?cursor= of the next one.
type SandboxList struct {
	Sandboxes  []Sandbox `json:"sandboxes"`
	Total      int       `json:"total"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// ExecRequest is the body of POST /sandboxes/{id}/exec. Timeout is in
// seconds; Cwd null means "where the last exec ended".
type ExecRequest struct {
	Command string            `json:"command"`
	Timeout *int              `json:"timeout,omitempty"`
	User    string            `json:"user,omitempty"`
	Cwd     *string           `json:"cwd,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
}

// ExecResponse answers an exec. stdout and stderr are strings as in the
// original API; bytes that are not valid UTF-8 are carried in
// stdout_b64/stderr_b64 as well, so binary output survives byte-exact.
type ExecResponse struct {
	ExitCode        int    `json:"exit_code"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutBase64    string `json:"stdout_b64,omitempty"`
	StderrBase64    string `json:"stderr_b64,omitempty"`
	Cwd             string `json:"cwd"`
	TimedOut        bool   `json:"timed_out"`
	Truncated       bool   `json:"truncated"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	DurationMS      int64  `json:"duration_ms"`
}

// HeartbeatResponse answers POST /sandboxes/{id}/heartbeat.
type HeartbeatResponse struct {
	Acknowledged bool   `json:"acknowledged"`
	SandboxID    string `json:"sandbox_id"`
}

// CompleteRequest is the body of POST /sandboxes/{id}/complete.
type CompleteRequest struct {
	Result map[string]any `json:"result"`
}

// ErrorSignalRequest is the body of POST /sandboxes/{id}/error.
type ErrorSignalRequest struct {
	Error   string         `json:"error"`
	Details map[string]any `json:"details"`
}

// SignalResponse answers complete and error signals.
type SignalResponse struct {
	Status        string `json:"status"`
	SandboxID     string `json:"sandbox_id"`
	ErrorReceived bool   `json:"error_received,omitempty"`
}

// PreviewRequest is the body of POST /sandboxes/{id}/preview.
type PreviewRequest struct {
	Port       int    `json:"port"`
	TTLSeconds *int64 `json:"ttl_seconds,omitempty"`
}

// Preview answers POST /sandboxes/{id}/preview: where the preview listener
// serves a sandbox's port, and the two ways in (the sandbox's token in
// TokenHeader, or SignedURL until ExpiresAt). Public ports need neither.
type Preview struct {
	SandboxID   string    `json:"sandbox_id"`
	Port        int       `json:"port"`
	Host        string    `json:"host"`
	URL         string    `json:"url"`
	SignedURL   string    `json:"signed_url"`
	ExpiresAt   time.Time `json:"expires_at"`
	Token       string    `json:"token"`
	TokenHeader string    `json:"token_header"`
	Public      bool      `json:"public"`
}

// Image is one image in the daemon's namespace.
type Image struct {
	Name      string    `json:"name"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// ImageList answers GET /images.
type ImageList struct {
	Images []Image `json:"images"`
}

// ImportResponse answers POST /images/import.
type ImportResponse struct {
	Images []string `json:"images"`
}

// PullRequest is the body of POST /images/pull.
type PullRequest struct {
	// Ref is the image reference, e.g. registry.example:5000/team/app:1.4.
	Ref string `json:"ref"`
	// Auth, when set, is used for this pull instead of the daemon's
	// credentials for the registry. It is never stored or logged.
	Auth *RegistryAuth `json:"auth,omitempty"`
	// Platform is os/arch[/variant]; default: the daemon's.
	Platform string `json:"platform,omitempty"`
}

// RegistryAuth is a registry login. An empty Username with a Password is
// an identity token.
type RegistryAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Types of PullEvent.
const (
	PullEventProgress = "progress"
	PullEventDone     = "done"
	PullEventError    = "error"
)

// Reasons of a PullEvent of type error.
const (
	PullReasonUnauthorized = "unauthorized" // the registry refused the credentials, or wants some
	PullReasonNotFound     = "not_found"    // no such repository or tag
	PullReasonUnreachable  = "unreachable"  // no answer, TLS failure, plain HTTP without --insecure-registry
	PullReasonPlatform     = "platform"     // no manifest for the platform
	PullReasonFailed       = "failed"       // anything else
)

// PullEvent is one line of POST /images/pull's application/x-ndjson
// answer: progress events (layer, done, total bytes), then one done event
// (image, digest) or one error event (detail, reason).
type PullEvent struct {
	Type   string `json:"type"`
	Layer  string `json:"layer,omitempty"`
	Done   *int64 `json:"done,omitempty"`
	Total  *int64 `json:"total,omitempty"`
	Image  string `json:"image,omitempty"`
	Digest string `json:"digest,omitempty"`
	Detail string `json:"detail,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// ImageDeleteResponse answers DELETE /images/{name}.
type ImageDeleteResponse struct {
	Deleted []string `json:"deleted"`
}

// KeptImage is an image prune left, and why.
type KeptImage struct {
	Image  string `json:"image"`
	Reason string `json:"reason"`
}

// ImagePruneResponse answers POST /images/prune.
type ImagePruneResponse struct {
	Deleted []string    `json:"deleted"`
	Kept    []KeptImage `json:"kept"`
}

// Version answers GET /version.
type Version struct {
	Version    string `json:"version"`
	Containerd string `json:"containerd"`
	// SSHHostKey is the SSH gateway's host key fingerprint (SHA256:...),
	// absent when the gateway is off.
	SSHHostKey string `json:"ssh_host_key,omitempty"`
}

// AccessRequest is the optional body of POST /sandboxes/{id}/access.
type AccessRequest struct {
	User       string `json:"user,omitempty"`
	TTLSeconds *int64 `json:"ttl_seconds,omitempty"`
	// PublicKey, an authorized_keys line, is the caller's own key: the
	// answer then carries no private key.
	PublicKey string `json:"public_key,omitempty"`
}

// Access answers POST /sandboxes/{id}/access: the original service's
// fields (private_key, username, host, port, ssh_command), the gateway's
// known_hosts line and a command that checks it, and what the grant is.
type Access struct {
	PrivateKey       string    `json:"private_key,omitempty"`
	Username         string    `json:"username"`
	Host             string    `json:"host"`
	Port             int       `json:"port"`
	SSHCommand       string    `json:"ssh_command"`
	KnownHosts       string    `json:"known_hosts"`
	SSHCommandStrict string    `json:"ssh_command_strict"`
	Fingerprint      string    `json:"fingerprint"`
	HostKey          string    `json:"host_key_fingerprint"`
	ExpiresAt        time.Time `json:"expires_at"`
	SandboxID        string    `json:"sandbox_id"`
}

// AccessRevoked answers DELETE /sandboxes/{id}/access.
type AccessRevoked struct {
	SandboxID string `json:"sandbox_id"`
	Revoked   int    `json:"revoked"`
}

// TierUsage is the size of one storage tier.
type TierUsage struct {
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

// StorageStats answers GET /users/{user_id}/storage.
type StorageStats struct {
	UserID string    `json:"user_id"`
	Hot    TierUsage `json:"hot"`
	Cold   TierUsage `json:"cold"`
}

// StorageRestoreRequest is the body of POST /users/{user_id}/storage/restore:
// the hot file or directory (relative to the home) to bring back from the
// trash, as it was at At (RFC 3339), or its last trashed version.
type StorageRestoreRequest struct {
	Path string     `json:"path"`
	At   *time.Time `json:"at,omitempty"`
}

// StorageRestoreResponse answers a restore: the paths brought back.
type StorageRestoreResponse struct {
	UserID   string   `json:"user_id"`
	Path     string   `json:"path"`
	Restored []string `json:"restored"`
}

// StorageCleanResponse answers DELETE /users/{user_id}/storage/{tier}.
type StorageCleanResponse struct {
	UserID  string `json:"user_id"`
	Tier    string `json:"tier"`
	Deleted int64  `json:"deleted"`
}

// Capacity answers GET /capacity: what this host offers sandboxes, and how
// much of it the live sandboxes (every status but stopped, failed and
// expired) hold. A cluster node's capacity and allocatable come from it
// (docs/fleet.md).
type Capacity struct {
	// Slots: Total is matrxd's --max-sandboxes (0: no limit), Allocated
	// the live sandboxes.
	Slots Allocation `json:"slots"`
	// CPU: Total is the host's CPUs, Allocated the sum of the live
	// sandboxes' CPU limits.
	CPU CPUAllocation `json:"cpu"`
	// MemoryMB: Total is the host's memory, Allocated the sum of the live
	// sandboxes' memory limits.
	MemoryMB Allocation `json:"memory_mb"`
	// NetworkSubnet is the sandbox bridge's IPv4 subnet; empty when
	// sandboxes have no network.
	NetworkSubnet string `json:"network_subnet"`
}

// Allocation is a whole-number resource: how much there is and how much
// is held.
type Allocation struct {
	Total     int64 `json:"total"`
	Allocated int64 `json:"allocated"`
}

// CPUAllocation is CPUs: how many there are and how many are held.
type CPUAllocation struct {
	Total     float64 `json:"total"`
	Allocated float64 `json:"allocated"`
}
