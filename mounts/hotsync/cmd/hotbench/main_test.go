package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/mounts/s3test"
	"github.com/matrx-dev/matrx/testenv"
	"github.com/moby/sys/mountinfo"
)

// TestBenchRuns keeps `make bench` from rotting: the whole benchmark on a
// few small files and a 2 MiB one, through the latency proxy (2 ms), with
// the aws cli when it is installed.
// It checks that every row is printed and that no disk image stays
// mounted; it asserts nothing about speed.
func TestBenchRuns(t *testing.T) {
	if _, err := s3test.FindBinary(); errdefs.IsNotFound(err) {
		testenv.Skip(t, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	work := t.TempDir()
	var out bytes.Buffer
	err := run(ctx, []string{"-files", "40", "-big", "2", "-workdir", work, "-rtt", "2ms"}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	tools := []string{"hotsync"}
	if _, err := os.Stat("/usr/bin/aws"); err == nil {
		tools = append(tools, "aws s3 sync")
	}
	for _, tool := range tools {
		for _, c := range []string{"small (40 files", "big (1 files"} {
			for _, dir := range []string{"up", "down"} {
				if !hasRow(out.String(), tool, c, dir) {
					t.Errorf("no row for %s, %s, %s", tool, c, dir)
				}
			}
		}
	}
	mounts, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if strings.HasPrefix(m.Mountpoint, work) {
			t.Errorf("%s is still mounted", m.Mountpoint)
		}
	}
}

func hasRow(table, tool, c, dir string) bool {
	for _, line := range strings.Split(table, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, tool+" ") && strings.Contains(line, c) && strings.Contains(line, " "+dir+" ") {
			return true
		}
	}
	return false
}
