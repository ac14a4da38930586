//go:build linux

package daemon_test

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// TestFilesCLI: matrx cp both ways, files and directories, - for tar
// streams, and matrx fs ls|stat|mkdir|mv|rm, against a real daemon.
func TestFilesCLI(t *testing.T) {
	h := daemontest.Start(t)
	id := h.Create("carl", nil).SandboxID
	cli := func(args ...string) string {
		t.Helper()
		out, errOut, code := h.CLI(args...)
		if code != 0 {
			t.Fatalf("matrx %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	local := t.TempDir()
	src := filepath.Join(local, "proj")
	os.MkdirAll(filepath.Join(src, "sub"), 0o750)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("aaa\n"), 0o640)
	os.WriteFile(filepath.Join(src, "sub", "b.sh"), []byte("echo b\n"), 0o755)
	os.Symlink("sub/b.sh", filepath.Join(src, "link"))
	mt := time.Unix(1600000000, 0)
	os.Chtimes(filepath.Join(src, "a.txt"), mt, mt)

	// Up: a directory into an existing directory, a file to a new name.
	cli("cp", src, id+":/home/agent/")
	if r := h.Exec(id, "cd /home/agent/proj && stat -c '%n %a %u %Y' a.txt sub sub/b.sh && readlink link"); r.Stdout != "a.txt 640 1000 1600000000\nsub 750 1000 "+statY(t, filepath.Join(src, "sub"))+"\nsub/b.sh 755 1000 "+statY(t, filepath.Join(src, "sub", "b.sh"))+"\nsub/b.sh\n" {
		t.Fatalf("after cp up: %q", r.Stdout)
	}
	cli("cp", filepath.Join(src, "a.txt"), id+":/home/agent/renamed.txt")
	if r := h.Exec(id, "cat /home/agent/renamed.txt"); r.Stdout != "aaa\n" {
		t.Fatalf("file up: %q", r.Stdout)
	}
	// Down: a file into a directory, a directory to a new name.
	down := filepath.Join(local, "down")
	os.Mkdir(down, 0o755)
	cli("cp", id+":/home/agent/renamed.txt", down)
	if b, _ := os.ReadFile(filepath.Join(down, "renamed.txt")); string(b) != "aaa\n" {
		t.Fatalf("file down: %q", b)
	}
	cli("cp", id+":/home/agent/proj", filepath.Join(local, "copy"))
	if b, err := os.ReadFile(filepath.Join(local, "copy", "link")); err != nil || string(b) != "echo b\n" {
		t.Fatalf("directory down: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(local, "copy", "a.txt")); err != nil || fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(mt) {
		t.Fatalf("mode and mtime down: %v %v", err, fi)
	}
	// - : a tar on stdout, and one from stdin.
	out := cli("cp", id+":/home/agent/proj", "-")
	names := tarNames(t, []byte(out))
	if strings.Join(names, ",") != "a.txt,link,sub/,sub/b.sh" {
		t.Fatalf("tar on stdout: %v", names)
	}
	in, err := os.CreateTemp(local, "tar")
	if err != nil {
		t.Fatal(err)
	}
	in.WriteString(out)
	in.Seek(0, 0)
	if _, errOut, code := h.CLIWithStdin(in, "cp", "-", id+":/home/agent/fromstdin"); code != 0 {
		t.Fatalf("cp - from stdin: exit %d: %s", code, errOut)
	}
	in.Close()
	if r := h.Exec(id, "cat /home/agent/fromstdin/sub/b.sh"); r.Stdout != "echo b\n" {
		t.Fatalf("tar from stdin: %q", r.Stdout)
	}
	// Refusals name the problem.
	if _, errOut, code := h.CLI("cp", src, filepath.Join(local, "x")); code == 0 || !strings.Contains(errOut, "neither side") {
		t.Fatalf("local to local: %d %q", code, errOut)
	}
	if _, errOut, code := h.CLI("cp", src, id+":relative"); code == 0 || !strings.Contains(errOut, "absolute") {
		t.Fatalf("relative sandbox path: %d %q", code, errOut)
	}

	// matrx fs.
	cli("fs", "mkdir", id, "/home/agent/m/n", "-p")
	cli("fs", "mv", id, "/home/agent/renamed.txt", "/home/agent/m/n/moved.txt")
	if out := cli("fs", "ls", id, "/home/agent/m", "--depth", "2"); !strings.Contains(out, "n/moved.txt") || !strings.HasPrefix(out, "d 0755 1000:1000") {
		t.Fatalf("fs ls: %q", out)
	}
	if out := cli("fs", "stat", id, "/home/agent/proj/link"); !strings.Contains(out, "link -> sub/b.sh") || !strings.HasPrefix(out, "l ") {
		t.Fatalf("fs stat: %q", out)
	}
	if out := cli("fs", "stat", id, "/home/agent/m/n/moved.txt", "--json"); !strings.Contains(out, `"mode": "0640"`) {
		t.Fatalf("fs stat --json: %q", out)
	}
	if _, errOut, code := h.CLI("fs", "rm", id, "/home/agent/m"); code == 0 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("fs rm of a directory without -r: %d %q", code, errOut)
	}
	cli("fs", "rm", id, "/home/agent/m", "-r")
	if _, errOut, code := h.CLI("fs", "stat", id, "/home/agent/m"); code == 0 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("after fs rm -r: %d %q", code, errOut)
	}
}

func statY(t *testing.T, p string) string {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return itoa(int(fi.ModTime().Unix()))
}

func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
	sort.Strings(names)
	return names
}
