package sandbox

import (
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/registry"
)

func TestPoolFits(t *testing.T) {
	pool := registry.Config{Image: "img", CPU: 2, MemoryMB: 4096, Pids: 1024, DiskMB: 20480, Network: registry.NetworkConfig{Mode: "default"}}
	with := func(f func(*registry.Config)) registry.Config {
		c := pool
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		req  registry.Config
		want bool
	}{
		{"the pool's own config", pool, true},
		{"less cpu, memory and pids", with(func(c *registry.Config) { c.CPU, c.MemoryMB, c.Pids = 0.5, 128, 16 }), true},
		{"an allow list (still an attachment)", with(func(c *registry.Config) { c.Network.Allow = []string{"203.0.113.0/24"} }), true},
		{"env, labels, ttl", with(func(c *registry.Config) { c.Env = map[string]string{"A": "1"}; c.TTLSeconds = 60 }), true},
		{"another image", with(func(c *registry.Config) { c.Image = "other" }), false},
		{"a smaller disk", with(func(c *registry.Config) { c.DiskMB = 64 }), false},
		{"more cpu", with(func(c *registry.Config) { c.CPU = 4 }), false},
		{"more memory", with(func(c *registry.Config) { c.MemoryMB = 8192 }), false},
		{"more pids", with(func(c *registry.Config) { c.Pids = 2048 }), false},
		{"network mode none", with(func(c *registry.Config) { c.Network.Mode = "none" }), false},
		{"pull always", with(func(c *registry.Config) { c.Pull = PullAlways }), false},
	} {
		if got := fits(pool, tc.req); got != tc.want {
			t.Errorf("%s: fits = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPoolSpecsValidated(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs []PoolSpec
		ok    bool
	}{
		{"none", nil, true},
		{"one", []PoolSpec{{Image: "localhost/matrx/sandbox:latest", Size: 3}}, true},
		{"size 0 is off", []PoolSpec{{Image: "x", Size: 0}}, true},
		{"negative", []PoolSpec{{Image: "x", Size: -1}}, false},
		{"too large", []PoolSpec{{Image: "x", Size: MaxPoolSize + 1}}, false},
		{"bad image", []PoolSpec{{Image: "UPPER CASE", Size: 1}}, false},
		{"one image twice", []PoolSpec{{Image: "x", Size: 1}, {Image: "docker.io/library/x:latest", Size: 2}}, false},
	} {
		err := ValidatePools(tc.specs)
		if tc.ok && err != nil || !tc.ok && !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// A refill waits while a create or claim runs and for the quiet time
// after the last one ended.
func TestPoolRefillWaitsForQuiet(t *testing.T) {
	p, err := newPool([]PoolSpec{{Image: "localhost/img:1", Size: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if p.busy() || p.quietLeft() != 0 {
		t.Fatal("a pool nothing ran on is busy")
	}
	p.quiet = time.Hour
	end := p.begin()
	if !p.busy() {
		t.Fatal("not busy during a create")
	}
	end()
	if !p.busy() || p.quietLeft() <= 59*time.Minute {
		t.Fatalf("right after a create: busy %v, quiet left %v", p.busy(), p.quietLeft())
	}
	p.quiet = 0
	if p.busy() || p.quietLeft() != 0 {
		t.Fatal("busy with no quiet time and nothing in flight")
	}
}
