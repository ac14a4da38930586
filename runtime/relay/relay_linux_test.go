package relay

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildRelay compiles cmd/matrx-relay the way the Makefile does.
func buildRelay(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(t.TempDir(), "matrx-relay")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/matrx-relay")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build relay: %v\n%s", err, out)
	}
	return bin
}

type relayProc struct {
	cmd            *exec.Cmd
	stdout, stderr *os.File // write ends, as the shim holds them
	dir            string
}

// startRelay runs the relay as the shim does: fd 3 stdout, fd 4 stderr,
// fd 5 ready, and waits for the ready byte.
func startRelay(t *testing.T, bin string, o Options) *relayProc {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if err := syscall.Mkfifo(filepath.Join(o.Dir, CtlName), 0o600); err != nil {
		t.Fatal(err)
	}
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	readyR, readyW, _ := os.Pipe()
	var args []string
	for k, v := range o.Args() {
		args = append(args, k, v)
	}
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outR.Close()
	errR.Close()
	readyW.Close()
	b := make([]byte, 1)
	if n, _ := readyR.Read(b); n != 1 {
		cmd.Wait()
		t.Fatalf("relay not ready: %s", stderr.String())
	}
	readyR.Close()
	p := &relayProc{cmd: cmd, stdout: outW, stderr: errW, dir: o.Dir}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return p
}

func TestRelayProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the relay")
	}
	bin := buildRelay(t)

	t.Run("pipes to EOF, interleaved, pid file", func(t *testing.T) {
		p := startRelay(t, bin, Options{Cap: 1 << 20})
		p.stdout.Write([]byte("out1 "))
		time.Sleep(20 * time.Millisecond)
		p.stderr.Write([]byte("err1 "))
		time.Sleep(20 * time.Millisecond)
		p.stdout.Write([]byte("out2"))
		p.stdout.Close()
		p.stderr.Close()
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("relay exit: %v", err)
		}
		got, lost := readAll(t, p.dir, 0)
		if string(got) != "out1 err1 out2" || lost != 0 {
			t.Fatalf("log %q lost %d", got, lost)
		}
		if b, _ := os.ReadFile(filepath.Join(p.dir, PidName)); strings.TrimSpace(string(b)) == "" {
			t.Fatal("no pid file")
		}
	})

	t.Run("SIGTERM drains and ends although a child still holds the pipe", func(t *testing.T) {
		p := startRelay(t, bin, Options{Cap: 1 << 20})
		p.stdout.Write(bytes.Repeat([]byte("x"), 50000))
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("relay did not end after SIGTERM while its pipes stay open")
		}
		if got, _ := readAll(t, p.dir, 0); len(got) != 50000 {
			t.Fatalf("kept %d of 50000 bytes", len(got))
		}
	})

	t.Run("holds stdin until told to let go", func(t *testing.T) {
		dir := t.TempDir()
		fifo := filepath.Join(t.TempDir(), "stdin")
		syscall.Mkfifo(fifo, 0o600)
		p := startRelay(t, bin, Options{Dir: dir, Cap: 1 << 20, Hold: fifo})
		// The process's side: a reader. With the relay holding a writer, a
		// writer that comes and goes never makes it see EOF.
		in, err := os.OpenFile(fifo, os.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		wr, _ := os.OpenFile(fifo, os.O_WRONLY, 0)
		wr.Write([]byte("hi"))
		wr.Close() // "matrxd died"
		b := make([]byte, 10)
		in.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, _ := in.Read(b); string(b[:n]) != "hi" {
			t.Fatalf("read %q", b[:n])
		}
		if n, err := in.Read(b); n != 0 || err == nil || strings.Contains(err.Error(), "EOF") {
			t.Fatalf("stdin reached EOF while the relay holds it: %d %v", n, err)
		}
		ctl, _ := os.OpenFile(filepath.Join(dir, CtlName), os.O_WRONLY, 0)
		ctl.Write([]byte{CmdReleaseStdin})
		ctl.Close()
		in.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, err := in.Read(b); n != 0 || err == nil || !strings.Contains(err.Error(), "EOF") {
			t.Fatalf("after release: %d %v, want EOF", n, err)
		}
		p.stdout.Close()
		p.stderr.Close()
	})

	t.Run("refuses a hold path that is not a FIFO", func(t *testing.T) {
		dir := t.TempDir()
		syscall.Mkfifo(filepath.Join(dir, CtlName), 0o600)
		target := filepath.Join(t.TempDir(), "file")
		os.WriteFile(target, nil, 0o600)
		link := filepath.Join(t.TempDir(), "link")
		os.Symlink(target, link)
		for _, hold := range []string{target, link} {
			readyR, readyW, _ := os.Pipe()
			outR, _, _ := os.Pipe()
			cmd := exec.Command(bin, "--dir", dir, "--hold", hold)
			cmd.ExtraFiles = []*os.File{outR, outR, readyW}
			err := cmd.Run()
			readyW.Close()
			readyR.Close()
			if err == nil {
				t.Fatalf("relay accepted hold %s", hold)
			}
			os.Remove(filepath.Join(dir, SegmentName(0)))
		}
	})

	t.Run("memory", func(t *testing.T) {
		p := startRelay(t, bin, Options{Cap: 16 << 20})
		chunk := bytes.Repeat([]byte("y"), 64<<10)
		for i := 0; i < 512; i++ { // 32 MiB: past the cap
			p.stdout.Write(chunk)
		}
		time.Sleep(200 * time.Millisecond)
		st, _ := os.ReadFile("/proc/" + itoa(p.cmd.Process.Pid) + "/status")
		for _, l := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(l, "VmRSS") || strings.HasPrefix(l, "RssAnon") || strings.HasPrefix(l, "Threads") {
				t.Logf("relay after 32 MiB: %s", strings.Join(strings.Fields(l), " "))
			}
		}
		p.stdout.Close()
		p.stderr.Close()
		p.cmd.Wait()
	})
}

func itoa(n int) string { return strconv.Itoa(n) }
