package sandbox

import (
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/registry"
)

func TestResolveConfig(t *testing.T) {
	m := &Manager{limits: DefaultLimits()}
	cases := []struct {
		name string
		in   registry.Config
		err  string
	}{
		{"defaults", registry.Config{}, ""},
		{"all set", registry.Config{Image: "localhost/x:1", CPU: 0.5, MemoryMB: 128, Pids: 64, TTLSeconds: 600,
			Env: map[string]string{"A": "1"}, Labels: map[string]string{"team": "x"}}, ""},
		{"cpu low", registry.Config{CPU: 0.01}, "config.cpu"},
		{"cpu negative", registry.Config{CPU: -1}, "config.cpu"},
		{"cpu high", registry.Config{CPU: 9}, "config.cpu"},
		{"memory", registry.Config{MemoryMB: 10}, "config.memory_mb"},
		{"memory high", registry.Config{MemoryMB: 1 << 30}, "config.memory_mb"},
		{"pids", registry.Config{Pids: 2}, "config.pids"},
		{"ttl", registry.Config{TTLSeconds: 59}, "config.ttl_seconds"},
		{"ttl high", registry.Config{TTLSeconds: 1 << 40}, "config.ttl_seconds"},
		{"image", registry.Config{Image: "a b"}, "config.image"},
		{"image traversal", registry.Config{Image: "a/../b"}, "config.image"},
		{"image uppercase repository", registry.Config{Image: "registry.example:5000/Team/app:1"}, "config.image"},
		{"image empty tag", registry.Config{Image: "registry.example/app:"}, "config.image"},
		{"pull", registry.Config{Pull: "sometimes"}, "config.pull"},
		{"pull always", registry.Config{Pull: "always"}, ""},
		{"env key", registry.Config{Env: map[string]string{"A-B": "x"}}, "config.env"},
		{"env reserved", registry.Config{Env: map[string]string{"USER_ID": "x"}}, "reserved"},
		{"env NUL", registry.Config{Env: map[string]string{"A": "\x00"}}, "config.env"},
		{"env orchestrator", registry.Config{Env: map[string]string{"ORCHESTRATOR_URL": "http://evil"}}, "reserved"},
		{"public ports", registry.Config{PublicPorts: []int{80, 8080}}, ""},
		{"public port 0", registry.Config{PublicPorts: []int{0}}, "config.public_ports"},
		{"public port high", registry.Config{PublicPorts: []int{65536}}, "config.public_ports"},
		{"public port twice", registry.Config{PublicPorts: []int{80, 80}}, "twice"},
		{"public ports many", registry.Config{PublicPorts: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}}, "at most 16"},
		{"label key", registry.Config{Labels: map[string]string{"": "x"}}, "config.labels"},
		{"label value", registry.Config{Labels: map[string]string{"a": strings.Repeat("x", 256)}}, "config.labels"},
	}
	// Names are stored the way containerd stores them.
	out, err := m.resolve(registry.Config{Image: "registry.example:5000/team/app"})
	if err != nil || out.Image != "registry.example:5000/team/app:latest" || out.Pull != PullIfNotPresent {
		t.Errorf("normalized image %q, pull %q, %v", out.Image, out.Pull, err)
	}
	if out, _ := m.resolve(registry.Config{Image: "alpine"}); out.Image != "docker.io/library/alpine:latest" {
		t.Errorf("alpine normalized to %q", out.Image)
	}
	for _, c := range cases {
		out, err := m.resolve(c.in)
		if c.err == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			if out.CPU == 0 || out.MemoryMB == 0 || out.Pids == 0 || out.TTLSeconds == 0 || out.Image == "" {
				t.Errorf("%s: defaults not filled: %+v", c.name, out)
			}
			continue
		}
		if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: got %v, want InvalidArgument mentioning %q", c.name, err, c.err)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Limits){
		func(l *Limits) { l.DefaultImage = "" },
		func(l *Limits) { l.DefaultCPU = 100 },
		func(l *Limits) { l.MaxMemoryMB = 1 },
		func(l *Limits) { l.DefaultPids = 0 },
		func(l *Limits) { l.DefaultTTL = time.Second },
		func(l *Limits) { l.ShutdownTimeout = -1 },
		func(l *Limits) { l.MaxCommandLength = 0 },
		func(l *Limits) { l.MaxCmdTimeout = time.Second },
		func(l *Limits) { l.OutputLimit = 1 },
	}
	for i, f := range bad {
		l := DefaultLimits()
		f(&l)
		if err := l.Validate(); !errdefs.IsInvalidArgument(err) {
			t.Errorf("case %d: %v", i, err)
		}
	}
}

func FuzzValidateCwd(f *testing.F) {
	for _, s := range []string{"/", "/tmp", "rel", "", "/a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cwd string) {
		if err := validateCwd(cwd); err == nil && (cwd == "" || cwd[0] != '/' || strings.IndexByte(cwd, 0) >= 0) {
			t.Fatalf("accepted %q", cwd)
		}
	})
}
