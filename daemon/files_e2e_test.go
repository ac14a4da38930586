//go:build linux

package daemon_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// statusOf is the HTTP status a client call failed with (0: no API error).
func statusOf(err error) int {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// wantStatus fails t unless err is an API error with status code.
func wantStatus(t *testing.T, what string, err error, code int) {
	t.Helper()
	if got := statusOf(err); got != code {
		t.Fatalf("%s: want %d, got %v (status %d)", what, code, err, got)
	}
}

func rootExec(t *testing.T, h *daemontest.Harness, id, cmd string) *apitype.ExecResponse {
	t.Helper()
	r, err := h.Client().Exec(context.Background(), id, apitype.ExecRequest{Command: cmd, User: "root"})
	if err != nil {
		t.Fatalf("exec %q as root: %v", cmd, err)
	}
	return r
}

func putFile(t *testing.T, c *client.Client, id, path, body string, o client.WriteOptions) *apitype.FileInfo {
	t.Helper()
	o.Size = int64(len(body))
	info, err := c.WriteFile(context.Background(), id, path, strings.NewReader(body), o)
	if err != nil {
		t.Fatalf("put %s: %v", path, err)
	}
	return info
}

func getFile(t *testing.T, c *client.Client, id, path string, o client.ReadOptions) (string, error) {
	t.Helper()
	r, err := c.ReadFile(context.Background(), id, path, o)
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return string(b), err
}

// TestFilesAPI exercises every files route and the error table against a
// sandbox of the minimal image.
func TestFilesAPI(t *testing.T) {
	h := daemontest.Start(t, func(c *daemon.Config) { c.MaxUploadMB = 32 })
	ctx := context.Background()
	c := h.Client()
	s := h.Create("fiona", &apitype.SandboxConfig{DiskMB: 64})
	id := s.SandboxID

	t.Run("upload, replace, download, range, stat", func(t *testing.T) {
		_, err := c.WriteFile(ctx, id, "/home/agent/up/f.txt", strings.NewReader("x"), client.WriteOptions{Size: 1})
		wantStatus(t, "upload without parents", err, http.StatusNotFound)
		info := putFile(t, c, id, "/home/agent/up/f.txt", "hello world", client.WriteOptions{Parents: true, Mode: "0640"})
		if info == nil || info.Mode != "0640" || info.Size != 11 || info.UID != 1000 || info.GID != 1000 || info.Type != "file" || info.SymlinkTarget != nil {
			t.Fatalf("created: %+v", info)
		}
		if info := putFile(t, c, id, "/home/agent/up/f.txt", "hello there!", client.WriteOptions{}); info != nil {
			t.Fatalf("a replace answers 204, got %+v", info)
		}
		if r := h.Exec(id, "stat -c '%a %u:%g' /home/agent/up/f.txt; cat /home/agent/up/f.txt"); r.Stdout != "640 1000:1000\nhello there!" {
			t.Fatalf("in the sandbox: %q", r.Stdout)
		}
		if b, err := getFile(t, c, id, "/home/agent/up/f.txt", client.ReadOptions{}); err != nil || b != "hello there!" {
			t.Fatalf("download: %q %v", b, err)
		}
		fr, err := c.ReadFile(ctx, id, "/home/agent/up/f.txt", client.ReadOptions{Offset: 6, Length: 5})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(fr)
		fr.Close()
		if string(b) != "there" || fr.Length != 5 || fr.Size != 12 {
			t.Fatalf("range: %q %+v", b, fr)
		}
		_, err = getFile(t, c, id, "/home/agent/up/f.txt", client.ReadOptions{Offset: 12})
		wantStatus(t, "range past the end", err, http.StatusRequestedRangeNotSatisfiable)
		st, err := c.StatFile(ctx, id, "/home/agent/up/f.txt", "")
		if err != nil {
			t.Fatal(err)
		}
		mt, err := time.Parse(time.RFC3339Nano, st.Mtime)
		if err != nil || len(st.Mtime) != len("2006-01-02T15:04:05.000000000Z") || time.Since(mt) > time.Minute {
			t.Fatalf("mtime %q: %v", st.Mtime, err)
		}
		if r := h.Exec(id, "stat -c %Y /home/agent/up/f.txt"); strings.TrimSpace(r.Stdout) != strconv.FormatInt(mt.Unix(), 10) {
			t.Fatalf("mtime %v, the sandbox says %q", mt, r.Stdout)
		}
		// An empty file, and a file as root: owned by the sandbox's root.
		if info := putFile(t, c, id, "/home/agent/up/empty", "", client.WriteOptions{}); info.Size != 0 || info.Mode != "0644" {
			t.Fatalf("empty: %+v", info)
		}
		if b, err := getFile(t, c, id, "/home/agent/up/empty", client.ReadOptions{}); err != nil || b != "" {
			t.Fatalf("empty download: %q %v", b, err)
		}
		if info := putFile(t, c, id, "/tmp/roots", "root's", client.WriteOptions{User: "root"}); info.UID != 0 || info.GID != 0 {
			t.Fatalf("root's file: %+v", info)
		}
		if r := rootExec(t, h, id, "stat -c %u:%g /tmp/roots"); r.Stdout != "0:0\n" {
			t.Fatalf("root's file in the sandbox: %q", r.Stdout)
		}
	})

	t.Run("a write to a symlink writes its target", func(t *testing.T) {
		h.Exec(id, "mkdir -p /home/agent/ln && echo old > /home/agent/ln/target && ln -s target /home/agent/ln/link")
		if info := putFile(t, c, id, "/home/agent/ln/link", "new", client.WriteOptions{}); info != nil {
			t.Fatalf("replacing the target answers 204: %+v", info)
		}
		if r := h.Exec(id, "cat /home/agent/ln/target; readlink /home/agent/ln/link"); r.Stdout != "new"+"target\n" {
			t.Fatalf("after the write: %q", r.Stdout)
		}
		st, err := c.StatFile(ctx, id, "/home/agent/ln/link", "")
		if err != nil || st.Type != "symlink" || st.SymlinkTarget == nil || *st.SymlinkTarget != "target" {
			t.Fatalf("stat symlink: %v %+v", err, st)
		}
		// "dir/link/.." follows the link first, as the kernel does.
		h.Exec(id, "mkdir -p /home/agent/ln/real/deep && ln -s real/deep /home/agent/ln/dl && echo up > /home/agent/ln/real/marker")
		if b, err := getFile(t, c, id, "/home/agent/ln/dl/../marker", client.ReadOptions{}); err != nil || b != "up\n" {
			t.Fatalf("dl/../marker: %q %v", b, err)
		}
	})

	t.Run("error table", func(t *testing.T) {
		_, err := c.StatFile(ctx, id, "home/agent", "")
		wantStatus(t, "relative path", err, http.StatusBadRequest)
		_, err = c.StatFile(ctx, id, "/home/agent/a\x00b", "")
		wantStatus(t, "NUL", err, http.StatusBadRequest)
		_, err = c.StatFile(ctx, id, "", "")
		wantStatus(t, "no path", err, http.StatusBadRequest)
		_, err = c.StatFile(ctx, id, "/home/agent/missing", "")
		wantStatus(t, "missing", err, http.StatusNotFound)
		_, err = getFile(t, c, id, "/home/agent/missing", client.ReadOptions{})
		wantStatus(t, "missing download", err, http.StatusNotFound)
		_, err = c.StatFile(ctx, id, "/home/agent", "nobody")
		wantStatus(t, "bad user", err, http.StatusBadRequest)
		_, err = c.StatFile(ctx, "sbx-000000000000", "/", "")
		wantStatus(t, "unknown sandbox", err, http.StatusNotFound)
		code, _, _ := c.Raw(ctx, http.MethodGet, "/sandboxes/"+id+"/files/stat?path=/&bogus=1", nil)
		if code != http.StatusBadRequest {
			t.Fatalf("unknown parameter: %d", code)
		}
		// Permission and read-only root: 403 with the reason, nothing changed.
		_, err = c.WriteFile(ctx, id, "/etc/passwd", strings.NewReader("pwned"), client.WriteOptions{Size: 5})
		wantStatus(t, "agent writes /etc/passwd", err, http.StatusForbidden)
		if !strings.Contains(err.Error(), "read-only file system") && !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("403 without the reason: %v", err)
		}
		_, err = c.WriteFile(ctx, id, "/etc/passwd", strings.NewReader("pwned"), client.WriteOptions{Size: 5, User: "root"})
		wantStatus(t, "root writes /etc/passwd (read-only root)", err, http.StatusForbidden)
		if r := h.Exec(id, "head -c 4 /etc/passwd"); r.Stdout != "root" {
			t.Fatalf("/etc/passwd changed: %q", r.Stdout)
		}
		_, err = c.WriteFile(ctx, id, "/root/x", strings.NewReader("x"), client.WriteOptions{Size: 1})
		wantStatus(t, "agent writes /root", err, http.StatusForbidden)
		_, err = c.ListFiles(ctx, id, "/root", client.ListFilesOptions{})
		wantStatus(t, "agent lists /root", err, http.StatusForbidden)
		_, err = c.WriteFile(ctx, id, "/home/agent/m", strings.NewReader("x"), client.WriteOptions{Size: 1, Mode: "4755"})
		wantStatus(t, "setuid mode", err, http.StatusBadRequest)
		_, err = c.WriteFile(ctx, id, "/home/agent/m", strings.NewReader("x"), client.WriteOptions{Size: 1, Mode: "999"})
		wantStatus(t, "bad mode", err, http.StatusBadRequest)
		// Exists: 409.
		_, err = c.Mkdir(ctx, id, "", apitype.MkdirRequest{Path: "/home/agent/up"})
		wantStatus(t, "mkdir existing", err, http.StatusConflict)
		_, err = c.WriteFile(ctx, id, "/home/agent/up", strings.NewReader("x"), client.WriteOptions{Size: 1})
		wantStatus(t, "a file over a directory", err, http.StatusConflict)
		// A directory or a FIFO as a download: 400, at once.
		_, err = getFile(t, c, id, "/home/agent", client.ReadOptions{})
		wantStatus(t, "download a directory", err, http.StatusBadRequest)
		if !strings.Contains(err.Error(), "application/x-tar") {
			t.Fatalf("the directory error names no alternative: %v", err)
		}
		h.Exec(id, "mkfifo /tmp/fifo")
		start := time.Now()
		_, err = getFile(t, c, id, "/tmp/fifo", client.ReadOptions{})
		wantStatus(t, "download a FIFO", err, http.StatusBadRequest)
		if time.Since(start) > 5*time.Second {
			t.Fatalf("a FIFO download took %v", time.Since(start))
		}
		// Bodies over the daemon's limit: 413 with or without a length, and
		// nothing is left behind.
		_, err = c.WriteFile(ctx, id, "/home/agent/big", io.LimitReader(zeros{}, 33<<20), client.WriteOptions{Size: 33 << 20})
		wantStatus(t, "upload over the limit (Content-Length)", err, http.StatusRequestEntityTooLarge)
		_, err = c.WriteFile(ctx, id, "/home/agent/big", io.LimitReader(zeros{}, 33<<20), client.WriteOptions{Size: -1})
		wantStatus(t, "upload over the limit (chunked)", err, http.StatusRequestEntityTooLarge)
		// The home disk (64 MiB) or /tmp full: 507; the temp file goes.
		for _, dir := range []string{"/home/agent", "/tmp"} {
			h.Exec(id, "dd if=/dev/zero of="+dir+"/fill bs=1M count=200 2>/dev/null; true")
			_, err = c.WriteFile(ctx, id, dir+"/one", io.LimitReader(zeros{}, 4<<20), client.WriteOptions{Size: 4 << 20})
			wantStatus(t, "upload to a full "+dir, err, http.StatusInsufficientStorage)
			h.Exec(id, "rm -f "+dir+"/fill")
		}
		if r := h.Exec(id, "ls -a /home/agent /tmp | grep -c matrx; df -k /home/agent | tail -1"); !strings.HasPrefix(r.Stdout, "0\n") {
			t.Fatalf("temp files left behind: %q", r.Stdout)
		}
		putFile(t, c, id, "/home/agent/after-full", strings.Repeat("y", 1<<20), client.WriteOptions{})
		// A sandbox that is not running: 409.
		gone := h.Create("fiona", nil)
		if err := c.Delete(ctx, gone.SandboxID, false); err != nil {
			t.Fatal(err)
		}
		_, err = c.StatFile(ctx, gone.SandboxID, "/", "")
		wantStatus(t, "stopped sandbox", err, http.StatusConflict)
		_, err = c.WriteFile(ctx, gone.SandboxID, "/tmp/x", strings.NewReader("x"), client.WriteOptions{Size: 1})
		wantStatus(t, "upload to a stopped sandbox", err, http.StatusConflict)
	})

	t.Run("list, pages and depth", func(t *testing.T) {
		h.Exec(id, "mkdir -p /home/agent/ls/sub && cd /home/agent/ls && for i in $(seq 1 25); do echo $i > f$i; done && echo s > sub/s && ln -s /etc ln")
		want := map[string]bool{"sub": true, "ln": true}
		for i := 1; i <= 25; i++ {
			want["f"+itoa(i)] = true
		}
		seen := map[string]bool{}
		cursor := ""
		pages := 0
		for {
			l, err := c.ListFiles(ctx, id, "/home/agent/ls", client.ListFilesOptions{Limit: 10, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(l.Entries) > 10 {
				t.Fatalf("page of %d", len(l.Entries))
			}
			for _, e := range l.Entries {
				if seen[e.Name] {
					t.Fatalf("%s twice", e.Name)
				}
				seen[e.Name] = true
				if e.Name == "ln" && (e.Type != "symlink" || *e.SymlinkTarget != "/etc") {
					t.Fatalf("symlink entry: %+v", e)
				}
			}
			if !l.Truncated {
				break
			}
			if l.Cursor == "" {
				t.Fatal("truncated without a cursor")
			}
			cursor = l.Cursor
		}
		if len(seen) != len(want) || pages != 3 {
			t.Fatalf("listed %v in %d pages", seen, pages)
		}
		l, err := c.ListFiles(ctx, id, "/home/agent/ls", client.ListFilesOptions{Depth: 2})
		if err != nil || len(l.Entries) != 28 || l.Truncated {
			t.Fatalf("depth 2: %v %d", err, len(l.Entries))
		}
		_, err = c.ListFiles(ctx, id, "/home/agent/ls", client.ListFilesOptions{Cursor: "bm90IGEgY3Vyc29y"})
		wantStatus(t, "bad cursor", err, http.StatusBadRequest)
		_, err = c.ListFiles(ctx, id, "/home/agent/ls", client.ListFilesOptions{Limit: 10001})
		wantStatus(t, "limit over the maximum", err, http.StatusBadRequest)
		_, err = c.ListFiles(ctx, id, "/home/agent/ls/f1", client.ListFilesOptions{})
		wantStatus(t, "list a file", err, http.StatusNotFound)
	})

	t.Run("mkdir, move, delete", func(t *testing.T) {
		d, err := c.Mkdir(ctx, id, "", apitype.MkdirRequest{Path: "/home/agent/mk/a/b", Parents: true, Mode: "0750"})
		if err != nil || d.Type != "dir" || d.Mode != "0750" {
			t.Fatalf("mkdir -p: %v %+v", err, d)
		}
		if _, err := c.Mkdir(ctx, id, "", apitype.MkdirRequest{Path: "/home/agent/mk/a/b", Parents: true}); err != nil {
			t.Fatalf("mkdir -p of an existing directory: %v", err)
		}
		_, err = c.Mkdir(ctx, id, "", apitype.MkdirRequest{Path: "/home/agent/nope/x"})
		wantStatus(t, "mkdir without parents", err, http.StatusNotFound)
		putFile(t, c, id, "/home/agent/mk/one", "1", client.WriteOptions{})
		putFile(t, c, id, "/home/agent/mk/two", "2", client.WriteOptions{})
		_, err = c.MoveFile(ctx, id, "", apitype.MoveRequest{From: "/home/agent/mk/one", To: "/home/agent/mk/two"})
		wantStatus(t, "move onto an existing file", err, http.StatusConflict)
		if m, err := c.MoveFile(ctx, id, "", apitype.MoveRequest{From: "/home/agent/mk/one", To: "/home/agent/mk/two", Overwrite: true}); err != nil || m.Size != 1 {
			t.Fatalf("move with overwrite: %v %+v", err, m)
		}
		_, err = c.MoveFile(ctx, id, "", apitype.MoveRequest{From: "/home/agent/mk/missing", To: "/home/agent/mk/x"})
		wantStatus(t, "move a missing file", err, http.StatusNotFound)
		// Across filesystems (tmpfs → the home disk): copied, then removed.
		h.Exec(id, "mkdir -p /tmp/tree/d && echo deep > /tmp/tree/d/f && chmod 600 /tmp/tree/d/f && ln -s d/f /tmp/tree/l && touch -d '2020-01-02 03:04:05' /tmp/tree/d/f")
		m, err := c.MoveFile(ctx, id, "", apitype.MoveRequest{From: "/tmp/tree", To: "/home/agent/mk/tree"})
		if err != nil || m.Type != "dir" {
			t.Fatalf("move across mounts: %v %+v", err, m)
		}
		if r := h.Exec(id, "ls /tmp/tree 2>&1; cat /home/agent/mk/tree/l; stat -c '%a %Y' /home/agent/mk/tree/d/f; readlink /home/agent/mk/tree/l"); !strings.HasSuffix(r.Stdout, "deep\n600 1577934245\nd/f\n") || !strings.Contains(r.Stdout, "No such file") {
			t.Fatalf("after a cross-mount move: %q", r.Stdout)
		}
		// Delete: a file, a symlink (not its target), a tree.
		err = c.RemoveFile(ctx, id, "/home/agent/mk/a", "", false)
		wantStatus(t, "rmdir of a non-empty directory", err, http.StatusConflict)
		h.Exec(id, "ln -s /home/agent/mk/two /home/agent/mk/tl")
		if err := c.RemoveFile(ctx, id, "/home/agent/mk/tl", "", false); err != nil {
			t.Fatal(err)
		}
		if b, err := getFile(t, c, id, "/home/agent/mk/two", client.ReadOptions{}); err != nil || b != "1" {
			t.Fatalf("removing a symlink touched its target: %q %v", b, err)
		}
		if err := c.RemoveFile(ctx, id, "/home/agent/mk", "", true); err != nil {
			t.Fatal(err)
		}
		err = c.RemoveFile(ctx, id, "/home/agent/mk", "", true)
		wantStatus(t, "remove a missing tree", err, http.StatusNotFound)
		err = c.RemoveFile(ctx, id, "/", "root", true)
		wantStatus(t, "remove /", err, http.StatusBadRequest)
	})

	t.Run("find and grep", func(t *testing.T) {
		h.Exec(id, "mkdir -p /home/agent/src/a/b && cd /home/agent/src && echo 'needle one' > a/x.txt && echo 'hay' > a/b/y.txt && printf 'l1\\nneedle two\\n' > a/b/z.go && printf 'needle\\000bin' > bin.txt")
		l, err := c.FindFiles(ctx, id, "/home/agent/src", "*.txt", "", 0)
		if err != nil || len(l.Entries) != 3 || l.Truncated {
			t.Fatalf("find *.txt: %v %+v", err, l)
		}
		l, err = c.FindFiles(ctx, id, "/home/agent/src", "a/**/*.go", "", 0)
		if err != nil || len(l.Entries) != 1 || l.Entries[0].Path != "/home/agent/src/a/b/z.go" {
			t.Fatalf("find a/**/*.go: %v %+v", err, l)
		}
		l, err = c.FindFiles(ctx, id, "/home/agent/src", "*", "", 2)
		if err != nil || len(l.Entries) != 2 || !l.Truncated {
			t.Fatalf("find limit: %v %+v", err, l)
		}
		_, err = c.FindFiles(ctx, id, "/home/agent/src", "[", "", 0)
		wantStatus(t, "bad glob", err, http.StatusBadRequest)
		g, err := c.GrepFiles(ctx, id, "/home/agent/src", "needle", client.GrepOptions{})
		if err != nil || len(g.Matches) != 2 || g.Truncated {
			t.Fatalf("grep: %v %+v", err, g)
		}
		g, err = c.GrepFiles(ctx, id, "/home/agent/src", "needle", client.GrepOptions{Glob: "*.go"})
		if err != nil || len(g.Matches) != 1 || g.Matches[0].Line != 2 || g.Matches[0].Text != "needle two" {
			t.Fatalf("grep *.go: %v %+v", err, g)
		}
		g, err = c.GrepFiles(ctx, id, "/home/agent/src", "needle", client.GrepOptions{Limit: 1})
		if err != nil || len(g.Matches) != 1 || !g.Truncated {
			t.Fatalf("grep limit: %v %+v", err, g)
		}
		_, err = c.GrepFiles(ctx, id, "/home/agent/src", "(", client.GrepOptions{})
		wantStatus(t, "bad pattern", err, http.StatusBadRequest)
	})

	t.Run("tar up and down", func(t *testing.T) {
		mtime := time.Unix(1700000000, 123456789)
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range []struct {
			hdr  tar.Header
			body string
		}{
			{tar.Header{Name: "proj/", Typeflag: tar.TypeDir, Mode: 0o750, ModTime: mtime}, ""},
			{tar.Header{Name: "proj/run.sh", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: mtime}, "#!/bin/sh\necho hi\n"},
			{tar.Header{Name: "proj/data/a.txt", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: mtime}, "aaa"},
			{tar.Header{Name: "proj/link", Typeflag: tar.TypeSymlink, Linkname: "data/a.txt", ModTime: mtime}, ""},
			{tar.Header{Name: "proj/hard", Typeflag: tar.TypeLink, Linkname: "proj/data/a.txt"}, ""},
		} {
			e.hdr.Size = int64(len(e.body))
			e.hdr.Format = tar.FormatPAX
			tw.WriteHeader(&e.hdr)
			tw.Write([]byte(e.body))
		}
		tw.Close()
		info, err := c.WriteTar(ctx, id, "/home/agent/unpacked", bytes.NewReader(buf.Bytes()), client.WriteOptions{Parents: true, Size: int64(buf.Len())})
		if err != nil || info == nil || info.Type != "dir" {
			t.Fatalf("tar up: %v %+v", err, info)
		}
		if r := h.Exec(id, "cd /home/agent/unpacked/proj && stat -c '%n %a %u' run.sh data/a.txt . && readlink link && stat -c %h hard && ./run.sh"); r.Stdout != "run.sh 755 1000\ndata/a.txt 600 1000\n. 750 1000\ndata/a.txt\n2\nhi\n" {
			t.Fatalf("unpacked: %q", r.Stdout)
		}
		st, err := c.StatFile(ctx, id, "/home/agent/unpacked/proj/run.sh", "")
		if err != nil || st.Mtime != mtime.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") {
			t.Fatalf("mtime with nanoseconds: %v %+v", err, st)
		}
		// Into an existing directory: 204.
		if info, err := c.WriteTar(ctx, id, "/home/agent/unpacked", bytes.NewReader(buf.Bytes()), client.WriteOptions{Size: -1}); err != nil || info != nil {
			t.Fatalf("tar into an existing directory: %v %+v", err, info)
		}
		rc, err := c.ReadTar(ctx, id, "/home/agent/unpacked/proj", "")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got[hdr.Name] = string(hdr.Typeflag) + " " + hdr.Linkname + " " + itoa(int(hdr.Mode)) + " " + itoa(hdr.ModTime.Nanosecond())
		}
		rc.Close()
		names := make([]string, 0, len(got))
		for n := range got {
			names = append(names, n)
		}
		sort.Strings(names)
		// The hard-linked pair is one file and one link to it, in whichever
		// order the directory lists them.
		pair := got["hard"] + "|" + got["data/a.txt"]
		if strings.Join(names, ",") != "data/,data/a.txt,hard,link,run.sh" || got["link"] != "2 data/a.txt "+itoa(0o777)+" 123456789" ||
			got["run.sh"] != "0  "+itoa(0o755)+" 123456789" ||
			pair != "1 data/a.txt 384 123456789|0  384 123456789" && pair != "0  384 123456789|1 hard 384 123456789" {
			t.Fatalf("tar down: %v", got)
		}
		// A file as a tar: one entry of its name.
		rc, err = c.ReadTar(ctx, id, "/home/agent/unpacked/proj/run.sh", "")
		if err != nil {
			t.Fatal(err)
		}
		tr = tar.NewReader(rc)
		hdr, err := tr.Next()
		if err != nil || hdr.Name != "run.sh" || hdr.Size != 18 {
			t.Fatalf("tar of a file: %v %+v", err, hdr)
		}
		rc.Close()
	})

	t.Run("watch", func(t *testing.T) {
		h.Exec(id, "mkdir -p /home/agent/w")
		wt, err := c.WatchFiles(ctx, id, "/home/agent/w", "", true)
		if err != nil {
			t.Fatal(err)
		}
		events := make(chan apitype.FileEvent, 100)
		go func() {
			for {
				ev, err := wt.Next()
				if err != nil {
					close(events)
					return
				}
				events <- ev
			}
		}()
		h.Exec(id, "cd /home/agent/w && echo a > f && echo b >> f && mv f g && mkdir sub && echo c > sub/h && rm g")
		want := []string{"create /home/agent/w/f", "write /home/agent/w/f", "rename /home/agent/w/f", "create /home/agent/w/g",
			"create /home/agent/w/sub", "create /home/agent/w/sub/h", "remove /home/agent/w/g"}
		var got []string
		deadline := time.After(10 * time.Second)
	collect:
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					break collect
				}
				got = append(got, ev.Type+" "+ev.Path)
				if ev.Type == "remove" && ev.Path == "/home/agent/w/g" {
					break collect
				}
			case <-deadline:
				break collect
			}
		}
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				t.Fatalf("event %q missing from %q", w, got)
			}
		}
		// At most 4 watches per sandbox.
		more := []*client.FileWatch{wt}
		for i := 0; i < 3; i++ {
			w, err := c.WatchFiles(ctx, id, "/home/agent", "", false)
			if err != nil {
				t.Fatalf("watch %d: %v", i+2, err)
			}
			more = append(more, w)
		}
		_, err = c.WatchFiles(ctx, id, "/home/agent", "", false)
		wantStatus(t, "a fifth watch", err, http.StatusTooManyRequests)
		for _, w := range more[1:] {
			w.Close()
		}
		// Slots come back once the streams have ended.
		deadline2 := time.Now().Add(10 * time.Second)
		for {
			w, err := c.WatchFiles(ctx, id, "/home/agent", "", false)
			if err == nil {
				w.Close()
				break
			}
			if statusOf(err) != http.StatusTooManyRequests || time.Now().After(deadline2) {
				t.Fatalf("watch after closing others: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The first watch stays open across a daemon stop: the stop does
		// not wait for it.
		start := time.Now()
		h.Stop()
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("the daemon took %v to stop with a watch open", d)
		}
		h.Start()
		wt.Close()
		if _, err := h.Client().StatFile(ctx, id, "/home/agent", ""); err != nil {
			t.Fatalf("after the restart: %v", err)
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

// zeros reads zero bytes forever.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
