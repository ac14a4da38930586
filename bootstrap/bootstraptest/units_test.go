package bootstraptest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"
)

// parseUnit reads a unit file into section -> directive -> values (a
// directive may repeat, e.g. After=).
func parseUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts, err := unit.DeserializeOptions(f)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	out := map[string]map[string][]string{}
	for _, o := range opts {
		if out[o.Section] == nil {
			out[o.Section] = map[string][]string{}
		}
		out[o.Section][o.Name] = append(out[o.Section][o.Name], o.Value)
	}
	return out
}

// words splits the values of a list directive (After=a b, After=c).
func words(vals []string) []string {
	var w []string
	for _, v := range vals {
		w = append(w, strings.Fields(v)...)
	}
	return w
}

func TestUnitDirectives(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "bootstrap", "systemd")
	units := map[string]map[string]map[string][]string{
		"matrxd.service": parseUnit(t, filepath.Join(dir, "matrxd.service")),
		"matrxd.socket":  parseUnit(t, filepath.Join(dir, "matrxd.socket")),
	}

	// Single-valued directives: exactly one occurrence with this value.
	exact := []struct {
		unit, section, name, value, why string
	}{
		{"matrxd.service", "Service", "Type", "notify", "daemon sends READY=1 once serving"},
		{"matrxd.service", "Service", "NotifyAccess", "main", "only matrxd may notify"},
		{"matrxd.service", "Service", "WatchdogSec", "30s", "daemon pings WATCHDOG=1 at half the interval"},
		{"matrxd.service", "Service", "ExecStart", "/usr/local/bin/matrxd", "install.sh installs it there"},
		{"matrxd.service", "Service", "EnvironmentFile", "-/etc/matrx/matrxd.env", "optional config"},
		{"matrxd.service", "Service", "KillMode", "process", "restarts must not kill sandboxes or FUSE helpers"},
		{"matrxd.service", "Service", "Delegate", "yes", "matrxd manages sub-cgroups"},
		{"matrxd.service", "Service", "StateDirectory", "matrx", "/var/lib/matrx"},
		{"matrxd.service", "Service", "RuntimeDirectory", "matrx", "/run/matrx"},
		{"matrxd.service", "Service", "RuntimeDirectoryPreserve", "yes", "socket and mounts outlive restarts"},
		{"matrxd.service", "Service", "OOMScoreAdjust", "-500", "kernel kills sandbox code first"},
		{"matrxd.service", "Service", "LimitNOFILE", "1048576", "many sandboxes, many fds"},
		{"matrxd.service", "Service", "Restart", "always", "daemon must be up"},
		{"matrxd.service", "Service", "RestartSec", "2", "restart delay"},
		{"matrxd.service", "Install", "WantedBy", "multi-user.target", "enabled at boot"},
		{"matrxd.service", "Install", "Also", "matrxd.socket", "enabling the service enables the socket"},
		{"matrxd.socket", "Socket", "ListenStream", "/run/matrx/matrxd.sock", "matrxd's default socket"},
		{"matrxd.socket", "Socket", "SocketMode", "0660", "root and group only"},
		{"matrxd.socket", "Socket", "SocketGroup", "matrx", "group membership grants API access"},
		{"matrxd.socket", "Socket", "RemoveOnStop", "no", "documented choice"},
		{"matrxd.socket", "Socket", "Accept", "no", "one daemon gets the listening fd"},
		{"matrxd.socket", "Install", "WantedBy", "sockets.target", "socket enabled at boot"},
	}
	for _, c := range exact {
		got := units[c.unit][c.section][c.name]
		if len(got) != 1 || got[0] != c.value {
			t.Errorf("%s [%s] %s = %q, want exactly %q (%s)", c.unit, c.section, c.name, got, c.value, c.why)
		}
	}

	// List directives: must contain these entries.
	contains := []struct {
		unit, section, name string
		want                []string
	}{
		{"matrxd.service", "Unit", "After", []string{"containerd.service", "network-online.target", "matrxd.socket"}},
		{"matrxd.service", "Unit", "Requires", []string{"containerd.service", "matrxd.socket"}},
		{"matrxd.service", "Unit", "Wants", []string{"network-online.target"}},
	}
	for _, c := range contains {
		got := words(units[c.unit][c.section][c.name])
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("%s [%s] %s = %q, missing %q", c.unit, c.section, c.name, got, w)
			}
		}
	}

	// The watchdog must leave the daemon room for a ping at half the period;
	// and there must be no KillMode/Type duplicates in other sections.
	for name, u := range units {
		for section, dirs := range u {
			if section != "Service" && (dirs["KillMode"] != nil || dirs["Type"] != nil) {
				t.Errorf("%s: service directives in [%s]", name, section)
			}
		}
	}
}

// TestUnitsSystemdAnalyzeVerify runs `systemd-analyze verify` on copies of
// the units. verify needs no running systemd (PID 1 here is not systemd),
// but it checks that ExecStart= is executable, so the copy's ExecStart
// points at a dummy script in the temp dir. Any output (verify prints
// unknown keys and bad values as warnings yet exits 0) fails the test.
func TestUnitsSystemdAnalyzeVerify(t *testing.T) {
	analyze := needTool(t, "systemd-analyze")
	src := filepath.Join(repoRoot(t), "bootstrap", "systemd")
	tmp := t.TempDir()
	dummy := filepath.Join(tmp, "matrxd")
	if err := os.WriteFile(dummy, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"matrxd.service", "matrxd.socket", "matrx-vk.service"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if bin, ok := strings.CutSuffix(name, ".service"); ok {
			exec := "\nExecStart=/usr/local/bin/" + bin + "\n"
			if !strings.Contains(s, exec) {
				t.Fatalf("%s: ExecStart=/usr/local/bin/%s line not found", name, bin)
			}
			s = strings.Replace(s, exec, "\nExecStart="+dummy+"\n", 1)
		}
		if err := os.WriteFile(filepath.Join(tmp, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verify := func(files ...string) result {
		args := append([]string{"verify", "--man=no"}, files...)
		// Log to stderr even where a journal is running (in the VM).
		return runCmd(t, tmp, []string{"SYSTEMD_LOG_TARGET=console"}, analyze, args...)
	}

	r := verify("./matrxd.service", "./matrxd.socket", "./matrx-vk.service")
	if r.code != 0 || strings.TrimSpace(r.stdout+r.stderr) != "" {
		t.Fatalf("systemd-analyze verify: %s", r)
	}

	// Control: verify does flag a bad directive, so the check above means
	// something.
	b, _ := os.ReadFile(filepath.Join(tmp, "matrxd.service"))
	bad := strings.Replace(string(b), "\nKillMode=process\n", "\nKillMode=bogus\n", 1)
	if err := os.WriteFile(filepath.Join(tmp, "broken.service"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := verify("./broken.service"); !strings.Contains(r.stdout+r.stderr, "bogus") {
		t.Fatalf("systemd-analyze verify did not flag KillMode=bogus: %s", r)
	}
}
