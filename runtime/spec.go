package runtime

import (
	"context"
	"fmt"
	"path"
	"sort"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Fixed identities inside every sandbox.
const (
	// AgentUID and AgentGID are the sandbox user "agent".
	AgentUID = 1000
	AgentGID = 1000
	// initUID runs PID 1: nobody, so that agent processes cannot signal it.
	initUID = 65534

	// InitPath is where the static init binary appears inside the sandbox.
	InitPath = "/.matrx/init"
	// ControlDir is where the per-sandbox control directory appears inside the
	// sandbox. Exec wrappers write their final working directory there.
	ControlDir = "/.matrx/run"
)

// RootCapabilities is the bounding, permitted and effective set of a process
// that execs as root inside a sandbox. It starts from Kubernetes Pod Security
// "restricted" (drop ALL) and adds back only what root in an ordinary shell
// workload needs. Never CAP_SYS_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE, CAP_MKNOD
// or CAP_SYS_MODULE. Agent processes get none of these: their sets are empty.
var RootCapabilities = []string{
	// Package managers and "chown -R agent: ..." set file owners.
	"CAP_CHOWN",
	// Root edits files it does not own (e.g. the agent's 0600 files) without
	// chmod-ing them first; this is what users mean by "root".
	"CAP_DAC_OVERRIDE",
	// chmod/utime on files owned by other users (fixing permissions).
	"CAP_FOWNER",
	// Stop runaway agent processes (kill across uids within the sandbox).
	"CAP_KILL",
	// su/runuser/apt drop privileges to another user; with no_new_privs these
	// can only go down, never up.
	"CAP_SETGID",
	"CAP_SETUID",
	// Dev servers on :80/:443 inside the sandbox's own network namespace;
	// harmless because that namespace is private.
	"CAP_NET_BIND_SERVICE",
}

// maxNoFile is the open-files limit sandboxes get when the host allows it.
// Language servers, node and test runners open many files; 1024 (the
// containerd default) is too low, and the pids and memory cgroups bound the
// cost anyway.
const maxNoFile = 65536

// sandboxRlimits returns the rlimits of PID 1 and of every exec. runc can
// only grant an RLIMIT_NOFILE up to the shim's own hard limit, which it
// inherits from containerd; the daemon's own hard limit stands in for it
// (both normally come from the same systemd defaults), capped at maxNoFile.
func sandboxRlimits() []specs.POSIXRlimit {
	nofile := uint64(maxNoFile)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Max < nofile {
		nofile = lim.Max
	}
	return []specs.POSIXRlimit{
		{Type: "RLIMIT_NOFILE", Soft: nofile, Hard: nofile},
		// Core dumps would land in the home directory and get synced to S3.
		{Type: "RLIMIT_CORE", Soft: 0, Hard: 0},
	}
}

// Resources are the cgroup limits of one sandbox.
type Resources struct {
	CPU         float64 // CPUs, e.g. 2 or 0.5; becomes a CFS quota
	MemoryBytes int64   // hard limit; swap is never allowed beyond it
	Pids        int64   // max processes+threads
}

// Mount is a host path bound into the sandbox.
type Mount struct {
	Source      string
	Destination string
	ReadOnly    bool
	// Slave makes the bind rslave, so mounts made later under Source on the
	// host (a FUSE remount, say) appear inside the running sandbox.
	Slave bool
}

// TmpfsSizes are the size limits of the writable tmpfs mounts.
type TmpfsSizes struct {
	Tmp, VarTmp, Run, Shm int64 // bytes
}

// Within caps the sizes so that all tmpfs mounts together hold at most half
// of the sandbox's memory limit. tmpfs pages are charged to the memory
// cgroup and cannot be reclaimed without swap: a full /tmp larger than
// memory would leave the OOM killer nothing to free but the sandbox itself.
func (t TmpfsSizes) Within(memory int64) TmpfsSizes {
	capTo := func(v, max int64) int64 { return min(v, max) }
	return TmpfsSizes{
		Tmp:    capTo(t.Tmp, memory/4),
		VarTmp: capTo(t.VarTmp, memory/8),
		Run:    capTo(t.Run, memory/16),
		Shm:    capTo(t.Shm, memory/16),
	}
}

// DefaultTmpfsSizes bounds the scratch space of a sandbox. tmpfs pages are
// charged to the sandbox's memory cgroup as well, so they can never exceed
// the memory limit either.
var DefaultTmpfsSizes = TmpfsSizes{Tmp: 1 << 30, VarTmp: 256 << 20, Run: 64 << 20, Shm: 64 << 20}

// SpecInput is everything the spec builder needs for one sandbox.
type SpecInput struct {
	ID        string
	Env       []string // KEY=VALUE for PID 1 (and the base of every exec)
	Resources Resources
	Mounts    []Mount
	Tmpfs     TmpfsSizes
	// InitHostPath is the static init binary on the host.
	InitHostPath string
	// ControlHostPath is the per-sandbox control directory on the host.
	ControlHostPath string
	// ShimGroup, when set, is the runc shim group the sandbox joins
	// (WithShimGroupSize).
	ShimGroup string
	// SwapAccounting is true when the host's memory cgroup can limit swap
	// (memory.memsw.* exists on cgroup v1, or cgroup v2).
	SwapAccounting bool
	// UserNS, when enabled, gives the sandbox its own user namespace.
	UserNS UserNS
	// ResolvConf and Hosts, when set, are bound read-only over
	// /etc/resolv.conf and /etc/hosts (written by runtime/network).
	ResolvConf, Hosts string
}

// cpuPeriod is the CFS period of every sandbox; cpuQuota(cpus) its quota.
const cpuPeriod = uint64(100000)

func cpuQuota(cpus float64) int64 { return int64(cpus * float64(cpuPeriod)) }

// specOpts returns the hardened spec for a sandbox, as containerd SpecOpts.
// Order matters: the seccomp profile is computed from the capabilities, so it
// comes after them.
func specOpts(in SpecInput) []oci.SpecOpts {
	mem := in.Resources.MemoryBytes
	opts := []oci.SpecOpts{
		// containerd's defaults: new pid/ipc/uts/mount/network namespaces
		// (the network namespace has only loopback), masked and read-only
		// /proc paths, ro /sys, device cgroup deny-all (runc then allows only
		// null, zero, full, random, urandom, tty, ptmx: never /dev/fuse).
		oci.WithDefaultSpec(),
		oci.WithRootFSReadonly(),
		oci.WithHostname(in.ID),
		oci.WithProcessArgs(InitPath),
		oci.WithProcessCwd("/"),
		oci.WithUIDGID(initUID, initUID),
		oci.WithEnv(in.Env),
		oci.WithNoNewPrivileges,
		withCapabilities(nil), // PID 1 needs no capability at all
		withRlimits,
		withOOMScoreAdj,
		oci.WithCgroup(path.Join("/matrx", in.ID)),
		oci.WithCPUCFS(cpuQuota(in.Resources.CPU), cpuPeriod),
		oci.WithMemoryLimit(uint64(mem)),
		oci.WithPidsLimit(in.Resources.Pids),
		withPingGroupRange(in.UserNS),
		withoutMount("/run"),
		withoutMount("/dev/shm"),
		oci.WithMounts(sandboxMounts(in)),
		// After the capabilities: the profile allows syscalls per capability.
		seccomp.WithDefaultProfile(),
	}
	if in.UserNS.Enabled() {
		opts = append(opts, oci.WithUserNamespace(in.UserNS.mappings(), in.UserNS.mappings()))
	}
	if in.ShimGroup != "" {
		opts = append(opts, oci.WithAnnotations(map[string]string{shimGroupAnnotation: in.ShimGroup}))
	}
	if in.SwapAccounting {
		// swap limit == memory limit: no swap at all.
		opts = append(opts, oci.WithMemorySwap(mem))
	}
	return opts
}

// sandboxMounts lists the tmpfs and bind mounts on top of containerd's
// defaults, in mount order (parents before children).
func sandboxMounts(in SpecInput) []specs.Mount {
	tmpfs := func(dst string, size int64, mode string) specs.Mount {
		return specs.Mount{
			Destination: dst, Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "mode=" + mode, fmt.Sprintf("size=%d", size)},
		}
	}
	ms := []specs.Mount{
		tmpfs("/run", in.Tmpfs.Run, "755"),
		{
			Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", fmt.Sprintf("size=%d", in.Tmpfs.Shm)},
		},
		tmpfs("/tmp", in.Tmpfs.Tmp, "1777"),
		tmpfs("/var/tmp", in.Tmpfs.VarTmp, "1777"),
		{
			Destination: InitPath, Type: "bind", Source: in.InitHostPath,
			Options: []string{"rbind", "ro", "nosuid", "nodev"},
		},
		{
			Destination: ControlDir, Type: "bind", Source: in.ControlHostPath,
			Options: []string{"rbind", "rw", "nosuid", "nodev", "noexec"},
		},
	}
	for _, f := range [][2]string{{"/etc/hosts", in.Hosts}, {"/etc/resolv.conf", in.ResolvConf}} {
		if f[1] != "" {
			ms = append(ms, specs.Mount{Destination: f[0], Type: "bind", Source: f[1],
				Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
		}
	}
	user := append([]Mount(nil), in.Mounts...)
	sort.SliceStable(user, func(i, j int) bool { return user[i].Destination < user[j].Destination })
	for _, m := range user {
		o := []string{"rbind", "nosuid", "nodev"}
		if m.ReadOnly {
			o = append(o, "ro")
		} else {
			o = append(o, "rw")
		}
		if m.Slave {
			o = append(o, "rslave")
		}
		ms = append(ms, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: o})
	}
	return ms
}

func withoutMount(dst string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		kept := s.Mounts[:0]
		for _, m := range s.Mounts {
			if m.Destination != dst {
				kept = append(kept, m)
			}
		}
		s.Mounts = kept
		return nil
	}
}

// withPingGroupRange lets every group of the sandbox open ICMP echo
// ("ping") sockets in the sandbox's own network namespace. ping needs
// either CAP_NET_RAW (never granted; file capabilities on /bin/ping are
// ignored under no_new_privs) or a gid within net.ipv4.ping_group_range,
// which is 1 0 (nobody) by default. The sysctl is per network namespace,
// so this changes nothing on the host or for other sandboxes, and ICMP
// sockets cannot forge packets as raw sockets could. Under a user
// namespace the kernel accepts only gids mapped in it, hence 0..Size-1.
func withPingGroupRange(u UserNS) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		s.Linux.Sysctl["net.ipv4.ping_group_range"] = pingGroupRange(u)
		return nil
	}
}

func pingGroupRange(u UserNS) string {
	if u.Enabled() {
		return fmt.Sprintf("0 %d", u.Size-1)
	}
	return "0 2147483647"
}

// oomScoreAdj makes sandbox processes the kernel's first choice under host
// memory pressure, ahead of containerd (-999) and matrxd (-500).
const oomScoreAdj = 500

// PID 1 gets the same score as every other sandbox process: lowering it
// below the shim's needs CAP_SYS_RESOURCE, which runc may not have. As the
// smallest process (~2 MB) it is the OOM killer's last pick in its cgroup
// anyway, and the tmpfs caps (TmpfsSizes.Within) keep memory reclaimable
// by killing the hog.
func withOOMScoreAdj(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	adj := oomScoreAdj
	s.Process.OOMScoreAdj = &adj
	return nil
}

func withRlimits(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	s.Process.Rlimits = sandboxRlimits()
	return nil
}

// withCapabilities sets every capability set of PID 1 to caps (nil = none).
func withCapabilities(caps []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		s.Process.Capabilities = capabilitySet(caps, caps)
		return nil
	}
}

// capabilitySet builds a process's capability sets. Inheritable and ambient
// stay empty so exec'd programs never inherit privileges implicitly.
func capabilitySet(bounding, effective []string) *specs.LinuxCapabilities {
	cp := func(s []string) []string { return append([]string{}, s...) }
	return &specs.LinuxCapabilities{
		Bounding:    cp(bounding),
		Permitted:   cp(effective),
		Effective:   cp(effective),
		Inheritable: []string{},
		Ambient:     []string{},
	}
}

// ExecUser is who an exec runs as.
type ExecUser string

// The two users an exec may ask for.
const (
	UserAgent ExecUser = "agent"
	UserRoot  ExecUser = "root"
)

// execProcess builds the OCI process of one exec.
func execProcess(user ExecUser, args, env []string) (*specs.Process, error) {
	adj := oomScoreAdj
	p := &specs.Process{
		Args:            args,
		Env:             env,
		Cwd:             "/",
		NoNewPrivileges: true,
		Rlimits:         sandboxRlimits(),
		OOMScoreAdj:     &adj,
	}
	switch user {
	case UserAgent:
		p.User = specs.User{UID: AgentUID, GID: AgentGID}
		// Empty bounding set too: an agent process can never gain a
		// capability, whatever it executes.
		p.Capabilities = capabilitySet(nil, nil)
	case UserRoot:
		p.User = specs.User{UID: 0, GID: 0}
		p.Capabilities = capabilitySet(RootCapabilities, RootCapabilities)
	default:
		return nil, fmt.Errorf("exec user %q: must be %q or %q", user, UserAgent, UserRoot)
	}
	return p, nil
}

// envList turns a map into sorted KEY=VALUE pairs.
func envList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
