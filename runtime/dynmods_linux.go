package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Cgroup migrations and the RCU grace period.
//
// Every sandbox start, exec and background process moves a process into a
// cgroup: runc moves the container's init into the sandbox's cgroups, and
// matrx moves each exec into its own (execgroup_linux.go) so a timeout can
// end its whole tree. A move takes the kernel's cgroup_threadgroup_rwsem
// for writing, and by default that lock is built for cheap forks and exits
// at the expense of writers: a write that comes more than a few ms after
// the last one waits for an RCU grace period first. Measured on the 2-vCPU
// development VM (kernel 6.18, hybrid cgroups): moving a process into a
// new freezer cgroup took 4-14 ms after a pause of 50 ms or more, and
// 0.05 ms right after another move. A sandbox's first exec always comes
// after a pause, so it paid 12-35 ms where later ones paid 2-3 (agent
// path), which was most of a pooled create's time to first command.
//
// The cgroup mount option favordynmods (Linux 6.0 and later) favours
// writers instead: a move costs 0.2 ms whatever came before,
// and forks and exits take the slower reader path of that lock (an extra
// memory barrier; on recent kernels a lock per thread group). matrxd turns
// it on at startup (--cgroup-favordynmods, on by default; docs in the
// README's configuration list): a host that runs sandboxes moves
// processes between cgroups all day. It is a host-wide setting (the lock
// is global) that matrxd never turns off again; on some kernels it stays
// in effect until reboot even once the option is removed. It changes no
// permission and no limit.

// dynModsOption is the mount option.
const dynModsOption = "favordynmods"

// FavorCgroupDynMods sets favordynmods on the host's unified (cgroup2)
// hierarchy, the one a host has on pure cgroup v2 and on hybrid ones
// (cgroup v1 takes the option only when a hierarchy is mounted, never on a
// reconfigure: a host with no cgroup2 mount answers ErrNotImplemented, as
// does a kernel without the option). In a mount namespace without the
// cgroup2 mount (a hybrid host's crun runs, `make bench`: see
// bootstrap/lib/without-cgroup2-controllers.sh) it gives the option to the
// host's cgroup2 hierarchy, the one PID 1's mount shows, keeping that
// mount's options (applyCgroup2Options): the lock the option changes is
// the kernel's one, and a daemon there would otherwise pay the grace
// period on every sandbox's first exec. It
// returns the mount point and whether it changed anything (false when the
// option was already on).
func FavorCgroupDynMods() (mountpoint string, changed bool, err error) {
	m, err := cgroupMount()
	if err != nil {
		return "", false, err
	}
	if m.hasOption(dynModsOption) {
		return m.point, false, nil
	}
	if err := reconfigureCgroup(m, dynModsOption); err != nil {
		return m.point, false, err
	}
	after, err := m.reread()
	if err != nil {
		return m.point, true, err
	}
	if !after.hasOption(dynModsOption) {
		return m.point, true, fmt.Errorf("%s reconfigured but does not list %s", m.point, dynModsOption)
	}
	return m.point, true, nil
}

// reconfigureCgroup reconfigures the file system mounted at m with every
// option it has plus extra. A reconfigure clears the flags it is not
// given (passing only favordynmods would drop, e.g., nsdelegate), and
// cgroup v1 refuses one whose flags differ from the mount's at all, which
// is how the test proves the options are rebuilt exactly. Per-mount
// flags (nosuid, nodev, noexec) are not the file system's and do not
// change.
func reconfigureCgroup(m cgroupFSMount, extra ...string) error {
	if m.viaInit {
		return applyCgroup2Options(m, extra)
	}
	fd, err := unix.Fspick(unix.AT_FDCWD, m.point, unix.FSPICK_CLOEXEC|unix.FSPICK_NO_AUTOMOUNT|unix.FSPICK_SYMLINK_NOFOLLOW)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("fspick %s: %v: %w", m.point, err, errdefs.ErrNotImplemented)
		}
		return fmt.Errorf("fspick %s: %w", m.point, err)
	}
	defer unix.Close(fd)
	if err := setCgroupOptions(fd, m, extra); err != nil {
		return err
	}
	if err := unix.FsconfigReconfigure(fd); err != nil {
		return fmt.Errorf("reconfigure %s (options %v + %v): %w", m.point, m.superOptions, extra, err)
	}
	return nil
}

// applyCgroup2Options gives the host's cgroup2 hierarchy m's options plus
// extra when m is PID 1's mount (viaInit), which no reconfigure from
// another mount namespace may pick (fspick through /proc/1/root is
// refused). Making a cgroup2 file system context does it instead: the
// kernel has one cgroup2 hierarchy, and creating its superblock applies
// the context's flags to it (cgroup_get_tree, from the initial cgroup
// namespace), all of them, hence m's own options again. Nothing is
// mounted: the context is closed unattached.
func applyCgroup2Options(m cgroupFSMount, extra []string) error {
	fd, err := unix.Fsopen("cgroup2", unix.FSOPEN_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("fsopen cgroup2: %v: %w", err, errdefs.ErrNotImplemented)
		}
		return fmt.Errorf("fsopen cgroup2: %w", err)
	}
	defer unix.Close(fd)
	if err := setCgroupOptions(fd, m, extra); err != nil {
		return err
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("apply cgroup2 options %v + %v: %w", m.superOptions, extra, err)
	}
	return nil
}

// setCgroupOptions gives the file system context fd every option m has
// plus the flags extra (ErrNotImplemented when the kernel lacks one).
func setCgroupOptions(fd int, m cgroupFSMount, extra []string) error {
	var err error
	for _, o := range m.superOptions {
		key, value, isKV := strings.Cut(o, "=")
		switch {
		case o == "" || o == "rw" || o == "ro" || key == "release_agent":
			// rw/ro are the superblock's flags, not cgroup options; a v1
			// release agent is kept when not given again.
			continue
		case isKV:
			err = unix.FsconfigSetString(fd, key, value)
		default:
			err = unix.FsconfigSetFlag(fd, o)
		}
		if err != nil {
			return fmt.Errorf("keep option %q of %s: %w", o, m.point, err)
		}
	}
	for _, o := range extra {
		if err := unix.FsconfigSetFlag(fd, o); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("this kernel's cgroup has no %s option: %w", o, errdefs.ErrNotImplemented)
			}
			return fmt.Errorf("set %s on %s: %w", o, m.point, err)
		}
	}
	return nil
}

// cgroupFSMount is one cgroup file system mount.
type cgroupFSMount struct {
	point        string // where this process reaches it
	superOptions []string
	// viaInit: the mount is PID 1's (this mount namespace has no cgroup2
	// mount), and point is below /proc/1/root.
	viaInit bool
}

func (m cgroupFSMount) hasOption(opt string) bool { return slices.Contains(m.superOptions, opt) }

// initRoot is PID 1's root directory as this process reaches it.
const initRoot = "/proc/1/root"

// cgroupMount is the first cgroup2 mount of this mount namespace or, when
// it has none, of PID 1's.
func cgroupMount() (cgroupFSMount, error) {
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup2"))
	if err != nil {
		return cgroupFSMount{}, fmt.Errorf("read mountinfo: %w", err)
	}
	if len(ms) > 0 {
		return cgroupFSMount{point: ms[0].Mountpoint, superOptions: strings.Split(ms[0].VFSOptions, ",")}, nil
	}
	if m, err := initCgroupMount(); err == nil {
		return m, nil
	}
	return cgroupFSMount{}, fmt.Errorf("no cgroup2 file system is mounted here or in PID 1's mount namespace (cgroup v1 takes %s only at mount time): %w", dynModsOption, errdefs.ErrNotImplemented)
}

// initCgroupMount is the first cgroup2 mount of PID 1's mount namespace,
// its point below initRoot.
func initCgroupMount() (cgroupFSMount, error) {
	f, err := os.Open("/proc/1/mountinfo")
	if err != nil {
		return cgroupFSMount{}, err
	}
	defer f.Close()
	ms, err := mountinfo.GetMountsFromReader(f, mountinfo.FSTypeFilter("cgroup2"))
	if err != nil {
		return cgroupFSMount{}, err
	}
	if len(ms) == 0 {
		return cgroupFSMount{}, fmt.Errorf("PID 1 has no cgroup2 mount: %w", errdefs.ErrNotFound)
	}
	return cgroupFSMount{point: filepath.Join(initRoot, ms[0].Mountpoint), superOptions: strings.Split(ms[0].VFSOptions, ","), viaInit: true}, nil
}

// reread reads m's options again.
func (m cgroupFSMount) reread() (cgroupFSMount, error) {
	if m.viaInit {
		return initCgroupMount()
	}
	return cgroupMountAt(m.point)
}

// cgroupMountAt is the cgroup mount at point (the top one, when several are).
func cgroupMountAt(point string) (cgroupFSMount, error) {
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.Mountpoint != point || (m.FSType != "cgroup2" && m.FSType != "cgroup"), false
	})
	if err != nil {
		return cgroupFSMount{}, fmt.Errorf("read mountinfo: %w", err)
	}
	if len(ms) == 0 {
		return cgroupFSMount{}, fmt.Errorf("no cgroup file system at %s: %w", point, errdefs.ErrNotFound)
	}
	top := ms[len(ms)-1]
	return cgroupFSMount{point: top.Mountpoint, superOptions: strings.Split(top.VFSOptions, ",")}, nil
}
