package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/containerd/errdefs"
)

// httpStatus returns the HTTP status of a failed S3 call, 0 if there was no
// response.
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// missingBucket marks NotFound errors that are about the bucket, not a key.
type missingBucket struct{ error }

func (m missingBucket) Unwrap() error { return m.error }

func isMissingBucket(err error) bool {
	var mb missingBucket
	return errors.As(err, &mb)
}

// mapErr wraps an SDK error onto the errdefs class that describes it. The
// SDK error stays in the chain (errors.As still finds smithy types), and so
// do context.Canceled / DeadlineExceeded.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// A request's own deadline (WithRequestTimeout): worth another
		// try while the caller's context lives.
		return fmt.Errorf("%s: %w: %w", op, errdefs.ErrUnavailable, err)
	}
	code := apiCode(err)
	switch code {
	case "NoSuchBucket":
		return missingBucket{wrap(op+": bucket does not exist", errdefs.ErrNotFound, err)}
	case "NoSuchKey", "NotFound", "NoSuchUpload":
		return wrap(op, errdefs.ErrNotFound, err)
	case "PreconditionFailed", "ConditionalRequestConflict":
		// 412, or 409 when a concurrent conditional write won the race.
		return wrap(op+": precondition failed", errdefs.ErrFailedPrecondition, err)
	case "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken", "AllAccessDisabled":
		return wrap(op, errdefs.ErrPermissionDenied, err)
	case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed":
		return wrap(op, errdefs.ErrUnavailable, err)
	case "KeyTooLongError", "InvalidArgument", "InvalidRequest", "InvalidBucketName", "EntityTooLarge", "EntityTooSmall", "InvalidPart", "InvalidPartOrder", "BadDigest", "IncompleteBody":
		return wrap(op, errdefs.ErrInvalidArgument, err)
	case "NotImplemented":
		return wrap(op, errdefs.ErrNotImplemented, err)
	}
	switch status := httpStatus(err); {
	case status == http.StatusNotFound:
		return wrap(op, errdefs.ErrNotFound, err)
	case status == http.StatusPreconditionFailed:
		return wrap(op+": precondition failed", errdefs.ErrFailedPrecondition, err)
	case status == http.StatusConflict:
		return wrap(op, errdefs.ErrConflict, err)
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return wrap(op, errdefs.ErrPermissionDenied, err)
	case status == http.StatusRequestedRangeNotSatisfiable:
		return wrap(op, errdefs.ErrOutOfRange, err)
	case status == http.StatusNotImplemented:
		return wrap(op, errdefs.ErrNotImplemented, err)
	case status == http.StatusTooManyRequests || status >= 500:
		return wrap(op, errdefs.ErrUnavailable, err)
	case status >= 400:
		return wrap(op, errdefs.ErrInvalidArgument, err)
	}
	return fmt.Errorf("%s: %w", op, transferErr(err))
}

// transferErr classifies errors without an S3 response: failures to reach
// the endpoint or broken connections are ErrUnavailable (worth retrying
// later), the rest ErrUnknown.
func transferErr(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errdefs.IsUnavailable(err) || errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
		return err
	}
	var (
		sendErr *smithyhttp.RequestSendError
		netErr  net.Error
	)
	if errors.As(err, &sendErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", errdefs.ErrResourceExhausted, err)
	}
	return fmt.Errorf("%w: %w", errdefs.ErrUnknown, err)
}

// wrap prefixes err with op and puts class in its chain.
func wrap(op string, class, err error) error {
	return fmt.Errorf("%s: %w: %w", op, class, err)
}
