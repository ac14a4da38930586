package bootstraptest

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// Commands that change a host. In every install.sh run of these tests they
// are replaced by stand-ins that log their call and fail with status 97.
var (
	// hostChangers must never run: not in --dry-run, and not in a real run
	// that is expected to stop before its first change.
	hostChangers = []string{
		"apt-get", "apt", "dpkg", "dnf", "yum", "rpm",
		"groupadd", "useradd", "usermod",
		"systemctl", "sysctl",
		"install", "cp", "ln", "sed", "tee", "chown", "wget",
	}
	// fileChangers are what fetch-verified.sh uses on its own temp files in
	// a real run; in --dry-run they must not run either.
	fileChangers = []string{"curl", "mktemp", "mv", "chmod", "rm", "mkdir", "touch"}
)

// readOnlyCall reports whether a logged stand-in call only queries the
// package database (allowed; the AL2023 dry run asks dnf what exists).
func readOnlyCall(line string) bool {
	return strings.HasPrefix(line, "rpm -q --quiet ") || strings.HasPrefix(line, "dnf -q list --available ")
}

// shimPath builds a directory of stand-ins and returns (PATH, log file).
func shimPath(t *testing.T, names []string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls.log")
	for _, n := range names {
		script := "#!/bin/sh\nprintf '%s\\n' \"" + n + " $*\" >>'" + log + "'\nexit 97\n"
		if err := os.WriteFile(filepath.Join(dir, n), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir + string(os.PathListSeparator) + os.Getenv("PATH"), log
}

func shimCalls(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// installScript checks the prerequisites for running install.sh here.
func installScript(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("bootstrap/install.sh targets Linux, not %s", runtime.GOOS)
	}
	needLinuxRoot(t)
	needTool(t, "bash")
	needTool(t, "dpkg-query") // the tests describe a Debian/Ubuntu host
	return filepath.Join(repoRoot(t), "bootstrap", "install.sh")
}

// fakeOSRelease writes an os-release file so the tests do not depend on
// which distribution runs them.
func fakeOSRelease(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "os-release")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	debian12 = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n"
	al2023   = "NAME=\"Amazon Linux\"\nVERSION=\"2023\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"2023\"\nPRETTY_NAME=\"Amazon Linux 2023\"\n"
)

// fakeBinDir holds stand-in matrxd, matrx, matrx-init and matrx-relay
// executables.
func fakeBinDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []string{"matrxd", "matrx", "matrx-init", "matrx-relay"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\necho fake "+b+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// hostState fingerprints everything install.sh may create or change, so a
// test can show a run changed nothing.
func hostState(t *testing.T) map[string]string {
	t.Helper()
	state := map[string]string{}
	for _, p := range []string{
		"/etc/fuse.conf",
		"/etc/sysctl.d/90-matrx.conf",
		"/etc/systemd/system/matrxd.service",
		"/etc/systemd/system/matrxd.socket",
		"/etc/matrx",
		"/usr/local/bin/matrxd",
		"/usr/local/bin/matrx",
		"/usr/local/bin/matrx-init",
		"/usr/local/bin/matrx-relay",
		"/usr/local/lib/matrx",
		"/etc/apt/sources.list.d",
	} {
		state[p] = fingerprint(p)
	}
	_, err := exec.Command("getent", "group", "matrx").Output()
	state["group matrx"] = strings.TrimSpace(errString(err))
	tmps, _ := filepath.Glob("/tmp/matrx-bootstrap.*")
	sort.Strings(tmps)
	state["/tmp/matrx-bootstrap.*"] = strings.Join(tmps, " ")
	return state
}

func errString(err error) string {
	if err == nil {
		return "exists"
	}
	return err.Error()
}

// fingerprint is a digest of a file's or directory tree's modes and bytes.
func fingerprint(root string) string {
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h.Write([]byte(p + "\x00" + fi.Mode().String() + "\x00"))
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if os.IsNotExist(err) {
		return "absent"
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return hex.EncodeToString(h.Sum(nil))
}

func diffState(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed: %q -> %q", k, v, after[k])
		}
	}
}

func TestInstallDryRunChangesNothing(t *testing.T) {
	script := installScript(t)
	bin := fakeBinDir(t)
	tests := []struct {
		name      string
		osRelease string
		args      []string
		wantOut   []string
		allowRead bool // stand-in package queries allowed (dnf host)
	}{
		{
			name:      "debian full",
			osRelease: debian12,
			args:      []string{"--dry-run", "--with-networking", "--test-tools", "--bin-dir", bin},
			wantOut: []string{
				"bootstrap: detect os", "(apt)",
				"bootstrap: preflight",
				// x86_64 has a pinned tarball checksum; other arches make a
				// real run fail (covered by the arm64 pin being empty).
				"mount-s3",
				"enable IPv4 forwarding",
				"/usr/local/bin/matrxd",
				"/usr/local/lib/matrx/matrx-init",
				"/etc/systemd/system/matrxd.service",
				"dry run done: nothing was changed",
			},
		},
		{
			name:      "debian without mount-s3, missing binaries",
			osRelease: debian12,
			args:      []string{"--dry-run", "--without-mount-s3", "--bin-dir", filepath.Join(bin, "nope")},
			wantOut: []string{
				"skip mount-s3 (--without-mount-s3)",
				"leave IP forwarding as it is",
				"a real run would FAIL here: missing",
			},
		},
		{
			name:      "debian packages only",
			osRelease: debian12,
			args:      []string{"--packages-only", "--test-tools", "--dry-run"},
			wantOut:   []string{"bootstrap: detect os", "(apt)"},
		},
		{
			name:      "amazon linux 2023",
			osRelease: al2023,
			args:      []string{"--dry-run", "--bin-dir", bin},
			wantOut: []string{
				"(dnf)",
				"would download https://s3.amazonaws.com/mountpoint-s3-release/1.14.0/",
				".rpm and require sha256 ",
				"would run: dnf install -y -q containerd runc fuse3",
			},
			allowRead: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, log := shimPath(t, append(append([]string{}, hostChangers...), fileChangers...))
			before := hostState(t)
			r := runCmd(t, t.TempDir(), []string{
				"PATH=" + path,
				"MATRX_OS_RELEASE=" + fakeOSRelease(t, tc.osRelease),
			}, script, tc.args...)
			after := hostState(t)

			if r.code != 0 {
				t.Fatalf("dry run failed: %s", r)
			}
			out := r.stdout + r.stderr
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, r)
				}
			}
			if strings.Contains(out, "FAILED at step") {
				t.Errorf("dry run reported a failed step:\n%s", r)
			}
			for _, c := range shimCalls(t, log) {
				if !(tc.allowRead && readOnlyCall(c)) {
					t.Errorf("dry run executed %q", c)
				}
			}
			diffState(t, before, after)
		})
	}
}

// TestInstallFailingStepIsNamed forces a failure at a chosen step through
// the MATRX_BOOTSTRAP_FAIL_STEP hook (in --dry-run, so nothing changes) and
// checks the ERR trap names that step, once.
func TestInstallFailingStepIsNamed(t *testing.T) {
	script := installScript(t)
	bin := fakeBinDir(t)
	for _, step := range []string{
		"detect os",
		"preflight",
		"create system group matrx",
		"install systemd units",
		"install binaries from*", // a glob, as the hook allows
	} {
		t.Run(step, func(t *testing.T) {
			path, log := shimPath(t, append(append([]string{}, hostChangers...), fileChangers...))
			r := runCmd(t, t.TempDir(), []string{
				"PATH=" + path,
				"MATRX_OS_RELEASE=" + fakeOSRelease(t, debian12),
				"MATRX_BOOTSTRAP_FAIL_STEP=" + step,
			}, script, "--dry-run", "--without-mount-s3", "--bin-dir", bin)
			if r.code == 0 {
				t.Fatalf("forced failure did not fail: %s", r)
			}
			name := strings.TrimSuffix(step, "*")
			want := "bootstrap: FAILED at step: " + name
			if n := strings.Count(r.stderr, want); n != 1 {
				t.Errorf("stderr has %q %d times, want once:\n%s", want, n, r)
			}
			if c := shimCalls(t, log); len(c) != 0 {
				t.Errorf("ran %q", c)
			}
		})
	}
}

// TestInstallRealFailureIsNamed runs install.sh for real (not --dry-run)
// with a missing --bin-dir: preflight, which runs before any change, must
// stop it and be named.
func TestInstallRealFailureIsNamed(t *testing.T) {
	script := installScript(t)
	path, log := shimPath(t, hostChangers)
	before := hostState(t)
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	r := runCmd(t, t.TempDir(), []string{
		"PATH=" + path,
		"MATRX_OS_RELEASE=" + fakeOSRelease(t, debian12),
	}, script, "--without-mount-s3", "--bin-dir", missing)
	diffState(t, before, hostState(t))
	if r.code == 0 {
		t.Fatalf("install with missing binaries succeeded: %s", r)
	}
	for _, w := range []string{
		"missing " + missing + "/matrxd: run 'make build' first",
		"bootstrap: FAILED at step: preflight",
	} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r)
		}
	}
	if c := shimCalls(t, log); len(c) != 0 {
		t.Errorf("ran %q", c)
	}
}

// TestInstallMountS3Checksum runs install.sh for real against a local
// stand-in of AWS's release bucket (MATRX_MOUNT_S3_BASE_URL). A wrong
// checksum must abort before anything is installed, naming the step; the
// right one must get past verification to the package install (which the
// apt-get stand-in refuses, so the host is still untouched).
func TestInstallMountS3Checksum(t *testing.T) {
	script := installScript(t)
	needTool(t, "curl")
	needTool(t, "sha256sum")
	payload := []byte("not really a tarball")
	srv := newArtifactServer(t, payload)
	bin := fakeBinDir(t)
	arch := map[string]string{"amd64": "x86_64", "arm64": "arm64"}[runtime.GOARCH]
	if arch == "" {
		t.Skipf("no mount-s3 build for %s", runtime.GOARCH)
	}
	wantPath := "/releases/9.9.9/" + arch + "/mount-s3-9.9.9-" + arch + ".tar.gz"

	run := func(t *testing.T, sum string) (result, []string) {
		path, log := shimPath(t, hostChangers)
		r := runCmd(t, t.TempDir(), []string{
			"PATH=" + path,
			"MATRX_OS_RELEASE=" + fakeOSRelease(t, debian12),
			"MATRX_MOUNT_S3_BASE_URL=" + srv.URL + "/releases",
			"MATRX_MOUNT_S3_VERSION=9.9.9",
			"MATRX_MOUNT_S3_SHA256=" + sum,
		}, script, "--bin-dir", bin)
		return r, shimCalls(t, log)
	}

	t.Run("mismatch aborts and installs nothing", func(t *testing.T) {
		before := hostState(t)
		r, calls := run(t, sha256Hex([]byte("the real package")))
		diffState(t, before, hostState(t))
		if r.code == 0 {
			t.Fatalf("install succeeded with a bad checksum: %s", r)
		}
		for _, w := range []string{
			"CHECKSUM MISMATCH",
			"nothing installed",
			"bootstrap: FAILED at step: fetch and verify mount-s3 9.9.9",
		} {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("stderr lacks %q:\n%s", w, r)
			}
		}
		if got, _ := srv.lastPath.Load().(string); got != wantPath {
			t.Errorf("fetched %q, want %q", got, wantPath)
		}
		if len(calls) != 0 {
			t.Errorf("ran %q after a checksum mismatch", calls)
		}
	})

	t.Run("match passes verification", func(t *testing.T) {
		before := hostState(t)
		r, calls := run(t, sha256Hex(payload))
		diffState(t, before, hostState(t))
		if !strings.Contains(r.stdout, "fetch-verified: verified sha256 "+sha256Hex(payload)) {
			t.Fatalf("verification did not pass:\n%s", r)
		}
		if strings.Contains(r.stderr, "FAILED at step: fetch") {
			t.Errorf("failed in the fetch step:\n%s", r)
		}
		// The next host change is the package manager's: the stand-in
		// refuses it, and the run stops there.
		if len(calls) == 0 || !strings.HasPrefix(calls[0], "apt-get ") {
			t.Errorf("first host change = %q, want apt-get", calls)
		}
		if r.code == 0 || !strings.Contains(r.stderr, "bootstrap: FAILED at step:") {
			t.Errorf("run did not stop at the refused apt-get:\n%s", r)
		}
	})
}

func TestInstallUsage(t *testing.T) {
	script := installScript(t)
	dir := t.TempDir()
	r := runCmd(t, dir, nil, script, "--help")
	if r.code != 0 {
		t.Fatalf("--help: %s", r)
	}
	for _, flag := range []string{"--packages-only", "--test-tools", "--with-networking", "--without-mount-s3", "--bin-dir", "--dry-run"} {
		if !strings.Contains(r.stdout, flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
	if r := runCmd(t, dir, nil, script, "--frobnicate"); r.code != 2 || !strings.Contains(r.stderr, "unknown argument: --frobnicate") {
		t.Errorf("unknown flag: %s", r)
	}
	if r := runCmd(t, dir, nil, script, "--bin-dir"); r.code != 2 {
		t.Errorf("--bin-dir without value: %s", r)
	}
}
