// Package ids owns the identifiers that cross every layer: user ids and
// sandbox ids. Each has one rule and one parser here, and the layout of a
// user's objects in the bucket (users/USER/TIER/) is one function here.
//
// A UserID is valid by construction: ParseUserID is the one way to make
// one from a string (archtest forbids conversions elsewhere), so the
// packages that take one (mounts, mounts/cold) use it as a path element
// and an S3 key segment without checking again.
//
// The user-id rule is the original API's (1-255 of [a-zA-Z0-9._-]) less
// "." and "..", which match it but would name a user directory's parent.
package ids

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"

	"github.com/containerd/errdefs"
)

var (
	userIDRe    = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,255}$`)
	sandboxIDRe = regexp.MustCompile(`^sbx-[0-9a-f]{12}$`)
)

// UserID is a user id that passed ParseUserID.
type UserID string

// ParseUserID checks s against the user-id rule; the error (wrapping
// errdefs.ErrInvalidArgument) says what the rule is.
func ParseUserID(s string) (UserID, error) {
	if !userIDRe.MatchString(s) || s == "." || s == ".." {
		return "", fmt.Errorf("user_id %q is invalid: want 1-255 of [a-zA-Z0-9._-], not . or ..: %w", s, errdefs.ErrInvalidArgument)
	}
	return UserID(s), nil
}

// MustParseUserID is ParseUserID for constants and tests; it panics on an
// invalid id.
func MustParseUserID(s string) UserID {
	u, err := ParseUserID(s)
	if err != nil {
		panic(err)
	}
	return u
}

func (u UserID) String() string { return string(u) }

// KeyPrefix is the S3 key prefix of one of the user's tiers ("hot",
// "cold", "trash"): users/USER/TIER/.
func (u UserID) KeyPrefix(tier string) string { return "users/" + string(u) + "/" + tier + "/" }

// ValidSandboxID reports whether s has the shape of a sandbox id ("sbx-"
// and 12 lowercase hex digits). Anything else is unknown by construction:
// the API answers 404 for it, whatever its shape.
func ValidSandboxID(s string) bool { return sandboxIDRe.MatchString(s) }

// NewSandboxID returns a fresh random sandbox id.
func NewSandboxID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return "sbx-" + hex.EncodeToString(b[:])
}

// UnmarshalText parses, so that a record holding an invalid user id fails
// to decode (and is quarantined) instead of reaching a path or a key. The
// empty text is the zero UserID (a warm-pool sandbox's record has no user;
// every use of a user id checks for it, and ParseUserID refuses it).
func (u *UserID) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*u = ""
		return nil
	}
	p, err := ParseUserID(string(b))
	if err != nil {
		return err
	}
	*u = p
	return nil
}
