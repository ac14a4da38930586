package runtime

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// # Shim groups (opt-in)
//
// By default every sandbox has its own runc shim (containerd-shim-runc-v2,
// ~2.5-3 MiB of memory each and a process start per create). With
// WithShimGroupSize(n > 1) the runtime puts up to n sandboxes in one shim
// through the shim's grouping annotation (io.containerd.runc.v2.group, the
// mechanism CRI uses for the containers of a pod). What that costs, and
// why it is off unless an operator asks: the shim runs on the host outside
// every sandbox's cgroup, so the sandboxes of a group share its CPU (one
// flooding exec output slows its neighbours' exec and process I/O) and its
// fate (a shim that dies or is killed takes every sandbox of its group;
// supervision then stops each as runtime_lost). Isolation between the
// sandboxes themselves does not change: the shim only starts runc and
// copies stdio.

// LabelShimGroup names a sandbox's shim group (grouped sandboxes only).
const LabelShimGroup = "matrx.shim_group"

// shimGroupAnnotation is the runc shim's grouping annotation.
const shimGroupAnnotation = "io.containerd.runc.v2.group"

// WithShimGroupSize puts up to n sandboxes in one runc shim (n ≤ 1: one
// shim per sandbox, the default).
func WithShimGroupSize(n int) Option { return func(r *Runtime) { r.groups.size = n } }

// shimGroups assigns sandboxes to groups. Members are loaded once from the
// containers' labels (a restarted daemon keeps filling the groups it
// finds).
type shimGroups struct {
	size int

	mu      sync.Mutex
	loaded  bool
	members map[string]map[string]bool // group -> sandbox ids
	of      map[string]string          // sandbox id -> group
	next    int
}

func (g *shimGroups) enabled() bool { return g.size > 1 }

// take puts sandbox id in the fullest group that has room (so groups fill
// densely and empty ones end with their last sandbox), or a new one.
func (g *shimGroups) take(ctx context.Context, r *Runtime, id string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.loaded {
		if err := g.load(ctx, r); err != nil {
			return "", err
		}
	}
	names := make([]string, 0, len(g.members))
	for n := range g.members {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return len(g.members[names[i]]) > len(g.members[names[j]]) || len(g.members[names[i]]) == len(g.members[names[j]]) && names[i] < names[j]
	})
	group := ""
	for _, n := range names {
		if len(g.members[n]) < g.size {
			group = n
			break
		}
	}
	if group == "" {
		for {
			g.next++
			group = fmt.Sprintf("matrx-g%d", g.next)
			if g.members[group] == nil {
				break
			}
		}
		g.members[group] = map[string]bool{}
	}
	g.members[group][id] = true
	g.of[id] = group
	return group, nil
}

// release forgets a sandbox that is gone.
func (g *shimGroups) release(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	group, ok := g.of[id]
	if !ok {
		return
	}
	delete(g.of, id)
	delete(g.members[group], id)
	if len(g.members[group]) == 0 {
		delete(g.members, group)
	}
}

func (g *shimGroups) load(ctx context.Context, r *Runtime) error {
	g.members, g.of = map[string]map[string]bool{}, map[string]string{}
	cs, err := r.client.Containers(r.nsCtx(ctx))
	if err != nil {
		return fmt.Errorf("list containers for shim groups: %w", err)
	}
	for _, c := range cs {
		labels, err := c.Labels(r.nsCtx(ctx))
		if err != nil || labels[LabelShimGroup] == "" {
			continue
		}
		group := labels[LabelShimGroup]
		if g.members[group] == nil {
			g.members[group] = map[string]bool{}
		}
		g.members[group][c.ID()] = true
		g.of[c.ID()] = group
	}
	g.loaded = true
	return nil
}
