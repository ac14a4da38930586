package network

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// createNetNS makes a new network namespace, bind-mounts it on path (which
// must not exist yet) and runs configure inside it. On failure nothing is
// left behind.
func createNetNS(path string, configure func() error) (err error) {
	if err := newMountPoint(path); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = removeNetNS(path)
		}
	}()
	errc := make(chan error, 1)
	go func() {
		// This thread ends up in the new namespace. It is never unlocked:
		// when the goroutine returns, the Go runtime discards the thread
		// instead of reusing it for other goroutines.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mount network namespace on %s: %w", path, err)
			return
		}
		errc <- configure()
	}()
	return <-errc
}

// adoptNetNS bind-mounts the existing namespace at src on path (which must
// not exist yet) and runs configure inside it.
func adoptNetNS(path, src string, configure func() error) (err error) {
	if err := newMountPoint(path); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = removeNetNS(path)
		}
	}()
	if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount network namespace %s on %s: %w", src, path, err)
	}
	return inNetNS(path, configure)
}

// newMountPoint creates the empty file a namespace is bind-mounted on.
func newMountPoint(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("network namespace %s already exists: %w", path, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("create network namespace mount point: %w", err)
	}
	return f.Close()
}

// removeNetNS unmounts and removes a namespace mount point. A path that is
// not mounted or does not exist is not an error.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network namespace %s: %w", path, err)
	}
	return nil
}

// isNetNS reports whether path is a mounted network namespace (and not,
// say, the empty file a reboot leaves behind).
func isNetNS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// inNetNS runs fn on an OS thread that has joined the namespace at path.
// Sockets fn creates, and processes it starts, live in that namespace.
func inNetNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see createNetNS
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("join network namespace %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// configureSandboxNS runs inside a fresh sandbox namespace: no IPv6 at all
// (set before any interface exists, so none ever gets an IPv6 address,
// not even lo), then loopback up (runc does not do it for a namespace it
// joins).
func configureSandboxNS() error {
	for _, k := range []string{"all", "default"} {
		p := "/proc/sys/net/ipv6/conf/" + k + "/disable_ipv6"
		if err := writeRTNLSysctl(p, "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("disable IPv6 in sandbox namespace: %w", err)
		}
	}
	if err := setLinkUp("lo"); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	return nil
}

// setLinkUp sets IFF_UP on an interface of the current thread's namespace.
func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// ensureSharedMount makes dir a mount point with shared propagation, as
// iproute2 does for /run/netns: a namespace unmounted here is then also
// unmounted in mount namespaces cloned later, instead of being kept alive
// by their copy of the bind mount.
func ensureSharedMount(dir string) error {
	err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", dir, err)
		}
		err = unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// rtnlSysctlMu: one writeRTNLSysctl at a time in this process.
var rtnlSysctlMu sync.Mutex

// writeRTNLSysctl writes a /proc/sys or sysfs file whose kernel handler
// needs the RTNL lock and takes it with rtnl_trylock, restarting the
// write at once when it is held (ipv6 conf disable_ipv6, a bridge port's
// brport/* flags): the writer spins on a CPU until RTNL is free. In a
// burst of creates on two CPUs, many writers spinning at once starved the
// very netlink calls (veths, addresses, namespace setup) that held RTNL:
// the disable_ipv6 write was 56 % of matrxd's CPU in a burst of 50 (530 of
// 950 ms; 40 ms with this lock), the burst's CPU per create 97 -> 80 ms.
// One writer at a time spins against RTNL's holder, never against the
// other writers, and those that wait sleep.
func writeRTNLSysctl(path, value string) error {
	rtnlSysctlMu.Lock()
	defer rtnlSysctlMu.Unlock()
	return os.WriteFile(path, []byte(value), 0o644)
}
