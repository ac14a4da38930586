package sandbox

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/crypto/ssh"

	"github.com/matrx-dev/matrx/registry"
)

func accessManager(t *testing.T, ids ...string) (*Manager, *time.Time) {
	t.Helper()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &Manager{store: registry.NewMemory(), limits: DefaultLimits(), log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}
	for _, id := range ids {
		if err := m.store.Create(context.Background(), &registry.Record{ID: id, UserID: "u", Status: registry.StatusRunning, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	return m, &now
}

func authorizedKey(t *testing.T) (string, []byte) {
	t.Helper()
	pk, _, _ := ed25519.GenerateKey(rand.Reader)
	pub, err := ssh.NewPublicKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	return string(ssh.MarshalAuthorizedKey(pub)), pub.Marshal()
}

func TestGrantAndLookupAccess(t *testing.T) {
	const a, b = "sbx-00000000000a", "sbx-00000000000b"
	m, now := accessManager(t, a, b)
	ctx := context.Background()

	g, err := m.GrantAccess(ctx, a, AccessRequest{})
	if err != nil || g.User != "agent" || !g.ExpiresAt.Equal(now.Add(DefaultAccessTTL)) {
		t.Fatalf("grant: %v %+v", err, g)
	}
	signer, err := ssh.ParsePrivateKey([]byte(g.PrivateKey))
	if err != nil || ssh.FingerprintSHA256(signer.PublicKey()) != g.Fingerprint {
		t.Fatalf("the private key made: %v", err)
	}
	rec, _ := m.store.Get(ctx, a)
	if len(rec.AccessKeys) != 1 || strings.Contains(rec.AccessKeys[0].PublicKey, "PRIVATE") || !strings.HasPrefix(rec.AccessKeys[0].PublicKey, "ssh-ed25519 ") {
		t.Fatalf("stored: %+v", rec.AccessKeys)
	}
	l, err := m.LookupAccess(ctx, signer.PublicKey().Marshal())
	if err != nil || l.SandboxID != a || l.User != "agent" || !m.AccessValid(ctx, l) {
		t.Fatalf("lookup: %v %+v", err, l)
	}

	// The caller's own key, as root; no private key comes back.
	line, wire := authorizedKey(t)
	g2, err := m.GrantAccess(ctx, b, AccessRequest{User: "root", TTL: time.Minute, PublicKey: line})
	if err != nil || g2.PrivateKey != "" || g2.User != "root" {
		t.Fatalf("own key: %v %+v", err, g2)
	}
	// One key opens one sandbox.
	if _, err := m.GrantAccess(ctx, a, AccessRequest{PublicKey: line}); !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), b) {
		t.Fatalf("the same key for a second sandbox: %v", err)
	}
	// Granting it again to the same sandbox replaces the grant.
	if _, err := m.GrantAccess(ctx, b, AccessRequest{User: "root", TTL: 2 * time.Minute, PublicKey: line}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := m.store.Get(ctx, b); len(rec.AccessKeys) != 1 {
		t.Fatalf("a re-grant kept %d keys", len(rec.AccessKeys))
	}

	// Expiry: refused with the sandbox named, and the login lapses.
	l2, _ := m.LookupAccess(ctx, wire)
	*now = now.Add(3 * time.Minute)
	if l, err := m.LookupAccess(ctx, wire); !errdefs.IsPermissionDenied(err) || l == nil || l.SandboxID != b {
		t.Fatalf("expired: %v %+v", err, l)
	}
	if m.AccessValid(ctx, l2) {
		t.Fatal("an expired login still stands")
	}

	// Revocation of one key, then of all.
	if _, err := m.GrantAccess(ctx, a, AccessRequest{}); err != nil {
		t.Fatal(err)
	}
	if n, err := m.RevokeAccess(ctx, a, g.Fingerprint); err != nil || n != 1 {
		t.Fatalf("revoke one: %v %d", err, n)
	}
	if m.AccessValid(ctx, l) {
		t.Fatal("a revoked login still stands")
	}
	if _, err := m.LookupAccess(ctx, signer.PublicKey().Marshal()); !errdefs.IsNotFound(err) {
		t.Fatalf("a revoked key: %v", err)
	}
	if n, _ := m.RevokeAccess(ctx, a, ""); n != 1 {
		t.Fatalf("revoke all: %d", n)
	}

	// A stopped sandbox's keys open nothing.
	g4, _ := m.GrantAccess(ctx, b, AccessRequest{})
	s4, _ := ssh.ParsePrivateKey([]byte(g4.PrivateKey))
	m.store.Update(ctx, b, func(r *registry.Record) error { r.Status = registry.StatusStopped; return nil })
	if _, err := m.LookupAccess(ctx, s4.PublicKey().Marshal()); !errdefs.IsNotFound(err) {
		t.Fatalf("key of a stopped sandbox: %v", err)
	}
	if _, err := m.GrantAccess(ctx, b, AccessRequest{}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("grant on a stopped sandbox: %v", err)
	}
}

func TestGrantAccessRefusesBadInput(t *testing.T) {
	const a = "sbx-00000000000a"
	m, _ := accessManager(t, a)
	ctx := context.Background()
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	weakPub, _ := ssh.NewPublicKey(&weak.PublicKey)
	line, _ := authorizedKey(t)
	for name, req := range map[string]AccessRequest{
		"user":        {User: "nobody"},
		"ttl high":    {TTL: 25 * time.Hour},
		"ttl low":     {TTL: time.Millisecond},
		"garbage key": {PublicKey: "not a key"},
		"weak rsa":    {PublicKey: string(ssh.MarshalAuthorizedKey(weakPub))},
		"options":     {PublicKey: `command="sh" ` + line},
		"two keys":    {PublicKey: line + line},
		"huge":        {PublicKey: strings.Repeat("a", 20<<10)},
	} {
		if _, err := m.GrantAccess(ctx, a, req); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if _, err := m.GrantAccess(ctx, "sbx-doesnotexist", AccessRequest{}); !errdefs.IsNotFound(err) {
		t.Errorf("unknown sandbox: %v", err)
	}
	for i := range MaxAccessKeys {
		if _, err := m.GrantAccess(ctx, a, AccessRequest{}); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
	}
	if _, err := m.GrantAccess(ctx, a, AccessRequest{}); !errdefs.IsResourceExhausted(err) {
		t.Fatalf("key %d: %v, want ResourceExhausted", MaxAccessKeys+1, err)
	}
	if rec, _ := m.store.Get(ctx, a); len(rec.AccessKeys) != MaxAccessKeys {
		t.Fatalf("%d keys kept", len(rec.AccessKeys))
	}
}
