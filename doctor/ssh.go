package doctor

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// SSHHostKeyFile is where matrxd keeps its SSH gateway's host key, under
// the state dir (sshgate.HostKeyName in the "ssh" dir; a test keeps them
// equal, the CLI must not link the gateway).
const SSHHostKeyFile = "ssh/ssh_host_ed25519_key"

// checkSSHHostKey reports the SSH gateway's host key fingerprint, the one
// clients must see (known_hosts), and that only root can read the private
// half (matrxd refuses it otherwise).
func checkSSHHostKey(_ context.Context, e *env) Result {
	path := filepath.Join(e.cfg.StateDir, SSHHostKeyFile)
	b, err := os.ReadFile(path + ".pub")
	switch {
	case errors.Is(err, os.ErrNotExist):
		return warn("start matrxd once with its SSH gateway on (--ssh-address, 127.0.0.1:2222 by default): it makes the key",
			"no SSH host key at %s yet", path)
	case errors.Is(err, os.ErrPermission):
		return warn("run matrx doctor as root to see it", "cannot read %s.pub as this user", path)
	case err != nil:
		return warn("check the state dir", "read %s.pub: %v", path, err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return fail("remove "+path+" and "+path+".pub and restart matrxd (clients will see a new host key)", "%s.pub is not an SSH public key: %v", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return fail("remove "+path+".pub and restart matrxd (clients will see a new host key)", "the private host key %s is missing: %v", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fail("chmod 600 "+path, "the private host key %s has mode %04o: matrxd refuses a key others can read", path, st.Mode().Perm())
	}
	return pass("%s (%s) in %s", ssh.FingerprintSHA256(pub), pub.Type(), path)
}
