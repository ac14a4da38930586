package mounts

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestSandboxDir(t *testing.T) {
	s := &Storage{dir: "/r/hot"}
	cases := []struct {
		id string
		ok bool
	}{
		{"sbx-0123456789ab", true}, {"a.b-c_d", true}, {"..x", true},
		{"", false}, {".", false}, {"..", false}, {"a/b", false}, {"/abs", false}, {"a\x00b", false},
		{strings.Repeat("a", 256), false},
	}
	for _, c := range cases {
		p, err := s.sandboxDir(c.id)
		if c.ok != (err == nil) {
			t.Fatalf("sandboxDir(%q) = %q, %v", c.id, p, err)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Fatalf("sandboxDir(%q): error class %v", c.id, err)
		}
	}
}

func FuzzSandboxDir(f *testing.F) {
	for _, s := range []string{"sbx-0123456789ab", "..", "a/../b", "", "\x00"} {
		f.Add(s)
	}
	s := &Storage{dir: "/r/hot"}
	f.Fuzz(func(t *testing.T, id string) {
		p, err := s.sandboxDir(id)
		if err != nil {
			return
		}
		if filepath.Dir(p) != "/r/hot" {
			t.Fatalf("sandboxDir(%q) = %q escapes the root", id, p)
		}
	})
}
