package objstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
)

// Usage is the size of a prefix.
type Usage struct {
	Objects int64
	Bytes   int64
}

// ListAll collects List into a slice.
func ListAll(ctx context.Context, s Store, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	for obj, err := range s.List(ctx, prefix) {
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

func checkDirPrefix(prefix string) error {
	if prefix == "" || !strings.HasSuffix(prefix, "/") || strings.HasPrefix(prefix, "/") {
		return fmt.Errorf("prefix %q must be non-empty, relative and end with \"/\": %w", prefix, errdefs.ErrInvalidArgument)
	}
	return ValidateKey(prefix)
}

// EnsurePrefix makes prefix (which must end with "/") visible: when no object
// exists under it, it writes the zero-byte marker prefix+".keep" (create-only,
// so concurrent callers do not race). It never touches existing objects.
func EnsurePrefix(ctx context.Context, s Store, prefix string) error {
	if err := checkDirPrefix(prefix); err != nil {
		return err
	}
	empty, err := isEmpty(ctx, s, prefix)
	if err != nil {
		return fmt.Errorf("ensure prefix %q: %w", prefix, err)
	}
	if !empty {
		return nil
	}
	return MarkPrefix(ctx, s, prefix)
}

// MarkPrefix writes the zero-byte marker prefix+".keep" unless it exists
// (create-only): EnsurePrefix's second half, for a caller that has just
// listed prefix and found it empty.
func MarkPrefix(ctx context.Context, s Store, prefix string) error {
	if err := checkDirPrefix(prefix); err != nil {
		return err
	}
	_, err := s.Put(ctx, prefix+KeepMarker, strings.NewReader(""), 0, IfNoneMatch("*"), nil)
	if err != nil && !errdefs.IsFailedPrecondition(err) {
		return fmt.Errorf("mark prefix %q: %w", prefix, err)
	}
	return nil
}

// emptiness is implemented by stores that can tell whether a prefix holds
// anything cheaper than by its first page of keys (S3: a list of one key
// instead of up to 1,000, which a user with thousands of files paid on
// every create).
type emptiness interface {
	IsEmpty(ctx context.Context, prefix string) (bool, error)
}

// isEmpty reports whether no object's key starts with prefix.
func isEmpty(ctx context.Context, s Store, prefix string) (bool, error) {
	if e, ok := s.(emptiness); ok {
		return e.IsEmpty(ctx, prefix)
	}
	return isEmptyByList(ctx, s, prefix)
}

func isEmptyByList(ctx context.Context, s Store, prefix string) (bool, error) {
	for _, err := range s.List(ctx, prefix) {
		return false, err
	}
	return true, nil
}

// usager is implemented by stores that can size a prefix without listing
// ETags (Local: no hashing).
type usager interface {
	Usage(ctx context.Context, prefix string) (Usage, error)
}

// Stats counts the objects and bytes under prefix.
func Stats(ctx context.Context, s Store, prefix string) (Usage, error) {
	if u, ok := s.(usager); ok {
		return u.Usage(ctx, prefix)
	}
	var u Usage
	for obj, err := range s.List(ctx, prefix) {
		if err != nil {
			return Usage{}, fmt.Errorf("stats of prefix %q: %w", prefix, err)
		}
		u.Objects++
		u.Bytes += obj.Size
	}
	return u, nil
}

// prefixDeleter is implemented by stores that delete a prefix natively.
type prefixDeleter interface {
	DeletePrefix(ctx context.Context, prefix string) (int64, error)
}

// deleteConcurrency bounds parallel deletes in DeletePrefix.
const deleteConcurrency = 16

// DeletePrefix deletes every object under prefix and returns how many it
// deleted. It is the explicit admin cleanup of a user's storage and is never
// called implicitly. prefix must be non-empty and end with "/", so a slip
// cannot empty a bucket.
func DeletePrefix(ctx context.Context, s Store, prefix string) (int64, error) {
	if err := checkDirPrefix(prefix); err != nil {
		return 0, err
	}
	if d, ok := s.(prefixDeleter); ok {
		return d.DeletePrefix(ctx, prefix)
	}
	var (
		mu      sync.Mutex
		deleted int64
		errs    []error
		wg      sync.WaitGroup
		sem     = make(chan struct{}, deleteConcurrency)
	)
	var listErr error
	for obj, err := range s.List(ctx, prefix) {
		if err != nil {
			listErr = err
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := s.Delete(ctx, obj.Key, "")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			deleted++
		})
	}
	wg.Wait()
	if listErr != nil {
		errs = append(errs, listErr)
	}
	if err := errors.Join(errs...); err != nil {
		return deleted, fmt.Errorf("delete prefix %q: %w", prefix, err)
	}
	return deleted, nil
}
