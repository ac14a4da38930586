package sandbox

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/matrx-dev/matrx/mounts"
	"github.com/matrx-dev/matrx/mounts/cold"
	"github.com/matrx-dev/matrx/mounts/objstore"
)

// localStorage is the embedded storage driver: a directory acting as the
// bucket, cold as a bind mount of it.
func localStorage(t *testing.T, dir string) (*mounts.Storage, *objstore.Local) {
	t.Helper()
	bucketDir := filepath.Join(dir, "storage")
	st, err := objstore.NewLocal(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.DiscardHandler)
	drv, err := cold.Select(cold.SelectConfig{Mode: "local", LocalStorageDir: bucketDir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := cold.NewManager(context.Background(), cold.ManagerConfig{Dir: filepath.Join(dir, "cold"), Driver: drv, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close(context.Background()) })
	s, err := mounts.NewStorage(mounts.StorageConfig{Dir: filepath.Join(dir, "hot"), Store: st, Cold: cm, UID: 1000, GID: 1000, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}
