package fshelper

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests run the helper's operations in-process on a temp dir (the
// integration tests run it inside real sandboxes).

type reply struct {
	header  *Header
	data    []byte
	wire    int // bytes the helper wrote
	entries [][]byte
	result  *Result
	err     *Error
}

// serve runs one request with body (nil: none; else framed with an end
// frame unless abort) and decodes the answer.
func serve(t *testing.T, req Request, body []byte, abort bool) reply {
	t.Helper()
	var in bytes.Buffer
	w := NewWriter(&in)
	w.JSON(KindRequest, req)
	if body != nil {
		w.Write(body)
		if !abort {
			w.End()
		}
	} else {
		w.End()
	}
	w.Flush()
	r := NewReader(&in, KindRequest, KindData, KindEnd)
	if k, err := r.Next(); err != nil || k != KindRequest {
		t.Fatal(err)
	}
	var got Request
	if err := r.Decode(&got); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	h := &helper{in: r, out: NewWriter(&out), req: got}
	if err := h.serve(); err != nil {
		h.out.JSON(KindError, asError(err))
	}
	h.out.Flush()
	wire := out.Len()
	rep := decodeReply(t, &out)
	rep.wire = wire
	return rep
}

func decodeReply(t *testing.T, out io.Reader) reply {
	t.Helper()
	var rep reply
	rd := NewReader(out, KindHeader, KindData, KindHole, KindEntry, KindResult, KindError)
	for {
		k, err := rd.Next()
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		switch k {
		case KindHeader:
			rep.header = &Header{}
			if err := rd.Decode(rep.header); err != nil {
				t.Fatal(err)
			}
		case KindData, KindHole:
			b, err := io.ReadAll(rd)
			if err != nil {
				t.Fatal(err)
			}
			rep.data = append(rep.data, b...)
		case KindEntry:
			rep.entries = append(rep.entries, append([]byte(nil), rd.payload...))
		case KindResult:
			rep.result = &Result{}
			if err := rd.Decode(rep.result); err != nil {
				t.Fatal(err)
			}
			return rep
		case KindError:
			rep.err = &Error{}
			if err := rd.Decode(rep.err); err != nil {
				t.Fatal(err)
			}
			return rep
		}
	}
}

func mustOK(t *testing.T, r reply) reply {
	t.Helper()
	if r.err != nil {
		t.Fatalf("unexpected error: %+v", r.err)
	}
	return r
}

func TestWriteReadStat(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "sub", "f.txt")
	r := serve(t, Request{Op: OpWrite, Path: p}, []byte("hello"), false)
	if r.err == nil || r.err.Errno != 2 {
		t.Fatalf("write without parents: %+v", r.err)
	}
	r = mustOK(t, serve(t, Request{Op: OpWrite, Path: p, Parents: true, Mode: 0o600, HasMode: true}, []byte("hello"), false))
	if !r.result.Created || r.result.Info.Mode != 0o600 || r.result.Info.Size != 5 {
		t.Fatalf("write: %+v", r.result)
	}
	r = mustOK(t, serve(t, Request{Op: OpWrite, Path: p}, []byte("hello world"), false))
	if r.result.Created || r.result.Info.Mode != 0o600 {
		t.Fatalf("replace keeps the mode: %+v", r.result.Info)
	}
	r = mustOK(t, serve(t, Request{Op: OpRead, Path: p, Range: &Range{Start: 6, End: -1}}, nil, false))
	if string(r.data) != "world" || r.header.Offset != 6 || r.header.Length != 5 {
		t.Fatalf("range read: %q %+v", r.data, r.header)
	}
	r = serve(t, Request{Op: OpRead, Path: p, Range: &Range{Start: 11, End: -1}}, nil, false)
	if r.err == nil || r.err.Code != CodeRange || r.err.Size != 11 {
		t.Fatalf("unsatisfiable range: %+v", r.err)
	}
	r = mustOK(t, serve(t, Request{Op: OpRead, Path: p, Range: &Range{Suffix: 3}}, nil, false))
	if string(r.data) != "rld" {
		t.Fatalf("suffix range: %q", r.data)
	}
	// An aborted upload changes nothing and leaves no temp file.
	r = serve(t, Request{Op: OpWrite, Path: p}, []byte("partial"), true)
	if r.err == nil || r.err.Code != CodeAborted {
		t.Fatalf("abort: %+v", r.err)
	}
	if b, _ := os.ReadFile(p); string(b) != "hello world" {
		t.Fatalf("aborted upload changed the file: %q", b)
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Fatalf("leftovers: %v", ents)
	}
	// A write to a symlink writes its target.
	link := filepath.Join(d, "link")
	os.Symlink("sub/f.txt", link)
	mustOK(t, serve(t, Request{Op: OpWrite, Path: link}, []byte("via link"), false))
	if b, _ := os.ReadFile(p); string(b) != "via link" {
		t.Fatalf("write through symlink: %q", b)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("the symlink was replaced")
	}
	r = mustOK(t, serve(t, Request{Op: OpStat, Path: link}, nil, false))
	if r.result.Info.Type != TypeSymlink || r.result.Info.SymlinkTarget != "sub/f.txt" {
		t.Fatalf("stat symlink: %+v", r.result.Info)
	}
	r = serve(t, Request{Op: OpRead, Path: d}, nil, false)
	if r.err == nil || r.err.Code != CodeIsDir {
		t.Fatalf("read dir: %+v", r.err)
	}
}

func TestReadRefusesSpecialFiles(t *testing.T) {
	d := t.TempDir()
	fifo := filepath.Join(d, "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	done := make(chan reply, 1)
	go func() { done <- serve(t, Request{Op: OpRead, Path: fifo}, nil, false) }()
	select {
	case r := <-done:
		if r.err == nil || r.err.Code != CodeNotRegular {
			t.Fatalf("fifo: %+v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO blocked")
	}
	r := serve(t, Request{Op: OpRead, Path: "/dev/zero"}, nil, false)
	if r.err == nil || r.err.Code != CodeNotRegular {
		t.Fatalf("device: %+v", r.err)
	}
}

func TestListPagesWithCursor(t *testing.T) {
	d := t.TempDir()
	want := map[string]bool{}
	for i := 0; i < 57; i++ {
		n := filepath.Join(d, "f"+strings.Repeat("x", i%5)+string(rune('a'+i%26))+string(rune('0'+i/26)))
		os.WriteFile(n, nil, 0o644)
		want[filepath.Base(n)] = true
	}
	os.Mkdir(filepath.Join(d, "dir"), 0o755)
	for i := 0; i < 13; i++ {
		os.WriteFile(filepath.Join(d, "dir", "g"+string(rune('a'+i))), nil, 0o644)
		want["dir/g"+string(rune('a'+i))] = true
	}
	want["dir"] = true
	os.Symlink("/etc", filepath.Join(d, "etc-link"))
	want["etc-link"] = true
	got := map[string]bool{}
	cursor := ""
	pages := 0
	for {
		r := mustOK(t, serve(t, Request{Op: OpList, Path: d, Depth: 2, Limit: 10, Cursor: cursor}, nil, false))
		pages++
		if len(r.entries) > 10 {
			t.Fatalf("page of %d", len(r.entries))
		}
		for _, e := range r.entries {
			var info Info
			if err := decodeStrict(e, &info); err != nil {
				t.Fatal(err)
			}
			rel := strings.TrimPrefix(info.Path, d+"/")
			if got[rel] {
				t.Fatalf("%s listed twice", rel)
			}
			got[rel] = true
			if rel == "etc-link" && (info.Type != TypeSymlink || info.SymlinkTarget != "/etc") {
				t.Fatalf("symlink: %+v", info)
			}
		}
		if !r.result.Truncated {
			break
		}
		cursor = r.result.Cursor
	}
	if len(got) != len(want) || pages != 8 {
		t.Fatalf("listed %d of %d in %d pages", len(got), len(want), pages)
	}
	r := serve(t, Request{Op: OpList, Path: d, Cursor: "garbage"}, nil, false)
	if r.err == nil || r.err.Code != CodeInvalid {
		t.Fatalf("bad cursor: %+v", r.err)
	}
}

func decodeStrict(b []byte, v any) error {
	rd := NewReader(bytes.NewReader(append([]byte{KindEntry, 0, 0, byte(len(b) >> 8), byte(len(b))}, b...)), KindEntry)
	if _, err := rd.Next(); err != nil {
		return err
	}
	return rd.Decode(v)
}

type tarEntry struct {
	hdr  tar.Header
	body string
}

func makeTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return b.Bytes()
}

func TestTarRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "a", "b"), 0o750)
	os.WriteFile(filepath.Join(src, "a", "b", "f"), []byte("content"), 0o640)
	os.Link(filepath.Join(src, "a", "b", "f"), filepath.Join(src, "hard"))
	os.Symlink("../../outside", filepath.Join(src, "a", "ln"))
	os.WriteFile(filepath.Join(src, "exe"), []byte("#!/bin/sh"), 0o755|os.ModeSetuid)
	os.Chmod(filepath.Join(src, "exe"), 0o755|os.ModeSetuid)
	mtime := time.Unix(1700000000, 123456789)
	os.Chtimes(filepath.Join(src, "a", "b", "f"), mtime, mtime)
	r := mustOK(t, serve(t, Request{Op: OpReadTar, Path: src}, nil, false))
	if r.result.Count != 6 {
		t.Fatalf("tar of %d entries: %+v", r.result.Count, r.result)
	}
	dst := filepath.Join(t.TempDir(), "new")
	r = mustOK(t, serve(t, Request{Op: OpWriteTar, Path: dst, Parents: true, MaxBytes: 1 << 20}, r.data, false))
	if !r.result.Created {
		t.Fatal("not created")
	}
	fi, err := os.Stat(filepath.Join(dst, "a", "b", "f"))
	if err != nil || fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(mtime) {
		t.Fatalf("file: %v %v %v", err, fi.Mode(), fi.ModTime())
	}
	if fi, _ := os.Stat(filepath.Join(dst, "a")); fi.Mode().Perm() != 0o750 {
		t.Fatalf("dir mode %v", fi.Mode())
	}
	if l, _ := os.Readlink(filepath.Join(dst, "a", "ln")); l != "../../outside" {
		t.Fatalf("symlink %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "exe")); fi.Mode()&os.ModeSetuid != 0 || fi.Mode().Perm() != 0o755 {
		t.Fatalf("setuid kept: %v", fi.Mode())
	}
	a, _ := os.Stat(filepath.Join(dst, "hard"))
	b, _ := os.Stat(filepath.Join(dst, "a", "b", "f"))
	if !os.SameFile(a, b) {
		t.Fatal("hard link not kept")
	}
}

func TestTarTricksAreRefused(t *testing.T) {
	outside := t.TempDir()
	reg := func(name, body string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
	}
	cases := []struct {
		name    string
		entries []tarEntry
		code    string
		errno   int
	}{
		{"dot-dot", []tarEntry{reg("ok", "x"), reg("../escape", "x")}, CodeInvalid, 0},
		{"nested dot-dot", []tarEntry{reg("a/../../escape", "x")}, CodeInvalid, 0},
		{"absolute", []tarEntry{reg(filepath.Join(outside, "abs"), "x")}, CodeInvalid, 0},
		{"symlink then write", []tarEntry{
			{hdr: tar.Header{Name: "ln", Typeflag: tar.TypeSymlink, Linkname: outside}},
			reg("ln/pwned", "x")}, CodeInvalid, 0},
		{"symlink then dir", []tarEntry{
			{hdr: tar.Header{Name: "ln", Typeflag: tar.TypeSymlink, Linkname: outside}},
			{hdr: tar.Header{Name: "ln/d/", Typeflag: tar.TypeDir}}}, CodeInvalid, 0},
		{"hard link outside", []tarEntry{
			{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: filepath.Join(outside, "secret")}}}, CodeInvalid, 0},
		{"hard link dot-dot", []tarEntry{
			{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../secret"}}}, CodeInvalid, 0},
		{"hard link to a symlink", []tarEntry{
			{hdr: tar.Header{Name: "ln", Typeflag: tar.TypeSymlink, Linkname: filepath.Join(outside, "secret")}},
			{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "ln"}}}, CodeInvalid, 0},
		{"hard link to an existing file", []tarEntry{
			{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "existing"}}}, CodeInvalid, 0},
		{"device", []tarEntry{{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}}, CodeInvalid, 0},
		{"fifo", []tarEntry{{hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo}}}, CodeInvalid, 0},
		{"through existing symlink", []tarEntry{reg("oldlink/pwned", "x")}, CodeInvalid, 0},
		{"too large", []tarEntry{reg("big", strings.Repeat("x", 2000))}, CodeTooLarge, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := t.TempDir()
			os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600)
			os.WriteFile(filepath.Join(dst, "existing"), []byte("e"), 0o644)
			os.Symlink(outside, filepath.Join(dst, "oldlink"))
			r := serve(t, Request{Op: OpWriteTar, Path: dst, MaxBytes: 1000}, makeTar(t, c.entries...), false)
			if r.err == nil || r.err.Code != c.code {
				t.Fatalf("want %s, got %+v", c.code, r.err)
			}
			// Nothing was written, inside or outside.
			ents, _ := os.ReadDir(dst)
			if len(ents) != 2 {
				t.Fatalf("target changed: %v", ents)
			}
			ents, _ = os.ReadDir(outside)
			if len(ents) != 1 {
				t.Fatalf("outside changed: %v", ents)
			}
		})
	}
}

func TestMoveAndRemove(t *testing.T) {
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "a"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(d, "b"), []byte("b"), 0o644)
	r := serve(t, Request{Op: OpMove, Path: filepath.Join(d, "a"), To: filepath.Join(d, "b")}, nil, false)
	if r.err == nil || r.err.Errno != 17 {
		t.Fatalf("move onto existing: %+v", r.err)
	}
	mustOK(t, serve(t, Request{Op: OpMove, Path: filepath.Join(d, "a"), To: filepath.Join(d, "b"), Overwrite: true}, nil, false))
	if b, _ := os.ReadFile(filepath.Join(d, "b")); string(b) != "a" {
		t.Fatal("not moved")
	}
	// Across filesystems (here: into /dev/shm when it is another fs).
	shm, err := os.MkdirTemp("/dev/shm", "fshelper-")
	if err == nil {
		defer os.RemoveAll(shm)
		os.MkdirAll(filepath.Join(d, "tree", "x"), 0o700)
		os.WriteFile(filepath.Join(d, "tree", "x", "f"), []byte("f"), 0o600)
		os.Symlink("x/f", filepath.Join(d, "tree", "l"))
		mustOK(t, serve(t, Request{Op: OpMove, Path: filepath.Join(d, "tree"), To: filepath.Join(shm, "tree")}, nil, false))
		if b, _ := os.ReadFile(filepath.Join(shm, "tree", "l")); string(b) != "f" {
			t.Fatal("cross-fs move lost the tree")
		}
		if _, err := os.Lstat(filepath.Join(d, "tree")); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("source kept")
		}
	}
	os.MkdirAll(filepath.Join(d, "full", "sub"), 0o755)
	r = serve(t, Request{Op: OpRemove, Path: filepath.Join(d, "full")}, nil, false)
	if r.err == nil || r.err.Errno != 39 {
		t.Fatalf("rmdir non-empty: %+v", r.err)
	}
	mustOK(t, serve(t, Request{Op: OpRemove, Path: filepath.Join(d, "full"), Recursive: true}, nil, false))
	r = serve(t, Request{Op: OpRemove, Path: "/"}, nil, false)
	if r.err == nil || r.err.Code != CodeInvalid {
		t.Fatalf("remove /: %+v", r.err)
	}
}

func TestFindAndGrep(t *testing.T) {
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "src", "pkg"), 0o755)
	os.WriteFile(filepath.Join(d, "src", "main.go"), []byte("package main\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(d, "src", "pkg", "lib.go"), []byte("package pkg\n// TODO: more\n"), 0o644)
	os.WriteFile(filepath.Join(d, "notes.txt"), []byte("TODO: write\n"), 0o644)
	os.WriteFile(filepath.Join(d, "bin"), []byte("TODO\x00binary"), 0o644)
	r := mustOK(t, serve(t, Request{Op: OpFind, Path: d, Pattern: "*.go"}, nil, false))
	if len(r.entries) != 2 {
		t.Fatalf("find *.go: %d", len(r.entries))
	}
	r = mustOK(t, serve(t, Request{Op: OpFind, Path: d, Pattern: "src/**/*.go", Limit: 1}, nil, false))
	if len(r.entries) != 1 || !r.result.Truncated {
		t.Fatalf("find limit: %d %+v", len(r.entries), r.result)
	}
	r = mustOK(t, serve(t, Request{Op: OpGrep, Path: d, Pattern: "TODO"}, nil, false))
	if len(r.entries) != 2 {
		t.Fatalf("grep: %d entries", len(r.entries))
	}
	r = mustOK(t, serve(t, Request{Op: OpGrep, Path: d, Pattern: "TODO", Glob: "*.go"}, nil, false))
	if len(r.entries) != 1 || !strings.Contains(string(r.entries[0]), `"line":2`) {
		t.Fatalf("grep glob: %s", r.entries)
	}
	r = serve(t, Request{Op: OpGrep, Path: d, Pattern: "("}, nil, false)
	if r.err == nil || r.err.Code != CodeInvalid {
		t.Fatalf("bad regexp: %+v", r.err)
	}
}

// TestListLargeDirectory walks a 30,000-entry directory page by page:
// every entry once, every page bounded.
func TestListLargeDirectory(t *testing.T) {
	// tmpfs: no 65,000-link limit, no per-file cost of the host's disk.
	d, err := os.MkdirTemp("/dev/shm", "fshelper-list-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	const n = 30_000
	os.WriteFile(filepath.Join(d, "seed"), nil, 0o644)
	for i := 0; i < n; i++ {
		if err := os.Link(filepath.Join(d, "seed"), filepath.Join(d, fmt.Sprintf("f%06d", i))); err != nil {
			t.Fatal(err)
		}
	}
	seen := make([]bool, n)
	total, cursor := 0, ""
	for pages := 0; ; pages++ {
		r := mustOK(t, serve(t, Request{Op: OpList, Path: d, Limit: 1000, Cursor: cursor}, nil, false))
		if len(r.entries) > 1000 || pages > n/1000+1 {
			t.Fatalf("page %d of %d entries", pages, len(r.entries))
		}
		for _, e := range r.entries {
			var info Info
			if err := decodeStrict(e, &info); err != nil {
				t.Fatal(err)
			}
			total++
			var i int
			if info.Name == "seed" {
				continue
			}
			if _, err := fmt.Sscanf(info.Name, "f%06d", &i); err != nil || seen[i] {
				t.Fatalf("%q unexpected or twice", info.Name)
			}
			seen[i] = true
		}
		if !r.result.Truncated {
			break
		}
		cursor = r.result.Cursor
	}
	if total != n+1 {
		t.Fatalf("listed %d of %d", total, n+1)
	}
}

// TestWatchDescriptorBudget: a recursive watch of a tree with more
// directories than its budget is refused before it starts.
func TestWatchDescriptorBudget(t *testing.T) {
	d := t.TempDir()
	for _, s := range []string{"a", "b", "c/d"} {
		os.MkdirAll(filepath.Join(d, s), 0o755)
	}
	r := serve(t, Request{Op: OpWatch, Path: d, Recursive: true, MaxWatches: 3}, nil, false)
	if r.err == nil || r.err.Code != CodeLimit || r.header != nil {
		t.Fatalf("over the budget: %+v %+v", r.err, r.header)
	}
	r = serve(t, Request{Op: OpWatch, Path: filepath.Join(d, "missing")}, nil, false)
	if r.err == nil || r.err.Errno != 2 {
		t.Fatalf("missing path: %+v", r.err)
	}
}

// TestReadSparse: a sparse file's holes travel as hole frames, and what
// the reader gives back is byte for byte the file, ranges included.
func TestReadSparse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	want := make([]byte, size)
	for _, at := range []int64{0, 20 << 20, size - 3} {
		b := []byte("dat")
		if _, err := f.WriteAt(b, at); err != nil {
			t.Fatal(err)
		}
		copy(want[at:], b)
	}
	f.Close()
	r := mustOK(t, serve(t, Request{Op: OpRead, Path: p}, nil, false))
	if !bytes.Equal(r.data, want) {
		t.Fatalf("sparse file read back differs (%d bytes)", len(r.data))
	}
	if r.wire > 1<<20 {
		t.Fatalf("the helper wrote %d bytes for 9 bytes of data: the holes went through as zeros", r.wire)
	}
	r = mustOK(t, serve(t, Request{Op: OpRead, Path: p, Range: &Range{Start: 20<<20 - 5, End: 20<<20 + 5}}, nil, false))
	if !bytes.Equal(r.data, want[20<<20-5:20<<20+6]) {
		t.Fatalf("range across a hole and data: %q", r.data)
	}
}

// A hostile helper's hole frames are bounded like data: zero-length and
// absurd holes are protocol errors.
func TestHoleFramesChecked(t *testing.T) {
	for _, n := range []uint64{0, 1<<62 + 1} {
		var b bytes.Buffer
		b.Write([]byte{KindHole, 0, 0, 0, 8})
		var z [8]byte
		binary.BigEndian.PutUint64(z[:], n)
		b.Write(z[:])
		rd := NewReader(&b, KindHole)
		if _, err := rd.Next(); !errors.Is(err, ErrProtocol) {
			t.Errorf("hole of %d: %v", n, err)
		}
	}
}
