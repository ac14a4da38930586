package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tarEntry is one layer entry as read back.
type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

// fixture builds a small rootfs. As root it also chowns files to distinct
// owners and makes a device node; otherwise every file is the caller's.
func fixture(t *testing.T) (root string, asRoot bool) {
	t.Helper()
	asRoot = os.Geteuid() == 0
	root = t.TempDir()
	mk := func(rel string, perm os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(root, rel), perm); err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel, data string, perm os.FileMode) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil { // umask-proof, keeps setuid
			t.Fatal(err)
		}
	}
	mk("bin", 0o755)
	mk("etc", 0o755)
	mk("home/agent", 0o750)
	mk("tmp", 0o777|os.ModeSticky)
	write("bin/tool", "#!/bin/sh\necho tool\n", 0o755|os.ModeSetuid)
	write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n", 0o644)
	write("home/agent/.profile", "export A=1\n", 0o640)
	if err := os.Link(filepath.Join(root, "bin/tool"), filepath.Join(root, "bin/tool2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("tool", filepath.Join(root, "bin/sh")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "tmp/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A listening unix socket: must be left out.
	l, err := net.Listen("unix", filepath.Join(root, "tmp/sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	if asRoot {
		mk("dev", 0o755)
		if err := syscall.Mknod(filepath.Join(root, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
			t.Fatal(err)
		}
		for rel, id := range map[string][2]int{
			"home/agent":          {1000, 1000},
			"home/agent/.profile": {1000, 1000},
			"etc/passwd":          {0, 42},
			"bin/sh":              {7, 8}, // the link itself (lchown)
		} {
			if err := os.Lchown(filepath.Join(root, rel), id[0], id[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root, asRoot
}

// readArchive returns the files of an OCI layout tar by name.
func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			t.Fatalf("archive entry %s: type %c, want regular", hdr.Name, hdr.Typeflag)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = data
	}
	return files
}

// blob returns a blob named by desc after checking its digest and size.
func blob(t *testing.T, files map[string][]byte, desc ocispec.Descriptor) []byte {
	t.Helper()
	if err := desc.Digest.Validate(); err != nil {
		t.Fatalf("descriptor digest %q: %v", desc.Digest, err)
	}
	data, ok := files["blobs/sha256/"+desc.Digest.Encoded()]
	if !ok {
		t.Fatalf("blob %s (%s) missing from archive", desc.Digest, desc.MediaType)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != desc.Digest.Encoded() {
		t.Fatalf("blob %s: content hashes to %s", desc.Digest, got)
	}
	if int64(len(data)) != desc.Size {
		t.Fatalf("blob %s: %d bytes, descriptor says %d", desc.Digest, len(data), desc.Size)
	}
	return data
}

func decode(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, data)
	}
}

func TestPackLayout(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ocipack packs Linux root filesystems; linux only")
	}
	root, asRoot := fixture(t)
	if !asRoot {
		t.Log("not root: ownership is checked against the caller's uid/gid only, no device node")
	}
	epoch := time.Unix(1700000000, 0).UTC()
	out := filepath.Join(t.TempDir(), "out", "img.tar")
	cfg := Config{
		RootFS:     root,
		Name:       "localhost/matrx/test:v1",
		Out:        out,
		Arch:       runtime.GOARCH,
		User:       "1000:1000",
		WorkingDir: "/home/agent",
		Env:        []string{DefaultPath, "LANG=C.UTF-8"},
		SourceDate: epoch,
	}
	res, err := Pack(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, out)

	var layout ocispec.ImageLayout
	decode(t, files[ocispec.ImageLayoutFile], &layout)
	if layout.Version != ocispec.ImageLayoutVersion {
		t.Errorf("oci-layout version %q, want %q", layout.Version, ocispec.ImageLayoutVersion)
	}

	// index → manifest
	var index ocispec.Index
	decode(t, files[ocispec.ImageIndexFile], &index)
	if index.SchemaVersion != 2 || index.MediaType != ocispec.MediaTypeImageIndex {
		t.Errorf("index: schema %d media type %q", index.SchemaVersion, index.MediaType)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	md := index.Manifests[0]
	if md.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest descriptor media type %q", md.MediaType)
	}
	if got := md.Annotations[AnnotationImageName]; got != "localhost/matrx/test:v1" {
		t.Errorf("annotation %s = %q", AnnotationImageName, got)
	}
	if got := md.Annotations[ocispec.AnnotationRefName]; got != "v1" {
		t.Errorf("annotation %s = %q", ocispec.AnnotationRefName, got)
	}
	if md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != runtime.GOARCH {
		t.Errorf("manifest descriptor platform %+v", md.Platform)
	}
	if md.Digest != res.Manifest {
		t.Errorf("index names manifest %s, Pack reported %s", md.Digest, res.Manifest)
	}
	var manifest ocispec.Manifest
	decode(t, blob(t, files, md), &manifest)
	if manifest.SchemaVersion != 2 || manifest.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest: schema %d media type %q", manifest.SchemaVersion, manifest.MediaType)
	}

	// manifest → config
	if manifest.Config.MediaType != ocispec.MediaTypeImageConfig {
		t.Errorf("config media type %q", manifest.Config.MediaType)
	}
	var img ocispec.Image
	decode(t, blob(t, files, manifest.Config), &img)
	if img.OS != "linux" || img.Architecture != runtime.GOARCH {
		t.Errorf("config platform %s/%s", img.OS, img.Architecture)
	}
	if img.Config.User != "1000:1000" || img.Config.WorkingDir != "/home/agent" {
		t.Errorf("config user %q workdir %q", img.Config.User, img.Config.WorkingDir)
	}
	if !slices.Equal(img.Config.Env, cfg.Env) {
		t.Errorf("config env %q, want %q", img.Config.Env, cfg.Env)
	}
	if len(img.Config.Cmd) != 0 || len(img.Config.Entrypoint) != 0 {
		t.Errorf("config has cmd %q entrypoint %q, want none", img.Config.Cmd, img.Config.Entrypoint)
	}
	if img.Created == nil || !img.Created.Equal(epoch) {
		t.Errorf("config created %v, want %v", img.Created, epoch)
	}

	// manifest → layer; config diff_id = digest of the uncompressed layer
	if len(manifest.Layers) != 1 || manifest.Layers[0].MediaType != ocispec.MediaTypeImageLayerGzip {
		t.Fatalf("manifest layers %+v, want one gzip layer", manifest.Layers)
	}
	gzData := blob(t, files, manifest.Layers[0])
	zr, err := gzip.NewReader(bytes.NewReader(gzData))
	if err != nil {
		t.Fatal(err)
	}
	tarData, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tarData)
	if img.RootFS.Type != "layers" || len(img.RootFS.DiffIDs) != 1 ||
		img.RootFS.DiffIDs[0].Encoded() != hex.EncodeToString(sum[:]) {
		t.Errorf("config rootfs %+v does not name the uncompressed layer sha256:%x", img.RootFS, sum)
	}

	entries := map[string]tarEntry{}
	var order []string
	tr := tar.NewReader(bytes.NewReader(tarData))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.ModTime.After(epoch) {
			t.Errorf("%s: mtime %v not clamped to %v", hdr.Name, hdr.ModTime, epoch)
		}
		if hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: uname/gname %q/%q, want numeric ids only", hdr.Name, hdr.Uname, hdr.Gname)
		}
		entries[hdr.Name] = tarEntry{hdr: hdr, data: data}
		order = append(order, strings.TrimSuffix(hdr.Name, "/"))
	}
	if !slices.IsSorted(order) {
		t.Errorf("layer entries not in sorted order: %q", order)
	}
	if len(entries) != res.Entries {
		t.Errorf("layer has %d entries, Pack reported %d", len(entries), res.Entries)
	}

	uid, gid := os.Getuid(), os.Getgid()
	want := []struct {
		name     string
		typ      byte
		mode     int64
		uid, gid int
		link     string
		data     string
	}{
		{name: "bin/", typ: tar.TypeDir, mode: 0o755, uid: uid, gid: gid},
		{name: "bin/tool", typ: tar.TypeReg, mode: 0o4755, uid: uid, gid: gid, data: "#!/bin/sh\necho tool\n"},
		{name: "bin/tool2", typ: tar.TypeLink, mode: 0o4755, uid: uid, gid: gid, link: "bin/tool"},
		{name: "bin/sh", typ: tar.TypeSymlink, mode: 0o777, uid: pick(asRoot, 7, uid), gid: pick(asRoot, 8, gid), link: "tool"},
		{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, uid: pick(asRoot, 0, uid), gid: pick(asRoot, 42, gid),
			data: "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n"},
		{name: "home/agent/", typ: tar.TypeDir, mode: 0o750, uid: pick(asRoot, 1000, uid), gid: pick(asRoot, 1000, gid)},
		{name: "home/agent/.profile", typ: tar.TypeReg, mode: 0o640, uid: pick(asRoot, 1000, uid), gid: pick(asRoot, 1000, gid), data: "export A=1\n"},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777, uid: uid, gid: gid},
		{name: "tmp/fifo", typ: tar.TypeFifo, mode: 0o600, uid: uid, gid: gid},
	}
	for _, w := range want {
		e, ok := entries[w.name]
		if !ok {
			t.Errorf("layer lacks %s", w.name)
			continue
		}
		h := e.hdr
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.gid || h.Linkname != w.link {
			t.Errorf("%s: type %c mode %o owner %d:%d link %q; want type %c mode %o owner %d:%d link %q",
				w.name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, w.typ, w.mode, w.uid, w.gid, w.link)
		}
		if string(e.data) != w.data {
			t.Errorf("%s: content %q, want %q", w.name, e.data, w.data)
		}
	}
	for _, name := range []string{"tmp/sock", "dev/null"} {
		if _, ok := entries[name]; ok {
			t.Errorf("layer contains %s; sockets and device nodes must be skipped", name)
		}
	}
	wantSkipped := []string{"tmp/sock"}
	if asRoot {
		wantSkipped = []string{"dev/null", "tmp/sock"}
	}
	if !slices.Equal(res.Skipped, wantSkipped) {
		t.Errorf("skipped %q, want %q", res.Skipped, wantSkipped)
	}
	if _, ok := entries["./"]; ok {
		t.Error("layer contains the root directory entry")
	}

	// Same input, same bytes.
	out2 := filepath.Join(t.TempDir(), "img2.tar")
	cfg.Out = out2
	if _, err := Pack(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	a, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("packing the same rootfs twice gave different archives")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".ocipack-*")); len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %q", leftovers)
	}
}

func pick(cond bool, a, b int) int {
	if cond {
		return a
	}
	return b
}

func TestPackRefusesMountPoint(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root on linux to mount a tmpfs")
	}
	root := t.TempDir()
	mnt := filepath.Join(root, "proc")
	if err := os.Mkdir(mnt, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	out := filepath.Join(t.TempDir(), "img.tar")
	_, err := Pack(context.Background(), Config{RootFS: root, Name: "x/y", Out: out, Arch: runtime.GOARCH})
	if err == nil || !strings.Contains(err.Error(), "mount point") {
		t.Fatalf("Pack with a mount inside rootfs: err %v, want a mount point error", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Pack left %s behind (stat err %v)", out, err)
	}
}

func TestPackErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img.tar")
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"missing rootfs", Config{RootFS: "/nonexistent/rootfs", Name: "a/b", Out: out, Arch: "amd64"}},
		{"rootfs is a file", Config{RootFS: file, Name: "a/b", Out: out, Arch: "amd64"}},
		{"bad name", Config{RootFS: t.TempDir(), Name: "a/b@sha256:00", Out: out, Arch: "amd64"}},
		{"no arch", Config{RootFS: t.TempDir(), Name: "a/b", Out: out}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Pack(context.Background(), tc.cfg); err == nil {
				t.Fatal("Pack succeeded, want an error")
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed Pack left %s behind", out)
			}
		})
	}
}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		in, name, tag string
		ok            bool
	}{
		{"localhost/matrx/minimal:latest", "localhost/matrx/minimal:latest", "latest", true},
		{"localhost/matrx/sandbox", "localhost/matrx/sandbox:latest", "latest", true},
		{"localhost:5000/matrx/sandbox", "localhost:5000/matrx/sandbox:latest", "latest", true},
		{"localhost:5000/matrx/sandbox:v2", "localhost:5000/matrx/sandbox:v2", "v2", true},
		{"busybox", "busybox:latest", "latest", true},
		{"", "", "", false},
		{"localhost/matrx/minimal:", "", "", false},
		{"localhost/Matrx/minimal:v1", "", "", false},
		{"localhost/matrx/minimal@sha256:abcd", "", "", false},
		{"localhost/matrx/ minimal", "", "", false},
		{"/matrx/minimal", "", "", false},
		{"matrx//minimal", "", "", false},
		{":v1", "", "", false},
	} {
		name, tag, err := parseName(tc.in)
		if tc.ok != (err == nil) {
			t.Errorf("parseName(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if name != tc.name || tag != tc.tag {
			t.Errorf("parseName(%q) = %q, %q; want %q, %q", tc.in, name, tag, tc.name, tc.tag)
		}
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"localhost/matrx/minimal:latest", "a", "a:b:c", "host:1/x", "x@sha256:1", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		name, tag, err := parseName(in)
		if err != nil {
			return
		}
		if tag == "" || !strings.HasSuffix(name, ":"+tag) || strings.ContainsAny(tag, "/:") {
			t.Fatalf("parseName(%q) = %q, %q: name must end in the tag", in, name, tag)
		}
		if again, tag2, err := parseName(name); err != nil || again != name || tag2 != tag {
			t.Fatalf("parseName not idempotent: %q → %q → %q, %q, %v", in, name, again, tag2, err)
		}
	})
}
