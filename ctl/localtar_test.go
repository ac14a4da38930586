package ctl

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func tarBytes(t *testing.T, hdrs ...tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hdrs {
		body := []byte(nil)
		if h.Typeflag == tar.TypeReg {
			body = []byte("x")
			h.Size = 1
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	return b.Bytes()
}

// TestExtractLocalTarStaysInside: a tar out of a sandbox is hostile; no
// entry may land outside the destination, whatever it names or links.
func TestExtractLocalTarStaysInside(t *testing.T) {
	outside := t.TempDir()
	for name, hdrs := range map[string][]tar.Header{
		"dot-dot":           {{Name: "../escape", Typeflag: tar.TypeReg}},
		"symlink then file": {{Name: "l", Typeflag: tar.TypeSymlink, Linkname: outside}, {Name: "l/escape", Typeflag: tar.TypeReg}},
		"symlink climbing":  {{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../../../" + outside}, {Name: "l/escape", Typeflag: tar.TypeReg}},
		"hard link outside": {{Name: "h", Typeflag: tar.TypeLink, Linkname: "../" + filepath.Base(outside) + "/victim"}},
	} {
		dst := t.TempDir()
		os.WriteFile(filepath.Join(outside, "victim"), []byte("v"), 0o644)
		err := extractLocalTar(bytes.NewReader(tarBytes(t, hdrs...)), dst)
		if err == nil {
			t.Errorf("%s: extracted without an error", name)
		}
		ents, _ := os.ReadDir(outside)
		if len(ents) != 1 {
			t.Fatalf("%s: wrote outside the destination: %v", name, ents)
		}
	}
	// A good tar keeps modes (not setuid), symlinks and times.
	dst := t.TempDir()
	mt := time.Unix(1700000000, 5)
	err := extractLocalTar(bytes.NewReader(tarBytes(t,
		tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o750, ModTime: mt},
		tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: mt, Format: tar.FormatPAX},
		tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "f"},
		tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3},
	)), dst)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dst, "d", "f"))
	if err != nil || fi.Mode() != 0o755 || !fi.ModTime().Equal(mt) {
		t.Fatalf("file: %v %v %v", err, fi.Mode(), fi.ModTime())
	}
	if l, _ := os.Readlink(filepath.Join(dst, "d", "l")); l != "f" {
		t.Fatalf("symlink %q", l)
	}
	if _, err := os.Lstat(filepath.Join(dst, "dev")); err == nil {
		t.Fatal("a device entry was made")
	}
}
