package daemon

// One daemon per host state. Two matrxd on one state dir would each
// think they own every record; on one socket, one containerd namespace or
// one bridge (or overlapping subnets) they would garbage-collect each
// other's containers, firewall rules and leases (a second daemon on the
// default bridge used to delete the first one's per-sandbox rules). So
// every such resource is claimed by an exclusive flock(2) on a file that
// names the holder's pid, held for the daemon's whole life: the kernel
// drops it when the process dies, however it dies, so a crashed daemon
// never blocks its successor. The state dir and the socket lock next to
// themselves; the containerd namespace and the bridge, which live outside
// any one state dir, lock in --lock-dir (default /run/matrx: tmpfs, empty
// after a reboot like the locks themselves).

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/runtime/network"
	"golang.org/x/sys/unix"
)

// hostLock is one held claim.
type hostLock struct {
	f *os.File
}

func (l *hostLock) release() {
	if l != nil && l.f != nil {
		l.f.Close() // closing drops the flock
	}
}

// holdersOf reads a lock file's "key=value" lines.
func holdersOf(f *os.File) map[string]string {
	b := make([]byte, 4096)
	n, _ := f.ReadAt(b, 0)
	out := map[string]string{}
	for _, line := range strings.Split(string(b[:n]), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = v
		}
	}
	return out
}

// claim takes the exclusive lock on path, describing the resource as what,
// and records this process and info in it. A held lock fails with an
// error naming the resource and the holder's pid.
func claim(path, what, flag string, info map[string]string) (*hostLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock dir for %s: %w", what, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock file for %s: %w", what, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := holdersOf(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := holder["pid"]
			if pid == "" {
				pid = "unknown"
			}
			return nil, fmt.Errorf("another matrxd (pid %s) already uses %s (lock %s): stop it, or give this daemon its own %s: %w",
				pid, what, path, flag, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("lock %s (%s): %w", what, path, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "pid=%d\nwhat=%s\n", os.Getpid(), what)
	for k, v := range info {
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(b.String()), 0)
	}
	return &hostLock{f: f}, nil
}

// holdLocks claims every host resource cfg names. The returned func
// releases them (at exit; the kernel does it anyway).
func holdLocks(cfg Config, withNetwork bool) (_ func(), err error) {
	var held []*hostLock
	release := func() {
		for _, l := range held {
			l.release()
		}
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	take := func(path, what, flag string) error {
		l, err := claim(path, what, flag, nil)
		if err == nil {
			held = append(held, l)
		}
		return err
	}
	if err := take(filepath.Join(cfg.StateDir, "matrxd.lock"), "the state dir "+cfg.StateDir, "--state-dir"); err != nil {
		return nil, err
	}
	if err := take(cfg.Socket+".lock", "the socket "+cfg.Socket, "--socket"); err != nil {
		return nil, err
	}
	addr := cfg.ContainerdAddress
	if p, err := filepath.EvalSymlinks(addr); err == nil {
		addr = p
	}
	sum := sha256.Sum256([]byte(addr))
	nsLock := filepath.Join(cfg.lockDir(), "containerd-"+safeName(cfg.ContainerdNamespace)+"-"+hex.EncodeToString(sum[:6])+".lock")
	if err := take(nsLock, fmt.Sprintf("the containerd namespace %q of %s", cfg.ContainerdNamespace, addr), "--containerd-namespace"); err != nil {
		return nil, err
	}
	if !withNetwork {
		return release, nil
	}
	bridge, subnet := cfg.Network.Bridge, cfg.Network.Subnet
	if bridge == "" {
		bridge = network.DefaultBridge
	}
	if !subnet.IsValid() {
		subnet = network.DefaultSubnet()
	}
	l, err := claimNetwork(cfg.lockDir(), bridge, subnet)
	if err != nil {
		return nil, err
	}
	held = append(held, l)
	return release, nil
}

// claimNetwork locks the bridge and checks, under a guard lock, that no
// live daemon's bridge uses a subnet that overlaps ours.
func claimNetwork(dir, bridge string, subnet netip.Prefix) (*hostLock, error) {
	guard, err := claim(filepath.Join(dir, "network.guard"), "the network lock guard", "--lock-dir", nil)
	for i := 0; err != nil && errdefs.IsFailedPrecondition(err) && i < 50; i++ {
		// Another daemon is checking right now: it holds the guard for
		// milliseconds.
		time.Sleep(20 * time.Millisecond)
		guard, err = claim(filepath.Join(dir, "network.guard"), "the network lock guard", "--lock-dir", nil)
	}
	if err != nil {
		return nil, err
	}
	defer guard.release()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		name, ok := strings.CutPrefix(e.Name(), "bridge-")
		if !ok || !strings.HasSuffix(name, ".lock") || name == safeName(bridge)+".lock" {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		live := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) != nil // someone holds it
		h := holdersOf(f)
		f.Close()
		if !live {
			continue
		}
		other, err := netip.ParsePrefix(h["subnet"])
		if err == nil && subnet.IsValid() && other.Overlaps(subnet) {
			return nil, fmt.Errorf("another matrxd (pid %s) uses the subnet %s on bridge %s, which overlaps this daemon's %s: give this daemon its own --network-subnet: %w",
				h["pid"], other, h["bridge"], subnet, errdefs.ErrFailedPrecondition)
		}
	}
	return claim(filepath.Join(dir, "bridge-"+safeName(bridge)+".lock"), "the network bridge "+bridge, "--network-bridge and --network-subnet",
		map[string]string{"bridge": bridge, "subnet": subnet.String()})
}

// safeName keeps a lock file name to one plain path element.
func safeName(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteRune(c)
		} else {
			b.WriteString("%" + strconv.FormatInt(int64(c), 16))
		}
	}
	return b.String()
}
