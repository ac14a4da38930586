package objstore

import (
	"context"
	"fmt"
	"io"
	"iter"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// MaxKeyLen is the longest key S3 accepts, in bytes.
const MaxKeyLen = 1024

// maxNameLen is the longest path segment a Linux filesystem accepts (NAME_MAX).
const maxNameLen = 255

// KeepMarker is the name of the zero-byte object EnsurePrefix writes into an
// empty prefix so that the prefix is visible in listings.
const KeepMarker = ".keep"

// ObjectInfo describes one object.
type ObjectInfo struct {
	Key          string
	Size         int64
	ETag         string // without quotes
	LastModified time.Time
	// Meta is the object's user metadata (Head, Get and Download fill it;
	// List does not: S3 listings carry none).
	Meta Metadata
}

// Metadata is an object's user metadata: on S3 the x-amz-meta-NAME
// headers, keyed by NAME in lower case. Values must be printable ASCII;
// together at most MaxMetadataLen bytes.
type Metadata map[string]string

// MaxMetadataLen is S3's limit on the user metadata of one object (keys
// and values, in bytes).
const MaxMetadataLen = 2048

func (m Metadata) validate() error {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
		if k == "" || k != strings.ToLower(k) {
			return fmt.Errorf("metadata key %q must be non-empty lower case: %w", k, errdefs.ErrInvalidArgument)
		}
		for _, s := range []string{k, v} {
			for i := 0; i < len(s); i++ {
				if s[i] < 0x20 || s[i] > 0x7e {
					return fmt.Errorf("metadata %q: only printable ASCII is allowed: %w", k, errdefs.ErrInvalidArgument)
				}
			}
		}
	}
	if n > MaxMetadataLen {
		return fmt.Errorf("metadata of %d bytes, more than %d: %w", n, MaxMetadataLen, errdefs.ErrInvalidArgument)
	}
	return nil
}

// lower returns m with lower-case keys (servers differ in the case they
// answer with).
func (m Metadata) lower() Metadata {
	if len(m) == 0 {
		return nil
	}
	out := make(Metadata, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

// Cond is the precondition of a Put. The zero value writes unconditionally.
type Cond struct {
	// IfMatch, when set, requires the current object to have this ETag.
	IfMatch string
	// IfNoneMatch, when set, must be "*": the key must not exist.
	IfNoneMatch string
}

// IfMatch returns a condition that holds only if the current object's ETag
// is etag (replace only if unchanged).
func IfMatch(etag string) Cond { return Cond{IfMatch: trimETag(etag)} }

// IfNoneMatch returns a condition that holds only if no object exists at the
// key. The only supported argument is "*".
func IfNoneMatch(etag string) Cond { return Cond{IfNoneMatch: etag} }

// validate rejects conditions neither S3 nor Local can evaluate.
func (c Cond) validate() error {
	if c.IfNoneMatch != "" && c.IfNoneMatch != "*" {
		return fmt.Errorf("If-None-Match %q: only \"*\" is supported: %w", c.IfNoneMatch, errdefs.ErrInvalidArgument)
	}
	if c.IfNoneMatch != "" && c.IfMatch != "" {
		return fmt.Errorf("If-Match and If-None-Match together: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// String describes the condition for error messages.
func (c Cond) String() string {
	switch {
	case c.IfNoneMatch != "":
		return "If-None-Match: " + c.IfNoneMatch
	case c.IfMatch != "":
		return "If-Match: " + c.IfMatch
	}
	return "unconditional"
}

// Store is an S3-like flat key space. [S3] and [Local] implement it; callers
// that need less declare a smaller interface of their own.
type Store interface {
	// List yields every object whose key starts with prefix, in ascending key
	// order. Breaking out of the loop stops the listing.
	List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error]
	// Head returns the object's metadata; errdefs.ErrNotFound if missing.
	Head(ctx context.Context, key string) (ObjectInfo, error)
	// Get opens the object for reading; the caller closes the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// Download writes the object into w (at offsets from 0) and returns the
	// metadata of the version written. size is the expected size from a
	// listing (a hint; -1 if unknown) and lets large objects be fetched in
	// parallel ranges.
	Download(ctx context.Context, key string, size int64, w io.WriterAt) (ObjectInfo, error)
	// Put stores size bytes read from body at key, with user metadata meta
	// (may be nil), if cond holds, and returns the new object's metadata. A
	// body that is also an io.ReaderAt (an *os.File) is read in parallel
	// for large uploads and can be re-read when a request is retried.
	Put(ctx context.Context, key string, body io.Reader, size int64, cond Cond, meta Metadata) (ObjectInfo, error)
	// Copy copies the object at src, with its metadata, to dst on the
	// server side. With srcIfMatch set, only if src has that ETag
	// (errdefs.ErrFailedPrecondition otherwise; ErrNotFound if src is
	// missing).
	Copy(ctx context.Context, src, dst, srcIfMatch string) (ObjectInfo, error)
	// Delete removes the object. If ifMatch is not empty, only if the current
	// object has that ETag. Deleting a missing object is not an error.
	Delete(ctx context.Context, key string, ifMatch string) error
}

// ValidateKey checks that key is usable as an S3 object key: 1 to 1024 bytes
// of valid UTF-8 without NUL. The error wraps errdefs.ErrInvalidArgument.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("empty object key: %w", errdefs.ErrInvalidArgument)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("object key is %d bytes, longer than %d: %w", len(key), MaxKeyLen, errdefs.ErrInvalidArgument)
	case !utf8.ValidString(key):
		return fmt.Errorf("object key %q is not valid UTF-8: %w", key, errdefs.ErrInvalidArgument)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("object key %q contains NUL: %w", key, errdefs.ErrInvalidArgument)
	}
	return nil
}

// KeyPath maps a key (or a key relative to a prefix) to a relative filesystem
// path with OS separators. It accepts exactly the keys that name a regular file
// strictly below a directory: valid keys (ValidateKey) that are not absolute,
// have no empty, "." or ".." segment, no trailing "/" and no segment
// longer than 255 bytes. Everything else wraps
// errdefs.ErrInvalidArgument. The result never escapes the directory it is
// joined to; callers still open it through an os.Root so that symlinks inside
// the tree cannot redirect it.
func KeyPath(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	if strings.HasPrefix(key, "/") {
		return "", fmt.Errorf("object key %q is absolute: %w", key, errdefs.ErrInvalidArgument)
	}
	if strings.HasSuffix(key, "/") {
		return "", fmt.Errorf("object key %q names a directory: %w", key, errdefs.ErrInvalidArgument)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return "", fmt.Errorf("object key %q has an empty path segment: %w", key, errdefs.ErrInvalidArgument)
		case seg == "." || seg == "..":
			return "", fmt.Errorf("object key %q has a %q path segment: %w", key, seg, errdefs.ErrInvalidArgument)
		case len(seg) > maxNameLen:
			return "", fmt.Errorf("object key %q has a path segment longer than %d bytes: %w", key, maxNameLen, errdefs.ErrInvalidArgument)
		}
	}
	p := filepath.FromSlash(key)
	if !filepath.IsLocal(p) {
		return "", fmt.Errorf("object key %q is not a local path: %w", key, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// ValidateBucketName checks an S3 bucket name: 3–63 characters of lowercase
// letters, digits, dots and hyphens, starting and ending with a letter or a
// digit. The error wraps errdefs.ErrInvalidArgument.
func ValidateBucketName(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters long: %w", name, errdefs.ErrInvalidArgument)
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !alnum(c) && c != '.' && c != '-' {
			return fmt.Errorf("bucket name %q may only contain lowercase letters, digits, dots and hyphens: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	if !alnum(name[0]) || !alnum(name[len(name)-1]) {
		return fmt.Errorf("bucket name %q must start and end with a letter or a digit: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

func trimETag(s string) string { return strings.Trim(s, `"`) }
