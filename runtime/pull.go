package runtime

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/matrx-dev/matrx/errclass"
	"github.com/matrx-dev/matrx/runtime/registryauth"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

// Registry pulls. matrxd pulls with containerd's own pull path
// (client.Pull with a remotes/docker resolver and authorizer): content is
// fetched into containerd's content store and unpacked into the daemon's
// snapshotter, exactly as an Import is, so user namespaces work the same
// way afterwards (idmapped mounts on containerd ≥ 2, the chowned copy on
// 1.6; see userns.go). containerd 1.6 has no transfer service, and this
// path works on both.
//
//   - Every pull runs under its own lease, deleted synchronously when the
//     pull ends: a pull that fails halfway (a refused layer, a registry that
//     went away) leaves no content, snapshot or ingest behind, and the image
//     record is written only once everything is unpacked.
//   - Before fetching layers, the pull resolves the reference and checks
//     that the image has a manifest for the wanted platform, so "wrong
//     platform" is its own clear error listing the platforms it has.
//   - Failures come back as *PullError with a Reason (unauthorized,
//     not_found, unreachable, platform, failed) and a message naming the
//     registry and, for credentials, where they came from. A registry's 401
//     is PullUnauthorized, never an errdefs "unauthenticated" that the API
//     would answer as its own 401 (which clients read as a bad API key).
//   - Credentials come from registryauth (request, config.json, ECR) and
//     are asked for only when a registry challenges; they never appear in
//     a message (PullError scrubs the secrets it knows of, and registry
//     response bodies are never quoted).
//   - Plain HTTP only for hosts named with --insecure-registry.

// quietLogger swallows the containerd client's own log lines.
var quietLogger = func() *log.Entry {
	l := logrus.New()
	l.Out = io.Discard
	return logrus.NewEntry(l)
}()

// PullReason classifies a failed pull.
type PullReason string

// The pull failure classes.
const (
	PullUnauthorized PullReason = "unauthorized" // the registry refused the credentials (or wants some)
	PullNotFound     PullReason = "not_found"    // no such repository or tag
	PullUnreachable  PullReason = "unreachable"  // no answer, TLS failure, plain HTTP where HTTPS was expected
	PullPlatform     PullReason = "platform"     // the image has no manifest for the wanted platform
	PullFailed       PullReason = "failed"       // anything else the registry or the unpack did
)

// PullError is a failed pull. It unwraps to an errdefs class (NotFound for
// not_found and platform, Unavailable for unreachable, PermissionDenied for
// unauthorized, Unknown otherwise) and, for failures that are the
// registry's (unauthorized, unreachable, failed), to errclass.ErrUpstream
// as well, which the API answers as 502.
type PullError struct {
	Ref      string
	Registry string
	Reason   PullReason
	msg      string
	class    error
}

func (e *PullError) Error() string { return e.msg }

func (e *PullError) Unwrap() []error {
	if e.Reason == PullUnauthorized || e.Reason == PullUnreachable || e.Reason == PullFailed {
		return []error{e.class, errclass.ErrUpstream}
	}
	return []error{e.class}
}

// PullProgress is the state of one layer's download.
type PullProgress struct {
	Layer       string // digest
	Done, Total int64  // bytes
}

// PullRequest is one pull.
type PullRequest struct {
	Ref string
	// Auth, when set, is used for the reference's registry instead of the
	// daemon's keychain.
	Auth *registryauth.Credentials
	// Platform is "os/arch[/variant]"; empty: this host's.
	Platform string
	// Progress, when set, is called (from one goroutine) as layers arrive.
	Progress func(PullProgress)
}

// RegistryConfig is how the runtime reaches registries.
type RegistryConfig struct {
	// Keychain resolves credentials; nil: anonymous only.
	Keychain *registryauth.Keychain
	// Insecure lists HOST[:PORT]s spoken to in plain HTTP.
	Insecure []string
	// Endpoints sends requests for a registry host to another endpoint
	// (scheme://host[:port]): a mirror, or a test stand-in for a
	// registry name that does not resolve here. Credentials are still
	// those of the registry named in the reference.
	Endpoints map[string]string
}

// WithRegistries configures registry pulls (default: anonymous, HTTPS only).
func WithRegistries(c RegistryConfig) Option { return func(r *Runtime) { r.registries = c } }

// ValidateRegistryHost checks a --insecure-registry value.
func ValidateRegistryHost(h string) error {
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		host, port = h, ""
	}
	if host == "" || strings.ContainsAny(host, "/@ \t") || port != "" && strings.Trim(port, "0123456789") != "" {
		return fmt.Errorf("registry host %q: want HOST or HOST:PORT, e.g. 127.0.0.1:5000: %w", h, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ValidatePlatform checks a platform ("os/arch[/variant]"; empty: this
// host's).
func ValidatePlatform(p string) error {
	if p == "" {
		return nil
	}
	if _, err := platforms.Parse(p); err != nil {
		return fmt.Errorf("platform %q: want os/arch[/variant], e.g. linux/amd64: %w", p, errdefs.ErrInvalidArgument)
	}
	return nil
}

// NormalizeImageRef turns a user's image reference into the full name
// containerd stores ("alpine" → "docker.io/library/alpine:latest",
// "registry:5000/team/app" → "registry:5000/team/app:latest").
func NormalizeImageRef(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	return named.String(), nil
}

// httpClient is shared by every pull: bounded connection setup and
// response headers, no bound on a layer's download time.
func newRegistryClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}}
}

// pullCreds resolves the credentials of one pull once, when the registry
// first asks, and remembers them for scrubbing messages.
type pullCreds struct {
	host    string
	given   *registryauth.Credentials
	keys    *registryauth.Keychain
	once    sync.Once
	creds   registryauth.Credentials
	source  registryauth.Source
	err     error
	asked   bool
	askedMu sync.Mutex
}

func (p *pullCreds) get(ctx context.Context) (registryauth.Credentials, registryauth.Source, error) {
	p.once.Do(func() {
		p.askedMu.Lock()
		p.asked = true
		p.askedMu.Unlock()
		switch {
		case p.given != nil:
			p.creds, p.source = *p.given, registryauth.SourceRequest
		case p.keys != nil:
			p.creds, p.source, p.err = p.keys.Lookup(ctx, p.host)
		default:
			p.source = registryauth.SourceNone
		}
	})
	return p.creds, p.source, p.err
}

// used reports what the pull presented, without looking anything up: the
// source is SourceNone when no registry asked for credentials.
func (p *pullCreds) used() (registryauth.Credentials, registryauth.Source) {
	p.askedMu.Lock()
	asked := p.asked
	p.askedMu.Unlock()
	if !asked {
		return registryauth.Credentials{}, registryauth.SourceNone
	}
	p.once.Do(func() {}) // wait for a lookup in flight
	return p.creds, p.source
}

// fetchError marks a failure after the reference resolved and its
// platform checked out: a "not found" then means the registry lacks a
// blob its own manifest names, not that the image does not exist.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// credsError carries a keychain failure through containerd's authorizer.
type credsError struct{ err error }

func (e *credsError) Error() string { return e.err.Error() }
func (e *credsError) Unwrap() error { return e.err }

// resolver builds a remotes/docker resolver for a pull from host.
func (r *Runtime) resolver(ctx context.Context, host string, pc *pullCreds) remotes.Resolver {
	cfg := r.registries
	hosts := func(h string) ([]docker.RegistryHost, error) {
		endpoint, scheme := h, "https"
		if h == "docker.io" {
			endpoint = "registry-1.docker.io"
		}
		if e, ok := cfg.Endpoints[h]; ok {
			u, err := url.Parse(e)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("registry endpoint for %s: %q is not a URL: %w", h, e, errdefs.ErrInvalidArgument)
			}
			endpoint, scheme = u.Host, u.Scheme
		}
		for _, in := range cfg.Insecure {
			if in == endpoint || in == h {
				scheme = "http"
			}
		}
		auth := docker.NewDockerAuthorizer(
			docker.WithAuthClient(r.regClient),
			docker.WithAuthCreds(func(string) (string, string, error) {
				// Always the reference's registry, whatever endpoint
				// serves it.
				c, _, err := pc.get(ctx)
				if err != nil {
					return "", "", &credsError{err}
				}
				return c.Username, c.Password, nil
			}))
		return []docker.RegistryHost{{
			Client: r.regClient, Authorizer: auth, Host: endpoint, Scheme: scheme, Path: "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		}}, nil
	}
	return docker.NewResolver(docker.ResolverOptions{Hosts: hosts})
}

// Pull fetches an image from its registry and unpacks it for the
// snapshotter. It returns the image as GET /images shows it.
func (r *Runtime) Pull(ctx context.Context, req PullRequest) (ImageInfo, error) {
	start := time.Now()
	name, err := NormalizeImageRef(req.Ref)
	if err != nil {
		return ImageInfo{}, err
	}
	named, _ := reference.ParseNormalizedNamed(name)
	host := reference.Domain(named)
	want := platforms.DefaultSpec()
	if req.Platform != "" {
		if want, err = platforms.Parse(req.Platform); err != nil {
			return ImageInfo{}, fmt.Errorf("platform %q: want os/arch[/variant], e.g. linux/amd64: %w", req.Platform, errdefs.ErrInvalidArgument)
		}
	}
	matcher := platforms.Only(want)
	pc := &pullCreds{host: host, given: req.Auth, keys: r.registries.Keychain}
	fail := func(err error) (ImageInfo, error) {
		pe := classifyPull(name, host, pc, err)
		r.log.Warn("image pull failed", "image", name, "registry", host, "reason", pe.Reason, "error", pe.msg)
		return ImageInfo{}, pe
	}

	// containerd's client logs every failed host attempt through logrus,
	// outside our slog; the outcome is reported below, classified.
	ctx = log.WithLogger(r.nsCtx(ctx), quietLogger)
	ls := r.client.LeasesService()
	lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(6*time.Hour))
	if err != nil {
		return ImageInfo{}, fmt.Errorf("pull %s: create lease: %w", name, err)
	}
	ctx = leases.WithLease(ctx, lease.ID)
	defer func() {
		// Synchronous: when Pull returns, whatever a failed pull fetched
		// or unpacked is gone, and a successful one is held by its image.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := ls.Delete(dctx, lease, leases.SynchronousDelete); err != nil {
			r.log.Warn("pull: release lease", "image", name, "error", err)
		}
	}()

	res := r.resolver(ctx, host, pc)
	resolved, desc, err := res.Resolve(ctx, name)
	if err != nil {
		return fail(err)
	}
	fetcher, err := res.Fetcher(ctx, resolved)
	if err != nil {
		return fail(err)
	}
	if err := checkPlatform(ctx, fetcher, desc, matcher, platforms.Format(want)); err != nil {
		return fail(err)
	}
	_, src := pc.used()
	r.log.Info("image pull started", "image", name, "registry", host, "digest", desc.Digest.String(), "credentials", string(src))

	prog := newPullProgress(r.client.ContentStore(), req.Progress)
	stop := prog.run(ctx)
	img, err := r.client.Pull(ctx, name,
		containerd.WithResolver(res),
		containerd.WithPlatformMatcher(matcher),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(r.snapshotter),
		containerd.WithImageHandlerWrapper(prog.wrap),
	)
	stop(err == nil)
	if err != nil {
		return fail(&fetchError{err})
	}
	size, _ := img.Size(ctx)
	m := img.Metadata()
	info := ImageInfo{Name: m.Name, Digest: m.Target.Digest.String(), Size: size, CreatedAt: m.CreatedAt}
	r.log.Info("image pulled", "image", info.Name, "digest", info.Digest, "bytes", size, "duration_ms", time.Since(start).Milliseconds())
	return info, nil
}

// maxMetadataBlob bounds the manifests and configs read for the platform
// check.
const maxMetadataBlob = 4 << 20

func readBlob(ctx context.Context, f remotes.Fetcher, desc ocispec.Descriptor, v any) error {
	if desc.Size > maxMetadataBlob {
		return fmt.Errorf("%s %s is %d bytes, more than %d: %w", desc.MediaType, desc.Digest, desc.Size, maxMetadataBlob, errdefs.ErrInvalidArgument)
	}
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxMetadataBlob+1))
	if err != nil {
		return err
	}
	if desc.Size > 0 && digest.FromBytes(b) != desc.Digest {
		return fmt.Errorf("%s does not match its digest %s: %w", desc.MediaType, desc.Digest, errdefs.ErrDataLoss)
	}
	return json.Unmarshal(b, v)
}

// platformError says which platforms an image does have.
type platformError struct {
	want string
	have []string
}

func (e *platformError) Error() string {
	if len(e.have) == 0 {
		return fmt.Sprintf("the image has no manifest for %s", e.want)
	}
	return fmt.Sprintf("the image has no manifest for %s (it has %s)", e.want, strings.Join(e.have, ", "))
}

// checkPlatform makes sure the resolved image has something for matcher.
func checkPlatform(ctx context.Context, f remotes.Fetcher, desc ocispec.Descriptor, matcher platforms.Matcher, want string) error {
	switch {
	case images.IsIndexType(desc.MediaType):
		var idx ocispec.Index
		if err := readBlob(ctx, f, desc, &idx); err != nil {
			return err
		}
		var have []string
		for _, m := range idx.Manifests {
			if m.Platform == nil || matcher.Match(*m.Platform) {
				return nil
			}
			have = append(have, platforms.Format(*m.Platform))
		}
		sort.Strings(have)
		return &platformError{want: want, have: have}
	case images.IsManifestType(desc.MediaType):
		var man ocispec.Manifest
		if err := readBlob(ctx, f, desc, &man); err != nil {
			return err
		}
		var cfg ocispec.Image
		if err := readBlob(ctx, f, man.Config, &cfg); err != nil {
			return err
		}
		if cfg.OS == "" || matcher.Match(cfg.Platform) {
			return nil
		}
		return &platformError{want: want, have: []string{platforms.Format(cfg.Platform)}}
	}
	return nil
}

// classifyPull turns what containerd's resolver, fetcher and unpacker
// return into a PullError with a message a person can act on.
func classifyPull(ref, host string, pc *pullCreds, err error) *PullError {
	pe := &PullError{Ref: ref, Registry: host}
	used, src := pc.used()
	var (
		fe      *fetchError
		status  remoteerrors.ErrUnexpectedStatus
		ce      *credsError
		pfe     *platformError
		netErr  net.Error
		opErr   *net.OpError
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		uaErr   x509.UnknownAuthorityError
		hostErr x509.HostnameError
	)
	detail := ""
	switch {
	case errors.As(err, &ce):
		pe.Reason, pe.class = PullUnauthorized, errdefs.ErrPermissionDenied
		detail = fmt.Sprintf("credentials for registry %s could not be obtained: %v", host, ce.err)
	case errors.Is(err, docker.ErrInvalidAuthorization),
		errors.As(err, &status) && (status.StatusCode == http.StatusUnauthorized || status.StatusCode == http.StatusForbidden):
		pe.Reason, pe.class = PullUnauthorized, errdefs.ErrPermissionDenied
		if src == registryauth.SourceNone {
			detail = fmt.Sprintf("registry %s refused access without credentials (pass auth with the pull, or add the registry to --registry-config)", host)
		} else {
			detail = fmt.Sprintf("registry %s refused the credentials (from %s)", host, src)
		}
		if status.StatusCode != 0 {
			detail += fmt.Sprintf(": %d %s", status.StatusCode, http.StatusText(status.StatusCode))
		}
	case errors.As(err, &pfe):
		pe.Reason, pe.class = PullPlatform, errdefs.ErrNotFound
		detail = pfe.Error()
	case errors.As(err, &status):
		pe.Reason, pe.class = PullFailed, errdefs.ErrUnknown
		if status.StatusCode == http.StatusNotFound {
			pe.Reason, pe.class = PullNotFound, errdefs.ErrNotFound
		} else if status.StatusCode == http.StatusTooManyRequests || status.StatusCode >= 500 {
			pe.Reason, pe.class = PullUnreachable, errdefs.ErrUnavailable
		}
		// Never the body: a hostile registry could echo anything into it.
		detail = fmt.Sprintf("registry %s answered %s %s with %d %s", host, status.RequestMethod, pathOf(status.RequestURL), status.StatusCode, http.StatusText(status.StatusCode))
	case errors.As(err, &certErr), errors.As(err, &uaErr), errors.As(err, &hostErr):
		pe.Reason, pe.class = PullUnreachable, errdefs.ErrUnavailable
		detail = fmt.Sprintf("registry %s: TLS certificate not trusted: %v", host, err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		// net/http's only signal for this case is its message.
		pe.Reason, pe.class = PullUnreachable, errdefs.ErrUnavailable
		detail = fmt.Sprintf("registry %s speaks plain HTTP; if that is intended, start matrxd with --insecure-registry %s", host, host)
	case errors.As(err, &dnsErr), errors.As(err, &opErr), errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &netErr),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.ErrUnexpectedEOF):
		pe.Reason, pe.class = PullUnreachable, errdefs.ErrUnavailable
		detail = fmt.Sprintf("registry %s is unreachable: %v", host, rootCause(err))
	case errdefs.IsNotFound(err) && errors.As(err, &fe):
		pe.Reason, pe.class = PullFailed, errdefs.ErrUnknown
		detail = fmt.Sprintf("registry %s lacks content its manifest for %s names: %v", host, strings.TrimPrefix(ref, host+"/"), err)
	case errdefs.IsNotFound(err):
		pe.Reason, pe.class = PullNotFound, errdefs.ErrNotFound
		detail = fmt.Sprintf("registry %s has no image %s (no such repository or tag)", host, strings.TrimPrefix(ref, host+"/"))
	case errors.Is(err, context.Canceled):
		pe.Reason, pe.class = PullFailed, context.Canceled
		detail = "canceled"
	default:
		pe.Reason, pe.class = PullFailed, errdefs.ErrUnknown
		detail = err.Error()
	}
	msg := fmt.Sprintf("pull %s: %s", ref, detail)
	if pc.given != nil {
		msg = pc.given.Redact(msg)
	}
	pe.msg = used.Redact(msg)
	return pe
}

// pathOf keeps a URL's path only (no query: a pre-signed blob URL carries
// a signature there).
func pathOf(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Path
	}
	return ""
}

// rootCause is the innermost error, for "dial tcp ...: connection refused"
// without the layers of "failed to resolve ... failed to do request".
func rootCause(err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return opErr
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr
	}
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// --- progress ---------------------------------------------------------------

// pullProgress reports layer downloads by polling containerd's ingest
// statuses, as ctr does: the remote fetch runs inside containerd's content
// writers, which are the only ones that know the offsets.
type pullProgress struct {
	cs   content.Store
	fn   func(PullProgress)
	mu   sync.Mutex
	seen map[digest.Digest]bool
	all  []ocispec.Descriptor
	last map[digest.Digest]int64
}

func newPullProgress(cs content.Store, fn func(PullProgress)) *pullProgress {
	return &pullProgress{cs: cs, fn: fn, seen: map[digest.Digest]bool{}, last: map[digest.Digest]int64{}}
}

// wrap learns the layers from each manifest's children (the unpacker
// fetches them itself, below this handler).
func (p *pullProgress) wrap(h images.Handler) images.Handler {
	return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		children, err := h.Handle(ctx, desc)
		if err == nil && images.IsManifestType(desc.MediaType) {
			p.mu.Lock()
			for _, c := range children {
				if images.IsLayerType(c.MediaType) && !p.seen[c.Digest] {
					p.seen[c.Digest] = true
					p.all = append(p.all, c)
				}
			}
			p.mu.Unlock()
		}
		return children, err
	})
}

// run polls until the returned stop is called; stop(true) reports every
// layer complete.
func (p *pullProgress) run(ctx context.Context) (stop func(ok bool)) {
	if p.fn == nil {
		return func(bool) {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.poll(ctx, false)
			}
		}
	}()
	return func(ok bool) {
		close(done)
		<-finished
		if ok {
			p.poll(ctx, true)
		}
	}
}

func (p *pullProgress) poll(ctx context.Context, complete bool) {
	p.mu.Lock()
	layers := append([]ocispec.Descriptor(nil), p.all...)
	p.mu.Unlock()
	if len(layers) == 0 {
		return
	}
	active := map[string]content.Status{}
	if !complete {
		sts, _ := p.cs.ListStatuses(ctx)
		for _, s := range sts {
			active[s.Ref] = s
		}
	}
	for _, l := range layers {
		done := p.last[l.Digest]
		switch {
		case complete:
			done = l.Size
		default:
			if st, ok := active[remotes.MakeRefKey(ctx, l)]; ok {
				done = st.Offset
			} else if _, err := p.cs.Info(ctx, l.Digest); err == nil {
				done = l.Size
			}
		}
		if last, ok := p.last[l.Digest]; ok && last == done {
			continue
		}
		p.last[l.Digest] = done
		p.fn(PullProgress{Layer: l.Digest.String(), Done: done, Total: l.Size})
	}
}
