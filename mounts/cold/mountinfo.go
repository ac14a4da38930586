package cold

import (
	"strings"

	"github.com/moby/sys/mountinfo"
)

// mountInfo is one line of /proc/PID/mountinfo, parsed (and unescaped)
// by github.com/moby/sys/mountinfo.
type mountInfo struct{ mountinfo.Info }

// Shared reports whether the mount has a "shared:N" tag.
func (m mountInfo) Shared() bool {
	for o := range strings.FieldsSeq(m.Optional) {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// stackAt returns the mounts whose mountpoint is path, bottom first: each
// one's parent is the previous one (or, for the first, a mount elsewhere).
func stackAt(mounts []mountInfo, path string) []mountInfo {
	var at []mountInfo
	for _, m := range mounts {
		if m.Mountpoint == path {
			at = append(at, m)
		}
	}
	if len(at) < 2 {
		return at
	}
	byParent := make(map[int]mountInfo, len(at))
	ids := make(map[int]bool, len(at))
	for _, m := range at {
		byParent[m.Parent] = m
		ids[m.ID] = true
	}
	var bottom *mountInfo
	for i := range at {
		if !ids[at[i].Parent] {
			bottom = &at[i]
			break
		}
	}
	if bottom == nil {
		return at // a cycle cannot happen in a real table; keep file order
	}
	ordered := []mountInfo{*bottom}
	for len(ordered) < len(at) {
		next, ok := byParent[ordered[len(ordered)-1].ID]
		if !ok {
			break
		}
		ordered = append(ordered, next)
	}
	return ordered
}

// below returns the mounts strictly below dir (not dir itself).
func below(mounts []mountInfo, dir string) []mountInfo {
	var out []mountInfo
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for _, m := range mounts {
		if strings.HasPrefix(m.Mountpoint, prefix) {
			out = append(out, m)
		}
	}
	return out
}

// containingMount returns the top mount that path is on (the longest
// mountpoint that is path or one of its parents).
func containingMount(mounts []mountInfo, path string) (mountInfo, bool) {
	best := ""
	for _, m := range mounts {
		mp := m.Mountpoint
		if (path == mp || mp == "/" || strings.HasPrefix(path, mp+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return mountInfo{}, false
	}
	st := stackAt(mounts, best)
	return st[len(st)-1], true
}
