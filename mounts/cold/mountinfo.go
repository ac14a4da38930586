package cold

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// mountInfo is one line of /proc/PID/mountinfo (proc(5)).
type mountInfo struct {
	ID, Parent int
	Root       string // root of the mount within its filesystem
	Mountpoint string // relative to the reader's root, unescaped
	Optional   []string
	FSType     string
	Source     string
}

// shared reports whether the mount has a "shared:N" tag.
func (m mountInfo) shared() bool {
	for _, o := range m.Optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// parseMountinfo reads mountinfo lines:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Paths escape space, tab, newline and backslash as \ooo octal.
func parseMountinfo(r io.Reader) ([]mountInfo, error) {
	var out []mountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		m, err := parseMountinfoLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cold: read mountinfo: %w: %w", err, errdefs.ErrUnavailable)
	}
	return out, nil
}

func parseMountinfoLine(line string) (mountInfo, error) {
	bad := func() (mountInfo, error) {
		return mountInfo{}, fmt.Errorf("cold: malformed mountinfo line %q: %w", line, errdefs.ErrDataLoss)
	}
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 7 || sep < 0 || len(f) < sep+3 {
		return bad()
	}
	id, err1 := strconv.Atoi(f[0])
	parent, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return bad()
	}
	return mountInfo{
		ID:         id,
		Parent:     parent,
		Root:       unescapeMountinfo(f[3]),
		Mountpoint: unescapeMountinfo(f[4]),
		Optional:   append([]string(nil), f[6:sep]...),
		FSType:     f[sep+1],
		Source:     unescapeMountinfo(f[sep+2]),
	}, nil
}

// unescapeMountinfo decodes the kernel's \ooo octal escapes; anything else,
// including malformed escapes, is kept as is.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			if s[i+1] <= '3' {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

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
