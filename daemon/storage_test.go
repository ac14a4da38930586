package daemon

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/mounts/cold"
	"github.com/matrx-dev/matrx/sandbox"
)

func TestColdOptions(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if opts := coldOptions(false, log); len(opts) != 0 {
		t.Fatalf("without systemd the FUSE daemon must be a plain child, got %d options", len(opts))
	}
	if opts := coldOptions(true, log); len(opts) != 1 {
		t.Fatalf("with systemd the FUSE daemon must get a scope wrapper, got %d options", len(opts))
	}
	argv := scopeWrapper("alice.b-c_1", []string{"s3fs", "bucket:/users/alice.b-c_1/cold", "/mnt", "-f"})
	if !slices.Equal(argv[:4], []string{"systemd-run", "--scope", "--collect", "--quiet"}) {
		t.Fatalf("argv %q", argv)
	}
	i := slices.Index(argv, "--")
	if i < 0 || !slices.Equal(argv[i+1:], []string{"s3fs", "bucket:/users/alice.b-c_1/cold", "/mnt", "-f"}) {
		t.Fatalf("daemon argv not passed through after --: %q", argv)
	}
	unit := regexp.MustCompile(`^--unit=matrx-cold-alice\.b-c_1-[0-9a-f]{8}$`)
	if !slices.ContainsFunc(argv, unit.MatchString) {
		t.Fatalf("no valid unit name in %q", argv)
	}
	if a, b := scopeWrapper("u", nil), scopeWrapper("u", nil); slices.Equal(a, b) {
		t.Fatal("two mounts of one user got the same unit name")
	}
}

func TestStorageConfigValidate(t *testing.T) {
	cases := []struct {
		c  StorageConfig
		ok bool
	}{
		{StorageConfig{}, true},
		{StorageConfig{Bucket: "my-bucket.1", ColdDriver: "s3fs"}, true},
		{StorageConfig{Bucket: "My_Bucket"}, false},
		{StorageConfig{Bucket: "ab"}, false},
		{StorageConfig{ColdDriver: "nfs"}, false},
		{StorageConfig{CheckpointInterval: 1}, false},
		{StorageConfig{DiskPool: -1}, true},
		{StorageConfig{DiskPool: 16}, true},
		{StorageConfig{DiskPool: 17}, false},
		{StorageConfig{Bucket: "my-bucket", ColdDriver: "s3fs", ColdShared: true}, true},
		{StorageConfig{ColdShared: true}, false},
		{StorageConfig{ColdSpares: -1}, true},
		{StorageConfig{Bucket: "my-bucket", ColdDriver: "s3fs", ColdSpares: 64}, true},
		{StorageConfig{Bucket: "my-bucket", ColdDriver: "s3fs", ColdSpares: 65}, false},
		{StorageConfig{Bucket: "my-bucket", ColdDriver: "s3fs", ColdSpares: -2}, false},
		{StorageConfig{ColdSpares: 2}, false},
		{StorageConfig{Bucket: "my-bucket", ColdDriver: "local", ColdSpares: 2}, false},
		{StorageConfig{Bucket: "my-bucket", ColdDriver: "s3fs", ColdShared: true, ColdSpares: 2}, false},
		{StorageConfig{Bucket: "my-bucket", ColdDriver: "local", ColdShared: true}, false},
	}
	for _, c := range cases {
		if err := c.c.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.c, err)
		}
	}
}

// namedDriver is a cold driver that is only a name (coldSpares looks at
// nothing else).
type namedDriver string

func (d namedDriver) Name() string { return string(d) }
func (namedDriver) Mount(context.Context, cold.Request) (cold.Mount, error) {
	return nil, errors.New("namedDriver mounts nothing")
}

// TestColdSparesFlag: --cold-spares -1 (the default) gives as many spares
// as the warm pools hold, up to 64, and none without a pool,
// a shared mount or a FUSE driver; 0 gives none; N gives N.
func TestColdSparesFlag(t *testing.T) {
	parse := func(args ...string) StorageConfig {
		t.Helper()
		var sc StorageConfig
		app := &cli.App{Flags: storageFlags(), Action: func(c *cli.Context) error { sc = storageConfigFrom(c); return nil }}
		if err := app.Run(append([]string{"matrxd"}, args...)); err != nil {
			t.Fatal(err)
		}
		return sc
	}
	pools := func(sizes ...int) []sandbox.PoolSpec {
		var out []sandbox.PoolSpec
		for _, n := range sizes {
			out = append(out, sandbox.PoolSpec{Image: "i", Size: n})
		}
		return out
	}
	for _, c := range []struct {
		args   []string
		shared bool
		drv    string
		pools  []sandbox.PoolSpec
		want   int
	}{
		{nil, false, "s3fs", nil, 0},
		{nil, false, "s3fs", pools(2), 2},
		{nil, false, "mount-s3", pools(3, 50), 53},
		{nil, false, "s3fs", pools(50, 50), coldSparesMax},
		{nil, false, "local", pools(50), 0},
		{nil, true, "s3fs", pools(50), 0},
		{[]string{"--cold-spares", "0"}, false, "s3fs", pools(50), 0},
		{[]string{"--cold-spares", "9"}, false, "s3fs", nil, 9},
	} {
		sc := parse(c.args...)
		sc.Bucket, sc.ColdDriver, sc.ColdShared = "my-bucket", c.drv, c.shared
		if got := coldSpares(Config{Storage: sc, Pools: c.pools}, namedDriver(c.drv)); got != c.want {
			t.Errorf("%v, driver %s, shared %v, pools %v: %d spares, want %d", c.args, c.drv, c.shared, c.pools, got, c.want)
		}
	}
	err := parse("--cold-spares", "-3").Validate()
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "cold spares -3") {
		t.Fatalf("--cold-spares -3: %v, want an error naming -3", err)
	}
}
