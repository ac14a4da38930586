package daemon_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Test hosts for the network attacks. Traffic goes only to addresses that
// exist on this machine, in namespaces and interfaces the test makes and
// removes:
//   - "internet": a network namespace holding the TEST-NET address
//     203.0.113.10 behind a veth, serving HTTP (a positive control: egress
//     works, so the blocks below are rules, not a missing network);
//   - "metadata": 169.254.169.254 on a host-side veth, serving HTTP, so a
//     leak would land on this machine, never on a real cloud service.

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// httpServer runs busybox httpd serving body, in netns (or on the host when
// netns is ""), bound to addr.
func httpServer(t *testing.T, netns, addr, body string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"busybox", "httpd", "-f", "-p", addr, "-h", dir}
	if netns != "" {
		args = append([]string{"ip", "netns", "exec", netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
}

// internetHost makes the TEST-NET stand-in for the internet.
func internetHost(t *testing.T) string {
	t.Helper()
	for _, bin := range []string{"ip", "busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s missing", bin)
		}
	}
	n := os.Getpid() % 10000
	ns, host, peer := fmt.Sprintf("mxinet%d", n), fmt.Sprintf("mxi%d", n), fmt.Sprintf("mxp%d", n)
	exec.Command("ip", "netns", "del", ns).Run()
	exec.Command("ip", "link", "del", host).Run()
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	sh(t, "ip", "link", "set", peer, "netns", ns)
	sh(t, "ip", "addr", "add", "203.0.113.1/24", "dev", host)
	sh(t, "ip", "link", "set", host, "up")
	sh(t, "ip", "netns", "exec", ns, "ip", "addr", "add", "203.0.113.10/24", "dev", peer)
	sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
	sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	sh(t, "ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", "203.0.113.1")
	httpServer(t, ns, "203.0.113.10:80", "hello from the internet\n")
	return "203.0.113.10"
}

// metadataHost puts 169.254.169.254 on a host-side veth and serves HTTP on it.
func metadataHost(t *testing.T) {
	t.Helper()
	n := os.Getpid() % 10000
	a, b := fmt.Sprintf("mxmd%d", n), fmt.Sprintf("mxmp%d", n)
	exec.Command("ip", "link", "del", a).Run()
	sh(t, "ip", "link", "add", a, "type", "veth", "peer", "name", b)
	t.Cleanup(func() { exec.Command("ip", "link", "del", a).Run() })
	sh(t, "ip", "addr", "add", "169.254.169.254/32", "dev", a)
	sh(t, "ip", "link", "set", a, "up")
	sh(t, "ip", "link", "set", b, "up")
	httpServer(t, "", "169.254.169.254:80", "ami-id: secret\n")
}

// hostSecretPort serves "host secret" on every host address, on a port of
// its own until the test ends: a host-only service no sandbox may reach.
func hostSecretPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("host secret\n"))
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}
