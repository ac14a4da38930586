package mounts

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/mounts/objstore"
)

// Trash. Every hot object a sync deletes or overwrites is first copied,
// on the server side, to users/<user>/trash/DAY/TIME-SANDBOX/PATH
// (hotsync.TrashKey) and kept for the retention period (the daemon's
// --hot-trash-retention, 7 days by default, 0 turns it off); RestoreHot
// brings versions back, PruneTrash drops the expired days.
//
// Why copies and not bucket versioning: server-side copies work on every
// S3-compatible server (versitygw included; versioning is optional there
// and off by default), need no bucket setting an operator could forget or
// a lifecycle rule to expire, keep one user's deleted files under that
// user's prefix (stats, clean and restore are per user), and cost one
// CopyObject per deleted or overwritten object, only when a sync deletes
// or overwrites. Where an operator also enabled versioning, it is an extra
// safety net; matrx does not rely on it.

// TrashedVersion is one kept version of a hot file.
type TrashedVersion struct {
	Path      string    // relative to the hot prefix (the object key's path)
	TrashedAt time.Time // when a sync replaced or deleted it
	Key       string    // where it is kept
	Size      int64
}

// PruneTrash deletes a user's trashed versions of days older than the
// retention, and returns how many it deleted. Without retention (trash
// off) it deletes nothing.
func (s *Storage) PruneTrash(ctx context.Context, userID ids.UserID, now time.Time) (int, error) {
	if s.retention <= 0 {
		return 0, nil
	}
	prefix := userID.KeyPrefix("trash")
	cutoff := now.UTC().Add(-s.retention).Truncate(24 * time.Hour)
	var expired []string
	for obj, err := range s.store.List(ctx, prefix) {
		if err != nil {
			return 0, fmt.Errorf("prune trash of %q: %w", userID, err)
		}
		if day, ok := hotsync.TrashDay(prefix, obj.Key); ok && day.Before(cutoff) {
			expired = append(expired, obj.Key)
		}
	}
	n := 0
	for _, k := range expired {
		if err := s.store.Delete(ctx, k, ""); err != nil {
			return n, fmt.Errorf("prune trash of %q: %w", userID, err)
		}
		n++
	}
	return n, nil
}

// Trash lists a user's kept versions of path (a file, or a directory:
// everything below it; "" for all), oldest first.
func (s *Storage) Trash(ctx context.Context, userID ids.UserID, p string) ([]TrashedVersion, error) {
	p, err := cleanRestorePath(p)
	if err != nil {
		return nil, err
	}
	prefix := userID.KeyPrefix("trash")
	var out []TrashedVersion
	for obj, err := range s.store.List(ctx, prefix) {
		if err != nil {
			return nil, fmt.Errorf("list trash of %q: %w", userID, err)
		}
		at, rel, ok := hotsync.ParseTrashKey(prefix, obj.Key)
		if !ok || !(p == "" || rel == p || strings.HasPrefix(rel, p+"/")) {
			continue
		}
		out = append(out, TrashedVersion{Path: rel, TrashedAt: at, Key: obj.Key, Size: obj.Size})
	}
	slices.SortFunc(out, func(a, b TrashedVersion) int { return a.TrashedAt.Compare(b.TrashedAt) })
	return out, nil
}

func cleanRestorePath(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	if _, err := objstore.KeyPath(p); err != nil || path.Clean(p) != p {
		return "", fmt.Errorf("path %q: want a path relative to the home, like proj/main.py: %w", p, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// RestoreHot brings trashed versions of path (a file, or every file below
// a directory) back into the user's hot tier: for each file, the version
// that was current at `at` (the first one trashed after it), or with a
// zero `at` the last one trashed. Whatever the hot tier holds at that path
// now is trashed first, so a restore is itself undoable. The caller must
// make sure the user has no live sandbox (its next sync would not know the
// restored objects). It returns the restored paths.
func (s *Storage) RestoreHot(ctx context.Context, userID ids.UserID, p string, at time.Time) ([]string, error) {
	if s.retention <= 0 {
		return nil, fmt.Errorf("the trash is off on this daemon (--hot-trash-retention 0): %w", errdefs.ErrFailedPrecondition)
	}
	versions, err := s.Trash(ctx, userID, p)
	if err != nil {
		return nil, err
	}
	pick := map[string]TrashedVersion{}
	for _, v := range versions { // oldest first
		cur, ok := pick[v.Path]
		switch {
		case at.IsZero():
			pick[v.Path] = v // the last one wins
		case !v.TrashedAt.Before(at) && (!ok || v.TrashedAt.Before(cur.TrashedAt)):
			pick[v.Path] = v
		}
	}
	if len(pick) == 0 {
		return nil, fmt.Errorf("no trashed version of %q for user %q: %w", p, userID, errdefs.ErrNotFound)
	}
	hot, trash := userID.KeyPrefix("hot"), userID.KeyPrefix("trash")
	now := time.Now()
	var restored []string
	for _, rel := range slices.Sorted(func(yield func(string) bool) {
		for k := range pick {
			if !yield(k) {
				return
			}
		}
	}) {
		v := pick[rel]
		key := hot + rel
		if cur, err := s.store.Head(ctx, key); err == nil {
			if _, err := s.store.Copy(ctx, key, hotsync.TrashKey(trash, now, "restore", rel), cur.ETag); err != nil && !errdefs.IsNotFound(err) {
				return restored, fmt.Errorf("restore %s: keep the current version first: %w", rel, err)
			}
		} else if !errdefs.IsNotFound(err) {
			return restored, fmt.Errorf("restore %s: %w", rel, err)
		}
		if _, err := s.store.Copy(ctx, v.Key, key, ""); err != nil {
			return restored, fmt.Errorf("restore %s: %w", rel, err)
		}
		restored = append(restored, rel)
	}
	s.log.Info("hot files restored from the trash", "user_id", userID, "path", p, "at", at, "files", len(restored))
	return restored, nil
}
