package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// BenchmarkFiles measures the files API against moving the same bytes
// through exec and base64 (the only way before it): one 1 GiB file and
// 2,000 files of 1-16 KiB, up and down, into the sandbox's home disk. The
// exec rows move 16 MiB of the big file and the first 200 small files:
// their rate is what matters, and the whole would take many minutes.
func BenchmarkFiles(b *testing.B) {
	h := daemontest.Start(b, func(c *daemon.Config) {
		c.Limits.DefaultMemoryMB = 2048
		c.Limits.DefaultCPU = 2
		c.Limits.DefaultDiskMB = 4096
	})
	c := h.UnvalidatedClient(client.WithRetries(50), client.WithBackoff(20*time.Millisecond))
	defer c.Close()
	ctx := context.Background()
	s, err := c.Create(ctx, "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	id := s.SandboxID
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	exec := func(cmd string) *apitype.ExecResponse {
		r, err := c.Exec(ctx, id, apitype.ExecRequest{Command: cmd})
		must(err)
		if r.ExitCode != 0 {
			b.Fatalf("%q: exit %d: %s", cmd, r.ExitCode, r.Stderr)
		}
		return r
	}
	type row struct {
		what, dir string
		bytes     int64
		api, exec time.Duration
		execBytes int64
	}
	var rows []row
	rate := func(n int64, d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3g", float64(n)/d.Seconds()/(1<<20))
	}

	// One 1 GiB file.
	const big = 1 << 30
	start := time.Now()
	_, err = c.WriteFile(ctx, id, "/home/agent/big", io.LimitReader(rand.NewChaCha8([32]byte{7}), big), client.WriteOptions{Size: big})
	must(err)
	upBig := time.Since(start)
	start = time.Now()
	r, err := c.ReadFile(ctx, id, "/home/agent/big", client.ReadOptions{})
	must(err)
	n, err := io.Copy(io.Discard, r)
	r.Close()
	must(err)
	downBig := time.Since(start)
	if n != big {
		b.Fatalf("downloaded %d bytes", n)
	}
	// The same bytes through exec + base64, 16 MiB of them: the command
	// line holds at most --max-command-length (10,000) characters, so
	// ~7 KiB go up per exec; stdout holds 1 MiB, so 768 KiB come down.
	const viaExec = 16 << 20
	chunk := make([]byte, 7000)
	src := rand.NewChaCha8([32]byte{8})
	start = time.Now()
	for sent := 0; sent < viaExec; sent += len(chunk) {
		io.ReadFull(src, chunk)
		exec("printf %s '" + base64.StdEncoding.EncodeToString(chunk) + "' | base64 -d >> /home/agent/viaexec")
	}
	upExec := time.Since(start)
	start = time.Now()
	for off := 0; off < viaExec; off += 768 << 10 {
		r := exec(fmt.Sprintf("dd if=/home/agent/big bs=768K skip=%d count=1 2>/dev/null | base64 -w0", off/(768<<10)))
		if _, err := base64.StdEncoding.DecodeString(r.Stdout); err != nil {
			b.Fatal(err)
		}
	}
	downExec := time.Since(start)
	rows = append(rows,
		row{"one 1 GiB file", "up", big, upBig, upExec, viaExec},
		row{"one 1 GiB file", "down", big, downBig, downExec, viaExec})
	exec("rm -f /home/agent/big /home/agent/viaexec")

	// 2,000 files of 1-16 KiB.
	const files = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	bodies := make([][]byte, files)
	var total int64
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for i := range bodies {
		bodies[i] = make([]byte, 1024+rng.IntN(15*1024))
		for j := range bodies[i] {
			bodies[i][j] = byte(rng.Uint32())
		}
		total += int64(len(bodies[i]))
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%02d/f%04d", i%20, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(bodies[i])), ModTime: time.Now()})
		tw.Write(bodies[i])
	}
	tw.Close()
	start = time.Now()
	_, err = c.WriteTar(ctx, id, "/home/agent/small-tar", bytes.NewReader(tb.Bytes()), client.WriteOptions{Parents: true, Size: int64(tb.Len())})
	must(err)
	upTar := time.Since(start)
	start = time.Now()
	rc, err := c.ReadTar(ctx, id, "/home/agent/small-tar", "")
	must(err)
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	must(err)
	downTar := time.Since(start)
	start = time.Now()
	for i, body := range bodies {
		_, err := c.WriteFile(ctx, id, fmt.Sprintf("/home/agent/small/d%02d/f%04d", i%20, i), bytes.NewReader(body), client.WriteOptions{Parents: true, Size: int64(len(body))})
		must(err)
	}
	upEach := time.Since(start)
	start = time.Now()
	for i := range bodies {
		r, err := c.ReadFile(ctx, id, fmt.Sprintf("/home/agent/small/d%02d/f%04d", i%20, i), client.ReadOptions{})
		must(err)
		io.Copy(io.Discard, r)
		r.Close()
	}
	downEach := time.Since(start)
	// Through exec: the first 200 files, each in as few execs as the
	// command limit allows, and one exec each to read it back.
	const viaExecFiles = 200
	var execBytes int64
	start = time.Now()
	for i, body := range bodies[:viaExecFiles] {
		p := fmt.Sprintf("/home/agent/small-exec/f%04d", i)
		exec("mkdir -p /home/agent/small-exec && : > " + p)
		for off := 0; off < len(body); off += 7000 {
			part := body[off:min(off+7000, len(body))]
			exec("printf %s '" + base64.StdEncoding.EncodeToString(part) + "' | base64 -d >> " + p)
		}
		execBytes += int64(len(body))
	}
	upSmallExec := time.Since(start)
	start = time.Now()
	for i := range bodies[:viaExecFiles] {
		r := exec(fmt.Sprintf("base64 -w0 /home/agent/small-exec/f%04d", i))
		if _, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.Stdout)); err != nil {
			b.Fatal(err)
		}
	}
	downSmallExec := time.Since(start)
	rows = append(rows,
		row{"2,000 files of 1-16 KiB, one tar", "up", total, upTar, upSmallExec, execBytes},
		row{"2,000 files of 1-16 KiB, one tar", "down", total, downTar, downSmallExec, execBytes},
		row{"2,000 files of 1-16 KiB, a request each", "up", total, upEach, 0, 0},
		row{"2,000 files of 1-16 KiB, a request each", "down", total, downEach, 0, 0})

	fmt.Println()
	fmt.Println("| case | direction | files API s | files API MiB/s | exec + base64 MiB/s | speed-up |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range rows {
		up := "-"
		if r.exec > 0 {
			apiRate := float64(r.bytes) / r.api.Seconds()
			up = fmt.Sprintf("%.0f×", apiRate/(float64(r.execBytes)/r.exec.Seconds()))
		}
		fmt.Printf("| %s | %s | %.2f | %s | %s | %s |\n", r.what, r.dir, r.api.Seconds(), rate(r.bytes, r.api), rate(r.execBytes, r.exec), up)
	}
	fmt.Printf("(exec + base64 rows: 16 MiB of the big file and the first %d small files; a request each: one files helper exec per file, %.0f ms up, %.0f ms down)\n",
		viaExecFiles, upEach.Seconds()*1000/files, downEach.Seconds()*1000/files)
}
