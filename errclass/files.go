package errclass

import "errors"

// ErrTooLarge: a request body is over the daemon's limit (an upload above
// --max-upload-mb, a tar that unpacks to more). HTTP 413.
var ErrTooLarge = errors.New("too large")

// IsTooLarge reports whether err is of the class.
func IsTooLarge(err error) bool { return errors.Is(err, ErrTooLarge) }

// ErrUnsatisfiableRange: a byte range starts past the end of the file.
// HTTP 416. Not errdefs.ErrOutOfRange, which the API answers with 400.
var ErrUnsatisfiableRange = errors.New("range not satisfiable")

// IsUnsatisfiableRange reports whether err is of the class.
func IsUnsatisfiableRange(err error) bool { return errors.Is(err, ErrUnsatisfiableRange) }
