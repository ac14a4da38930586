//go:build linux

package daemon_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/testenv"
)

// sshCreds is a granted key saved for the OpenSSH client.
type sshCreds struct {
	a         *apitype.Access
	key, kh   string // private key and known_hosts files
	signer    ssh.Signer
	sandboxID string
}

// grantSSH asks for a key and saves it (and the known_hosts line) in a
// temporary directory, as the answer says to.
func grantSSH(t *testing.T, h *daemontest.Harness, id, user string, ttl int64) *sshCreds {
	t.Helper()
	req := apitype.AccessRequest{User: user}
	if ttl > 0 {
		req.TTLSeconds = &ttl
	}
	a, err := h.Client().GrantAccess(context.Background(), id, req)
	if err != nil {
		t.Fatalf("grant %s for %s: %v", user, id, err)
	}
	dir := t.TempDir()
	c := &sshCreds{a: a, key: filepath.Join(dir, id+".pem"), kh: filepath.Join(dir, id+".known_hosts"), sandboxID: id}
	if err := os.WriteFile(c.key, []byte(a.PrivateKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.kh, []byte(a.KnownHosts+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c.signer, err = ssh.ParsePrivateKey([]byte(a.PrivateKey)); err != nil {
		t.Fatalf("private key of the answer: %v", err)
	}
	return c
}

// opts are the OpenSSH options every client here uses: this key only, no
// agent, no config, the gateway's host key checked strictly.
func (c *sshCreds) opts(port string) []string {
	return []string{
		"-F", "/dev/null", "-i", c.key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + c.kh, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", port, strconv.Itoa(c.a.Port),
	}
}

func (c *sshCreds) target() string { return c.a.Username + "@" + c.a.Host }

// ssh runs the OpenSSH client with extra arguments (options, then the
// remote command) and returns stdout, stderr and the exit code.
func (c *sshCreds) ssh(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return runClient(t, stdin, "ssh", append(append(c.opts("-p"), c.target()), args...)...)
}

func runClient(t *testing.T, stdin, bin string, args ...string) (string, string, int) {
	t.Helper()
	// A hung session fails the test (and its cleanups run) instead of
	// hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", bin, err)
	}
	return out.String(), errOut.String(), code
}

// goClient logs in with x/crypto/ssh, for what OpenSSH cannot be asked to
// do on demand (signals, refused requests and channels).
func (c *sshCreds) goClient(t *testing.T) *ssh.Client {
	t.Helper()
	hk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.a.KnownHosts[strings.Index(c.a.KnownHosts, " ")+1:]))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ssh.Dial("tcp", net.JoinHostPort(c.a.Host, strconv.Itoa(c.a.Port)), &ssh.ClientConfig{
		User: c.a.Username, Auth: []ssh.AuthMethod{ssh.PublicKeys(c.signer)},
		HostKeyCallback: ssh.FixedHostKey(hk), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatalf("go ssh client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestSSH: the SSH gateway with the real OpenSSH client (ssh, scp, sftp):
// commands with their exit status, stdout and stderr apart, stdin; a shell
// under a terminal of the client's size that follows a resize; env; files
// both ways through scp and sftp; ssh -L into the sandbox and nothing
// else; keys that open exactly their sandbox and user, and stop at
// expiry, revocation and the sandbox's stop; the host key, checked; 50
// sessions at once; and the sftp server's view of hostile symlinks.
func TestSSH(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	for _, bin := range []string{"ssh", "scp", "sftp"} {
		if _, err := exec.LookPath(bin); err != nil {
			testenv.Skip(t, "%s missing (apt-get install openssh-client)", bin)
		}
	}
	// A fixed port: the daemon restarts below, and keys granted before
	// must still find it.
	sshAddr := "127.0.0.1:" + freePort(t)
	h := daemontest.Start(t, func(c *daemon.Config) { c.SSHAddress = sshAddr })
	ctx := context.Background()
	a := h.Create("sam", nil)
	b := h.Create("tess", nil)
	ca := grantSSH(t, h, a.SandboxID, "agent", 0)

	t.Run("answer", func(t *testing.T) {
		got := ca.a
		port := strconv.Itoa(got.Port)
		if got.Username != "agent" || got.Host != "127.0.0.1" || got.Port == 0 || !strings.HasPrefix(got.PrivateKey, "-----BEGIN OPENSSH PRIVATE KEY-----") ||
			got.SSHCommand != "ssh -i /tmp/"+a.SandboxID+".pem -o StrictHostKeyChecking=no -p "+port+" agent@127.0.0.1" ||
			!strings.HasPrefix(got.KnownHosts, "[127.0.0.1]:"+port+" ssh-ed25519 ") || !strings.Contains(got.SSHCommandStrict, "StrictHostKeyChecking=yes") ||
			!strings.Contains(got.SSHCommandStrict, "UserKnownHostsFile=/tmp/"+a.SandboxID+".known_hosts") || got.Fingerprint != ssh.FingerprintSHA256(ca.signer.PublicKey()) ||
			time.Until(got.ExpiresAt) < 59*time.Minute || time.Until(got.ExpiresAt) > 61*time.Minute {
			t.Fatalf("access answer: %+v", got)
		}
		v, err := h.Client().Version(ctx)
		if err != nil || v.SSHHostKey == "" || v.SSHHostKey != got.HostKey {
			t.Fatalf("version's host key %q, the answer's %q: %v", v.SSHHostKey, got.HostKey, err)
		}
		s, err := h.Client().Get(ctx, a.SandboxID)
		if err != nil || s.SSHPort == nil || *s.SSHPort != got.Port {
			t.Fatalf("ssh_port: %v %+v", err, s.SSHPort)
		}
	})
	t.Run("exec", func(t *testing.T) {
		out, errOut, code := ca.ssh(t, "", `echo "$SANDBOX_ID $(id -u) $(pwd)"; echo to-stderr >&2; exit 7`)
		if out != a.SandboxID+" 1000 /home/agent\n" || errOut != "to-stderr\n" || code != 7 {
			t.Fatalf("exec: %q %q exit %d", out, errOut, code)
		}
		if out, _, code := ca.ssh(t, "line one\nline two\n", "cat; echo eof"); out != "line one\nline two\neof\n" || code != 0 {
			t.Fatalf("stdin: %q exit %d", out, code)
		}
		if out, _, code := ca.ssh(t, "", "true"); out != "" || code != 0 {
			t.Fatalf("true: %q %d", out, code)
		}
		cr := grantSSH(t, h, a.SandboxID, "root", 0)
		if out, _, code := cr.ssh(t, "", "id -u; pwd"); out != "0\n/root\n" || code != 0 {
			t.Fatalf("root: %q %d", out, code)
		}
	})
	t.Run("env", func(t *testing.T) {
		cmd := exec.Command("ssh", append(append(ca.opts("-p"), "-o", "SendEnv=LANG LC_TEST FOO", ca.target()), `echo "$LANG|$LC_TEST|${FOO-unset}"`)...)
		cmd.Env = append(os.Environ(), "LANG=C.UTF-8", "LC_TEST=x y", "FOO=bar")
		out, err := cmd.Output()
		if err != nil || string(out) != "C.UTF-8|x y|unset\n" {
			t.Fatalf("env: %v %q", err, out)
		}
	})
	t.Run("terminal", func(t *testing.T) {
		term := startInTerminal(t, 33, 111, "ssh", append(append(ca.opts("-p"), "-tt", ca.target()),
			`tty; stty size; echo "TERM=$TERM"; echo resize-now; sleep 2; stty size; exit 3`)...)
		term.waitFor(t, "resize-now")
		term.resize(t, 40, 100)
		code := term.wait(t)
		out := strings.ReplaceAll(term.output(), "\r\n", "\n")
		for _, want := range []string{"/dev/pts/", "\n33 111\n", "TERM=xterm-matrx-test\n", "\n40 100\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("terminal output lacks %q:\n%s", want, out)
			}
		}
		if code != 3 {
			t.Errorf("exit code under a terminal: %d, want 3", code)
		}
	})
	t.Run("scp and sftp", func(t *testing.T) {
		dir := t.TempDir()
		data := make([]byte, 3<<20+17)
		rand.Read(data)
		sum := sha256.Sum256(data)
		local := filepath.Join(dir, "blob")
		os.WriteFile(local, data, 0o644)
		if _, errOut, code := runClient(t, "", "scp", append(ca.opts("-P"), local, ca.target()+":/home/agent/blob")...); code != 0 {
			t.Fatalf("scp up: %d %s", code, errOut)
		}
		if r := h.Exec(a.SandboxID, "sha256sum /home/agent/blob; stat -c '%U %s' /home/agent/blob"); r.Stdout != hex.EncodeToString(sum[:])+"  /home/agent/blob\nagent "+strconv.Itoa(len(data))+"\n" {
			t.Fatalf("the file in the sandbox: %+v", r)
		}
		back := filepath.Join(dir, "back")
		if _, errOut, code := runClient(t, "", "scp", append(ca.opts("-P"), ca.target()+":blob", back)...); code != 0 {
			t.Fatalf("scp down: %d %s", code, errOut)
		}
		if got, _ := os.ReadFile(back); !bytes.Equal(got, data) {
			t.Fatalf("scp round trip changed the file (%d bytes back)", len(got))
		}
		batch := filepath.Join(dir, "batch")
		os.WriteFile(batch, []byte("mkdir sub\nput "+local+" sub/blob2\nls -l sub\nrename sub/blob2 sub/blob3\nget sub/blob3 "+filepath.Join(dir, "via-sftp")+"\nrm sub/blob3\nrmdir sub\npwd\n"), 0o644)
		out, errOut, code := runClient(t, "", "sftp", append(ca.opts("-P"), "-b", batch, ca.target())...)
		if code != 0 || !strings.Contains(out, "blob2") || !strings.Contains(out, "Remote working directory: /home/agent") {
			t.Fatalf("sftp batch: %d\n%s\n%s", code, out, errOut)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "via-sftp")); !bytes.Equal(got, data) {
			t.Fatalf("sftp round trip changed the file")
		}
		if r := h.Exec(a.SandboxID, "ls /home/agent"); strings.Contains(r.Stdout, "sub") {
			t.Fatalf("sftp rm/rmdir left: %q", r.Stdout)
		}
	})
	t.Run("local forward", func(t *testing.T) {
		h.Exec(a.SandboxID, `mkdir -p /tmp/fw && echo "forwarded from $SANDBOX_ID" > /tmp/fw/index.html && httpd -p 127.0.0.1:8080 -h /tmp/fw`)
		lp := freePort(t)
		fwd := exec.Command("ssh", append(append(ca.opts("-p"), "-N", "-o", "ExitOnForwardFailure=yes",
			"-L", "127.0.0.1:"+lp+":localhost:8080", "-L", "127.0.0.1:"+freePort(t)+":203.0.113.10:80"), ca.target())...)
		var fwdErr bytes.Buffer
		fwd.Stderr = &fwdErr
		if err := fwd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { fwd.Process.Kill(); fwd.Wait() }()
		var body string
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if resp, err := http.Get("http://127.0.0.1:" + lp + "/"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if body != "forwarded from "+a.SandboxID+"\n" {
			t.Fatalf("ssh -L: %q (%s)", body, fwdErr.String())
		}
		// Only the sandbox's own ports: another host is refused.
		cl := ca.goClient(t)
		if c, err := cl.Dial("tcp", "203.0.113.10:80"); err == nil || !strings.Contains(err.Error(), "only ports inside the sandbox") {
			if c != nil {
				c.Close()
			}
			t.Errorf("forwarding to another host: %v", err)
		}
		if _, err := cl.Dial("tcp", "127.0.0.1:9"); err == nil || !strings.Contains(err.Error(), "nothing listens on port 9") {
			t.Errorf("forwarding to a closed port: %v", err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		if _, errOut, code := ca.ssh(t, "", "-R", "127.0.0.1:0:localhost:22", "-o", "ExitOnForwardFailure=yes", "true"); code != 255 || !strings.Contains(errOut, "forwarding failed") {
			t.Errorf("ssh -R: exit %d %s", code, errOut)
		}
		cl := ca.goClient(t)
		if _, err := cl.Listen("tcp", "127.0.0.1:0"); err == nil {
			t.Error("tcpip-forward was accepted")
		}
		sess, err := cl.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range []string{"x11-req", "auth-agent-req@openssh.com"} {
			if ok, err := sess.SendRequest(req, true, ssh.Marshal(struct {
				Single        bool
				Proto, Cookie string
				Screen        uint32
			}{false, "MIT-MAGIC-COOKIE-1", "00", 0})); ok || err != nil {
				t.Errorf("%s: accepted %v (%v)", req, ok, err)
			}
		}
		if ok, _ := sess.SendRequest("subsystem", true, ssh.Marshal(struct{ Name string }{"netconf"})); ok {
			t.Error("an unknown subsystem was accepted")
		}
		if ok, _ := sess.SendRequest("env", true, ssh.Marshal(struct{ Name, Value string }{"LD_PRELOAD", "/tmp/x.so"})); ok {
			t.Error("env LD_PRELOAD was accepted")
		}
		sess.Close()
		for _, typ := range []string{"x11", "auth-agent@openssh.com", "forwarded-tcpip", "direct-streamlocal@openssh.com"} {
			if _, _, err := cl.OpenChannel(typ, nil); err == nil {
				t.Errorf("channel %s was accepted", typ)
			}
		}
	})
	t.Run("signals", func(t *testing.T) {
		sess, err := ca.goClient(t).NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var out syncBuffer
		sess.Stdout = &out
		if err := sess.Start(`trap 'echo got-INT; exit 9' INT; echo ready; sleep 20 & wait`); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "ready") && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		if err := sess.Signal(ssh.SIGINT); err != nil {
			t.Fatal(err)
		}
		var ee *ssh.ExitError
		if err := sess.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 9 || !strings.Contains(out.String(), "got-INT") {
			t.Fatalf("after SIGINT: %v %q", err, out.String())
		}
	})
	t.Run("keys", func(t *testing.T) {
		cb := grantSSH(t, h, b.SandboxID, "agent", 0)
		if out, _, _ := cb.ssh(t, "", "hostname"); out != b.SandboxID+"\n" {
			t.Fatalf("b's key opened %q", out)
		}
		if out, _, _ := ca.ssh(t, "", "hostname"); out != a.SandboxID+"\n" {
			t.Fatalf("a's key opened %q", out)
		}
		// A key opens one sandbox: a's public key cannot be granted to b.
		pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.signer.PublicKey())))
		if _, err := h.Client().GrantAccess(ctx, b.SandboxID, apitype.AccessRequest{PublicKey: pub}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), a.SandboxID) {
			t.Fatalf("a's key granted to b: %v", err)
		}
		// The user name must be the grant's.
		rootTry := *ca.a
		rootTry.Username = "root"
		asRoot := &sshCreds{a: &rootTry, key: ca.key, kh: ca.kh, signer: ca.signer}
		if _, errOut, code := asRoot.ssh(t, "", "id -u"); code != 255 || !strings.Contains(errOut, "Permission denied") {
			t.Fatalf("agent's key as root: %d %s", code, errOut)
		}
		// A key of the caller's own: no private key in the answer.
		pk, sk, _ := ed25519.GenerateKey(rand.Reader)
		spk, _ := ssh.NewPublicKey(pk)
		own, err := h.Client().GrantAccess(ctx, b.SandboxID, apitype.AccessRequest{PublicKey: string(ssh.MarshalAuthorizedKey(spk))})
		if err != nil || own.PrivateKey != "" || own.Fingerprint != ssh.FingerprintSHA256(spk) {
			t.Fatalf("own key: %v %+v", err, own)
		}
		block, _ := ssh.MarshalPrivateKey(sk, "")
		ownCreds := &sshCreds{a: own, key: filepath.Join(t.TempDir(), "own"), kh: cb.kh}
		os.WriteFile(ownCreds.key, pem.EncodeToMemory(block), 0o600)
		if out, _, code := ownCreds.ssh(t, "", "hostname"); out != b.SandboxID+"\n" || code != 0 {
			t.Fatalf("own key: %q %d", out, code)
		}
		// Expiry.
		short := grantSSH(t, h, b.SandboxID, "agent", 1)
		time.Sleep(1500 * time.Millisecond)
		if _, errOut, code := short.ssh(t, "", "true"); code != 255 || !strings.Contains(errOut, "Permission denied") {
			t.Fatalf("expired key: %d %s", code, errOut)
		}
		// Revocation: refused afterwards, and the open session ends.
		long := exec.Command("ssh", append(append(cb.opts("-p"), cb.target()), "echo in; sleep 60")...)
		var longOut syncBuffer
		long.Stdout = &longOut
		if err := long.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(longOut.String(), "in") && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		r, err := h.Client().RevokeAccess(ctx, b.SandboxID, "")
		if err != nil || r.Revoked < 2 {
			t.Fatalf("revoke: %v %+v", err, r)
		}
		ended := make(chan error, 1)
		go func() { ended <- long.Wait() }()
		select {
		case <-ended:
		case <-time.After(15 * time.Second):
			long.Process.Kill()
			t.Fatal("a session outlived the revocation of its key")
		}
		if _, errOut, code := cb.ssh(t, "", "true"); code != 255 || !strings.Contains(errOut, "Permission denied") {
			t.Fatalf("revoked key: %d %s", code, errOut)
		}
		if ps, err := h.Client().Processes(ctx, b.SandboxID); err != nil || len(ps.Processes) != 0 {
			t.Errorf("sessions left processes behind: %+v", ps.Processes)
		}
		logs := h.Logs()
		for _, want := range []string{
			`"msg":"ssh login","sandbox_id":"` + a.SandboxID + `"`,
			`"msg":"ssh login rejected","fingerprint":"` + short.a.Fingerprint + `"`,
			`"msg":"ssh login rejected","fingerprint":"` + cb.a.Fingerprint + `"`,
			`"fingerprint":"` + ca.a.Fingerprint + `","ssh_user":"root"`,
		} {
			if !strings.Contains(logs, want) {
				t.Errorf("daemon log lacks %s", want)
			}
		}
	})
	t.Run("cli", func(t *testing.T) {
		// matrx ssh: a key made by the CLI, the host key checked, the exit
		// code passed through, the key revoked afterwards.
		out, errOut, code := h.CLI("ssh", a.SandboxID, "--", `echo "$(id -u) $SANDBOX_ID"; exit 4`)
		if out != "1000 "+a.SandboxID+"\n" || code != 4 {
			t.Fatalf("matrx ssh: %q %q exit %d", out, errOut, code)
		}
		if out, _, code := h.CLI("ssh", a.SandboxID, "--root", "--", "id -u"); out != "0\n" || code != 0 {
			t.Fatalf("matrx ssh --root: %q %d", out, code)
		}
		if n := strings.Count(h.Logs(), `"msg":"ssh access revoked","sandbox_id":"`+a.SandboxID+`","user_id":"sam","keys":1,"fingerprint":"SHA256:`); n != 2 {
			t.Errorf("matrx ssh revoked its own key %d times, want 2", n)
		}
		out, _, code = h.CLI("access", "grant", a.SandboxID, "--ttl", "2m")
		if code != 0 || !strings.Contains(out, `"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----`) {
			t.Fatalf("matrx access grant: %d %s", code, out)
		}
		if out, _, code := h.CLI("access", "revoke", b.SandboxID); code != 0 || out != b.SandboxID+": 0 key(s) revoked\n" {
			t.Fatalf("matrx access revoke: %d %q", code, out)
		}
	})
	t.Run("host key", func(t *testing.T) {
		pk, _, _ := ed25519.GenerateKey(rand.Reader)
		other, _ := ssh.NewPublicKey(pk)
		wrong := &sshCreds{a: ca.a, key: ca.key, kh: filepath.Join(t.TempDir(), "kh"), signer: ca.signer}
		line := fmt.Sprintf("[%s]:%d %s", ca.a.Host, ca.a.Port, ssh.MarshalAuthorizedKey(other))
		os.WriteFile(wrong.kh, []byte(line), 0o600)
		if _, errOut, code := wrong.ssh(t, "", "true"); code != 255 || !strings.Contains(errOut, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
			t.Fatalf("wrong host key: %d %s", code, errOut)
		}
		// The host key stays across restarts.
		before := ca.a.HostKey
		h.Stop()
		h.Start()
		v, err := h.Client().Version(ctx)
		if err != nil || v.SSHHostKey != before {
			t.Fatalf("host key after a restart: %v %q, want %q", err, v.SSHHostKey, before)
		}
	})
	t.Run("50 sessions", func(t *testing.T) {
		c := grantSSH(t, h, a.SandboxID, "agent", 0)
		var wg sync.WaitGroup
		errs := make(chan string, 50)
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, errOut, code := c.ssh(t, "", fmt.Sprintf("echo session-%d; sleep 1", i))
				if out != fmt.Sprintf("session-%d\n", i) || code != 0 {
					errs <- fmt.Sprintf("session %d: %q %q exit %d", i, out, errOut, code)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})
	t.Run("hostile symlinks over sftp", func(t *testing.T) {
		hostSecret := filepath.Join(t.TempDir(), "host-secret")
		os.WriteFile(hostSecret, []byte("host secret\n"), 0o644)
		h.Exec(a.SandboxID, "cd /home/agent && ln -sf /etc/shadow shadow && ln -sf /proc/1/root p1root && ln -sf ../../.. up && ln -sf /etc etcdir && ln -sf "+hostSecret+" hostfile")
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o644)
		batch := filepath.Join(dir, "batch")
		os.WriteFile(batch, []byte(strings.Join([]string{
			"-get /home/agent/shadow " + dir + "/shadow", "-ls /home/agent/p1root/", "-get /home/agent/p1root/etc/hostname " + dir + "/p1",
			"-put " + dir + "/x /home/agent/etcdir/x", "-get /home/agent/hostfile " + dir + "/hostfile", "-get /proc/1/environ " + dir + "/environ", "",
		}, "\n")), 0o644)
		lsBatch := filepath.Join(dir, "ls")
		os.WriteFile(lsBatch, []byte("ls -a /home/agent/up/\n"), 0o644)
		sandboxRoot := h.Exec(a.SandboxID, "ls -a /").Stdout
		for _, user := range []string{"agent", "root"} {
			c := ca
			if user == "root" {
				c = grantSSH(t, h, a.SandboxID, "root", 0)
			}
			out, errOut, code := runClient(t, "", "sftp", append(c.opts("-P"), "-b", batch, c.target())...)
			if code != 0 {
				t.Fatalf("sftp as %s: %d\n%s\n%s", user, code, out, errOut)
			}
			for _, f := range []string{"shadow", "p1", "hostfile", "environ"} {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
					t.Errorf("as %s, sftp fetched %s through a symlink: %q", user, f, b)
				}
			}
			if !strings.Contains(errOut, "Permission denied") || !strings.Contains(errOut, "not found") {
				t.Errorf("as %s, the refusals were not the sandbox's (permission denied, not found):\n%s", user, errOut)
			}
			// ../../.. from /home/agent is the sandbox's root, never the host's.
			out, errOut, code = runClient(t, "", "sftp", append(c.opts("-P"), "-b", lsBatch, c.target())...)
			if code != 0 || !strings.Contains(out, ".matrx") {
				t.Fatalf("as %s, ls up/: %d\n%s\n%s", user, code, out, errOut)
			}
			for _, name := range strings.Fields(out) {
				if name == "sftp>" || name == "ls" || name == "-a" || name == "/home/agent/up/" {
					continue
				}
				if !strings.Contains(sandboxRoot, strings.TrimPrefix(name, "/home/agent/up/")) {
					t.Errorf("as %s, up/ lists %q, which the sandbox's root does not hold (%q)", user, name, sandboxRoot)
				}
			}
		}
		if _, err := os.Stat("/etc/x"); err == nil {
			t.Error("sftp wrote into the host's /etc")
		}
		if r := h.Exec(a.SandboxID, "ls /etc/x 2>&1"); !strings.Contains(r.Stdout, "No such file") {
			t.Errorf("sftp wrote through a symlink into the sandbox's read-only /etc: %q", r.Stdout)
		}
	})
	t.Run("sessions end with the sandbox", func(t *testing.T) {
		c := grantSSH(t, h, b.SandboxID, "agent", 0)
		long := exec.Command("ssh", append(append(c.opts("-p"), c.target()), "echo in; sleep 60")...)
		var out syncBuffer
		long.Stdout = &out
		if err := long.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "in") && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		if err := h.Client().Delete(ctx, b.SandboxID, false); err != nil {
			t.Fatal(err)
		}
		ended := make(chan error, 1)
		go func() { ended <- long.Wait() }()
		select {
		case <-ended:
		case <-time.After(15 * time.Second):
			long.Process.Kill()
			t.Fatal("a session outlived its sandbox")
		}
		if _, err := h.Client().GrantAccess(ctx, b.SandboxID, apitype.AccessRequest{}); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("access to a stopped sandbox: %v", err)
		}
		if _, errOut, code := c.ssh(t, "", "true"); code != 255 || !strings.Contains(errOut, "Permission denied") {
			t.Fatalf("key of a stopped sandbox: %d %s", code, errOut)
		}
	})
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// terminal runs a program with a pseudo-terminal of its own as its
// controlling terminal (as a person's shell would), records what it
// prints, and can resize it.
type terminal struct {
	master *os.File
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	done   chan struct{}
}

func startInTerminal(t *testing.T, rows, cols uint16, bin string, args ...string) *terminal {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
	term := &terminal{master: m, done: make(chan struct{})}
	term.cmd = exec.Command(bin, args...)
	term.cmd.Env = append(os.Environ(), "TERM=xterm-matrx-test")
	term.cmd.Stdin, term.cmd.Stdout, term.cmd.Stderr = s, s, s
	term.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := term.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(term.done)
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			term.mu.Lock()
			term.out.Write(buf[:n])
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { term.cmd.Process.Kill(); m.Close() })
	return term
}

func (term *terminal) output() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.out.String()
}

func (term *terminal) waitFor(t *testing.T, s string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(term.output(), s) {
			return
		}
	}
	t.Fatalf("terminal never showed %q:\n%s", s, term.output())
}

func (term *terminal) resize(t *testing.T, rows, cols uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(int(term.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
}

func (term *terminal) wait(t *testing.T) int {
	t.Helper()
	err := term.cmd.Wait()
	select {
	case <-term.done:
	case <-time.After(2 * time.Second):
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}
