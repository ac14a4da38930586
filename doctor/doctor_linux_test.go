package doctor

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSocket(t *testing.T) {
	const gid = 4242
	f := newFakeHost(t)
	f.write(f.Host.Etc, "group", "root:x:0:\nmatrx:x:4242:alice\n")
	dir := t.TempDir()
	listen := func(name string, mode os.FileMode, g int) (string, net.Listener) {
		p := filepath.Join(dir, name)
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		os.Chmod(p, mode)
		if err := os.Chown(p, -1, g); err != nil {
			t.Skipf("chown needs root: %v", err)
		}
		return p, l
	}
	good, _ := listen("good.sock", 0o660, gid)
	open, _ := listen("open.sock", 0o666, gid)
	wrongGroup, _ := listen("root.sock", 0o660, 0)
	stale, sl := listen("stale.sock", 0o660, gid)
	sl.(*net.UnixListener).SetUnlinkOnClose(false)
	sl.Close()
	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, nil, 0o660)
	cases := []struct {
		name, path string
		status     Status
		detail     string
	}{
		{"healthy", good, Pass, "mode 0660, group matrx, answering"},
		{"world-writable", open, Warn, "mode 0666, want 0660"},
		{"wrong group", wrongGroup, Warn, "group root, want matrx"},
		{"stale", stale, Warn, "nothing answers"},
		{"regular file", file, Warn, "not a socket"},
		{"missing", filepath.Join(dir, "none.sock"), Warn, "matrxd is not running"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.run(checkSocket, Config{Socket: c.path})
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) || (r.Status != Pass && r.Fix == "") {
				t.Fatalf("got %+v, want %s containing %q", r, c.status, c.detail)
			}
		})
	}
}

func TestDisk(t *testing.T) {
	f := newFakeHost(t)
	dir := t.TempDir()
	r := f.run(checkDisk, Config{StateDir: dir})
	if r.Status == "" || !strings.Contains(r.Detail, "GiB free of") || !strings.Contains(r.Detail, dir) {
		t.Fatalf("existing state dir: %+v", r)
	}
	missing := filepath.Join(dir, "not", "yet")
	r = f.run(checkDisk, Config{StateDir: missing})
	if !strings.Contains(r.Detail, "at "+dir) || !strings.Contains(r.Detail, "does not exist yet") {
		t.Fatalf("missing state dir: %+v", r)
	}
}
