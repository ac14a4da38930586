package objstore_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/objstore"
)

func TestValidateBucketName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"abc", true},
		{"my-bucket.v2", true},
		{"0bucket9", true},
		{strings.Repeat("a", 63), true},
		{"ab", false},
		{strings.Repeat("a", 64), false},
		{"My-Bucket", false},
		{"-bucket", false},
		{"bucket-", false},
		{".bucket", false},
		{"bucket.", false},
		{"buck_et", false},
		{"buck et", false},
		{"", false},
		{"bücket", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := objstore.ValidateBucketName(tt.name)
			if tt.ok != (err == nil) {
				t.Fatalf("ValidateBucketName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
		})
	}
}

func TestKeyPath(t *testing.T) {
	tests := []struct {
		key  string
		want string // "" = rejected
	}{
		{"a", "a"},
		{"users/u1/hot/notes.md", "users/u1/hot/notes.md"},
		{"dir/.hidden", "dir/.hidden"},
		{"dir/..hidden", "dir/..hidden"},
		{"spaces and ünïcode/ok", "spaces and ünïcode/ok"},
		{`back\slash`, `back\slash`},
		{"", ""},
		{"/etc/passwd", ""},
		{"../escape", ""},
		{"a/../../escape", ""},
		{"a/..", ""},
		{"./a", ""},
		{"a/./b", ""},
		{"a//b", ""},
		{"dir/", ""},
		{"nul\x00byte", ""},
		{"bad\xffutf8", ""},
		{strings.Repeat("a", 256), ""},
		{strings.Repeat("a", 255), strings.Repeat("a", 255)},
		{strings.Repeat("abc/", 256) + "x", ""}, // > 1024 bytes
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, err := objstore.KeyPath(tt.key)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("KeyPath(%q) = %q, want an error", tt.key, got)
				}
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("KeyPath(%q) error %v is not InvalidArgument", tt.key, err)
				}
				return
			}
			if err != nil || got != filepath.FromSlash(tt.want) {
				t.Fatalf("KeyPath(%q) = %q, %v; want %q", tt.key, got, err, tt.want)
			}
		})
	}
}

// FuzzKeyPath checks the invariants of the key→path joiner: an accepted key
// maps to a local path that, joined to any directory, stays strictly below
// it and maps back to the same key.
func FuzzKeyPath(f *testing.F) {
	for _, s := range []string{"a", "a/b", "../a", "a/../b", "/a", "a//b", "a/", ".", "..", "a\x00", "\xff", "a/./b", `a\..\b`, "users/u/hot/.keep"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		p, err := objstore.KeyPath(key)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("KeyPath(%q): error %v is not InvalidArgument", key, err)
			}
			return
		}
		if !filepath.IsLocal(p) {
			t.Fatalf("KeyPath(%q) = %q is not local", key, p)
		}
		const root = "/srv/root"
		joined := filepath.Join(root, p)
		if !strings.HasPrefix(joined, root+string(filepath.Separator)) {
			t.Fatalf("KeyPath(%q) = %q escapes %s: %s", key, p, root, joined)
		}
		if filepath.ToSlash(p) != key {
			t.Fatalf("KeyPath(%q) = %q does not map back to the key", key, p)
		}
		if filepath.Clean(p) != p {
			t.Fatalf("KeyPath(%q) = %q is not clean", key, p)
		}
		if err := objstore.ValidateKey(key); err != nil {
			t.Fatalf("KeyPath accepted %q but ValidateKey rejects it: %v", key, err)
		}
	})
}
