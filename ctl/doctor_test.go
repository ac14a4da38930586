package ctl

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matrx-dev/matrx/doctor"
	"github.com/urfave/cli/v2"
)

// runApp runs the matrx CLI in-process and returns stdout, stderr and the
// exit code.
func runApp(args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	app := App()
	app.Writer, app.ErrWriter = &out, &errOut
	app.ExitErrHandler = func(*cli.Context, error) {}
	err := app.Run(append([]string{"matrx"}, args...))
	code := 0
	if ec, ok := err.(cli.ExitCoder); ok {
		code = ec.ExitCode()
		errOut.WriteString(ec.Error())
	} else if err != nil {
		code = 1
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

func TestDoctorCommand(t *testing.T) {
	// The S3 check must not reach for a bucket configured on this machine.
	t.Setenv("MATRX_S3_BUCKET", "")
	dir := t.TempDir()
	ctrd := filepath.Join(dir, "containerd.sock")
	sock := filepath.Join(dir, "global.sock")
	common := []string{"--containerd-address", ctrd, "--state-dir", filepath.Join(dir, "state")}

	out, errOut, code := runApp(append([]string{"--socket", sock, "doctor"}, common...)...)
	if code == 0 || !strings.Contains(errOut, "check(s) failed") {
		t.Fatalf("missing containerd must fail: code %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"STATUS", "FAIL    containerd", "no socket at " + ctrd, "fix: start containerd", "no socket at " + sock} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	other := filepath.Join(dir, "own.sock")
	out, _, code = runApp(append([]string{"--socket", sock, "doctor", "--json", "--socket", other}, common...)...)
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code == 0 || rep.OK {
		t.Fatalf("--json: code %d, %v:\n%s", code, err, out)
	}
	if r, _ := rep.Result("socket"); !strings.Contains(r.Detail, other) {
		t.Fatalf("doctor --socket ignored: %+v", r)
	}
	if r, _ := rep.Result("containerd"); r.Status != doctor.Fail || r.Fix == "" {
		t.Fatalf("containerd: %+v", r)
	}
}
