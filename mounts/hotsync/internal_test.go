package hotsync

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestExcluder(t *testing.T) {
	ex, err := newExcluder(DefaultExcludes)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rel      string
		isDir    bool
		match    bool // the entry itself
		excluded bool // the entry or a directory above it (files only)
	}{
		{"a.tmp", false, true, true},
		{"dir/a.tmp", false, true, true},
		{"a.tmpl", false, false, false},
		{".DS_Store", false, true, true},
		{"x/.DS_Store", false, true, true},
		{"__pycache__", true, true, false},
		{"__pycache__", false, false, false}, // a file of that name is kept
		{"__pycache__/m.pyc", false, false, true},
		{"pkg/__pycache__/m.py", false, false, true},
		{"m.pyc", false, false, false}, // the old system kept .pyc outside __pycache__
		{".git", true, false, false},   // .git is synced
		{".git/config", false, false, false},
		{"a/.git/HEAD", false, false, false},
		{".gitignore", false, false, false},
		{"src/main.go", false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.rel, func(t *testing.T) {
			if got := ex.match(tt.rel, tt.isDir); got != tt.match {
				t.Errorf("match(%q, dir=%v) = %v, want %v", tt.rel, tt.isDir, got, tt.match)
			}
			if !tt.isDir {
				if got := ex.excludedPath(tt.rel); got != tt.excluded {
					t.Errorf("excludedPath(%q) = %v, want %v", tt.rel, got, tt.excluded)
				}
			}
		})
	}
	anchored, err := newExcluder([]string{"/top.txt", "build/cache/"})
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]bool{"top.txt": true, "sub/top.txt": false, "build/cache/x": true, "x/build/cache/y": false} {
		if got := anchored.excludedPath(rel); got != want {
			t.Errorf("anchored excludedPath(%q) = %v, want %v", rel, got, want)
		}
	}
}

// FuzzRelPath checks the key→path mapping of Down: an accepted key yields a
// path that stays strictly inside Dir and maps back to the key.
func FuzzRelPath(f *testing.F) {
	const prefix = "users/u1/hot/"
	for _, s := range []string{"a", "a/b", "../a", "a/../../b", "/etc/passwd", "a//b", "dir/", ".", "..", "a\x00", "\xff\xfe", `..\..\x`, ".keep"} {
		f.Add(prefix + s)
	}
	f.Add("users/u2/hot/a")
	f.Fuzz(func(t *testing.T, key string) {
		p, err := relPath(prefix, key)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("relPath(%q): error %v is not InvalidArgument", key, err)
			}
			return
		}
		if !strings.HasPrefix(key, prefix) {
			t.Fatalf("relPath accepted %q outside the prefix", key)
		}
		const dir = "/var/lib/matrx/sandboxes/sbx/home"
		joined := filepath.Join(dir, p)
		if !strings.HasPrefix(joined, dir+"/") || !filepath.IsLocal(p) {
			t.Fatalf("relPath(%q) = %q escapes %s", key, p, dir)
		}
		if prefix+filepath.ToSlash(p) != key {
			t.Fatalf("relPath(%q) = %q does not map back", key, p)
		}
	})
}
