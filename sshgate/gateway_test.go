package sshgate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestLoadHostKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ssh")
	k1, err := LoadHostKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k1.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("host key type %s", k1.PublicKey().Type())
	}
	k2, err := LoadHostKey(dir)
	if err != nil || ssh.FingerprintSHA256(k2.PublicKey()) != ssh.FingerprintSHA256(k1.PublicKey()) {
		t.Fatalf("the host key changed on reload: %v", err)
	}
	st, _ := os.Stat(filepath.Join(dir, HostKeyName))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v", st.Mode())
	}
	pub, _ := os.ReadFile(filepath.Join(dir, HostKeyName+".pub"))
	if !strings.HasPrefix(string(pub), "ssh-ed25519 ") {
		t.Fatalf("public key file %q", pub)
	}
	os.Chmod(filepath.Join(dir, HostKeyName), 0o640)
	if _, err := LoadHostKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a group-readable key was used: %v", err)
	}
}

func TestKnownHostsLine(t *testing.T) {
	k, err := LoadHostKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	line := KnownHostsLine("127.0.0.1", 2222, k.PublicKey())
	if !strings.HasPrefix(line, "[127.0.0.1]:2222 ssh-ed25519 ") || strings.HasSuffix(line, "\n") {
		t.Fatalf("known_hosts line %q", line)
	}
	if l := KnownHostsLine("gw.example.com", 22, k.PublicKey()); !strings.HasPrefix(l, "gw.example.com ssh-ed25519 ") {
		t.Fatalf("port 22 line %q", l)
	}
	_, hosts, key, _, _, err := ssh.ParseKnownHosts([]byte(line))
	if err != nil || hosts[0] != "[127.0.0.1]:2222" || ssh.FingerprintSHA256(key) != ssh.FingerprintSHA256(k.PublicKey()) {
		t.Fatalf("the line does not parse back: %v %v", err, hosts)
	}
}

func TestSessionInputs(t *testing.T) {
	for _, c := range []struct{ rows, cols, wr, wc uint32 }{{0, 0, 24, 80}, {33, 111, 33, 111}, {5000, 1, 1000, 1}} {
		ws := winSize(c.rows, c.cols)
		if uint32(ws.Rows) != c.wr || uint32(ws.Cols) != c.wc {
			t.Errorf("winSize(%d, %d) = %+v", c.rows, c.cols, ws)
		}
	}
	for name, ok := range map[string]bool{"LANG": true, "TERM": true, "LC_ALL": true, "LC_": false, "LD_PRELOAD": false, "PATH": false, "lc_all": false, "LANGUAGE": false} {
		if envNameRe.MatchString(name) != ok {
			t.Errorf("env %s allowed = %v", name, !ok)
		}
	}
	if printable("xterm\x1b", 64) || !printable("xterm-256color", 64) {
		t.Error("printable")
	}
}
