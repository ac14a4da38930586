package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/matrx-dev/matrx/runtime/network"
)

// ClaimRequest gives a running sandbox that was made without a user (a
// warm-pool sandbox, see package sandbox) the user, environment, limits and
// network policy a create asked for.
type ClaimRequest struct {
	ID     string
	UserID string
	// Env is applied on top of the environment the sandbox was created
	// with (keys it names are replaced, others kept), for every exec and
	// process from now on. PID 1 (matrx-init) keeps its own: it runs
	// nothing of the user's.
	Env map[string]string
	// Resources replace the sandbox's cgroup limits on the live cgroup.
	Resources Resources
	// Network replaces the sandbox's (closed) egress policy; IPv4 is the
	// address Create gave it, as the caller recorded it. Ignored for a
	// sandbox without an attachment (its policy can only be mode none).
	Network network.Policy
	IPv4    netip.Addr
}

// Claim applies req to a running sandbox, in the order that keeps a
// half-done claim harmless: limits first (a sandbox never runs the user's
// work with more than it asked for), then, side by side, the record
// containerd keeps (user label and environment, what a restarted daemon
// reads back) and the network policy (the sandbox runs nothing of the
// user's until the claim has succeeded, so an open policy beside a failed
// record reaches nothing). The caller destroys the sandbox when Claim
// fails: a claimed sandbox is never returned to a pool.
func (r *Runtime) Claim(ctx context.Context, req ClaimRequest) error {
	ctx = r.nsCtx(ctx)
	st, err := r.sandbox(ctx, req.ID)
	if err != nil {
		return err
	}
	t0 := time.Now()
	var tUpdate, tRecord time.Duration
	defer func() {
		r.log.Debug("sandbox claimed", "sandbox_id", req.ID, "update_ms", ms(tUpdate), "record_ms", ms(tRecord), "total_ms", ms(time.Since(t0)))
	}()
	// One read of the container record (LoadContainer's; the record is
	// not read again for the spec) and one field-masked write of the two
	// fields a claim changes: the client's container.Spec and
	// container.Update would each read it again (four round trips to
	// containerd, 5-9 ms of a sequential claim's ~13, 2026-12-02).
	container, err := r.client.LoadContainer(ctx, req.ID)
	if err != nil {
		return fmt.Errorf("load container %s: %w", req.ID, err)
	}
	info, err := container.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return fmt.Errorf("load container %s: %w", req.ID, err)
	}
	var spec oci.Spec
	if info.Spec == nil {
		return fmt.Errorf("container %s has no spec: %w", req.ID, errdefs.ErrFailedPrecondition)
	}
	if err := json.Unmarshal(info.Spec.GetValue(), &spec); err != nil {
		return fmt.Errorf("load spec of %s: %w", req.ID, err)
	}
	if spec.Process == nil || spec.Linux == nil {
		return fmt.Errorf("spec of %s has no process: %w", req.ID, errdefs.ErrFailedPrecondition)
	}
	// A claim that asks for the pool's own limits (the usual one: both are
	// the defaults) leaves the live cgroup as it is: an update is a runc
	// process, 12-15 ms of a claim's ~22 in one run.
	want := linuxResources(req.Resources, r.swap)
	if !sameLimits(spec.Linux.Resources, want) {
		if err := st.task.Update(ctx, containerd.WithResources(want)); err != nil {
			return fmt.Errorf("update the limits of %s: %v: %w", req.ID, err, errdefs.ErrUnavailable)
		}
		if spec.Linux.Resources == nil {
			spec.Linux.Resources = &specs.LinuxResources{}
		}
		spec.Linux.Resources.CPU, spec.Linux.Resources.Memory, spec.Linux.Resources.Pids = want.CPU, want.Memory, want.Pids
	}
	tUpdate = time.Since(t0)
	env := mergeEnv(spec.Process.Env, envList(req.Env))
	spec.Process.Env = env
	// The record and the network policy side by side: they touch nothing
	// in common, and both come after the limits. A policy applied before
	// a record that then fails opens nothing anyone uses: the sandbox
	// runs nothing of the user's yet and the caller destroys it.
	var policyErr error
	policyDone := make(chan struct{})
	go func() {
		defer close(policyDone)
		if r.net != nil && req.Network.Mode != network.ModeNone {
			if err := r.net.SetPolicy(ctx, req.ID, req.IPv4, req.Network); err != nil {
				policyErr = fmt.Errorf("network of %s: %w", req.ID, err)
			}
		}
	}()
	err = r.recordClaim(ctx, req.ID, req.UserID, &spec)
	<-policyDone
	if err != nil {
		return err
	}
	tRecord = time.Since(t0) - tUpdate
	r.mu.Lock()
	if cur := r.tasks[req.ID]; cur != nil {
		cur.env = slices.Clone(env)
	}
	r.mu.Unlock()
	return policyErr
}

// recordClaim writes what a restarted daemon reads back of a claim into
// the container record, in one write masked to exactly those fields: the
// user label and the spec (its environment and limits).
func (r *Runtime) recordClaim(ctx context.Context, id, userID string, spec *oci.Spec) error {
	specAny, err := typeurl.MarshalAny(spec)
	if err != nil {
		return fmt.Errorf("record the claim of %s: %w", id, err)
	}
	_, err = r.client.ContainerService().Update(ctx, containers.Container{
		ID: id, Labels: map[string]string{LabelUserID: userID}, Spec: specAny,
	}, "labels."+LabelUserID, "spec")
	if err != nil {
		return fmt.Errorf("record the claim of %s: %w", id, err)
	}
	return nil
}

// sameLimits reports whether have (a spec's) sets exactly the CPU, memory
// and pids limits of want (linuxResources').
func sameLimits(have, want *specs.LinuxResources) bool {
	if have == nil || have.CPU == nil || have.Memory == nil || have.Pids == nil {
		return false
	}
	eq := func(a, b *int64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	equ := func(a, b *uint64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	return eq(have.CPU.Quota, want.CPU.Quota) && equ(have.CPU.Period, want.CPU.Period) &&
		eq(have.Memory.Limit, want.Memory.Limit) && eq(have.Memory.Swap, want.Memory.Swap) &&
		eq(have.Pids.Limit, want.Pids.Limit)
}

// linuxResources are the cgroup limits specOpts sets, for a live update.
func linuxResources(res Resources, swap bool) *specs.LinuxResources {
	s := &oci.Spec{Linux: &specs.Linux{}}
	opts := []oci.SpecOpts{
		oci.WithCPUCFS(cpuQuota(res.CPU), cpuPeriod),
		oci.WithMemoryLimit(uint64(res.MemoryBytes)),
		oci.WithPidsLimit(res.Pids),
	}
	if swap {
		opts = append(opts, oci.WithMemorySwap(res.MemoryBytes))
	}
	for _, o := range opts {
		_ = o(context.Background(), nil, nil, s) // these only set fields
	}
	return s.Linux.Resources
}
