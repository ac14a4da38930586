package fleet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kc, []byte("x"), 0o600)
	good := Config{Kubeconfig: kc, Socket: "/run/matrx/matrxd.sock", NodeName: "matrx-a", Host: "a", NodeIP: "192.0.2.1",
		ListenAddress: ":10250", StatusInterval: 2 * time.Second, Workers: 10, LogFormat: "json"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.NodeName = "Matrx_A" }, "node name"},
		{func(c *Config) { c.Host = "a host" }, "--host"},
		{func(c *Config) { c.Socket = "matrxd.sock" }, "absolute"},
		{func(c *Config) { c.Slots = -1 }, "slots"},
		{func(c *Config) { c.NodeIP = "" }, "--node-ip"},
		{func(c *Config) { c.NodeIP = "host-a" }, "not an IP"},
		{func(c *Config) { c.TLSCertFile = kc }, "go together"},
		{func(c *Config) { c.StatusInterval = time.Millisecond }, "too short"},
		{func(c *Config) { c.Workers = 0 }, "workers"},
		{func(c *Config) { c.LogFormat = "xml" }, "log format"},
		{func(c *Config) { c.ListenAddress = "10250" }, "listen address"},
		{func(c *Config) { c.Kubeconfig = filepath.Join(dir, "missing") }, "--kubeconfig"},
		{func(c *Config) { c.ClientCAFile = filepath.Join(dir, "missing") }, "--client-ca-file"},
	} {
		c := good
		tc.mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %q", c, err, tc.want)
		}
	}
}
