package sshgate

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/crypto/ssh"
)

// HostKeyName is the host key's file name in its directory; the public
// half is HostKeyName + ".pub".
const HostKeyName = "ssh_host_ed25519_key"

// LoadHostKey reads the gateway's host key from dir, making an Ed25519 key
// the first time (private half 0600, public half 0644, dir 0700), so the
// fingerprint stays the same across restarts. A private key file anyone
// but its owner may read is refused.
func LoadHostKey(dir string) (ssh.Signer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ssh host key dir: %w", err)
	}
	path := filepath.Join(dir, HostKeyName)
	f, err := os.Open(path)
	if err == nil {
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() || st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("ssh host key %s has mode %v: it must be a regular file only its owner can read (chmod 600): %w", path, st.Mode(), errdefs.ErrFailedPrecondition)
		}
		b, err := io.ReadAll(io.LimitReader(f, 16<<10))
		if err != nil {
			return nil, fmt.Errorf("read ssh host key: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("ssh host key %s: %v: %w", path, err, errdefs.ErrFailedPrecondition)
		}
		// The public half is for people (matrx doctor, ssh-keygen -l):
		// put it back if it went.
		if _, err := os.Stat(path + ".pub"); errors.Is(err, os.ErrNotExist) {
			os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644)
		}
		return signer, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open ssh host key: %w", err)
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(sk, "matrxd ssh gateway")
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(sk)
	if err != nil {
		return nil, err
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create ssh host key: %w", err)
	}
	if _, err := out.Write(pem.EncodeToMemory(block)); err != nil {
		out.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write ssh host key: %w", err)
	}
	if err := out.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write ssh host key: %w", err)
	}
	if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return nil, fmt.Errorf("write ssh host public key: %w", err)
	}
	return signer, nil
}
