package runtime_test

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

// ProductionImage is the name inside build/images/sandbox.tar.
const productionImage = "localhost/matrx/sandbox:latest"

// TestProductionImage is the production image's smoke test: a sandbox
// from build/images/sandbox.tar, in a user namespace when the kernel has
// them, with the full hardening and no network (loopback only, so nothing
// can be fetched: PyPI is not reachable here anyway), where the agent does
// what agents do first. Every file it uses is made by the test.
func TestProductionImage(t *testing.T) {
	tar := filepath.Join(containerdtest.RepoRoot(), "build", "images", "sandbox.tar")
	if _, err := os.Stat(tar); err != nil {
		containerdtest.Skip(t, "production image %s missing (run make image)", tar)
	}
	var opts []runtime.Option
	if ok, _ := runtime.DetectUserNS(); ok {
		u, err := runtime.NewUserNS(runtime.DefaultUserNSBase)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, runtime.WithUserNS(u))
	}
	rt, env := newRuntime(t, opts...)
	ctx := context.Background()
	f, err := os.Open(tar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if names, err := rt.Import(ctx, f); err != nil || len(names) != 1 || names[0] != productionImage {
		t.Fatalf("import: %v %v", err, names)
	}

	home := filepath.Join(env.Dir, "prod-home")
	probe := filepath.Join(home, "probe")
	uid, gid := int(rt.UserNS().HostID(runtime.AgentUID)), int(rt.UserNS().HostID(runtime.AgentGID))
	if err := os.MkdirAll(filepath.Join(probe, "addon"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"matrxprobe-0.1-py3-none-any.whl": probeWheel(t),
		"hello.c":                         []byte("#include <stdio.h>\nint main(void) { printf(\"hello from cc %d\\n\", 6 * 7); return 0; }\n"),
		"page.html":                       []byte("<!doctype html><html><body><p>static</p><script>document.body.insertAdjacentHTML('beforeend', '<p id=js>rendered by ' + 'javascript</p>')</script></body></html>\n"),
		"doc.pdf":                         probePDF("matrx pdf probe"),
		"addon/binding.gyp":               []byte(`{"targets": [{"target_name": "hello", "sources": ["hello.c"]}]}` + "\n"),
		"addon/hello.c": []byte(`#include <node_api.h>
static napi_value hello(napi_env env, napi_callback_info info) {
  napi_value v;
  napi_create_int32(env, 6 * 7, &v);
  return v;
}
NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "hello", NAPI_AUTO_LENGTH, hello, NULL, &fn);
  napi_set_named_property(env, exports, "hello", fn);
  return exports;
}
`),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(probe, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{home, probe, filepath.Join(probe, "addon")} {
		os.Chown(p, uid, gid)
	}
	for name := range files {
		os.Chown(filepath.Join(probe, name), uid, gid)
	}

	id := "sbx-00000000beef"
	if err := rt.Create(ctx, runtime.CreateRequest{ID: id, UserID: "u", Image: productionImage,
		Resources: runtime.Resources{CPU: 2, MemoryBytes: 2 << 30, Pids: 1024},
		Mounts:    []runtime.Mount{{Source: home, Destination: "/home/agent", Slave: true}}, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Destroy(ctx, id, 0) })

	const wheel = "probe/matrxprobe-0.1-py3-none-any.whl"
	checks := []struct {
		name, cmd string
		user      runtime.ExecUser
		want      string // stdout must contain it
	}{
		{"bash is the exec shell", `echo "$BASH_VERSION"`, runtime.UserAgent, "5."},
		{"venv + pip install of a local wheel", `python3 -m venv v && v/bin/pip install ` + wheel + ` >/dev/null && v/bin/python -c 'import matrxprobe; print(matrxprobe.VALUE, matrxprobe.__file__)'`,
			runtime.UserAgent, "42 /home/agent/v/lib/python3.11/site-packages/matrxprobe/__init__.py"},
		{"pip install --user of a local wheel (PEP 668 configured)", `pip install --user ` + wheel + ` >/dev/null && python3 -c 'import matrxprobe; print(matrxprobe.VALUE, matrxprobe.__file__)'`,
			runtime.UserAgent, "42 /home/agent/.local/lib/python3.11/site-packages/matrxprobe/__init__.py"},
		{"its console script is on the agent's PATH", `matrxprobe`, runtime.UserAgent, "matrxprobe says 42"},
		{"but never on root's", `command -v matrxprobe || echo "not for root: $PATH"`, runtime.UserRoot, "not for root: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		{"preinstalled Python libraries", `python3 -c 'import pandas, numpy, httpx, bs4, lxml; print("imports ok")'`, runtime.UserAgent, "imports ok"},
		{"python and pip names", `python --version && pip --version`, runtime.UserAgent, "pip 23"},
		{"node (the pinned official build) and npm", `node -p 'process.version + " " + process.release.name' && npm --version`, runtime.UserAgent, "v24.22.3 node\n11."},
		{"npm's global config", `npm config get prefix`, runtime.UserAgent, "/home/agent/.local"},
		{"a native addon builds offline against the installed headers", `cd probe/addon && node /usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js rebuild --nodedir=/usr/local >/dev/null && node -p 'require("./build/Release/hello.node").hello()'`,
			runtime.UserAgent, "42"},
		{"cc compiles and runs C", `cc -o /tmp/hello probe/hello.c && /tmp/hello`, runtime.UserAgent, "hello from cc 42"},
		{"headless chromium renders a page", `chromium --headless --no-sandbox --dump-dom file:///home/agent/probe/page.html 2>/dev/null`, runtime.UserAgent, `<p id="js">rendered by javascript</p>`},
		{"pdftotext", `pdftotext probe/doc.pdf -`, runtime.UserAgent, "matrx pdf probe"},
		{"ping as agent (ping_group_range)", `ping -c1 -W5 127.0.0.1`, runtime.UserAgent, "1 received"},
		{"git init in /home/agent", `cd /home/agent && git init && git status --short >/dev/null && echo git ok`, runtime.UserAgent, "git ok"},
		{"fd is fd-find", `fd --version`, runtime.UserAgent, "fd"},
		{"no sudo", `command -v sudo || echo no sudo`, runtime.UserAgent, "no sudo"},
	}
	for _, c := range checks {
		res, err := rt.Exec(ctx, id, runtime.ExecRequest{Command: c.cmd, User: c.user, Cwd: "/home/agent", Timeout: 120 * time.Second, OutputLimit: 1 << 20})
		if err != nil {
			t.Errorf("%s: exec: %v", c.name, err)
			continue
		}
		if res.ExitCode != 0 || !strings.Contains(string(res.Stdout), c.want) {
			t.Errorf("%s: %s\nexit %d, want stdout containing %q\nstdout: %s\nstderr: %s", c.name, c.cmd, res.ExitCode, c.want, res.Stdout, res.Stderr)
		}
	}
}

// probeWheel builds a pure-Python wheel, matrxprobe 0.1, with a console
// script, the way a build backend would lay it out.
func probeWheel(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	files := []struct{ name, body string }{
		{"matrxprobe/__init__.py", "VALUE = 42\n\ndef main():\n    print('matrxprobe says', VALUE)\n"},
		{"matrxprobe-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: matrxprobe\nVersion: 0.1\nSummary: matrx image smoke test\n"},
		{"matrxprobe-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: matrx-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
		{"matrxprobe-0.1.dist-info/entry_points.txt", "[console_scripts]\nmatrxprobe = matrxprobe:main\n"},
	}
	var record strings.Builder
	for _, f := range files {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(f.body))
		fmt.Fprintf(&record, "%s,,\n", f.name)
	}
	record.WriteString("matrxprobe-0.1.dist-info/RECORD,,\n")
	w, err := zw.Create("matrxprobe-0.1.dist-info/RECORD")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(record.String()))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// probePDF writes a one-page PDF 1.4 showing text in Helvetica, with a
// correct cross-reference table.
func probePDF(text string) []byte {
	stream := fmt.Sprintf("BT /F1 24 Tf 72 720 Td (%s) Tj ET", text)
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(stream), stream),
	}
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	offsets := make([]int, len(objs))
	for i, o := range objs {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return b.Bytes()
}
