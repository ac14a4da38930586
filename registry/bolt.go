package registry

// Bucket layout of the bbolt file (schema version 2):
//
//	meta/                    bucket
//	  schema_version -> "2"  decimal; absent in a brand-new file
//	sandboxes/               bucket
//	  <sandbox id>  -> JSON-encoded Record
//	idempotency/             bucket (added by version 2)
//	  <key>         -> <sandbox id>; the record's CreatedAt dates the key
//
// Opening a file runs, in order, every migration whose target version is
// above the stored schema_version, each in its own transaction that also
// bumps schema_version. A file written by a newer daemon (version above
// SchemaVersion) is refused rather than misread.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the bucket layout this code reads and writes.
const SchemaVersion = 2

var (
	bucketMeta      = []byte("meta")
	bucketSandboxes = []byte("sandboxes")
	bucketIdem      = []byte("idempotency")
	keySchema       = []byte("schema_version")
)

// migration upgrades a file from version to-1 to version to.
type migration struct {
	to    int
	apply func(tx *bolt.Tx) error
}

// migrations is ordered by target version. Append, never edit.
var migrations = []migration{
	{to: 1, apply: func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketSandboxes)
		return err
	}},
	{to: 2, apply: func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketIdem)
		return err
	}},
}

// Bolt is the persistent Store, one bbolt file.
type Bolt struct {
	db  *bolt.DB
	now func() time.Time
}

// OpenBolt opens (creating if needed) the registry file at path and migrates
// it to SchemaVersion. The parent directory is created with mode 0700.
func OpenBolt(ctx context.Context, path string) (*Bolt, error) {
	if path == "" {
		return nil, fmt.Errorf("registry path is empty: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create registry dir: %w", err)
	}
	// A timeout turns "another matrxd holds the lock" into an error instead
	// of a hang.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("registry %s is locked by another process (is another matrxd running?): %w", path, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	b := &Bolt{db: db, now: time.Now}
	if err := b.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bolt) migrate() error {
	var current int
	err := b.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil {
			current, err = strconv.Atoi(string(v))
			if err != nil {
				return fmt.Errorf("registry schema_version %q is corrupt: %w", v, errdefs.ErrDataLoss)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if current > SchemaVersion {
		return fmt.Errorf("registry schema version %d is newer than this daemon's %d: %w", current, SchemaVersion, errdefs.ErrFailedPrecondition)
	}
	for _, m := range migrations {
		if m.to <= current {
			continue
		}
		err := b.db.Update(func(tx *bolt.Tx) error {
			if err := m.apply(tx); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(m.to)))
		})
		if err != nil {
			return fmt.Errorf("registry migration to version %d: %w", m.to, err)
		}
	}
	return nil
}

// Create implements Store.
func (b *Bolt) Create(_ context.Context, r *Record) error {
	if err := validateRecord(r); err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bkt := tx.Bucket(bucketSandboxes)
		if bkt.Get([]byte(r.ID)) != nil {
			return fmt.Errorf("sandbox %q: %w", r.ID, errdefs.ErrAlreadyExists)
		}
		if k := r.IdempotencyKey; k != "" {
			idem := tx.Bucket(bucketIdem)
			if prev := idem.Get([]byte(k)); prev != nil {
				if old, err := get(bkt, string(prev)); err == nil && r.CreatedAt.Sub(old.CreatedAt) < IdempotencyWindow {
					return &IdempotencyConflict{Key: k, SandboxID: old.ID}
				}
			}
			if err := idem.Put([]byte(k), []byte(r.ID)); err != nil {
				return err
			}
		}
		c := r.Clone()
		c.UpdatedAt = b.now().UTC()
		return put(bkt, c)
	})
}

// Get implements Store.
func (b *Bolt) Get(_ context.Context, id string) (*Record, error) {
	var r *Record
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = get(tx.Bucket(bucketSandboxes), id)
		return err
	})
	return r, err
}

// Update implements Store.
func (b *Bolt) Update(_ context.Context, id string, fn func(*Record) error) (*Record, error) {
	var out *Record
	err := b.db.Update(func(tx *bolt.Tx) error {
		bkt := tx.Bucket(bucketSandboxes)
		r, err := get(bkt, id)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
		if r.ID != id {
			return fmt.Errorf("update may not change the sandbox id: %w", errdefs.ErrInvalidArgument)
		}
		r.UpdatedAt = b.now().UTC()
		out = r.Clone()
		return put(bkt, r)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// List implements Store.
func (b *Bolt) List(_ context.Context, f Filter) ([]*Record, error) {
	var out []*Record
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSandboxes).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode sandbox %q: %w", k, errdefs.ErrDataLoss)
			}
			if f.match(&r) {
				out = append(out, &r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sortRecords(out)
	return out, nil
}

// Close implements Store.
func (b *Bolt) Close() error { return b.db.Close() }

func get(bkt *bolt.Bucket, id string) (*Record, error) {
	v := bkt.Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode sandbox %q: %w", id, errdefs.ErrDataLoss)
	}
	return &r, nil
}

func put(bkt *bolt.Bucket, r *Record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode sandbox %q: %w", r.ID, err)
	}
	return bkt.Put([]byte(r.ID), v)
}
