package hotsync

import (
	"fmt"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

// DefaultExcludes are exactly the patterns the old system excluded from hot
// sync (*.tmp, .DS_Store, __pycache__/*). .git/ is synced: a coding agent's
// repository is its work.
var DefaultExcludes = []string{"*.tmp", ".DS_Store", "__pycache__/"}

// excluder matches paths relative to Dir against exclude patterns:
//
//   - "NAME/" matches directories only (and so everything below them);
//   - a pattern without "/" (besides a trailing one) matches the base name at
//     any depth, with path.Match wildcards;
//   - a pattern with an inner "/" matches the whole relative path.
type excluder struct {
	patterns []pattern
}

type pattern struct {
	glob     string
	dirOnly  bool
	anchored bool
}

func newExcluder(patterns []string) (excluder, error) {
	var ex excluder
	for _, p := range patterns {
		glob := strings.TrimPrefix(p, "/")
		dirOnly := strings.HasSuffix(glob, "/")
		glob = strings.TrimSuffix(glob, "/")
		if glob == "" {
			return excluder{}, fmt.Errorf("exclude pattern %q is empty: %w", p, errdefs.ErrInvalidArgument)
		}
		if _, err := path.Match(glob, ""); err != nil {
			return excluder{}, fmt.Errorf("exclude pattern %q: %w: %w", p, errdefs.ErrInvalidArgument, err)
		}
		ex.patterns = append(ex.patterns, pattern{glob: glob, dirOnly: dirOnly, anchored: strings.Contains(glob, "/") || strings.HasPrefix(p, "/")})
	}
	return ex, nil
}

// match reports whether the entry rel (slash-separated) itself is excluded.
func (ex excluder) match(rel string, isDir bool) bool {
	for _, p := range ex.patterns {
		if p.dirOnly && !isDir {
			continue
		}
		subject := path.Base(rel)
		if p.anchored {
			subject = rel
		}
		if ok, _ := path.Match(p.glob, subject); ok {
			return true
		}
	}
	return false
}

// excludedPath reports whether the file rel or any directory above it is
// excluded.
func (ex excluder) excludedPath(rel string) bool {
	if ex.match(rel, false) {
		return true
	}
	for dir := path.Dir(rel); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if ex.match(dir, true) {
			return true
		}
	}
	return false
}
