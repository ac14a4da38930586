package registry

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
)

// Memory is an in-process Store for development and tests. Its records die
// with the process.
type Memory struct {
	mu      sync.Mutex
	records map[string]*Record
	idem    map[string]string // idempotency key -> sandbox id
	now     func() time.Time
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{records: map[string]*Record{}, idem: map[string]string{}, now: time.Now}
}

// Create implements Store.
func (m *Memory) Create(_ context.Context, r *Record) error {
	if err := validateRecord(r); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.records[r.ID]; ok {
		return fmt.Errorf("sandbox %q: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	if k := r.IdempotencyKey; k != "" {
		if old, ok := m.records[m.idem[k]]; ok && r.CreatedAt.Sub(old.CreatedAt) < IdempotencyWindow {
			return &IdempotencyConflict{Key: k, SandboxID: old.ID}
		}
		m.idem[k] = r.ID
	}
	c := r.Clone()
	c.UpdatedAt = m.now().UTC()
	m.records[r.ID] = c
	return nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, id string) (*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[id]
	if !ok {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	return r.Clone(), nil
}

// Update implements Store.
func (m *Memory) Update(_ context.Context, id string, fn func(*Record) error) (*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[id]
	if !ok {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	c := r.Clone()
	if err := fn(c); err != nil {
		return nil, err
	}
	if err := checkUpdate(r, c); err != nil {
		return nil, err
	}
	if k := c.IdempotencyKey; k != r.IdempotencyKey {
		if old, ok := m.records[m.idem[k]]; ok && old.ID != id && c.CreatedAt.Sub(old.CreatedAt) < IdempotencyWindow {
			return nil, &IdempotencyConflict{Key: k, SandboxID: old.ID}
		}
		m.idem[k] = id
	}
	c.UpdatedAt = m.now().UTC()
	m.records[id] = c
	return c.Clone(), nil
}

// List implements Store.
func (m *Memory) List(_ context.Context, f Filter) ([]*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Record
	for _, r := range m.records {
		if f.match(r) {
			out = append(out, r.Clone())
		}
	}
	sortRecords(out)
	return out, nil
}

// Counts implements Store.
func (m *Memory) Counts(context.Context) (Counts, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := Counts{ByStatus: map[Status]int{}}
	for _, r := range m.records {
		c.ByStatus[r.Status]++
		if r.Status.Terminal() && r.HotSyncPending {
			c.TerminalPending++
		}
	}
	return c, nil
}

// Prune implements Store.
func (m *Memory) Prune(_ context.Context, stoppedBefore time.Time) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for id, r := range m.records {
		if !r.Status.Terminal() || r.HotSyncPending {
			continue
		}
		at := r.CreatedAt
		if r.StoppedAt != nil {
			at = *r.StoppedAt
		}
		if !at.Before(stoppedBefore) {
			continue
		}
		if k := r.IdempotencyKey; k != "" && m.idem[k] == id {
			delete(m.idem, k)
		}
		delete(m.records, id)
		n++
	}
	return n, nil
}

// Users implements Store.
func (m *Memory) Users(context.Context) ([]ids.UserID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[ids.UserID]bool{}
	var out []ids.UserID
	for _, r := range m.records {
		if r.UserID != "" && !seen[r.UserID] {
			seen[r.UserID] = true
			out = append(out, r.UserID)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Quarantined implements Store: records in memory never fail to decode.
func (m *Memory) Quarantined(context.Context) ([]Quarantined, error) { return nil, nil }

// Close implements Store.
func (m *Memory) Close() error { return nil }

func sortRecords(rs []*Record) {
	sort.Slice(rs, func(i, j int) bool {
		if !rs[i].CreatedAt.Equal(rs[j].CreatedAt) {
			return rs[i].CreatedAt.Before(rs[j].CreatedAt)
		}
		return rs[i].ID < rs[j].ID
	})
}

// checkUpdate refuses what an Update may not do: change the id, or give a
// record that has a user another one (only a pooled record, which has
// none, is given one: its claim).
func checkUpdate(old, r *Record) error {
	if r.ID != old.ID {
		return fmt.Errorf("update may not change the sandbox id: %w", errdefs.ErrInvalidArgument)
	}
	if old.UserID != "" && r.UserID != old.UserID {
		return fmt.Errorf("update may not change the user of sandbox %s: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	if old.IdempotencyKey != "" && r.IdempotencyKey != old.IdempotencyKey {
		return fmt.Errorf("update may not change the idempotency key of sandbox %s: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	return validateRecord(r)
}

func validateRecord(r *Record) error {
	if r == nil || r.ID == "" {
		return fmt.Errorf("record needs an id: %w", errdefs.ErrInvalidArgument)
	}
	// Only a warm-pool sandbox has no user: pooled, then shutting_down
	// and terminal when it is retired unclaimed. A user's sandbox always
	// has one.
	if r.UserID == "" && (r.Status == StatusCreating || r.Status == StatusStarting || r.Status.AcceptsExec()) {
		return fmt.Errorf("record %q needs a user id: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	if r.UserID != "" && r.Status == StatusPooled {
		return fmt.Errorf("record %q is pooled and so has no user, but names %q: %w", r.ID, r.UserID, errdefs.ErrInvalidArgument)
	}
	if r.Status == "" {
		return fmt.Errorf("record %q needs a status: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	return nil
}
