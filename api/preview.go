package api

// The preview listener (--preview-address, off by default): what a sandbox
// serves, for browsers, at http://<port>-<sandbox id>.<domain>[:port]/
// (the preview-URL shape of E2B and Daytona). It routes on the Host
// header alone and forwards like the API's proxy route.
//
// It is the only listener meant for people outside the host, so every
// request must prove it may see the sandbox, unless the sandbox opted the
// port in (config.public_ports):
//   - the sandbox's token in the X-Matrx-Preview-Token header: an HMAC of
//     the sandbox id under the daemon's preview key (kept in the state dir,
//     made once), so tokens need no storage and die with the key; or
//   - a signed URL from POST /sandboxes/{id}/preview: ?matrx_preview=EXP.SIG
//     (an HMAC of sandbox, port and expiry). Its first use sets a cookie
//     (same value, HttpOnly, for that host only, expiring with the URL) and
//     redirects to the URL without it, so the page's own requests carry
//     the proof and the secret leaves the address bar.
//
// Tokens, cookie and parameter never reach the sandbox's app. A sandbox
// that is not running answers 409 (404 if it does not exist), as on the
// API.

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/ids"
)

const (
	previewCookie = "matrx_preview"
	previewParam  = "matrx_preview"
	// maxPreviewTTL bounds a signed URL's life.
	maxPreviewTTL = 7 * 24 * time.Hour
	// defaultPreviewTTL is a signed URL's life when the request names none.
	defaultPreviewTTL = time.Hour
)

// PreviewConfig configures the preview listener.
type PreviewConfig struct {
	// Domain is the suffix of preview hosts: <port>-<sandbox id>.<Domain>.
	Domain string
	// Key signs tokens and URLs (LoadPreviewKey).
	Key []byte
	// Port is the listener's TCP port, for the URLs handed out (0 omits
	// it, for a proxy in front on the scheme's default port).
	Port int
	// Scheme of the URLs handed out ("http" unless a TLS proxy fronts it).
	Scheme string
}

type previewConfig struct{ PreviewConfig }

// WithPreview turns on POST /sandboxes/{id}/preview and the preview
// handler (without it the route answers 409).
func WithPreview(c PreviewConfig) Option {
	return func(s *Server) {
		if c.Scheme == "" {
			c.Scheme = "http"
		}
		c.Domain = strings.ToLower(strings.Trim(c.Domain, "."))
		s.preview = &previewConfig{c}
	}
}

// ValidPreviewDomain checks a --preview-domain value.
func ValidPreviewDomain(d string) error {
	d = strings.Trim(d, ".")
	if d == "" || len(d) > 200 {
		return fmt.Errorf("preview domain %q: want a DNS name such as localhost or preview.example.com: %w", d, errdefs.ErrInvalidArgument)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return fmt.Errorf("preview domain %q has an invalid label %q: %w", d, label, errdefs.ErrInvalidArgument)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("preview domain %q: only letters, digits, '-' and '.': %w", d, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// LoadPreviewKey reads the preview signing key at path, making a new
// random one (mode 0600) the first time.
func LoadPreviewKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != 32 {
			return nil, fmt.Errorf("preview key %s is %d bytes, want 32 (remove it to make a new one; every preview URL and token changes): %w", path, len(b), errdefs.ErrFailedPrecondition)
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read preview key: %w", err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create preview key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write preview key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write preview key: %w", err)
	}
	return key, nil
}

func (p *previewConfig) mac(parts ...string) string {
	h := hmac.New(sha256.New, p.Key)
	io.WriteString(h, strings.Join(parts, "\x00"))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// token is a sandbox's preview token.
func (p *previewConfig) token(id string) string { return p.mac("matrx-preview-token", id) }

// signed is the value of a signed URL's parameter and of its cookie.
func (p *previewConfig) signed(id string, port int, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return e + "." + p.mac("matrx-preview-url", id, strconv.Itoa(port), e)
}

// validSigned checks a signed value for (id, port) at now.
func (p *previewConfig) validSigned(v, id string, port int, now time.Time) (time.Time, bool) {
	e, _, ok := strings.Cut(v, ".")
	n, err := strconv.ParseInt(e, 10, 64)
	if !ok || err != nil {
		return time.Time{}, false
	}
	exp := time.Unix(n, 0)
	if !now.Before(exp) {
		return time.Time{}, false
	}
	return exp, hmac.Equal([]byte(v), []byte(p.signed(id, port, exp)))
}

// host is the preview host name of a sandbox's port.
func (p *previewConfig) host(id string, port int) string {
	return strconv.Itoa(port) + "-" + id + "." + p.Domain
}

// parseHost reads <port>-<sandbox id>.<domain>[:port].
func (p *previewConfig) parseHost(h string) (string, int, bool) {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	label, ok := strings.CutSuffix(h, "."+p.Domain)
	if !ok || strings.Contains(label, ".") {
		return "", 0, false
	}
	ps, id, ok := strings.Cut(label, "-")
	port, err := parsePort(ps)
	if !ok || err != nil || !ids.ValidSandboxID(id) {
		return "", 0, false
	}
	return id, port, true
}

// createPreview serves POST /sandboxes/{id}/preview.
func (s *Server) createPreview(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	var req apitype.PreviewRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Port < 1 || req.Port > 65535 {
		s.fail(w, r, fmt.Errorf("port %d: want the TCP port the sandbox serves, 1-65535: %w", req.Port, errdefs.ErrInvalidArgument))
		return
	}
	ttl := defaultPreviewTTL
	if req.TTLSeconds != nil {
		ttl = time.Duration(*req.TTLSeconds) * time.Second
		if ttl < time.Minute || ttl > maxPreviewTTL {
			s.fail(w, r, fmt.Errorf("ttl_seconds %d is out of range [60, %d]: %w", *req.TTLSeconds, int(maxPreviewTTL/time.Second), errdefs.ErrInvalidArgument))
			return
		}
	}
	rec, err := s.mgr.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !rec.Status.AcceptsExec() {
		s.fail(w, r, fmt.Errorf("sandbox %s is %s, not running: %w", id, rec.Status, errdefs.ErrFailedPrecondition))
		return
	}
	p := s.preview
	if p == nil {
		s.fail(w, r, fmt.Errorf("the preview listener is off on this daemon (start matrxd with --preview-address); the API's own /sandboxes/%s/proxy/%d/ route needs no token: %w", id, req.Port, errdefs.ErrFailedPrecondition))
		return
	}
	exp := time.Now().Add(ttl).Truncate(time.Second)
	host := p.host(id, req.Port)
	base := url.URL{Scheme: p.Scheme, Host: host, Path: "/"}
	if p.Port != 0 {
		base.Host = net.JoinHostPort(host, strconv.Itoa(p.Port))
	}
	signedURL := base
	signedURL.RawQuery = url.Values{previewParam: {p.signed(id, req.Port, exp)}}.Encode()
	writeJSON(w, http.StatusOK, apitype.Preview{
		SandboxID: id, Port: req.Port, Host: host, URL: base.String(), SignedURL: signedURL.String(),
		ExpiresAt: exp.UTC(), Token: p.token(id), TokenHeader: apitype.PreviewTokenHeader,
		Public: slices.Contains(rec.Config.PublicPorts, req.Port),
	})
}

// PreviewHandler serves the preview listener (nil without WithPreview).
func (s *Server) PreviewHandler() http.Handler {
	if s.preview == nil {
		return nil
	}
	inner := http.HandlerFunc(s.servePreview)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.middleware(inner).ServeHTTP(w, r.WithContext(withListener(r.Context(), "preview")))
	})
}

func (s *Server) servePreview(w http.ResponseWriter, r *http.Request) {
	p := s.preview
	id, port, ok := p.parseHost(r.Host)
	if !ok {
		s.fail(w, r, fmt.Errorf("no preview at host %q: preview hosts are <port>-<sandbox id>.%s: %w", r.Host, p.Domain, errdefs.ErrNotFound))
		return
	}
	signedParam, rawQuery := cutParam(r.URL.RawQuery, previewParam)
	// An unknown sandbox answers like a private port: the listener does
	// not tell strangers which sandboxes exist.
	rec, err := s.mgr.Get(r.Context(), id)
	if err != nil && !errdefs.IsNotFound(err) {
		s.fail(w, r, err)
		return
	}
	now := time.Now()
	allowed := false
	if rec != nil {
		allowed = slices.Contains(rec.Config.PublicPorts, port) ||
			hmac.Equal([]byte(r.Header.Get(apitype.PreviewTokenHeader)), []byte(p.token(id)))
		if c, err := r.Cookie(previewCookie); !allowed && err == nil {
			_, allowed = p.validSigned(c.Value, id, port, now)
		}
		if exp, ok := p.validSigned(signedParam, id, port, now); !allowed && ok {
			http.SetCookie(w, &http.Cookie{
				Name: previewCookie, Value: signedParam, Path: "/", Expires: exp,
				HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: p.Scheme == "https",
			})
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				clean := url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: rawQuery}
				http.Redirect(w, r, clean.RequestURI(), http.StatusSeeOther)
				return
			}
			allowed = true
		}
	}
	if !allowed {
		s.fail(w, r, fmt.Errorf("port %d of sandbox %s is private: send its token in %s or use a URL from POST /sandboxes/%s/preview: %w",
			port, id, apitype.PreviewTokenHeader, id, errdefs.ErrUnauthenticated))
		return
	}
	if !rec.Status.AcceptsExec() {
		s.fail(w, r, fmt.Errorf("sandbox %s is %s, not running: %w", id, rec.Status, errdefs.ErrFailedPrecondition))
		return
	}
	s.forward(w, r, &proxyTarget{id: id, port: port, path: r.URL.EscapedPath(), query: rawQuery})
}

// cutParam removes every name=... from a raw query string, keeping the
// rest as the client wrote it, and returns the (last) value removed.
func cutParam(raw, name string) (string, string) {
	if raw == "" {
		return "", ""
	}
	var kept []string
	val := ""
	for _, kv := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == name {
			if uv, err := url.QueryUnescape(v); err == nil {
				val = uv
			}
			continue
		}
		kept = append(kept, kv)
	}
	return val, strings.Join(kept, "&")
}
