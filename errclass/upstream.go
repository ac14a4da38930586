package errclass

import "errors"

// ErrUpstream: a service matrxd needed for the request failed or refused
// it — an image registry that refused the credentials, could not be
// reached or misbehaved. HTTP 502. Errors of this class may also carry an
// errdefs class (a registry's refusal is PermissionDenied, its absence
// Unavailable); this one decides the status, so that a registry's 401 is
// never the API's own 401, which clients read as a bad API key.
var ErrUpstream = errors.New("upstream failure")

// IsUpstream reports whether err is of the class.
func IsUpstream(err error) bool { return errors.Is(err, ErrUpstream) }
