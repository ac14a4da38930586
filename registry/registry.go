// Package registry owns the durable record of every sandbox: its id, owner,
// status, configuration and stop history. It stores and retrieves records and
// enforces nothing about lifecycle transitions; deciding what a status change
// means is the sandbox package's job.
//
// Two implementations share one contract, checked by registrytest.Run:
//   - Bolt: a bbolt file under the daemon's state dir (production default);
//   - Memory: a map, for development (MATRX_SANDBOX_STORE=memory).
//
// Records are never deleted by the lifecycle: a destroyed sandbox stays as
// "stopped" with StoppedAt and StopReason, for audit.
//
// Bucket layout of the bbolt file, schema version 3 (see bolt.go for the
// ordered migrations that produce it):
//
//	meta/                    bucket
//	  schema_version -> "3"  decimal; absent in a brand-new file
//	sandboxes/               bucket
//	  <sandbox id>  -> JSON-encoded Record
//	idempotency/             bucket (version 2)
//	  <idempotency key> -> <sandbox id>   the create that used the key
//	live/                    bucket (version 3): records not in a terminal status
//	  <sandbox id>  -> <status>
//	stopped/                 bucket (version 3): terminal records, oldest stop first
//	  <stopped_at, 8-byte big-endian Unix ns><sandbox id> -> <status>["|pending"]
//	quarantine/              bucket (version 3): records that failed to decode
//	  <sandbox id>  -> JSON {raw, error, quarantined_at}
//	users/                   bucket (version 3): every user with a record
//	  <user id>     -> (empty)
//
// live/ and stopped/ are indexes, written in the same transaction as the
// record they describe: every periodic loop of the daemon (supervision,
// checkpoints, TTLs, health, metrics) reads live/ and decodes only those
// records, pruning (--record-retention) walks stopped/ in time order, and
// the hourly trash pruning reads users/, so none grows with the number of
// records ever written. A record that
// cannot be decoded is moved to quarantine/ (bytes kept for an operator)
// the first time anything reads it, instead of failing List and with it
// the daemon's startup.
//
// Fields added to Record after version 1 are optional in JSON, so they need
// no migration; a change of meaning or key layout does.
package registry

import (
	"context"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
)

// Status is a sandbox's lifecycle state, spelled as the original API spells it.
type Status string

// The statuses of ORIGINAL.md, in lifecycle order.
const (
	StatusCreating     Status = "creating"
	StatusStarting     Status = "starting"
	StatusReady        Status = "ready"
	StatusRunning      Status = "running"
	StatusShuttingDown Status = "shutting_down"
	StatusStopped      Status = "stopped"
	StatusFailed       Status = "failed"
	StatusExpired      Status = "expired"
	// StatusPooled is a warm-pool sandbox (package sandbox, pool.go): made
	// ahead of any request, owned by no user, hidden from the sandbox list
	// and the live count. A claim moves it to creating with its user.
	StatusPooled Status = "pooled"
)

// Statuses lists every status, in lifecycle order.
func Statuses() []Status {
	return []Status{StatusPooled, StatusCreating, StatusStarting, StatusReady, StatusRunning, StatusShuttingDown, StatusStopped, StatusFailed, StatusExpired}
}

// LiveStatuses are the statuses of sandboxes a user has: not terminal and
// not pooled (a pooled sandbox is not terminal either: its container
// exists, see Terminal).
func LiveStatuses() []Status {
	return []Status{StatusCreating, StatusStarting, StatusReady, StatusRunning, StatusShuttingDown}
}

// Terminal reports whether no container should exist for a sandbox in s.
func (s Status) Terminal() bool {
	return s == StatusStopped || s == StatusFailed || s == StatusExpired
}

// AcceptsExec reports whether a sandbox in s accepts exec (and heartbeats,
// checkpoints): it is ready or running. Compare Terminal: a sandbox that is
// being created or stopped neither accepts exec nor is terminal.
func (s Status) AcceptsExec() bool {
	return s == StatusReady || s == StatusRunning
}

// Config is the validated, resolved configuration a sandbox was created with.
type Config struct {
	Image      string            `json:"image"`
	CPU        float64           `json:"cpu"`
	MemoryMB   int64             `json:"memory_mb"`
	Pids       int64             `json:"pids"`
	DiskMB     int64             `json:"disk_mb,omitempty"` // 0: no disk quota
	TTLSeconds int64             `json:"ttl_seconds"`
	Env        map[string]string `json:"env,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Network    NetworkConfig     `json:"network"`
	// PublicPorts are served by the preview listener without a token.
	PublicPorts []int `json:"public_ports,omitempty"`
	// HeartbeatTimeoutSeconds > 0 stops the sandbox (failed,
	// heartbeat_lost) when no heartbeat came for that long.
	HeartbeatTimeoutSeconds int64 `json:"heartbeat_timeout_seconds,omitempty"`
	// IdleTimeoutSeconds > 0 stops the sandbox (stopped, idle) when
	// nothing touched it for that long (see sandbox.Manager.Touch).
	IdleTimeoutSeconds int64 `json:"idle_timeout_seconds,omitempty"`
	// Pull is the image pull policy the sandbox was created with
	// (if_not_present, always, never).
	Pull string `json:"pull,omitempty"`
}

// NetworkConfig is a sandbox's egress policy: mode "default" (internet,
// minus the always-blocked ranges) or "none" (loopback only); a non-empty
// Allow (CIDRs) switches to deny-by-default.
type NetworkConfig struct {
	Mode  string   `json:"mode"`
	Allow []string `json:"allow,omitempty"`
}

// Record is one sandbox as the registry stores it.
type Record struct {
	ID              string     `json:"sandbox_id"`
	UserID          ids.UserID `json:"user_id"`
	Status          Status     `json:"status"`
	ContainerID     string     `json:"container_id"`
	Config          Config     `json:"config"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	ExpiresAt       time.Time  `json:"expires_at"`
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at,omitempty"`
	StoppedAt       *time.Time `json:"stopped_at,omitempty"`
	StopReason      string     `json:"stop_reason,omitempty"`
	// Error holds the last failure that moved the sandbox to failed, or a
	// storage problem (for example a final hot sync that did not complete).
	Error string `json:"error,omitempty"`
	// Hot storage sync state. HotSyncPending means the sandbox's hot files
	// are on the host but not (all) in the bucket yet: the last sync failed
	// and the daemon retries it. Fields added after schema version 1 are
	// optional in JSON, so no migration is needed for them.
	HotSyncedAt    *time.Time `json:"hot_synced_at,omitempty"`
	HotSyncError   string     `json:"hot_sync_error,omitempty"`
	HotSyncPending bool       `json:"hot_sync_pending,omitempty"`
	// IPAddress is the sandbox's address on the host's bridge (empty
	// without networking), recorded once it is ready.
	IPAddress string `json:"ip_address,omitempty"`
	// IdempotencyKey is the client's Idempotency-Key of the create that
	// made this sandbox. Within IdempotencyWindow of CreatedAt, Create
	// refuses a second record with the same key (IdempotencyConflict).
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// FromPool is set on a sandbox a create claimed from the warm pool:
	// its cold storage is bound through its slot (package cold).
	FromPool bool `json:"from_pool,omitempty"`
	// ColdSlot is set on a sandbox whose cold storage is bound through
	// its slot although it was not pooled: a create binds the empty slot
	// in its container and mounts the user's cold storage into it beside
	// the container's start, instead of before it (package cold, "Slots").
	ColdSlot bool `json:"cold_slot,omitempty"`
	// HotSyncOverLimit says, when the sandbox's home holds more names than
	// the daemon's cap, how many and what is synced (the rest stays on
	// the host, no deletions propagate).
	HotSyncOverLimit string `json:"hot_sync_over_limit,omitempty"`
	// HotSyncRejectedCount entries of the home could not be stored (FIFOs,
	// sockets, devices, keys over 1024 bytes); HotSyncRejected names the
	// first of them with the reason ("PATH: REASON").
	HotSyncRejectedCount int      `json:"hot_sync_rejected_count,omitempty"`
	HotSyncRejected      []string `json:"hot_sync_rejected,omitempty"`
	// AccessKeys are the public keys that open the sandbox over the SSH
	// gateway (never a private key), each for one user until its expiry.
	AccessKeys []AccessKey `json:"access_keys,omitempty"`
	// ReadyAt is when the sandbox first became ready.
	ReadyAt *time.Time `json:"ready_at,omitempty"`
	// LastActivityAt is the last activity the daemon saved (API calls
	// about the sandbox, heartbeats, process output, attach, SSH,
	// proxied requests); the manager keeps a fresher value in memory.
	LastActivityAt *time.Time `json:"last_activity_at,omitempty"`
	// ExitCode is PID 1's exit status, for a sandbox whose init exited
	// or was killed (stop reasons exited, oom_killed, runtime_lost).
	ExitCode *int `json:"exit_code,omitempty"`
	// OOMKills counts the kernel OOM kills inside the sandbox.
	OOMKills int `json:"oom_kills,omitempty"`
	// ImageDigest is the digest of the image the sandbox started from
	// (Config.Image names it; a tag can move later).
	ImageDigest string `json:"image_digest,omitempty"`
}

// AccessKey is one public key that opens a sandbox over SSH.
type AccessKey struct {
	// Fingerprint is the key's SHA256 fingerprint (as ssh-keygen -l).
	Fingerprint string `json:"fingerprint"`
	// PublicKey is the key in authorized_keys form.
	PublicKey string    `json:"public_key"`
	User      string    `json:"user"` // agent or root
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// MaxRejectedListed bounds Record.HotSyncRejected.
const MaxRejectedListed = 20

// IdempotencyWindow is how long an Idempotency-Key names the sandbox its
// create made; after it the key may be used again.
const IdempotencyWindow = 24 * time.Hour

// IdempotencyConflict is returned by Create (wrapping
// errdefs.ErrAlreadyExists) when another record made within
// IdempotencyWindow carries the same IdempotencyKey.
type IdempotencyConflict struct {
	Key       string
	SandboxID string
}

func (e *IdempotencyConflict) Error() string {
	return "idempotency key already used by sandbox " + e.SandboxID
}

// Unwrap makes the conflict an errdefs.ErrAlreadyExists.
func (e *IdempotencyConflict) Unwrap() error { return errdefs.ErrAlreadyExists }

// Clone returns a deep copy, so callers never share maps or pointers with the
// store.
func (r *Record) Clone() *Record {
	c := *r
	c.Config.Env = cloneMap(r.Config.Env)
	c.Config.Labels = cloneMap(r.Config.Labels)
	c.Config.Network.Allow = append([]string(nil), r.Config.Network.Allow...)
	c.HotSyncRejected = append([]string(nil), r.HotSyncRejected...)
	c.Config.PublicPorts = append([]int(nil), r.Config.PublicPorts...)
	c.AccessKeys = append([]AccessKey(nil), r.AccessKeys...)
	if r.LastHeartbeatAt != nil {
		t := *r.LastHeartbeatAt
		c.LastHeartbeatAt = &t
	}
	if r.StoppedAt != nil {
		t := *r.StoppedAt
		c.StoppedAt = &t
	}
	c.HotSyncedAt = cloneTime(r.HotSyncedAt)
	c.ReadyAt = cloneTime(r.ReadyAt)
	c.LastActivityAt = cloneTime(r.LastActivityAt)
	if r.ExitCode != nil {
		n := *r.ExitCode
		c.ExitCode = &n
	}
	return &c
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Filter selects records in List. Zero fields match everything.
type Filter struct {
	UserID ids.UserID
	// Statuses, when non-empty, keeps only records in one of these statuses.
	Statuses []Status
}

func (f Filter) match(r *Record) bool {
	if f.UserID != "" && r.UserID != f.UserID {
		return false
	}
	return f.matchStatus(r.Status)
}

func (f Filter) matchStatus(s Status) bool {
	if len(f.Statuses) == 0 {
		return true
	}
	for _, want := range f.Statuses {
		if s == want {
			return true
		}
	}
	return false
}

// Store is the contract both implementations satisfy. Errors wrap
// errdefs.ErrNotFound (unknown id) and errdefs.ErrAlreadyExists (duplicate id).
type Store interface {
	// Create inserts a new record. A record with an IdempotencyKey that
	// another record made within IdempotencyWindow holds is refused with
	// *IdempotencyConflict, atomically with the insert.
	Create(ctx context.Context, r *Record) error
	// Get returns a copy of the record with this id.
	Get(ctx context.Context, id string) (*Record, error)
	// Update applies fn to the stored record atomically and saves the result.
	// If fn returns an error nothing is saved and the error is returned.
	Update(ctx context.Context, id string, fn func(*Record) error) (*Record, error)
	// List returns copies of matching records, oldest first. Records
	// that cannot be decoded are quarantined and skipped. A filter on
	// live statuses only reads the live index.
	List(ctx context.Context, f Filter) ([]*Record, error)
	// Counts counts records by status, and the terminal ones whose hot
	// files are still pending, from the indexes (no record is decoded).
	Counts(ctx context.Context) (Counts, error)
	// Prune deletes terminal records that stopped before the given time
	// (and their idempotency keys), returning how many went. Records whose
	// hot files are still pending (HotSyncPending) are kept.
	Prune(ctx context.Context, stoppedBefore time.Time) (int, error)
	// Users lists every user that has (or had) a record, sorted, from an
	// index (no record is decoded).
	Users(ctx context.Context) ([]ids.UserID, error)
	// Quarantined lists the records that failed to decode, as moved
	// aside by List, Get or Update.
	Quarantined(ctx context.Context) ([]Quarantined, error)
	// Close releases the store.
	Close() error
}

// Counts is what Store.Counts returns.
type Counts struct {
	ByStatus map[Status]int
	// TerminalPending counts terminal records whose hot files are still
	// only on the host (HotSyncPending).
	TerminalPending int
}

// Quarantined is a record that failed to decode, kept byte for byte.
type Quarantined struct {
	ID            string    `json:"id"`
	Raw           []byte    `json:"raw"`
	Error         string    `json:"error"`
	QuarantinedAt time.Time `json:"quarantined_at"`
}
