package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// orphanCgroups kills what is left in the cgroups of sandboxes GC found no
// use for, and removes the cgroups. Containers and tasks go through
// containerd first; this is for processes containerd no longer knows: a
// runc init made by a shim while containerd was killed in the middle of a
// create outlives the container's record, and holds the sandbox's mount
// namespace, so its disk image stays mounted (a loop device) until it dies.
// Every sandbox's cgroup is /matrx/ID (spec.go), in every hierarchy, and
// that path is the host's, not this daemon's: another matrxd on the host
// (a test's beside production) has its sandboxes there too. So only a
// process whose parent is a shim of this daemon's containerd and
// namespace (ours) is ever killed.
func orphanCgroups(orphan func(id string) bool, ours func(ppid int) bool) ([]Leftover, error) {
	var roots []string
	if exists(filepath.Join(cgroupRoot, "cgroup.controllers")) {
		roots = []string{filepath.Join(cgroupRoot, "matrx")}
	} else {
		ents, _ := os.ReadDir(cgroupRoot)
		for _, e := range ents {
			if e.IsDir() { // not the cpu -> cpu,cpuacct links: the same hierarchy twice
				roots = append(roots, filepath.Join(cgroupRoot, e.Name(), "matrx"))
			}
		}
	}
	killed := map[string]bool{}
	var errs []error
	for _, root := range roots {
		ents, err := os.ReadDir(root)
		if err != nil {
			continue // no sandbox ever used this hierarchy
		}
		for _, e := range ents {
			id := e.Name()
			if !e.IsDir() || !orphan(id) {
				continue
			}
			n, err := killCgroupTree(filepath.Join(root, id), ours)
			if n > 0 {
				killed[id] = true
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("cgroup of %s: %w", id, err))
			}
		}
	}
	var out []Leftover
	for id := range killed {
		out = append(out, Leftover{SandboxID: id, Kind: LeftoverProcesses})
	}
	return out, errors.Join(errs...)
}

// killCgroupTree SIGKILLs every process in dir and its child cgroups that
// ours says belongs to this daemon (by its parent) and, once it killed
// any, removes the cgroups, deepest first; it returns how many processes
// it killed. A cgroup holding anything not ours is left alone.
func killCgroupTree(dir string, ours func(ppid int) bool) (int, error) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var pids []int
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				pids = append(pids, pid)
			}
		}
	}
	// The sandbox's PID 1 (or runc init) is the shim's child; the rest of
	// its processes are its descendants: one of ours makes the cgroup ours.
	mine := false
	for _, pid := range pids {
		if ours(parentOf(pid)) {
			mine = true
			break
		}
	}
	if !mine {
		return 0, nil
	}
	n := 0
	id := filepath.Base(dir)
	for _, pid := range pids {
		// Only a process whose own cgroup file puts it in this sandbox's
		// cgroups and no other's: on a hybrid host a cgroup2 cgroup.procs
		// of a dead sandbox was once seen listing a live pooled sandbox's
		// PID 1 (its /proc/PID/cgroup: the other sandbox in every v1
		// hierarchy, the cgroup2 root), and the GC killed it.
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
		if err != nil || !onlyInSandboxCgroup(string(b), id) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	var err error
	for i := len(dirs) - 1; i >= 0; i-- {
		// The killed processes leave the cgroup once they are reaped.
		for try := 0; ; try++ {
			err = os.Remove(dirs[i])
			if err == nil || errors.Is(err, os.ErrNotExist) || try == 50 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return n, err
}

// onlyInSandboxCgroup reports whether a /proc/PID/cgroup file places the
// process in sandbox id's cgroup (/matrx/ID or below) in at least one
// hierarchy and in no other sandbox's cgroup in any.
func onlyInSandboxCgroup(procCgroup, id string) bool {
	in := false
	for _, line := range strings.Split(procCgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		rest, ok := strings.CutPrefix(parts[2], "/matrx/")
		if !ok {
			continue
		}
		if sid, _, _ := strings.Cut(rest, "/"); sid != id {
			return false
		}
		in = true
	}
	return in
}

// parentOf is a process's parent pid (0 if it is gone).
func parentOf(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// ownShim reports whether pid is a runc shim of this runtime's containerd
// and namespace.
func (r *Runtime) ownShim(pid int) bool {
	if pid <= 1 {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
		return false
	}
	var ns, addr string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-namespace":
			ns = args[i+1]
		case "-address":
			addr = args[i+1]
		}
	}
	return ns == r.ns && addr == r.address
}
