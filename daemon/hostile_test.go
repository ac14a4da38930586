//go:build linux

package daemon_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/sandbox"
	"github.com/matrx-dev/matrx/testenv"
)

// TestHostileSandbox runs attacks an untrusted agent might try, from inside
// a sandbox of the production image. Each must fail inside the sandbox
// while the daemon, a neighbour sandbox and the host stay healthy.
func TestHostileSandbox(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	testenv.BothContainerds(t)
	hostileSuite(t, false)
}

// TestHostileSandboxPooled runs the same attacks from a sandbox claimed
// from a warm pool (issue 16): made before its user existed, closed, with
// larger limits than the claim asked for, then claimed. Every block must
// hold exactly as in a sandbox made for the request. It runs in the
// first pass only (containerd 1.6): a claim is the same code on both, and
// the suite costs about 2 minutes of CI.
func TestHostileSandboxPooled(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	hostileSuite(t, true)
}

func hostileSuite(t *testing.T, pooled bool) {
	prod := filepath.Join(containerdtest.RepoRoot(), "build", "images", "sandbox.tar")
	if _, err := os.Stat(prod); err != nil {
		containerdtest.Skip(t, "production image %s missing (run make image)", prod)
	}
	unlock, err := containerdtest.LockHostNetwork()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
	const prodImage = "localhost/matrx/sandbox:latest"
	var opts []daemontest.Option
	if pooled {
		// The pool's sandboxes get more than the attacker asks for: the
		// claim must lower the limits on the live cgroup for the memory
		// and pids attacks to be stopped where they are below.
		opts = append(opts, func(c *daemon.Config) {
			c.Limits.DefaultMemoryMB, c.Limits.DefaultPids, c.Limits.DefaultDiskMB = 1024, 512, 128
			c.Pools = []sandbox.PoolSpec{{Image: prodImage, Size: 1}}
		})
	}
	h := daemontest.StartProduction(t, opts...)
	ctx := context.Background()
	f, err := os.Open(prod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Client().ImportImage(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var pool []string
	if pooled {
		pool = waitPooled(t, h, 1, 2*time.Minute)
	}
	attacker := h.Create("mallory", &apitype.SandboxConfig{Image: prodImage, MemoryMB: 512, Pids: 256, DiskMB: 128})
	if pooled && (len(pool) != 1 || attacker.SandboxID != pool[0]) {
		t.Fatalf("the attacker's sandbox %s was not claimed from the pool %v", attacker.SandboxID, pool)
	}
	neighbour := h.Create("nina", nil)
	internet := internetHost(t)
	metadataHost(t)
	// The metadata address also answers on the sandbox listener's port:
	// opening that port on the gateway must not open it anywhere else.
	httpServer(t, "", fmt.Sprintf("169.254.169.254:%d", daemon.DefaultSandboxAPIPort), "ami-id: secret\n")
	// So does another host address (the host end of the internet veth).
	httpServer(t, "", fmt.Sprintf("203.0.113.1:%d", daemon.DefaultSandboxAPIPort), "host secret\n")
	// A sandbox without an address calls home through its own socket.
	offline := h.Create("olga", &apitype.SandboxConfig{Image: "localhost/matrx/sandbox:latest", Network: &apitype.NetworkConfig{Mode: "none"}})
	// The neighbour serves HTTP on its sandbox address.
	h.Exec(neighbour.SandboxID, "mkdir -p /tmp/www && echo neighbour secret > /tmp/www/index.html && (httpd -p 8080 -h /tmp/www &)")
	hosts := h.Exec(neighbour.SandboxID, "grep "+neighbour.SandboxID+" /etc/hosts")
	if len(strings.Fields(hosts.Stdout)) == 0 {
		t.Fatalf("the neighbour's /etc/hosts has no line for it: %+v", hosts)
	}
	neighbourIP := strings.Fields(hosts.Stdout)[0]
	gateway := h.Config.Network.Subnet.Addr().Next().String()

	// A host-only service the sandbox must not reach, on every host address.
	hostPort := hostSecretPort(t)

	healthy := func(t *testing.T) {
		t.Helper()
		if hl, err := h.Client().Health(ctx); err != nil || hl.Status != "healthy" {
			t.Fatalf("daemon unhealthy: %v %+v", err, hl)
		}
		// The neighbour must keep working. One slow answer on this shared
		// 2-vCPU VM (seen once in ~20 runs: a 30 s stall right after the
		// attacker's fillers, never reproduced) is logged and retried; a
		// neighbour the attack broke fails every try.
		for try := 1; ; try++ {
			r := h.Exec(neighbour.SandboxID, "echo ok")
			if r.Stdout == "ok\n" {
				break
			}
			if try == 3 {
				t.Fatalf("neighbour unhealthy after %d tries: %+v", try, r)
			}
			t.Logf("neighbour exec try %d did not answer (%+v); retrying", try, r)
		}
		if out, err := exec.Command("sh", "-c", "echo host-ok").Output(); err != nil || string(out) != "host-ok\n" {
			t.Fatalf("host cannot fork: %v", err)
		}
		// The attacker's sandbox itself also recovers.
		if r := h.Exec(attacker.SandboxID, "echo alive"); r.Stdout != "alive\n" {
			t.Fatalf("attacker sandbox did not recover: %+v", r)
		}
	}
	py := func(code string) string { return "python3 -c '" + code + "'" }

	attacks := []struct {
		name    string
		user    string
		timeout int
		cmd     string
		// blocked inspects the result and reports whether the attack failed.
		blocked func(r *apitype.ExecResponse) bool
	}{
		// The pids limit stops the bomb; the exec's deadline then kills
		// every process it made (they all live in the exec's cgroup).
		{"fork bomb", "agent", 5, `bomb() { bomb | bomb & }; bomb; sleep 60`,
			func(r *apitype.ExecResponse) bool { return r.TimedOut }},
		{"memory hog", "agent", 60, py(`x = bytearray(2 << 30); print("allocated")`),
			func(r *apitype.ExecResponse) bool { return !strings.Contains(r.Stdout, "allocated") && r.ExitCode != 0 }},
		{"disk filler", "agent", 60, "dd if=/dev/zero of=$HOME/fill bs=1M count=1000 2>&1; rm -f $HOME/fill",
			func(r *apitype.ExecResponse) bool { return strings.Contains(r.Stdout, "No space left on device") }},
		{"tmp filler", "agent", 60, "dd if=/dev/zero of=/tmp/fill bs=1M count=1000 2>&1; rm -f /tmp/fill",
			func(r *apitype.ExecResponse) bool { return strings.Contains(r.Stdout, "No space left on device") }},
		{"control dir filler", "agent", 30, "dd if=/dev/zero of=/.matrx/run/fill bs=1M count=100 2>&1; rm -f /.matrx/run/fill",
			func(r *apitype.ExecResponse) bool { return strings.Contains(r.Stdout, "No space left on device") }},
		{"read host through /proc/1/root", "root", 10, "ls /proc/1/root/ 2>&1; cat /proc/1/root/etc/hostname",
			func(r *apitype.ExecResponse) bool {
				return r.ExitCode != 0 && strings.Contains(r.Stdout, "Permission denied")
			}},
		{"cgroup escape", "root", 10, "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg 2>&1 || ls /sys/fs/cgroup/memory/tasks 2>&1 && echo $$ > /sys/fs/cgroup/memory/tasks",
			func(r *apitype.ExecResponse) bool { return r.ExitCode != 0 }},
		{"mount", "root", 10, "mount -t tmpfs none /mnt 2>&1 || mount --bind / /mnt",
			func(r *apitype.ExecResponse) bool { return r.ExitCode != 0 }},
		{"unshare user namespace (agent)", "agent", 10, "unshare -U -r id -u",
			func(r *apitype.ExecResponse) bool { return r.ExitCode != 0 && r.Stdout == "" }},
		{"unshare user namespace (root)", "root", 10, "unshare -U -m -r sh -c 'mount -t tmpfs none /mnt && echo mounted'",
			func(r *apitype.ExecResponse) bool { return !strings.Contains(r.Stdout, "mounted") }},
		{"write /proc/sys", "root", 10, "echo 1 > /proc/sys/vm/drop_caches || echo b > /proc/sysrq-trigger",
			func(r *apitype.ExecResponse) bool { return r.ExitCode != 0 }},
		{"load a kernel module", "root", 10, py(`import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); r = libc.syscall(313, os.open("/bin/true", 0), b"", 0); print(r, ctypes.get_errno())`),
			func(r *apitype.ExecResponse) bool { return strings.HasPrefix(r.Stdout, "-1 ") }},
		{"setuid escalation", "root", 20, "cp /bin/bash /home/agent/rootsh && chown 0:0 /home/agent/rootsh && chmod 4755 /home/agent/rootsh && cp /bin/bash /tmp/rootsh && chmod 4755 /tmp/rootsh && su -s /bin/sh agent -c '/home/agent/rootsh -p -c \"id -u\"; /tmp/rootsh -p -c \"id -u\"' ; rm -f /home/agent/rootsh /tmp/rootsh",
			func(r *apitype.ExecResponse) bool { return onlyLines(r.Stdout, "1000") }},
		{"setuid binaries of the image", "agent", 10, "su -c 'id -u' root </dev/null 2>&1; mount 2>&1 | head -1 >/dev/null; id -u",
			func(r *apitype.ExecResponse) bool {
				return strings.HasSuffix(r.Stdout, "1000\n") && !strings.Contains(r.Stdout, "\n0\n")
			}},
		{"ptrace a process it does not own", "agent", 10, py(`import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno()); open("/proc/1/mem","rb")`) + " 2>&1",
			func(r *apitype.ExecResponse) bool {
				return strings.Contains(r.Stdout, "-1 ") && strings.Contains(r.Stdout, "PermissionError")
			}},
		// The exec agent (runtime/execagent) runs as the agent user: the
		// sandbox may reach its socket, but it serves only matrxd.
		{"ask the exec agent to run a command", "agent", 10, `cat > /tmp/ask.py <<'EOF'
import json, socket, struct
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect("\0matrx-exec-agent")
req = json.dumps({"argv": ["/bin/sh", "-c", "touch /tmp/agent-pwned"], "env": []}).encode()
try:
    socket.send_fds(s, [struct.pack(">I", len(req))], [0, 1, 2])
    s.sendall(req)
    print("reply", repr(s.recv(100)))
except OSError as e:
    print("refused", e)
EOF
python3 /tmp/ask.py 2>&1; sleep 0.5; test -e /tmp/agent-pwned && echo PWNED; true`,
			func(r *apitype.ExecResponse) bool {
				return !strings.Contains(r.Stdout, "PWNED") && (strings.Contains(r.Stdout, "refused") || strings.Contains(r.Stdout, "reply b''"))
			}},
		// Same uid, but it is not dumpable: no ptrace, and not even the
		// read-mode /proc files (its fds, where its socket is).
		{"ptrace the exec agent", "agent", 10, `pid=$(for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^/.matrx/init exec-agent' && basename $p; done | head -1); export pid; echo "agent=$pid"; ls /proc/$pid/fd >/dev/null 2>&1 && echo FDS; cat /proc/$pid/environ >/dev/null 2>&1 && echo ENVIRON; ` +
			py(`import ctypes, os; pid = int(os.environ["pid"]); libc = ctypes.CDLL(None, use_errno=True); print(libc.ptrace(16, pid, 0, 0), ctypes.get_errno()); open("/proc/%d/mem" % pid, "rb")`) + " 2>&1",
			func(r *apitype.ExecResponse) bool {
				return !strings.Contains(r.Stdout, "agent=\n") && !strings.Contains(r.Stdout, "FDS") && !strings.Contains(r.Stdout, "ENVIRON") &&
					strings.Contains(r.Stdout, "-1 ") && strings.Contains(r.Stdout, "PermissionError")
			}},
		{"raw socket", "root", 10, py(`import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("raw ok")`) + " 2>&1",
			func(r *apitype.ExecResponse) bool {
				return !strings.Contains(r.Stdout, "raw ok") && strings.Contains(r.Stdout, "PermissionError")
			}},
		{"cloud metadata service", "agent", 10, "curl -sS -m 3 http://169.254.169.254/latest/meta-data/ 2>&1",
			func(r *apitype.ExecResponse) bool { return r.ExitCode != 0 }},
		{"daemon socket", "root", 10, "ls -la /run/matrx 2>&1; find / -xdev -type s 2>/dev/null | grep -v '^/proc' ; test -S /run/matrx/matrxd.sock",
			func(r *apitype.ExecResponse) bool {
				return r.ExitCode != 0 && !strings.Contains(r.Stdout, "matrxd.sock")
			}},
		{"host-only port (loopback)", "agent", 10, fmt.Sprintf("curl -sS -m 3 http://127.0.0.1:%d/ 2>&1", hostPort),
			func(r *apitype.ExecResponse) bool {
				return r.ExitCode != 0 && !strings.Contains(r.Stdout, "host secret")
			}},
		{"host-only port (bridge gateway)", "agent", 10, fmt.Sprintf("curl -sS -m 3 http://%s:%d/ 2>&1", gateway, hostPort),
			func(r *apitype.ExecResponse) bool {
				return r.ExitCode != 0 && !strings.Contains(r.Stdout, "host secret")
			}},
		{"neighbour sandbox", "agent", 10, "curl -sS -m 3 http://" + neighbourIP + ":8080/ 2>&1",
			func(r *apitype.ExecResponse) bool {
				return r.ExitCode != 0 && !strings.Contains(r.Stdout, "neighbour secret")
			}},
		{"cloud metadata on a local alias", "agent", 10, "curl -sS -m 3 http://169.254.169.254/ 2>&1",
			func(r *apitype.ExecResponse) bool { return r.ExitCode != 0 && !strings.Contains(r.Stdout, "ami-id") }},
		{"metadata over IPv6", "agent", 10, "curl -sS -m 3 -g 'http://[fd00:ec2::254]/' 2>&1",
			func(r *apitype.ExecResponse) bool { return r.ExitCode != 0 }},
		// The way home serves the caller about itself, nothing else.
		{"call home as the neighbour", "agent", 10, `for r in heartbeat complete; do curl -sS -m 3 -o /dev/null -w '%{http_code} ' -XPOST $ORCHESTRATOR_URL/sandboxes/` + neighbour.SandboxID + `/$r; done`,
			func(r *apitype.ExecResponse) bool { return r.Stdout == "403 403 " }},
		{"host-only routes over the way home", "agent", 10, `curl -sS -m 3 -o /dev/null -w '%{http_code} ' -XPOST $ORCHESTRATOR_URL/sandboxes -d '{"user_id":"mallory"}'; curl -sS -m 3 -o /dev/null -w '%{http_code}' -XPOST $ORCHESTRATOR_URL/sandboxes/$SANDBOX_ID/exec -d '{"command":"id"}'`,
			func(r *apitype.ExecResponse) bool { return r.Stdout == "404 404" }},
		{"metadata on the sandbox listener's port", "agent", 10, fmt.Sprintf("curl -sS -m 3 http://169.254.169.254:%d/ 2>&1", daemon.DefaultSandboxAPIPort),
			func(r *apitype.ExecResponse) bool { return r.ExitCode != 0 && !strings.Contains(r.Stdout, "ami-id") }},
		{"the sandbox listener's port on other host addresses", "agent", 10, fmt.Sprintf("curl -sS -m 3 http://203.0.113.1:%d/ 2>&1", daemon.DefaultSandboxAPIPort),
			func(r *apitype.ExecResponse) bool {
				return r.ExitCode != 0 && !strings.Contains(r.Stdout, "host secret")
			}},
	}
	// Positive control: the sandbox does have the internet (a TEST-NET
	// host in a test namespace), so the blocks above are rules at work.
	if r := h.Exec(attacker.SandboxID, "curl -sS -m 5 http://"+internet+"/"); r.Stdout != "hello from the internet\n" {
		t.Fatalf("default-mode egress does not work: %+v", r)
	}
	if r := h.Exec(neighbour.SandboxID, "wget -qO- http://127.0.0.1:8080/"); r.Stdout != "neighbour secret\n" {
		t.Fatalf("neighbour's server is not up (the neighbour test would prove nothing): %+v", r)
	}
	// Positive controls of the way home, with the real curl: a heartbeat
	// from the attacker over the gateway, and from the sandbox without an
	// address over its socket (another sandbox's id refused there too).
	if r := h.Exec(attacker.SandboxID, `curl -sS -m 5 -XPOST $ORCHESTRATOR_URL/sandboxes/$SANDBOX_ID/heartbeat`); !strings.Contains(r.Stdout, `"acknowledged":true`) {
		t.Fatalf("heartbeat from inside: %+v", r)
	}
	if got, err := h.Client().Get(ctx, attacker.SandboxID); err != nil || got.LastHeartbeatAt == nil {
		t.Fatalf("the heartbeat from inside was not recorded: %v %+v", err, got)
	}
	if r := h.Exec(offline.SandboxID, `curl -sS -m 5 --unix-socket "$MATRX_API_SOCKET" -XPOST "$ORCHESTRATOR_URL/sandboxes/$SANDBOX_ID/heartbeat"; echo; `+
		`curl -sS -m 5 -o /dev/null -w '%{http_code}' --unix-socket "$MATRX_API_SOCKET" -XPOST "$ORCHESTRATOR_URL/sandboxes/`+attacker.SandboxID+`/complete"`); !strings.Contains(r.Stdout, `"acknowledged":true`) || !strings.HasSuffix(r.Stdout, "\n403") {
		t.Fatalf("heartbeat over the socket of a sandbox without an address: %+v", r)
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			timeout := a.timeout
			r, err := h.Client().Exec(ctx, attacker.SandboxID, apitype.ExecRequest{Command: a.cmd, User: a.user, Timeout: &timeout})
			if err != nil {
				t.Fatalf("exec: %v", err)
			}
			if !a.blocked(r) {
				t.Fatalf("attack was not blocked: exit %d timed_out %v\nstdout: %s\nstderr: %s", r.ExitCode, r.TimedOut, r.Stdout, r.Stderr)
			}
			healthy(t)
		})
	}
}

// onlyLines reports whether out has at least one line and every line is want.
func onlyLines(out, want string) bool {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, l := range lines {
		if l != want {
			return false
		}
	}
	return len(lines) > 0 && out != ""
}
