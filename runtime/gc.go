package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// Kinds of Leftover, also the reconcile repair kinds the daemon counts.
const (
	LeftoverContainer  = "container"
	LeftoverSnapshot   = "snapshot"
	LeftoverControlDir = "control_dir"
	LeftoverNetwork    = "network"
	// LeftoverProcesses: processes containerd no longer knew, killed in
	// the sandbox's cgroup (cgroupgc_linux.go).
	LeftoverProcesses = "processes"
)

// Leftover is one thing of a sandbox that GC removed.
type Leftover struct {
	SandboxID string
	Kind      string
}

// GCPolicy tells GC which names are sandbox ids (the names Create gives a
// sandbox's container, snapshot, control dir and network) and which of
// those sandboxes must keep what they have.
type GCPolicy struct {
	IsSandbox func(name string) bool
	// Keep must also claim every sandbox being created or stopped right
	// now, so that GC never races their own cleanup.
	Keep func(id string) bool
}

// GC removes what sandboxes that policy does not keep left in this
// runtime: containers and their tasks (SIGKILL first), active snapshots
// without a container, control dirs (tmpfs) and networks. Image
// snapshots, the user-namespace copies of images and anything not named
// like a sandbox are never touched. It returns what it removed, also when
// some removals failed.
func (r *Runtime) GC(ctx context.Context, policy GCPolicy) ([]Leftover, error) {
	if policy.IsSandbox == nil || policy.Keep == nil {
		return nil, fmt.Errorf("runtime GC needs IsSandbox and Keep: %w", errdefs.ErrInvalidArgument)
	}
	orphan := func(name string) bool { return policy.IsSandbox(name) && !policy.Keep(name) }
	var out []Leftover
	var errs []error
	nctx := r.nsCtx(ctx)
	cs, err := r.client.Containers(nctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %v: %w", err, errdefs.ErrUnavailable)
	}
	containers := map[string]bool{}
	for _, c := range cs {
		containers[c.ID()] = true
		if !orphan(c.ID()) {
			continue
		}
		if err := r.Destroy(ctx, c.ID(), 0); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, Leftover{SandboxID: c.ID(), Kind: LeftoverContainer})
	}
	procs, err := orphanCgroups(orphan, r.ownShim)
	errs = append(errs, err)
	out = append(out, procs...)
	snaps, err := r.orphanSnapshots(nctx, containers, orphan)
	errs = append(errs, err)
	out = append(out, snaps...)

	ents, err := os.ReadDir(filepath.Join(r.stateDir, "sandboxes"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list control dirs: %w", err))
	}
	for _, e := range ents {
		if !orphan(e.Name()) {
			continue
		}
		if err := removeControlDir(r.controlDir(e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("remove control dir of %s: %w", e.Name(), err))
			continue
		}
		out = append(out, Leftover{SandboxID: e.Name(), Kind: LeftoverControlDir})
	}

	if r.net != nil {
		err := r.net.GC(ctx, func(id string) bool {
			if !orphan(id) {
				return true
			}
			out = append(out, Leftover{SandboxID: id, Kind: LeftoverNetwork})
			return false
		})
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// orphanSnapshots removes active snapshots named like a sandbox that no
// container uses (a crash between snapshot and container, or a container
// deleted without its snapshot).
func (r *Runtime) orphanSnapshots(ctx context.Context, containers map[string]bool, orphan func(string) bool) ([]Leftover, error) {
	sn := r.client.SnapshotService(r.snapshotter)
	var names []string
	err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive && !containers[info.Name] && !strings.HasPrefix(info.Name, "matrx-userns-") && orphan(info.Name) {
			names = append(names, info.Name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk snapshots: %v: %w", err, errdefs.ErrUnavailable)
	}
	var out []Leftover
	var errs []error
	for _, n := range names {
		if err := sn.Remove(ctx, n); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove snapshot %s: %w", n, err))
			continue
		}
		out = append(out, Leftover{SandboxID: n, Kind: LeftoverSnapshot})
	}
	return out, errors.Join(errs...)
}
