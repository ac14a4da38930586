package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// stdinDirName is the root-owned directory (0711) in each sandbox's control
// directory that holds the stdin FIFOs of processes without a terminal. It
// is made before the sandbox's first process runs, so nothing in the
// sandbox can have made it first.
const stdinDirName = "in"

// openBeneath opens the last two elements of p below the trusted directory
// two levels up, without following any symlink in them (the part a
// sandbox may be able to change).
func openBeneath(p string, flags int) (int, error) {
	base := filepath.Dir(filepath.Dir(p))
	rel := filepath.Join(filepath.Base(filepath.Dir(p)), filepath.Base(p))
	dfd, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dfd)
	return unix.Openat2(dfd, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// openFIFOWriter opens a FIFO for non-blocking writes (through Go's
// poller). ENXIO: nobody has it open for reading.
func openFIFOWriter(p string) (*os.File, error) {
	fd, err := openBeneath(p, unix.O_WRONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		unix.Close(fd)
		return nil, errors.New("not a FIFO")
	}
	return os.NewFile(uintptr(fd), p), nil
}

// makeStdinDir makes the control directory's stdin FIFO directory.
func makeStdinDir(control string) error {
	d := filepath.Join(control, stdinDirName)
	if err := os.Mkdir(d, 0o711); err != nil {
		return fmt.Errorf("stdin fifo dir: %w", err)
	}
	return os.Chmod(d, 0o711)
}

// makeSandboxStdin makes the stdin FIFO of a process without a terminal,
// owned by the process's user (mapped to the host), mode 0600. It returns
// its host path and its path inside the sandbox.
func (r *Runtime) makeSandboxStdin(id, procID string, user ExecUser) (string, string, error) {
	control := r.controlDir(id)
	d := filepath.Join(control, stdinDirName)
	var st unix.Stat_t
	if err := unix.Lstat(d, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o7777 != 0o711 {
		return "", "", fmt.Errorf("sandbox %s has no stdin fifo directory (it was created by an older matrxd): start the process with a terminal, or without stdin: %w", id, errdefs.ErrFailedPrecondition)
	}
	dfd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", "", fmt.Errorf("stdin fifo dir: %w", err)
	}
	defer unix.Close(dfd)
	if err := unix.Mkfifoat(dfd, procID, 0o600); err != nil {
		return "", "", fmt.Errorf("stdin fifo: %w", err)
	}
	uid, gid := uint32(AgentUID), uint32(AgentGID)
	if user == UserRoot {
		uid, gid = 0, 0
	}
	if err := unix.Fchownat(dfd, procID, int(r.userns.HostID(uid)), int(r.userns.HostID(gid)), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		unix.Unlinkat(dfd, procID, 0)
		return "", "", fmt.Errorf("stdin fifo owner: %w", err)
	}
	return filepath.Join(d, procID), path.Join(ControlDir, stdinDirName, procID), nil
}

// resolveCwd checks that cwd is a directory in the sandbox (through the
// sandbox's root, resolving symlinks inside it), or else fallback; it
// returns the one to use.
func resolveCwd(pid int, cwd, fallback string) (string, error) {
	if isDirIn(pid, cwd) {
		return cwd, nil
	}
	if fallback != "" && isDirIn(pid, fallback) {
		return fallback, nil
	}
	return "", fmt.Errorf("working directory %q does not exist in the sandbox: %w", cwd, errdefs.ErrInvalidArgument)
}

func isDirIn(pid int, dir string) bool {
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, strings.TrimPrefix(path.Clean(dir), "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return dir == "/" // the root itself
	}
	unix.Close(fd)
	return true
}

// sandboxPid is a host pid as the sandbox's PID namespace numbers it.
func sandboxPid(hostPid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", hostPid))
	if err != nil {
		return hostPid
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			fs := strings.Fields(v)
			if n, err := strconv.Atoi(fs[len(fs)-1]); err == nil {
				return n
			}
		}
	}
	return hostPid
}

// stdinOpened reports whether pid's stdin is the FIFO at path (the same
// file, by device and inode).
func stdinOpened(pid int, path string) bool {
	var fifo, in unix.Stat_t
	if unix.Stat(path, &fifo) != nil || unix.Stat("/proc/"+strconv.Itoa(pid)+"/fd/0", &in) != nil {
		return false
	}
	return fifo.Dev == in.Dev && fifo.Ino == in.Ino
}
