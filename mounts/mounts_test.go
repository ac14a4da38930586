package mounts

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestUserPath(t *testing.T) {
	cases := []struct {
		id string
		ok bool
	}{
		{"alice", true}, {"a.b-c_d", true}, {"..x", true},
		{"", false}, {".", false}, {"..", false}, {"a/b", false}, {"/abs", false}, {"a\x00b", false},
		{strings.Repeat("a", 256), false},
	}
	for _, c := range cases {
		p, err := UserPath("/r/homes", c.id)
		if c.ok != (err == nil) {
			t.Fatalf("UserPath(%q) = %q, %v", c.id, p, err)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Fatalf("UserPath(%q): error class %v", c.id, err)
		}
	}
}

func FuzzUserPath(f *testing.F) {
	for _, s := range []string{"alice", "..", "a/../b", "", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		p, err := UserPath("/r/homes", id)
		if err != nil {
			return
		}
		if filepath.Dir(p) != "/r/homes" {
			t.Fatalf("UserPath(%q) = %q escapes the root", id, p)
		}
	})
}

