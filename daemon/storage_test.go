package daemon

import (
	"log/slog"
	"regexp"
	"slices"
	"testing"
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
		{StorageConfig{Bucket: "my-bucket", ColdDriver: "local", ColdShared: true}, false},
	}
	for _, c := range cases {
		if err := c.c.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.c, err)
		}
	}
}
