package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/matrx-dev/matrx/hostconfig"
	"github.com/matrx-dev/matrx/sshgate"
)

// fakeHost is a broken-or-healthy host tree under a temp dir.
type fakeHost struct {
	t    *testing.T
	Host Host
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	root := t.TempDir()
	h := Host{
		Proc: filepath.Join(root, "proc"), Sys: filepath.Join(root, "sys"),
		Dev: filepath.Join(root, "dev"), Etc: filepath.Join(root, "etc"),
		Path:    filepath.Join(root, "bin"),
		CNIDirs: []string{filepath.Join(root, "cni1"), filepath.Join(root, "cni2")},
	}
	for _, d := range []string{h.Proc, h.Sys, h.Dev, h.Etc, h.Path} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &fakeHost{t: t, Host: h}
}

// write creates root-relative file p (e.g. "proc/filesystems") with content.
func (f *fakeHost) write(root, rel, content string) {
	f.t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// binary puts an executable script on the fake PATH printing out.
func (f *fakeHost) binary(name, out string) {
	f.t.Helper()
	p := filepath.Join(f.Host.Path, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+out+"'\n"), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeHost) run(c func(context.Context, *env) Result, cfg Config) Result {
	cfg.defaults()
	e := &env{cfg: cfg, host: f.Host, timeout: 5 * time.Second}
	defer e.close()
	return c(context.Background(), e)
}

const (
	procCgroupsV1 = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nmemory\t4\t1\t1\nfreezer\t6\t1\t1\npids\t8\t1\t1\n"
	mountCgroupV1 = "30 25 0:26 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu\n" +
		"31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n" +
		"32 25 0:28 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n"
	mountFreezer = "33 25 0:29 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer\n"
	mountUnified = "34 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n"
	mountV2      = "35 24 0:31 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate\n"
)

func TestCgroups(t *testing.T) {
	cases := []struct {
		name               string
		mountinfo, cgroups string
		controllers        string // v2 cgroup.controllers; "" = absent
		status             Status
		detail             string
	}{
		{"v1 complete", mountCgroupV1 + mountFreezer, procCgroupsV1, "", Pass, "cgroup v1: cpu, memory, pids, freezer"},
		{"v1 hybrid", mountCgroupV1 + mountFreezer + mountUnified, procCgroupsV1, "", Pass, "hybrid"},
		{"v1 freezer not mounted", mountCgroupV1, procCgroupsV1, "", Fail, "not mounted: freezer"},
		{"v1 memory disabled", mountCgroupV1 + mountFreezer, strings.Replace(procCgroupsV1, "memory\t4\t1\t1", "memory\t0\t1\t0", 1), "", Fail, "not enabled in /proc/cgroups: memory"},
		{"no cgroup fs", "22 1 0:5 / /proc rw - proc proc rw\n", procCgroupsV1, "", Fail, "no cgroup filesystem"},
		{"v2 complete", mountV2, "", "cpuset cpu io memory hugetlb pids rdma misc", Pass, "cgroup v2: cpuset cpu io memory"},
		{"v2 without pids", mountV2, "", "cpuset cpu io memory", Fail, "missing from cgroup.controllers: pids"},
		{"v2 unreadable", mountV2, "", "", Fail, "cannot read cgroup.controllers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost(t)
			f.write(f.Host.Proc, "self/mountinfo", c.mountinfo)
			if c.cgroups != "" {
				f.write(f.Host.Proc, "cgroups", c.cgroups)
			}
			if c.controllers != "" {
				f.write(f.Host.Sys, "fs/cgroup/cgroup.controllers", c.controllers+"\n")
			}
			r := f.run(checkCgroups, Config{})
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) || (r.Status != Pass && r.Fix == "") {
				t.Fatalf("got %+v, want %s containing %q (with a fix unless PASS)", r, c.status, c.detail)
			}
		})
	}
	t.Run("no mountinfo", func(t *testing.T) {
		if r := newFakeHost(t).run(checkCgroups, Config{}); r.Status != Fail {
			t.Fatalf("%+v", r)
		}
	})
}

func TestKernelFiles(t *testing.T) {
	type file struct{ root, rel, content string }
	cases := []struct {
		name   string
		check  func(context.Context, *env) Result
		files  []file
		status Status
		detail string
	}{
		{"overlay present", checkOverlay, []file{{"proc", "filesystems", "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n"}}, Pass, "overlay listed"},
		{"overlay absent", checkOverlay, []file{{"proc", "filesystems", "nodev\tsysfs\n\text4\nnodev\toverlayfs-not\n"}}, Fail, "not in /proc/filesystems"},
		{"overlay no proc", checkOverlay, nil, Fail, "cannot read"},
		{"ip_forward on", checkIPForward, []file{{"proc", "sys/net/ipv4/ip_forward", "1\n"}}, Pass, "= 1"},
		{"ip_forward off", checkIPForward, []file{{"proc", "sys/net/ipv4/ip_forward", "0\n"}}, Warn, "= 0"},
		{"ip_forward garbage", checkIPForward, []file{{"proc", "sys/net/ipv4/ip_forward", "yes\n"}}, Warn, "not a number"},
		{"ip_forward missing", checkIPForward, nil, Warn, "cannot read"},
		{"userns on", checkUserNS, []file{{"proc", "sys/user/max_user_namespaces", "96365\n"}}, Pass, "max_user_namespaces = 96365"},
		{"userns off", checkUserNS, []file{{"proc", "sys/user/max_user_namespaces", "0\n"}}, Warn, "disabled"},
		{"userns absent", checkUserNS, nil, Warn, "no user namespaces"},
		{"userns debian knob", checkUserNS, []file{
			{"proc", "sys/user/max_user_namespaces", "15000\n"},
			{"proc", "sys/kernel/unprivileged_userns_clone", "0\n"},
		}, Pass, "unprivileged_userns_clone = 0 (unprivileged users cannot"},
		{"fuse.conf set", checkFUSEConf, []file{{"etc", "fuse.conf", "# mount_max = 1000\n  user_allow_other  \n"}}, Pass, "is set"},
		{"fuse.conf commented", checkFUSEConf, []file{{"etc", "fuse.conf", "#user_allow_other\n"}}, Warn, "not set"},
		{"fuse.conf missing", checkFUSEConf, nil, Warn, "does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost(t)
			roots := map[string]string{"proc": f.Host.Proc, "etc": f.Host.Etc}
			for _, fl := range c.files {
				f.write(roots[fl.root], fl.rel, fl.content)
			}
			r := f.run(c.check, Config{})
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) || (r.Status != Pass && r.Fix == "") {
				t.Fatalf("got %+v, want %s containing %q (with a fix unless PASS)", r, c.status, c.detail)
			}
		})
	}
}

func TestDiskQuotaCheck(t *testing.T) {
	const fs = "nodev\tsysfs\n\text4\nnodev\toverlay\n"
	cases := []struct {
		name          string
		loop, mkfs    bool
		filesystems   string
		status        Status
		detail, inFix string
	}{
		{"ready", true, true, fs, Pass, "ext4 in /proc/filesystems", ""},
		{"no loop-control", false, true, fs, Fail, "/dev/loop-control is missing", "modprobe loop"},
		{"no mkfs", true, false, fs, Fail, "mkfs.ext4 is not in PATH", "e2fsprogs"},
		{"no ext4", true, true, "nodev\tsysfs\n", Fail, "ext4 is not in /proc/filesystems", "--default-disk-mb 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost(t)
			if c.loop {
				if err := os.Symlink("/dev/null", filepath.Join(f.Host.Dev, "loop-control")); err != nil {
					t.Fatal(err)
				}
			}
			if c.mkfs {
				f.binary("mkfs.ext4", "")
			}
			f.write(f.Host.Proc, "filesystems", c.filesystems)
			r := f.run(checkDiskQuota, Config{})
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) || !strings.Contains(r.Fix, c.inFix) {
				t.Fatalf("got %+v, want %s containing %q, fix with %q", r, c.status, c.detail, c.inFix)
			}
		})
	}
}

func TestFUSE(t *testing.T) {
	s3 := Config{S3: hostconfig.S3{Bucket: "matrx-data"}}
	cases := []struct {
		name     string
		device   string // "char", "file" or "" (absent)
		binaries map[string]string
		cfg      Config
		check    func(context.Context, *env) Result
		status   Status
		detail   string
	}{
		{"device present", "char", nil, Config{}, checkFUSEDevice, Pass, "character device"},
		{"device missing, local storage", "", nil, Config{}, checkFUSEDevice, Warn, "only local storage"},
		{"device missing, s3", "", nil, s3, checkFUSEDevice, Fail, "cannot be mounted"},
		{"device is a file", "file", nil, s3, checkFUSEDevice, Fail, "not a character device"},
		{"mount-s3", "", map[string]string{"mount-s3": "mount-s3 1.9.1", "s3fs": "s3fs V1.90"}, s3, checkFUSEDriver, Pass, "mount-s3 1.9.1 at "},
		{"only s3fs", "", map[string]string{"s3fs": "Amazon Simple Storage Service File System V1.90"}, s3, checkFUSEDriver, Warn, "only the fallback driver s3fs"},
		{"no driver, local", "", nil, Config{}, checkFUSEDriver, Warn, "neither mount-s3 nor s3fs"},
		{"no driver, s3", "", nil, s3, checkFUSEDriver, Fail, "neither mount-s3 nor s3fs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost(t)
			switch c.device {
			case "char":
				if err := os.Symlink("/dev/null", filepath.Join(f.Host.Dev, "fuse")); err != nil {
					t.Fatal(err)
				}
			case "file":
				f.write(f.Host.Dev, "fuse", "")
			}
			for name, out := range c.binaries {
				f.binary(name, out)
			}
			r := f.run(c.check, c.cfg)
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) || (r.Status != Pass && r.Fix == "") {
				t.Fatalf("got %+v, want %s containing %q", r, c.status, c.detail)
			}
		})
	}
}

func TestRunc(t *testing.T) {
	cases := []struct {
		name, out string
		status    Status
		detail    string
	}{
		{"current", "runc version 1.1.5+ds1", Pass, "runc 1.1.5+ds1 at "},
		{"ancient", "runc version 0.1.1", Warn, "older than 1.0"},
		{"garbage", "hello", Warn, "not understood"},
		{"missing", "", Fail, "runc not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost(t)
			if c.out != "" {
				f.binary("runc", c.out)
			}
			r := f.run(checkRunc, Config{})
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) {
				t.Fatalf("got %+v, want %s containing %q", r, c.status, c.detail)
			}
		})
	}
}

func TestOCIRuntime(t *testing.T) {
	cases := []struct {
		name, runtime, crun, controllers string
		status                           Status
		detail                           string
	}{
		{"runc default", "", "", "", Pass, "runc (the default"},
		{"unknown", "kata", "", "", Fail, `oci runtime "kata"`},
		{"crun", "crun", "crun version 1.8.1", "", Pass, "crun version 1.8.1 at "},
		{"crun on a systemd hybrid host", "crun", "crun version 1.8.1", "\n", Pass, "crun version 1.8.1 at "},
		{"crun missing", "crun", "", "", Fail, "crun not found"},
		{"crun on a hybrid host with cgroup2 controllers", "crun", "crun version 1.8.1", "hugetlb\n", Fail, "holds controllers (hugetlb)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost(t)
			if c.crun != "" {
				f.binary("crun", c.crun)
			}
			if c.controllers != "" {
				f.write(f.Host.Sys, "fs/cgroup/unified/cgroup.controllers", c.controllers)
			}
			r := f.run(checkOCIRuntime, Config{OCIRuntime: c.runtime})
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) || (r.Status != Pass && r.Fix == "") {
				t.Fatalf("got %+v, want %s containing %q", r, c.status, c.detail)
			}
		})
	}
}

func TestCNI(t *testing.T) {
	f := newFakeHost(t)
	for i, p := range cniPlugins() {
		dir := f.Host.CNIDirs[i%2] // spread over both directories
		f.write(dir, p, "")
		os.Chmod(filepath.Join(dir, p), 0o755)
	}
	if r := f.run(checkCNI, Config{}); r.Status != Pass || !strings.Contains(r.Detail, f.Host.CNIDirs[1]) {
		t.Fatalf("all plugins: %+v", r)
	}
	os.Chmod(filepath.Join(f.Host.CNIDirs[1], "host-local"), 0o644) // not executable
	os.Remove(filepath.Join(f.Host.CNIDirs[1], "portmap"))
	if r := f.run(checkCNI, Config{}); r.Status != Warn || !strings.Contains(r.Detail, "host-local, portmap") || r.Fix == "" {
		t.Fatalf("missing plugins: %+v", r)
	}
}

func TestS3Unset(t *testing.T) {
	r := newFakeHost(t).run(checkS3, Config{StateDir: "/srv/matrx"})
	if r.Status != Pass || !strings.Contains(r.Detail, "local storage under /srv/matrx/storage") {
		t.Fatalf("%+v", r)
	}
	r = newFakeHost(t).run(checkS3, Config{S3: hostconfig.S3{Bucket: "Not_A_Bucket"}})
	if r.Status != Fail || r.Fix == "" {
		t.Fatalf("invalid bucket name: %+v", r)
	}
}

// TestBrokenHost runs every check against an empty host tree and a
// containerd socket that does not exist.
func TestBrokenHost(t *testing.T) {
	f := newFakeHost(t)
	dir := t.TempDir()
	rep := Run(context.Background(), Config{
		ContainerdAddress: filepath.Join(dir, "containerd.sock"),
		StateDir:          filepath.Join(dir, "state"),
		Socket:            filepath.Join(dir, "matrxd.sock"),
	}, WithHost(f.Host), WithTimeout(2*time.Second))
	if rep.OK {
		t.Fatalf("a broken host passed:\n%+v", rep)
	}
	if len(rep.Checks) != len(checks()) {
		t.Fatalf("%d results for %d checks", len(rep.Checks), len(checks()))
	}
	c, _ := rep.Result("containerd")
	if c.Status != Fail || !strings.Contains(c.Detail, "no socket at "+filepath.Join(dir, "containerd.sock")) || !strings.Contains(c.Fix, "start containerd") {
		t.Fatalf("containerd: %+v", c)
	}
	for name, want := range map[string]Status{
		"runc": Fail, "cgroups": Fail, "overlayfs": Fail, "disk-quota": Fail, "fuse-device": Warn, "image": Warn, "socket": Warn, "s3-bucket": Pass,
	} {
		if r, _ := rep.Result(name); r.Status != want {
			t.Errorf("%s: got %+v, want %s", name, r, want)
		}
	}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "FAIL    containerd") || !strings.Contains(out, "fix: start containerd") || !strings.Contains(out, "failed\n") {
		t.Fatalf("table:\n%s", out)
	}
	b, _ := json.Marshal(rep)
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.OK || len(back.Checks) != len(rep.Checks) {
		t.Fatalf("json round trip: %v %s", err, b)
	}
}

func TestContainerdNotAnswering(t *testing.T) {
	f := newFakeHost(t)
	dir := t.TempDir()
	// Something listens on the socket, but it is not containerd.
	l, err := net.Listen("unix", filepath.Join(dir, "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	cases := []struct{ addr, detail string }{
		{"unix://" + filepath.Join(dir, "c.sock"), "does not answer"},
		{file, "not a socket"},
	}
	for _, c := range cases {
		e := &env{cfg: Config{ContainerdAddress: c.addr}, host: f.Host, timeout: time.Second}
		e.cfg.defaults()
		r := checkContainerd(context.Background(), e)
		img := checkImage(context.Background(), e)
		e.close()
		if r.Status != Fail || !strings.Contains(r.Detail, c.detail) || r.Fix == "" {
			t.Errorf("%s: %+v", c.addr, r)
		}
		if img.Status != Warn || !strings.Contains(img.Detail, "not checked") {
			t.Errorf("%s: image %+v", c.addr, img)
		}
	}
}

func TestMajorMinor(t *testing.T) {
	cases := []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"1.6.20~ds1", 1, 6, true},
		{"v2.2.9", 2, 2, true},
		{"1.5", 1, 5, true},
		{"runc version 1.1.5+ds1", 1, 1, true},
		{"dev", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, c := range cases {
		major, minor, ok := majorMinor(c.in)
		if major != c.major || minor != c.minor || ok != c.ok {
			t.Errorf("%q: %d.%d %v", c.in, major, minor, ok)
		}
	}
}

func TestSSHHostKeyFileMatchesDaemon(t *testing.T) {
	if want := filepath.Join("ssh", sshgate.HostKeyName); SSHHostKeyFile != want {
		t.Fatalf("doctor.SSHHostKeyFile = %q, matrxd keeps it at %q", SSHHostKeyFile, want)
	}
}

func TestSSHHostKey(t *testing.T) {
	f := newFakeHost(t)
	dir := t.TempDir()
	if r := f.run(checkSSHHostKey, Config{StateDir: dir}); r.Status != Warn || !strings.Contains(r.Detail, "no SSH host key") {
		t.Fatalf("before the first start: %+v", r)
	}
	key, err := sshgate.LoadHostKey(filepath.Join(dir, "ssh"))
	if err != nil {
		t.Fatal(err)
	}
	r := f.run(checkSSHHostKey, Config{StateDir: dir})
	if r.Status != Pass || !strings.Contains(r.Detail, ssh.FingerprintSHA256(key.PublicKey())) {
		t.Fatalf("with a key: %+v", r)
	}
	os.Chmod(filepath.Join(dir, SSHHostKeyFile), 0o644)
	if r := f.run(checkSSHHostKey, Config{StateDir: dir}); r.Status != Fail || !strings.Contains(r.Fix, "chmod 600") {
		t.Fatalf("a readable private key: %+v", r)
	}
}
