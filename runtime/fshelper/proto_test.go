package fshelper

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzReader: whatever a hostile helper writes, the reader never panics,
// never hands out a frame over its bound, and fails with io.EOF or a
// protocol error only.
func FuzzReader(f *testing.F) {
	var ok bytes.Buffer
	w := NewWriter(&ok)
	w.JSON(KindHeader, Header{Info: Info{Name: "x", Path: "/x", Type: TypeFile, Size: 3}, Length: 3})
	w.Write([]byte("abc"))
	w.JSON(KindResult, Result{})
	w.Flush()
	f.Add(ok.Bytes())
	f.Add([]byte{KindData, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{KindEntry, 0, 0, 0, 2, '{', '}'})
	f.Add([]byte{'?', 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), KindHeader, KindData, KindEntry, KindResult, KindError)
		buf := make([]byte, 4096)
		for i := 0; i < 1000; i++ {
			k, err := r.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrProtocol) {
					t.Fatalf("error of another kind: %v", err)
				}
				return
			}
			switch k {
			case KindData:
				n := 0
				for {
					c, err := r.Read(buf)
					n += c
					if n > len(b) {
						t.Fatal("read more than the input")
					}
					if err != nil {
						break
					}
				}
			default:
				if r.Len() > MaxJSON {
					t.Fatalf("JSON frame of %d bytes", r.Len())
				}
				var v map[string]any
				r.Decode(&v)
			}
		}
	})
}

// FuzzMatchGlob: no pattern makes matching panic or take more than
// linear time in the product of the lengths.
func FuzzMatchGlob(f *testing.F) {
	f.Add("src/**/*.go", "src/a/b/c.go")
	f.Add("**/**/**/**/**/x", strings.Repeat("a/", 50)+"y")
	f.Add("[", "x")
	f.Fuzz(func(t *testing.T, pattern, rel string) {
		if len(pattern) > 512 || len(rel) > 512 {
			return
		}
		if CheckGlob(pattern) != nil {
			return
		}
		MatchGlob(pattern, rel)
	})
}

// FuzzCleanRel: an accepted relative name never climbs, is never absolute
// and holds no empty, "." or ".." element.
func FuzzCleanRel(f *testing.F) {
	for _, s := range []string{"a/b", "../a", "./a/./b/", "/abs", "a//b", "a/../b", ".."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		elems, ok := cleanRel(name)
		if !ok {
			return
		}
		for _, e := range elems {
			if e == "" || e == "." || e == ".." || strings.Contains(e, "/") || strings.Contains(e, "\x00") {
				t.Fatalf("%q → %q", name, elems)
			}
		}
		if strings.HasPrefix(name, "/") {
			t.Fatalf("absolute %q accepted", name)
		}
	})
}

func TestMatchGlob(t *testing.T) {
	for _, c := range []struct {
		pattern, rel string
		want         bool
	}{
		{"*.go", "a/b/c.go", true},
		{"*.go", "c.txt", false},
		{"src/**/*.go", "src/c.go", true},
		{"src/**/*.go", "src/a/b/c.go", true},
		{"src/**/*.go", "lib/a/c.go", false},
		{"**", "anything/at/all", true},
		{"a/*/c", "a/b/c", true},
		{"a/*/c", "a/b/d/c", false},
		{"/src/*.go", "src/x.go", true},
	} {
		if got := MatchGlob(c.pattern, c.rel); got != c.want {
			t.Errorf("MatchGlob(%q, %q) = %v", c.pattern, c.rel, got)
		}
	}
}
