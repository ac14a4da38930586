package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// execGroup is the child cgroup one exec's process tree lives in. On cgroup
// v1 it is a freezer cgroup (freeze, SIGKILL every member, thaw: nothing can
// fork away in between); on a pure cgroup v2 host it is a child of the
// sandbox's cgroup, killed with cgroup.kill. Only the tracking hierarchy is
// touched: resource limits stay on the sandbox's own cgroup.
type execGroup struct {
	dir string
	v2  bool
}

const cgroupRoot = "/sys/fs/cgroup"

// newExecGroup creates the child cgroup next to pid's current one and moves
// pid into it. Children forked afterwards inherit it.
func newExecGroup(pid int, name string) (*execGroup, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, fmt.Errorf("read cgroup of exec: %w", err)
	}
	defer f.Close()
	var v1Path, v2Path string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2Path = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "freezer" {
				v1Path = parts[2]
			}
		}
	}
	var g *execGroup
	switch {
	case v1Path != "" && exists(filepath.Join(cgroupRoot, "freezer")):
		g = &execGroup{dir: filepath.Join(cgroupRoot, "freezer", v1Path, name)}
	case v2Path != "" && exists(filepath.Join(cgroupRoot, "cgroup.controllers")):
		g = &execGroup{dir: filepath.Join(cgroupRoot, v2Path, name), v2: true}
	default:
		return nil, fmt.Errorf("no freezer (cgroup v1) or unified (cgroup v2) hierarchy for exec tracking: %w", errdefs.ErrNotImplemented)
	}
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create exec cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		g.remove()
		return nil, fmt.Errorf("move exec into its cgroup: %w", err)
	}
	return g, nil
}

// kill SIGKILLs every process in the group, however it got there.
func (g *execGroup) kill() error {
	if g.v2 {
		if err := os.WriteFile(filepath.Join(g.dir, "cgroup.kill"), []byte("1"), 0); err == nil {
			return nil
		}
		// Kernels before 5.14 lack cgroup.kill: fall back to a kill loop.
		return g.killLoop()
	}
	state := filepath.Join(g.dir, "freezer.state")
	if err := os.WriteFile(state, []byte("FROZEN"), 0); err != nil {
		return g.killLoop()
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(state)
		if strings.TrimSpace(string(b)) == "FROZEN" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	err := g.signalAll()
	// Thawed, the frozen processes take delivery of SIGKILL and die.
	if terr := os.WriteFile(state, []byte("THAWED"), 0); terr != nil && err == nil {
		err = terr
	}
	return err
}

// killLoop signals members until none is left (no freezer available).
func (g *execGroup) killLoop() error {
	for i := 0; i < 50; i++ {
		pids, err := g.pids()
		if err != nil || len(pids) == 0 {
			return err
		}
		if err := g.signalAll(); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("exec cgroup still has processes after repeated SIGKILL")
}

func (g *execGroup) signalAll() error { return g.signalAllWith(syscall.SIGKILL) }

// signal delivers sig to every member at once: the group is frozen while
// it is signalled (freezer on v1, cgroup.freeze on v2), so no member forks
// a child that misses it; the members take delivery when thawed.
func (g *execGroup) signal(sig syscall.Signal) error {
	file, frozen, thawed := filepath.Join(g.dir, "freezer.state"), "FROZEN", "THAWED"
	if g.v2 {
		file, frozen, thawed = filepath.Join(g.dir, "cgroup.freeze"), "1", "0"
	}
	if err := os.WriteFile(file, []byte(frozen), 0); err != nil {
		return g.signalAllWith(sig) // no freezer: best effort, one pass
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if g.isFrozen() {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	err := g.signalAllWith(sig)
	if terr := os.WriteFile(file, []byte(thawed), 0); terr != nil && err == nil {
		err = terr
	}
	return err
}

func (g *execGroup) isFrozen() bool {
	if g.v2 {
		b, _ := os.ReadFile(filepath.Join(g.dir, "cgroup.events"))
		return strings.Contains(string(b), "frozen 1")
	}
	b, _ := os.ReadFile(filepath.Join(g.dir, "freezer.state"))
	return strings.TrimSpace(string(b)) == "FROZEN"
}

func (g *execGroup) signalAllWith(sig syscall.Signal) error {
	pids, err := g.pids()
	if err != nil {
		return err
	}
	for _, p := range pids {
		if err := unix.Kill(p, sig); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill %d: %w", p, err)
		}
	}
	return nil
}

func (g *execGroup) pids() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// remove deletes the cgroup if it is empty. Background jobs an exec left
// running keep it alive; the sandbox's cgroup removal takes it later.
func (g *execGroup) remove() {
	os.Remove(g.dir)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// detectShell picks bash when the sandbox's image has it, else sh. It looks
// through /proc/PID/root with openat2(RESOLVE_IN_ROOT), so the image's
// symlinks resolve inside the sandbox, never on the host.
func detectShell(pid int) string {
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "/bin/sh"
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, "bin/bash", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return "/bin/sh"
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
		return "/bin/sh"
	}
	return "/bin/bash"
}

// mountControlDir mounts the per-sandbox control directory as a 1 MiB
// tmpfs (sticky, world-writable, no exec, no devices, no setuid).
func mountControlDir(dir string) error {
	err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"size=1m,nr_inodes=4096,mode=1777")
	if err != nil {
		return fmt.Errorf("mount control dir tmpfs: %w", err)
	}
	return nil
}

// removeControlDir unmounts (lazily if busy) and removes a control dir.
// A directory that is not mounted, or gone, is fine.
func removeControlDir(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount control dir: %w", err)
	}
	return os.RemoveAll(dir)
}

// waitInitExeced waits until pid, a sandbox's PID 1 after task start, runs
// matrx-init (the host's initPath, bind-mounted at InitPath): "ready" means
// the OCI runtime's own init is gone. Between start and that execve, PID 1
// is the runtime's process after its setuid to nobody, not dumpable and
// with an mm of the host's user namespace, and crun's exec, which joins
// the sandbox's user namespace before the others (setns with a pidfd),
// fails then with "fail startup" (the first exec after a create, about 1
// in 15 here under load). runc's exec opens every namespace first and is
// not affected; it waits here as well, a few microseconds.
func waitInitExeced(ctx context.Context, pid int, initPath string) error {
	want, err := os.Stat(initPath)
	if err != nil {
		return fmt.Errorf("stat init binary: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		if ok, err := runsFile(pid, want); ok {
			return nil
		} else if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sandbox init (pid %d) exited at start: %w", pid, errdefs.ErrUnavailable)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sandbox init (pid %d) did not start matrx-init within 10s: %w", pid, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// runsFile reports whether process pid executes the file want (its
// /proc/PID/exe is that file); the error is the stat's (ErrNotExist: no
// such process).
func runsFile(pid int, want os.FileInfo) (bool, error) {
	got, err := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && os.SameFile(got, want), err
}

// setPipeSize raises a FIFO's buffer to 1 MiB (the unprivileged maximum).
func setPipeSize(f any) {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return
	}
	if rc, err := sc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 1<<20) })
	}
}
