package registryauth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/smithy-go"
	"github.com/containerd/errdefs"
)

// ecrHostRe matches private ECR registry hosts:
// ACCOUNT.dkr.ecr[-fips].REGION.amazonaws.com[.cn].
var ecrHostRe = regexp.MustCompile(`^[0-9]{12}\.dkr\.ecr(-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$`)

// ECRRegion reports whether host is a private Amazon ECR registry, and its
// region.
func ECRRegion(host string) (string, bool) {
	m := ecrHostRe.FindStringSubmatch(strings.ToLower(host))
	if m == nil {
		return "", false
	}
	return m[2], true
}

// DefaultECRRefreshBefore is how long before its expiry a cached ECR
// token is replaced.
const DefaultECRRefreshBefore = 30 * time.Minute

// ECRConfig configures the native ECR path.
type ECRConfig struct {
	// Endpoint overrides the ECR API endpoint (an ECR-compatible service,
	// a VPC endpoint, a test stand-in). Empty: the SDK's, which also
	// honours AWS_ENDPOINT_URL_ECR.
	Endpoint string
	// RefreshBefore replaces a token this long before it expires
	// (default DefaultECRRefreshBefore).
	RefreshBefore time.Duration
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// ecrTokens caches one token per registry host.
type ecrTokens struct {
	cfg ECRConfig

	mu      sync.Mutex
	tokens  map[string]ecrToken
	flights map[string]*ecrFlight
	clients map[string]*ecr.Client // per region
}

type ecrToken struct {
	creds   Credentials
	expires time.Time
}

// ecrFlight is one GetAuthorizationToken call that lookups of the same
// host wait for.
type ecrFlight struct {
	done chan struct{}
	tok  ecrToken
	err  error
}

func newECRTokens(cfg ECRConfig) *ecrTokens {
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = DefaultECRRefreshBefore
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &ecrTokens{cfg: cfg, tokens: map[string]ecrToken{}, flights: map[string]*ecrFlight{}, clients: map[string]*ecr.Client{}}
}

// get returns a cached token for host, or fetches one.
func (e *ecrTokens) get(ctx context.Context, host, region string) (Credentials, error) {
	e.mu.Lock()
	if t, ok := e.tokens[host]; ok && e.cfg.Now().Before(t.expires.Add(-e.cfg.RefreshBefore)) {
		e.mu.Unlock()
		return t.creds, nil
	}
	f, ok := e.flights[host]
	if !ok {
		f = &ecrFlight{done: make(chan struct{})}
		e.flights[host] = f
		// The call outlives a caller that gives up: others may be waiting.
		go e.fetch(context.WithoutCancel(ctx), host, region, f)
	}
	e.mu.Unlock()
	select {
	case <-f.done:
		return f.tok.creds, f.err
	case <-ctx.Done():
		return Credentials{}, ctx.Err()
	}
}

func (e *ecrTokens) fetch(ctx context.Context, host, region string, f *ecrFlight) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	f.tok, f.err = e.call(ctx, host, region)
	e.mu.Lock()
	delete(e.flights, host)
	if f.err == nil {
		e.tokens[host] = f.tok
	}
	e.mu.Unlock()
	close(f.done)
}

func (e *ecrTokens) client(ctx context.Context, region string) (*ecr.Client, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.clients[region]; ok {
		return c, nil
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return nil, fmt.Errorf("ECR: load AWS configuration: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	// Credentials first: "the chain found none" is then its own error,
	// not a guess from the SDK's message. The cache makes this free later.
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("ECR (region %s): no AWS credentials from the standard chain (environment, shared config, SSO, instance role): %v: %w", region, err, errdefs.ErrPermissionDenied)
	}
	c := ecr.NewFromConfig(cfg, func(o *ecr.Options) {
		if e.cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(e.cfg.Endpoint)
		}
	})
	e.clients[region] = c
	return c, nil
}

func (e *ecrTokens) call(ctx context.Context, host, region string) (ecrToken, error) {
	c, err := e.client(ctx, region)
	if err != nil {
		return ecrToken{}, err
	}
	out, err := c.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return ecrToken{}, ecrError(host, region, err)
	}
	if len(out.AuthorizationData) == 0 || out.AuthorizationData[0].AuthorizationToken == nil {
		return ecrToken{}, fmt.Errorf("ECR GetAuthorizationToken (region %s) returned no token for %s: %w", region, host, errdefs.ErrUnknown)
	}
	d := out.AuthorizationData[0]
	raw, err := base64.StdEncoding.DecodeString(*d.AuthorizationToken)
	if err != nil {
		return ecrToken{}, fmt.Errorf("ECR token for %s is not base64: %w", host, errdefs.ErrUnknown)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok || user == "" || pass == "" {
		return ecrToken{}, fmt.Errorf("ECR token for %s does not decode to USER:PASSWORD: %w", host, errdefs.ErrUnknown)
	}
	// 12 hours when the answer does not say (it always does).
	expires := e.cfg.Now().Add(12 * time.Hour)
	if d.ExpiresAt != nil {
		expires = *d.ExpiresAt
	}
	return ecrToken{creds: Credentials{Username: user, Password: pass}, expires: expires}, nil
}

// ecrError classifies a GetAuthorizationToken failure without the SDK's
// request ids and retry chatter.
func ecrError(host, region string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		var class error = errdefs.ErrUnknown
		switch ae.ErrorCode() {
		case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException", "InvalidClientTokenId":
			class = errdefs.ErrPermissionDenied
		case "ThrottlingException", "ServiceUnavailableException":
			class = errdefs.ErrUnavailable
		}
		return fmt.Errorf("ECR GetAuthorizationToken for %s (region %s) was refused: %s: %s: %w", host, region, ae.ErrorCode(), ae.ErrorMessage(), class)
	}
	return fmt.Errorf("ECR GetAuthorizationToken for %s (region %s) failed: %v: %w", host, region, err, errdefs.ErrUnavailable)
}
