package sandbox

// SSH access: the public keys that open a sandbox over matrxd's SSH
// gateway. A grant names one sandbox and one user (agent or root) and
// expires; only the public key is kept (in the sandbox's record), and a
// private key made for a caller is handed out once and forgotten. A key
// opens exactly one sandbox: the same public key cannot be granted to two
// live sandboxes (a login names no sandbox, the key does). It stops
// working at its expiry, when the sandbox stops, or when revoked, and so
// do the sessions it opened (the gateway re-checks every few seconds): an
// SSH session never outlives the grant that let it in.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/crypto/ssh"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/registry"
)

// Bounds of SSH grants.
const (
	DefaultAccessTTL = time.Hour
	MaxAccessTTL     = 24 * time.Hour
	// MaxAccessKeys bounds the unexpired keys of one sandbox.
	MaxAccessKeys = 16
	// maxPublicKey bounds a caller's public key (an authorized_keys line).
	maxPublicKey = 16 << 10
)

// AccessRequest asks for a key that opens a sandbox as User.
type AccessRequest struct {
	User string        // "", "agent" or "root"
	TTL  time.Duration // 0: DefaultAccessTTL
	// PublicKey, in authorized_keys form, is the caller's own key; without
	// one a key pair is made and its private half returned once.
	PublicKey string
}

// AccessGrant is what GrantAccess made.
type AccessGrant struct {
	SandboxID   string
	User        string
	Fingerprint string
	ExpiresAt   time.Time
	// PrivateKey is the OpenSSH PEM of a key made for the caller; empty
	// when the caller brought its own public key.
	PrivateKey string
}

// GrantAccess records a public key that opens a running sandbox as a user.
func (m *Manager) GrantAccess(ctx context.Context, id string, req AccessRequest) (*AccessGrant, error) {
	if !ids.ValidSandboxID(id) {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	user, err := execUser(req.User)
	if err != nil {
		return nil, err
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultAccessTTL
	}
	if ttl < time.Second || ttl > MaxAccessTTL {
		return nil, invalid("ttl_seconds %d is out of range [1, %d]", int64(ttl/time.Second), int64(MaxAccessTTL/time.Second))
	}
	grant := &AccessGrant{SandboxID: id, User: string(user)}
	var pub ssh.PublicKey
	if req.PublicKey != "" {
		if pub, err = parsePublicKey(req.PublicKey); err != nil {
			return nil, err
		}
	} else {
		pk, sk, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		block, err := ssh.MarshalPrivateKey(sk, "matrx "+id+" "+string(user))
		if err != nil {
			return nil, fmt.Errorf("encode key: %w", err)
		}
		grant.PrivateKey = string(pem.EncodeToMemory(block))
		if pub, err = ssh.NewPublicKey(pk); err != nil {
			return nil, fmt.Errorf("encode key: %w", err)
		}
	}
	grant.Fingerprint = ssh.FingerprintSHA256(pub)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	// One key, one sandbox: a login finds its sandbox by its key.
	if other, err := m.sandboxOfKey(ctx, grant.Fingerprint, id); err != nil {
		return nil, err
	} else if other != "" {
		return nil, fmt.Errorf("public key %s already opens sandbox %s; use a key per sandbox: %w", grant.Fingerprint, other, errdefs.ErrAlreadyExists)
	}
	now := m.now().UTC()
	grant.ExpiresAt = now.Add(ttl).Truncate(time.Second)
	rec, err := m.store.Update(ctx, id, func(r *registry.Record) error {
		if r.UserID == "" {
			return errPooled(id)
		}
		if !r.Status.AcceptsExec() {
			return fmt.Errorf("sandbox %s is %s, not running: %w", id, r.Status, errdefs.ErrFailedPrecondition)
		}
		r.AccessKeys = slices.DeleteFunc(r.AccessKeys, func(k registry.AccessKey) bool {
			return !now.Before(k.ExpiresAt) || k.Fingerprint == grant.Fingerprint
		})
		if len(r.AccessKeys) >= MaxAccessKeys {
			return fmt.Errorf("sandbox %s already has %d unexpired SSH keys, the most allowed; revoke them (DELETE /sandboxes/%s/access) or wait: %w", id, len(r.AccessKeys), id, errdefs.ErrResourceExhausted)
		}
		r.AccessKeys = append(r.AccessKeys, registry.AccessKey{
			Fingerprint: grant.Fingerprint, PublicKey: line, User: grant.User, CreatedAt: now, ExpiresAt: grant.ExpiresAt,
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.log.Info("ssh access granted", "sandbox_id", id, "user_id", rec.UserID, "fingerprint", grant.Fingerprint,
		"ssh_user", grant.User, "expires_at", grant.ExpiresAt, "key_made_here", grant.PrivateKey != "")
	return grant, nil
}

// parsePublicKey reads a caller's public key: one authorized_keys line of
// a type the gateway accepts (Ed25519, ECDSA, RSA of 2048 bits or more,
// and their security-key forms).
func parsePublicKey(s string) (ssh.PublicKey, error) {
	if len(s) > maxPublicKey {
		return nil, invalid("public_key is %d bytes, at most %d allowed", len(s), maxPublicKey)
	}
	pub, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, invalid("public_key is not an OpenSSH public key (an authorized_keys line such as \"ssh-ed25519 AAAA...\"): %v", err)
	}
	if len(options) > 0 || len(strings.TrimSpace(string(rest))) > 0 {
		return nil, invalid("public_key must be one key without options")
	}
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
	case ssh.KeyAlgoRSA:
		if ck, ok := pub.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(interface{ Size() int }); ok && rk.Size()*8 < 2048 {
				return nil, invalid("public_key is an RSA key of %d bits; at least 2048 are required", rk.Size()*8)
			}
		}
	default:
		return nil, invalid("public_key type %s is not accepted (use ssh-ed25519, ecdsa or rsa)", pub.Type())
	}
	return pub, nil
}

// sandboxOfKey names the live sandbox other than except that holds an
// unexpired key with this fingerprint ("" when none).
func (m *Manager) sandboxOfKey(ctx context.Context, fp, except string) (string, error) {
	rs, err := m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
	if err != nil {
		return "", err
	}
	now := m.now()
	for _, r := range rs {
		if r.ID == except {
			continue
		}
		for _, k := range r.AccessKeys {
			if k.Fingerprint == fp && now.Before(k.ExpiresAt) {
				return r.ID, nil
			}
		}
	}
	return "", nil
}

// RevokeAccess removes a sandbox's SSH keys: the one with fingerprint, or
// every one when fingerprint is empty. It returns how many went; sessions
// they opened end within seconds.
func (m *Manager) RevokeAccess(ctx context.Context, id, fingerprint string) (int, error) {
	if !ids.ValidSandboxID(id) {
		return 0, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	n := 0
	rec, err := m.store.Update(ctx, id, func(r *registry.Record) error {
		if r.UserID == "" {
			return errPooled(id)
		}
		before := len(r.AccessKeys)
		r.AccessKeys = slices.DeleteFunc(r.AccessKeys, func(k registry.AccessKey) bool {
			return fingerprint == "" || k.Fingerprint == fingerprint
		})
		n = before - len(r.AccessKeys)
		return nil
	})
	if err != nil {
		return 0, err
	}
	m.log.Info("ssh access revoked", "sandbox_id", id, "user_id", rec.UserID, "keys", n, "fingerprint", fingerprint)
	return n, nil
}

// Login is what an SSH key opens.
type Login struct {
	SandboxID   string
	UserID      string
	User        string // agent or root
	Fingerprint string
	ExpiresAt   time.Time
}

// LookupAccess finds the running sandbox an SSH public key (its wire
// form) opens. NotFound: no running sandbox holds the key (stopped ones
// are not looked at: a login attempt, which anyone who reaches the
// gateway can make, reads only the live records); PermissionDenied: its
// grant expired, and the Login still names the sandbox, for the log.
func (m *Manager) LookupAccess(ctx context.Context, key []byte) (*Login, error) {
	pub, err := ssh.ParsePublicKey(key)
	if err != nil {
		return nil, invalid("not an SSH public key")
	}
	fp := ssh.FingerprintSHA256(pub)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	rs, err := m.store.List(ctx, registry.Filter{Statuses: []registry.Status{registry.StatusReady, registry.StatusRunning}})
	if err != nil {
		return nil, err
	}
	now := m.now()
	var expired *Login
	for _, r := range rs {
		for _, k := range r.AccessKeys {
			if k.Fingerprint != fp || k.PublicKey != line {
				continue
			}
			l := &Login{SandboxID: r.ID, UserID: r.UserID.String(), User: k.User, Fingerprint: fp, ExpiresAt: k.ExpiresAt}
			if now.Before(k.ExpiresAt) {
				return l, nil
			}
			expired = l
		}
	}
	if expired != nil {
		return expired, fmt.Errorf("the key expired at %s: %w", expired.ExpiresAt.Format(time.RFC3339), errdefs.ErrPermissionDenied)
	}
	return nil, fmt.Errorf("no running sandbox holds key %s: %w", fp, errdefs.ErrNotFound)
}

// AccessValid reports whether a login still stands: its sandbox runs and
// its key is still granted and unexpired.
func (m *Manager) AccessValid(ctx context.Context, l *Login) bool {
	r, err := m.store.Get(ctx, l.SandboxID)
	if err != nil || !r.Status.AcceptsExec() {
		return false
	}
	now := m.now()
	for _, k := range r.AccessKeys {
		if k.Fingerprint == l.Fingerprint && k.User == l.User && now.Before(k.ExpiresAt) {
			return true
		}
	}
	return false
}
