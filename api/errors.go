package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/errclass"
)

// statusOf is the one place where error classes become HTTP status codes.
// api/client.errorFromStatus is its inverse.
//
// Why not errdefs/pkg/errhttp.ToHTTP: it maps FailedPrecondition to 412,
// while the original service's contract answers 409 for "the sandbox is not
// in a state that allows this" (not running, still being created), which
// is what FailedPrecondition means here; AlreadyExists is a conflict too
// (409, not 500); OutOfRange is bad input (400); and a deadline is 504.
// Everything else matches errhttp. The errclass classes have no errdefs
// equivalent: TooLarge 413, UnsatisfiableRange 416, InsufficientStorage
// 507, and Upstream 502 (an image registry refused or failed), which is
// tested first because such an error also carries an errdefs class: a
// registry's 401 must never become the API's own 401, which clients read
// as a bad API key.
func statusOf(err error) int {
	switch {
	case errclass.IsUpstream(err):
		return http.StatusBadGateway
	case errclass.IsTooLarge(err):
		return http.StatusRequestEntityTooLarge
	case errclass.IsUnsatisfiableRange(err):
		return http.StatusRequestedRangeNotSatisfiable
	case errdefs.IsInvalidArgument(err), errdefs.IsOutOfRange(err):
		return http.StatusBadRequest
	case errdefs.IsNotFound(err):
		return http.StatusNotFound
	case errdefs.IsFailedPrecondition(err), errdefs.IsAlreadyExists(err), errdefs.IsConflict(err):
		return http.StatusConflict
	case errdefs.IsPermissionDenied(err):
		return http.StatusForbidden
	case errdefs.IsUnauthorized(err):
		return http.StatusUnauthorized
	case errclass.IsInsufficientStorage(err):
		return http.StatusInsufficientStorage
	case errdefs.IsResourceExhausted(err):
		return http.StatusTooManyRequests
	case errdefs.IsNotImplemented(err):
		return http.StatusNotImplemented
	case errdefs.IsUnavailable(err):
		return http.StatusServiceUnavailable
	case errdefs.IsDeadlineExceeded(err), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}
