// Package errclass holds the error classes matrx needs beyond containerd's
// errdefs. Like errdefs, each class is a sentinel error to wrap with %w
// and a predicate to test for it; api maps each to one HTTP status (in its
// one mapping place) and api/client maps the status back.
//
// It is a leaf: standard library only, importable by every layer. It must
// not grow classes that errdefs already has.
package errclass

import "errors"

// ErrInsufficientStorage: the host has no room for what was asked (a
// sandbox disk that would not fit the state filesystem). HTTP 507. Not
// errdefs.ErrResourceExhausted, which the API answers with 429 ("too
// many"): retrying soon does not help, freeing disk does.
var ErrInsufficientStorage = errors.New("insufficient storage")

// IsInsufficientStorage reports whether err is of the class.
func IsInsufficientStorage(err error) bool { return errors.Is(err, ErrInsufficientStorage) }
