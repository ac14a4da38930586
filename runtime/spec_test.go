package runtime

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func buildSpec(t *testing.T, in SpecInput) *specs.Spec {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "matrx")
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: in.ID}, specOpts(in)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mountAt(s *specs.Spec, dst string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			return &s.Mounts[i]
		}
	}
	return nil
}

// TestSpecBuilder documents every hardening choice of the sandbox spec.
func TestSpecBuilder(t *testing.T) {
	in := SpecInput{
		ID:              "sbx-0123456789ab",
		Env:             []string{"PATH=/bin", "SANDBOX_ID=sbx-0123456789ab"},
		Resources:       Resources{CPU: 1.5, MemoryBytes: 512 << 20, Pids: 300},
		Mounts:          []Mount{{Source: "/h/home", Destination: "/home/agent", Slave: true}, {Source: "/h/cold", Destination: "/data/cold", Slave: true}},
		Tmpfs:           DefaultTmpfsSizes,
		InitHostPath:    "/usr/local/lib/matrx/matrx-init",
		ControlHostPath: "/var/lib/matrx/runtime/sandboxes/x",
		SwapAccounting:  true,
	}
	s := buildSpec(t, in)
	ns := map[specs.LinuxNamespaceType]bool{}
	for _, n := range s.Linux.Namespaces {
		ns[n.Type] = n.Path == ""
	}
	checks := []struct {
		why string
		ok  bool
	}{
		{"root filesystem is read-only", s.Root.Readonly},
		{"hostname is the sandbox id", s.Hostname == in.ID},
		{"PID 1 is matrx-init", slices.Equal(s.Process.Args, []string{InitPath})},
		{"PID 1 runs as nobody", s.Process.User.UID == 65534 && s.Process.User.GID == 65534},
		{"PID 1 has no capabilities at all", len(s.Process.Capabilities.Bounding) == 0 && len(s.Process.Capabilities.Effective) == 0 && len(s.Process.Capabilities.Permitted) == 0},
		{"no_new_privs", s.Process.NoNewPrivileges},
		{"default seccomp profile present", s.Linux.Seccomp != nil && s.Linux.Seccomp.DefaultAction == specs.ActErrno},
		{"own pid namespace", ns[specs.PIDNamespace]},
		{"own ipc namespace", ns[specs.IPCNamespace]},
		{"own uts namespace", ns[specs.UTSNamespace]},
		{"own mount namespace", ns[specs.MountNamespace]},
		{"own network namespace (loopback only)", ns[specs.NetworkNamespace]},
		{"cpu quota = 1.5 CPUs", *s.Linux.Resources.CPU.Quota == 150000 && *s.Linux.Resources.CPU.Period == 100000},
		{"memory limit", *s.Linux.Resources.Memory.Limit == 512<<20},
		{"no swap beyond memory", *s.Linux.Resources.Memory.Swap == 512<<20},
		{"pids limit", *s.Linux.Resources.Pids.Limit == 300},
		{"cgroup under /matrx", s.Linux.CgroupsPath == "/matrx/"+in.ID},
		{"devices deny-all by default", len(s.Linux.Resources.Devices) > 0 && !s.Linux.Resources.Devices[0].Allow && s.Linux.Resources.Devices[0].Access == "rwm"},
		{"no extra device nodes (no /dev/fuse)", len(s.Linux.Devices) == 0},
		{"/proc/kcore masked", slices.Contains(s.Linux.MaskedPaths, "/proc/kcore")},
		{"/proc/sys read-only", slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys")},
		{"/proc/sysrq-trigger read-only", slices.Contains(s.Linux.ReadonlyPaths, "/proc/sysrq-trigger")},
		{"/sys read-only", mountAt(s, "/sys") != nil && slices.Contains(mountAt(s, "/sys").Options, "ro")},
		{"no core dumps", slices.ContainsFunc(s.Process.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == "RLIMIT_CORE" && r.Hard == 0 })},
		{"open files raised above 1024", slices.ContainsFunc(s.Process.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == "RLIMIT_NOFILE" && r.Hard > 1024 })},
		{"/tmp is a 1 GiB tmpfs", mountAt(s, "/tmp") != nil && mountAt(s, "/tmp").Type == "tmpfs" && slices.Contains(mountAt(s, "/tmp").Options, "size=1073741824")},
		{"/var/tmp is a tmpfs", mountAt(s, "/var/tmp") != nil && mountAt(s, "/var/tmp").Type == "tmpfs"},
		{"/run is a size-limited tmpfs", mountAt(s, "/run") != nil && slices.Contains(mountAt(s, "/run").Options, "size=67108864")},
		{"init bound read-only", mountAt(s, InitPath) != nil && slices.Contains(mountAt(s, InitPath).Options, "ro")},
		{"control dir is noexec", mountAt(s, ControlDir) != nil && slices.Contains(mountAt(s, ControlDir).Options, "noexec")},
		{"home bound read-write, rslave", mountAt(s, "/home/agent") != nil && slices.Contains(mountAt(s, "/home/agent").Options, "rw") && slices.Contains(mountAt(s, "/home/agent").Options, "rslave")},
		{"cold bound rslave", mountAt(s, "/data/cold") != nil && slices.Contains(mountAt(s, "/data/cold").Options, "rslave")},
		{"binds are nosuid,nodev", slices.Contains(mountAt(s, "/home/agent").Options, "nosuid") && slices.Contains(mountAt(s, "/home/agent").Options, "nodev")},
		{"sandbox processes are the host OOM killer's first choice", s.Process.OOMScoreAdj != nil && *s.Process.OOMScoreAdj == 500},
		{"/dev/shm is size-limited", mountAt(s, "/dev/shm") != nil && slices.Contains(mountAt(s, "/dev/shm").Options, "size=67108864")},
		{"env passed to PID 1", slices.Contains(s.Process.Env, "SANDBOX_ID=sbx-0123456789ab")},
		{"every sandbox gid may ping (ICMP sockets, no CAP_NET_RAW)", s.Linux.Sysctl["net.ipv4.ping_group_range"] == "0 2147483647"},
		{"no other sysctl", len(s.Linux.Sysctl) == 1},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("spec does not hold: %s", c.why)
		}
	}
	// Exactly one /run mount: containerd's default one is replaced.
	n := 0
	for _, m := range s.Mounts {
		if m.Destination == "/run" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d mounts at /run, want 1", n)
	}
}

// TestSpecPingGroupRangeUserNS: under a user namespace the kernel accepts
// only mapped gids in ping_group_range.
func TestSpecPingGroupRangeUserNS(t *testing.T) {
	u, err := NewUserNS(DefaultUserNSBase)
	if err != nil {
		t.Fatal(err)
	}
	s := buildSpec(t, SpecInput{ID: "sbx-0123456789ab", Resources: Resources{CPU: 1, MemoryBytes: 1 << 30, Pids: 10}, Tmpfs: DefaultTmpfsSizes, UserNS: u})
	if got := s.Linux.Sysctl["net.ipv4.ping_group_range"]; got != "0 65535" {
		t.Fatalf("ping_group_range %q, want \"0 65535\"", got)
	}
}

func TestSpecWithoutSwapAccounting(t *testing.T) {
	s := buildSpec(t, SpecInput{ID: "sbx-0123456789ab", Resources: Resources{CPU: 1, MemoryBytes: 1 << 30, Pids: 10}, Tmpfs: DefaultTmpfsSizes})
	if s.Linux.Resources.Memory.Swap != nil {
		t.Fatalf("swap limit set on a host without swap accounting: %d", *s.Linux.Resources.Memory.Swap)
	}
}

func TestExecProcess(t *testing.T) {
	cases := []struct {
		user     ExecUser
		uid      uint32
		bounding []string
		wantErr  bool
	}{
		{UserAgent, 1000, nil, false},
		{UserRoot, 0, RootCapabilities, false},
		{"nobody", 0, nil, true},
		{"", 0, nil, true},
	}
	for _, c := range cases {
		p, err := execProcess(c.user, []string{"sh"}, nil)
		if (err != nil) != c.wantErr {
			t.Fatalf("user %q: err %v", c.user, err)
		}
		if err != nil {
			continue
		}
		if p.User.UID != c.uid || !p.NoNewPrivileges || !slices.Equal(p.Capabilities.Bounding, append([]string{}, c.bounding...)) {
			t.Fatalf("user %q: %+v caps %+v", c.user, p.User, p.Capabilities)
		}
		if len(p.Capabilities.Ambient) != 0 || len(p.Capabilities.Inheritable) != 0 {
			t.Fatalf("user %q inherits capabilities", c.user)
		}
	}
	for _, c := range RootCapabilities {
		if strings.Contains(c, "SYS_ADMIN") || c == "CAP_NET_RAW" || c == "CAP_SYS_PTRACE" || c == "CAP_MKNOD" {
			t.Fatalf("forbidden capability %s in RootCapabilities", c)
		}
	}
}

func TestCappedBuffer(t *testing.T) {
	cases := []struct {
		limit  int64
		writes []string
		want   string
		trunc  bool
	}{
		{10, []string{"hello"}, "hello", false},
		{5, []string{"hello"}, "hello", false},
		{4, []string{"hello"}, "hell", true},
		{4, []string{"he", "llo", "x"}, "hell", true},
		{0, []string{"x"}, "", true},
		{3, []string{"abc", ""}, "abc", false},
	}
	for _, c := range cases {
		b := &cappedBuffer{limit: c.limit}
		for _, w := range c.writes {
			if n, err := b.Write([]byte(w)); err != nil || n != len(w) {
				t.Fatalf("write %q: %d %v", w, n, err)
			}
		}
		got, trunc := b.result()
		if string(got) != c.want || trunc != c.trunc {
			t.Fatalf("limit %d writes %q: got %q %v", c.limit, c.writes, got, trunc)
		}
	}
}

func TestTmpfsWithinMemory(t *testing.T) {
	got := DefaultTmpfsSizes.Within(256 << 20)
	if got.Tmp != 64<<20 || got.VarTmp != 32<<20 || got.Run != 16<<20 || got.Shm != 16<<20 {
		t.Fatalf("256 MiB sandbox: %+v", got)
	}
	if sum := got.Tmp + got.VarTmp + got.Run + got.Shm; sum > 128<<20 {
		t.Fatalf("tmpfs can hold %d bytes, more than half of memory", sum)
	}
	if big := DefaultTmpfsSizes.Within(64 << 30); big != DefaultTmpfsSizes {
		t.Fatalf("large sandbox should keep the defaults: %+v", big)
	}
}

func TestEnsureTraversable(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(root, "a"), 0o700)
	changed, err := EnsureTraversable(deep)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{deep, filepath.Join(root, "a")} {
		st, _ := os.Stat(d)
		if st.Mode().Perm() != 0o701 {
			t.Errorf("%s: mode %v, want 0701 (search for others, no read)", d, st.Mode().Perm())
		}
	}
	if len(changed) < 2 {
		t.Errorf("changed %v", changed)
	}
	if again, _ := EnsureTraversable(deep); len(again) != 0 {
		t.Errorf("second call changed %v", again)
	}
}

func TestSnapshotterRemaps(t *testing.T) {
	for _, c := range []struct {
		caps []string
		want bool
	}{
		{nil, false}, {[]string{"rebase"}, false}, {[]string{"rebase", "remap-ids"}, true}, {[]string{"only-remap-ids", "remap-ids"}, true},
	} {
		if got := snapshotterRemaps(c.caps); got != c.want {
			t.Errorf("%v: %v", c.caps, got)
		}
	}
}

// TestSpecRefusesKeySyscalls: sandboxes share the shim's session keyring
// (the runc shim's NoNewKeyring, ociruntime.go), which is safe only because
// the seccomp profile refuses every syscall of the key API, whatever the
// user namespace setting: no rule allows keyctl, add_key or request_key,
// and what no rule allows gets the default errno action.
func TestSpecRefusesKeySyscalls(t *testing.T) {
	for _, userns := range []UserNS{{}, {Base: DefaultUserNSBase, Size: 65536}} {
		s := buildSpec(t, SpecInput{ID: "sbx-0123456789ab", InitHostPath: "/x/init", ControlHostPath: "/x/ctl", UserNS: userns,
			Resources: Resources{CPU: 1, MemoryBytes: 256 << 20, Pids: 64}})
		sc := s.Linux.Seccomp
		if sc == nil || sc.DefaultAction != specs.ActErrno {
			t.Fatalf("userns %v: seccomp %+v, want default action errno", userns.Enabled(), sc)
		}
		for _, rule := range sc.Syscalls {
			if rule.Action == specs.ActErrno || rule.Action == specs.ActKill || rule.Action == specs.ActKillProcess || rule.Action == specs.ActKillThread {
				continue
			}
			for _, name := range rule.Names {
				if name == "keyctl" || name == "add_key" || name == "request_key" {
					t.Errorf("userns %v: seccomp rule %v allows %s", userns.Enabled(), rule.Action, name)
				}
			}
		}
	}
}
