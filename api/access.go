package api

// SSH access, the original service's POST /sandboxes/{id}/access served by
// matrxd's SSH gateway (package sshgate). The answer keeps the original's
// fields: a one-time Ed25519 private_key (none when the caller sent its
// own public_key), username, host, port and an ssh_command with
// StrictHostKeyChecking=no, and adds the gateway's known_hosts line with a
// command that checks it.

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/sandbox"
)

// SSHInfo is the SSH gateway as clients reach it.
type SSHInfo struct {
	// Host and Port are what clients connect to (--ssh-public-host).
	Host string
	Port int
	// KnownHosts is the gateway's known_hosts line for Host:Port.
	KnownHosts string
	// Fingerprint is the host key's SHA256 fingerprint.
	Fingerprint string
}

// WithSSH turns on POST /sandboxes/{id}/access and ssh_port (without it
// the route answers 409 and ssh_port is null).
func WithSSH(info SSHInfo) Option { return func(s *Server) { s.ssh = &info } }

func (s *Server) grantAccess(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	var req apitype.AccessRequest
	if err := s.decode(w, r, &req, true); err != nil {
		s.fail(w, r, err)
		return
	}
	if s.ssh == nil {
		s.fail(w, r, fmt.Errorf("the SSH gateway is off on this daemon (start matrxd with --ssh-address): %w", errdefs.ErrFailedPrecondition))
		return
	}
	in := sandbox.AccessRequest{User: req.User, PublicKey: req.PublicKey}
	if req.TTLSeconds != nil {
		if *req.TTLSeconds < 1 || *req.TTLSeconds > int64(sandbox.MaxAccessTTL/time.Second) {
			s.fail(w, r, fmt.Errorf("ttl_seconds %d is out of range [1, %d]: %w", *req.TTLSeconds, int64(sandbox.MaxAccessTTL/time.Second), errdefs.ErrInvalidArgument))
			return
		}
		in.TTL = time.Duration(*req.TTLSeconds) * time.Second
	}
	g, err := s.mgr.GrantAccess(r.Context(), id, in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	key, known := "/tmp/"+id+".pem", "/tmp/"+id+".known_hosts"
	port := strconv.Itoa(s.ssh.Port)
	target := g.User + "@" + s.ssh.Host
	writeJSON(w, http.StatusOK, apitype.Access{
		PrivateKey: g.PrivateKey, Username: g.User, Host: s.ssh.Host, Port: s.ssh.Port,
		SSHCommand:       "ssh -i " + key + " -o StrictHostKeyChecking=no -p " + port + " " + target,
		KnownHosts:       s.ssh.KnownHosts,
		SSHCommandStrict: "ssh -i " + key + " -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + known + " -p " + port + " " + target,
		Fingerprint:      g.Fingerprint, HostKey: s.ssh.Fingerprint, ExpiresAt: g.ExpiresAt, SandboxID: id,
	})
}

func (s *Server) revokeAccess(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	if err := knownParams(q, "fingerprint"); err != nil {
		s.fail(w, r, err)
		return
	}
	n, err := s.mgr.RevokeAccess(r.Context(), id, q.Get("fingerprint"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.AccessRevoked{SandboxID: id, Revoked: n})
}
