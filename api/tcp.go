package api

// The TCP listener exists for clients of the original service, which spoke
// HTTP on a TCP port with an X-API-Key header. It is off by default and
// serves the same routes as the Unix socket, behind that key. The socket
// stays the recommended interface: it needs no shared secret, and every
// request carries the caller's uid (SO_PEERCRED). The listener speaks plain
// HTTP: bind it to loopback, or put a TLS proxy in front of it.

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
)

// maxAPIKeyFile bounds what LoadAPIKey reads.
const maxAPIKeyFile = 4096

// LoadAPIKey reads the TCP listener's API key from path. The file must be a
// regular file with no permission bits for group or others (chmod 600) and
// hold one non-empty key; surrounding whitespace is trimmed.
func LoadAPIKey(path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("api key file is not set: %w", errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("api key file %s does not exist: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("open api key file: %w", err)
	}
	defer f.Close()
	// Check the file that was opened, not the path (no swap in between).
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat api key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("api key file %s is not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("api key file %s has mode %04o: it must not be accessible by group or others (chmod 600 %s): %w",
			path, perm, path, errdefs.ErrInvalidArgument)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxAPIKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read api key file %s: %w", path, err)
	}
	if len(b) > maxAPIKeyFile {
		return nil, fmt.Errorf("api key file %s is larger than %d bytes: %w", path, maxAPIKeyFile, errdefs.ErrInvalidArgument)
	}
	key := bytes.TrimSpace(b)
	if len(key) == 0 {
		return nil, fmt.Errorf("api key file %s is empty: %w", path, errdefs.ErrInvalidArgument)
	}
	for _, c := range key {
		// Anything else cannot travel in an HTTP header value.
		if c < 0x21 || c > 0x7e {
			return nil, fmt.Errorf("api key in %s must be one line of printable ASCII without spaces: %w", path, errdefs.ErrInvalidArgument)
		}
	}
	return key, nil
}

// ListenTCP listens on addr, which must name a host (an IP address or a
// name; "0.0.0.0" to mean every interface) and a port. An empty host is
// refused so that no listener binds every interface by accident.
func ListenTCP(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("tcp address %q: want HOST:PORT: %w", addr, errdefs.ErrInvalidArgument)
	}
	if host == "" {
		return nil, fmt.Errorf("tcp address %q has no host: name one (127.0.0.1 for loopback only): %w", addr, errdefs.ErrInvalidArgument)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return nil, fmt.Errorf("tcp address %q: port must be a number below 65536: %w", addr, errdefs.ErrInvalidArgument)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, nil
}

// TCPHandler is the API for the TCP listener: every route of ServeHTTP
// (request log, metrics and error shape included) behind an X-API-Key check
// that compares in constant time. A missing or wrong key is answered 401
// {"detail": ...} before any route runs.
func (s *Server) TCPHandler(key []byte) (http.Handler, error) {
	if len(key) == 0 {
		return nil, fmt.Errorf("tcp listener needs a non-empty api key: %w", errdefs.ErrInvalidArgument)
	}
	// Comparing fixed-size digests also hides the key's length.
	want := sha256.Sum256(key)
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := r.Header[http.CanonicalHeaderKey(apitype.APIKeyHeader)]
		detail := "missing " + apitype.APIKeyHeader + " header"
		if ok && len(got) == 1 {
			sum := sha256.Sum256([]byte(got[0]))
			if subtle.ConstantTimeCompare(sum[:], want[:]) == 1 {
				s.mux.ServeHTTP(w, r)
				return
			}
			detail = "invalid API key"
		} else if ok {
			detail = "more than one " + apitype.APIKeyHeader + " header"
		}
		rid, _ := r.Context().Value(keyRequestID).(string)
		s.log.Warn("api key rejected", "request_id", rid, "remote_addr", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "reason", detail)
		writeJSON(w, http.StatusUnauthorized, apitype.ErrorResponse{Detail: detail})
	})
	return s.middleware(auth), nil
}
