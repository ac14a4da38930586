package registry

// Bucket layout of the bbolt file (schema version 3): see the package
// comment for the picture.
//
// Opening a file runs, in order, every migration whose target version is
// above the stored schema_version, each in its own transaction that also
// bumps schema_version. A file written by a newer daemon (version above
// SchemaVersion) is refused rather than misread. Version 3 builds the
// live/ and stopped/ indexes from every record (quarantining the ones that
// do not decode); from then on each write keeps them current in its own
// transaction.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the bucket layout this code reads and writes.
const SchemaVersion = 3

var (
	bucketMeta       = []byte("meta")
	bucketSandboxes  = []byte("sandboxes")
	bucketIdem       = []byte("idempotency")
	bucketLive       = []byte("live")
	bucketStopped    = []byte("stopped")
	bucketQuarantine = []byte("quarantine")
	bucketUsers      = []byte("users")
	keySchema        = []byte("schema_version")
)

// migration upgrades a file from version to-1 to version to.
type migration struct {
	to    int
	apply func(tx *bolt.Tx, now time.Time) error
}

// migrations is ordered by target version. Append, never edit.
var migrations = []migration{
	{to: 1, apply: func(tx *bolt.Tx, _ time.Time) error {
		_, err := tx.CreateBucketIfNotExists(bucketSandboxes)
		return err
	}},
	{to: 2, apply: func(tx *bolt.Tx, _ time.Time) error {
		_, err := tx.CreateBucketIfNotExists(bucketIdem)
		return err
	}},
	{to: 3, apply: func(tx *bolt.Tx, now time.Time) error {
		for _, b := range [][]byte{bucketLive, bucketStopped, bucketQuarantine, bucketUsers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		bkt := tx.Bucket(bucketSandboxes)
		var bad [][2][]byte
		err := bkt.ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				bad = append(bad, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
				return nil
			}
			if r.UserID != "" {
				if err := tx.Bucket(bucketUsers).Put([]byte(r.UserID), nil); err != nil {
					return err
				}
			}
			return putIndex(tx, &r)
		})
		if err != nil {
			return err
		}
		for _, kv := range bad {
			if err := quarantineTx(tx, string(kv[0]), kv[1], "decode at migration to schema 3", now); err != nil {
				return err
			}
		}
		return nil
	}},
}

// Bolt is the persistent Store, one bbolt file.
type Bolt struct {
	db  *bolt.DB
	now func() time.Time
	log *slog.Logger
}

// BoltOption sets an optional knob of OpenBolt.
type BoltOption func(*Bolt)

// WithLogger receives a line for every record quarantined (default:
// discarded).
func WithLogger(l *slog.Logger) BoltOption { return func(b *Bolt) { b.log = l } }

// OpenBolt opens (creating if needed) the registry file at path and migrates
// it to SchemaVersion. The parent directory is created with mode 0700.
func OpenBolt(ctx context.Context, path string, opts ...BoltOption) (*Bolt, error) {
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
	b := &Bolt{db: db, now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(b)
	}
	if err := b.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bolt) migrate() error {
	var current int
	var quarantined []string
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
			if err := m.apply(tx, b.now().UTC()); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(m.to)))
		})
		if err != nil {
			return fmt.Errorf("registry migration to version %d: %w", m.to, err)
		}
	}
	if q, err := b.Quarantined(context.Background()); err == nil {
		for _, r := range q {
			quarantined = append(quarantined, r.ID)
		}
	}
	if len(quarantined) > 0 {
		b.log.Warn("registry: records are quarantined (they do not decode); see GET /admin/quarantine", "records", len(quarantined))
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
		if err := putIndex(tx, c); err != nil {
			return err
		}
		if c.UserID != "" { // a pooled record has no user yet
			if err := tx.Bucket(bucketUsers).Put([]byte(c.UserID), nil); err != nil {
				return err
			}
		}
		return put(bkt, c)
	})
}

// Get implements Store. A record that does not decode is quarantined and
// reported as not found.
func (b *Bolt) Get(ctx context.Context, id string) (*Record, error) {
	var r *Record
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = get(tx.Bucket(bucketSandboxes), id)
		return err
	})
	if err != nil {
		return nil, b.quarantineOn(ctx, id, err)
	}
	return r, err
}

// Update implements Store.
func (b *Bolt) Update(ctx context.Context, id string, fn func(*Record) error) (*Record, error) {
	var out *Record
	err := b.db.Update(func(tx *bolt.Tx) error {
		bkt := tx.Bucket(bucketSandboxes)
		r, err := get(bkt, id)
		if err != nil {
			return err
		}
		if err := deleteIndex(tx, r); err != nil {
			return err
		}
		old := r.Clone()
		if err := fn(r); err != nil {
			return err
		}
		if err := checkUpdate(old, r); err != nil {
			return err
		}
		if k := r.IdempotencyKey; k != old.IdempotencyKey {
			// A pooled sandbox's claim: the key is taken now, as
			// Create would take it.
			idem := tx.Bucket(bucketIdem)
			if prev := idem.Get([]byte(k)); prev != nil && string(prev) != id {
				if o, err := get(bkt, string(prev)); err == nil && r.CreatedAt.Sub(o.CreatedAt) < IdempotencyWindow {
					return &IdempotencyConflict{Key: k, SandboxID: o.ID}
				}
			}
			if err := idem.Put([]byte(k), []byte(id)); err != nil {
				return err
			}
		}
		if r.UserID != old.UserID {
			if err := tx.Bucket(bucketUsers).Put([]byte(r.UserID), nil); err != nil {
				return err
			}
		}
		r.UpdatedAt = b.now().UTC()
		out = r.Clone()
		if err := putIndex(tx, r); err != nil {
			return err
		}
		return put(bkt, r)
	})
	if err != nil {
		return nil, b.quarantineOn(ctx, id, err)
	}
	return out, nil
}

// List implements Store.
func (b *Bolt) List(ctx context.Context, f Filter) ([]*Record, error) {
	var out []*Record
	var bad []string
	liveOnly := len(f.Statuses) > 0
	for _, s := range f.Statuses {
		liveOnly = liveOnly && !s.Terminal()
	}
	err := b.db.View(func(tx *bolt.Tx) error {
		bkt := tx.Bucket(bucketSandboxes)
		visit := func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				bad = append(bad, string(k))
				return nil
			}
			if f.match(&r) {
				out = append(out, &r)
			}
			return nil
		}
		if !liveOnly {
			return bkt.ForEach(visit)
		}
		return tx.Bucket(bucketLive).ForEach(func(k, status []byte) error {
			if !f.matchStatus(Status(status)) {
				return nil
			}
			if v := bkt.Get(k); v != nil {
				return visit(k, v)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for _, id := range bad {
		if err := b.quarantine(id); err != nil {
			return nil, err
		}
	}
	sortRecords(out)
	return out, nil
}

// Counts implements Store.
func (b *Bolt) Counts(context.Context) (Counts, error) {
	c := Counts{ByStatus: map[Status]int{}}
	err := b.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketLive).ForEach(func(_, v []byte) error {
			c.ByStatus[Status(v)]++
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketStopped).ForEach(func(_, v []byte) error {
			status, pending := strings.CutSuffix(string(v), pendingSuffix)
			c.ByStatus[Status(status)]++
			if pending {
				c.TerminalPending++
			}
			return nil
		})
	})
	return c, err
}

// pruneBatch bounds one pruning transaction, so that a first prune of a
// large registry does not hold the write lock for long.
const pruneBatch = 500

// Prune implements Store: it walks stopped/ from the oldest stop and stops
// at the first one after the cutoff. Records whose hot files are still
// pending stay (the retry needs them).
func (b *Bolt) Prune(_ context.Context, stoppedBefore time.Time) (int, error) {
	total := 0
	for {
		n := 0
		more := false
		err := b.db.Update(func(tx *bolt.Tx) error {
			idx := tx.Bucket(bucketStopped)
			bkt := tx.Bucket(bucketSandboxes)
			idem := tx.Bucket(bucketIdem)
			var keys [][]byte
			c := idx.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) < 8 || int64(binary.BigEndian.Uint64(k[:8])) >= stoppedBefore.UnixNano() {
					break
				}
				if strings.HasSuffix(string(v), pendingSuffix) {
					continue // its hot files still wait on the host for this record
				}
				if len(keys) == pruneBatch {
					more = true
					break
				}
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				id := string(k[8:])
				if r, err := get(bkt, id); err == nil && r.IdempotencyKey != "" {
					if owner := idem.Get([]byte(r.IdempotencyKey)); string(owner) == id {
						if err := idem.Delete([]byte(r.IdempotencyKey)); err != nil {
							return err
						}
					}
				}
				if err := bkt.Delete([]byte(id)); err != nil {
					return err
				}
				if err := idx.Delete(k); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// Quarantined implements Store.
func (b *Bolt) Quarantined(context.Context) ([]Quarantined, error) {
	var out []Quarantined
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQuarantine).ForEach(func(k, v []byte) error {
			var q Quarantined
			if err := json.Unmarshal(v, &q); err != nil {
				q = Quarantined{ID: string(k), Raw: bytes.Clone(v), Error: "quarantine entry itself does not decode: " + err.Error()}
			}
			out = append(out, q)
			return nil
		})
	})
	return out, err
}

// Users implements Store (from the users/ index: no record is decoded).
func (b *Bolt) Users(context.Context) ([]ids.UserID, error) {
	var out []ids.UserID
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, _ []byte) error {
			// Keys come from decoded records, whose user ids parsed.
			if u, err := ids.ParseUserID(string(k)); err == nil {
				out = append(out, u)
			}
			return nil
		})
	})
	return out, err
}

// Close implements Store.
func (b *Bolt) Close() error { return b.db.Close() }

// errUndecodable marks a stored record that is not valid JSON for Record.
var errUndecodable = errors.New("record does not decode")

// quarantineOn moves the record aside if err says it does not decode, and
// turns err into NotFound (the record is unusable); other errors pass.
func (b *Bolt) quarantineOn(_ context.Context, id string, err error) error {
	if !errors.Is(err, errUndecodable) {
		return err
	}
	if qerr := b.quarantine(id); qerr != nil {
		return errors.Join(err, qerr)
	}
	return fmt.Errorf("sandbox %q: its record does not decode and was quarantined: %w", id, errdefs.ErrNotFound)
}

// quarantine moves an undecodable record to quarantine/, if it is still
// there and still undecodable.
func (b *Bolt) quarantine(id string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSandboxes).Get([]byte(id))
		if v == nil {
			return nil
		}
		var r Record
		err := json.Unmarshal(v, &r)
		if err == nil {
			return nil
		}
		b.log.Error("registry: record does not decode; quarantined (skipped from now on, kept for GET /admin/quarantine)",
			"sandbox_id", id, "error", err, "bytes", len(v))
		return quarantineTx(tx, id, bytes.Clone(v), err.Error(), b.now().UTC())
	})
}

func quarantineTx(tx *bolt.Tx, id string, raw []byte, why string, now time.Time) error {
	q, err := json.Marshal(Quarantined{ID: id, Raw: raw, Error: why, QuarantinedAt: now})
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketQuarantine).Put([]byte(id), q); err != nil {
		return err
	}
	// Whatever index entry it had can no longer be trusted.
	if err := tx.Bucket(bucketLive).Delete([]byte(id)); err != nil {
		return err
	}
	stopped := tx.Bucket(bucketStopped)
	var stale [][]byte
	c := stopped.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) > 8 && string(k[8:]) == id {
			stale = append(stale, bytes.Clone(k))
		}
	}
	for _, k := range stale {
		if err := stopped.Delete(k); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketSandboxes).Delete([]byte(id))
}

// pendingSuffix marks a stopped/ entry whose hot files are still pending.
const pendingSuffix = "|pending"

// stoppedKey orders terminal records by when they stopped.
func stoppedKey(r *Record) []byte {
	at := r.CreatedAt
	if r.StoppedAt != nil {
		at = *r.StoppedAt
	}
	k := make([]byte, 8, 8+len(r.ID))
	binary.BigEndian.PutUint64(k, uint64(at.UnixNano()))
	return append(k, r.ID...)
}

// putIndex adds r's index entry (live/ or stopped/).
func putIndex(tx *bolt.Tx, r *Record) error {
	if !r.Status.Terminal() {
		return tx.Bucket(bucketLive).Put([]byte(r.ID), []byte(r.Status))
	}
	v := string(r.Status)
	if r.HotSyncPending {
		v += pendingSuffix
	}
	return tx.Bucket(bucketStopped).Put(stoppedKey(r), []byte(v))
}

// deleteIndex removes the entry putIndex made for r as it was stored.
func deleteIndex(tx *bolt.Tx, r *Record) error {
	if !r.Status.Terminal() {
		return tx.Bucket(bucketLive).Delete([]byte(r.ID))
	}
	return tx.Bucket(bucketStopped).Delete(stoppedKey(r))
}

func get(bkt *bolt.Bucket, id string) (*Record, error) {
	v := bkt.Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode sandbox %q: %w: %w", id, errUndecodable, errdefs.ErrDataLoss)
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
