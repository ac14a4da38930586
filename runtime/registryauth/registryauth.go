// Package registryauth owns the credentials matrxd presents to image
// registries: a Docker-style config.json (its "auths", "credHelpers" and
// "credsStore"), credentials passed with one pull, and Amazon ECR tokens
// fetched natively for *.dkr.ecr.REGION.amazonaws.com registries. It turns
// a registry host into a username and secret, and nothing more: it does not
// talk to registries or containerd (package runtime does, through
// containerd's remotes/docker authorizer, which asks for credentials only
// when a registry challenges it).
//
// Decisions recorded here:
//   - Precedence for one host: credentials passed with the call, then
//     config.json (credHelpers[host], then auths[host], then credsStore),
//     then ECR for ECR hosts, then none (anonymous). An explicit config
//     entry wins over the built-in ECR path, so an operator can always
//     override it.
//   - config.json is read again at every lookup (it is small): rotating a
//     password does not need a daemon restart. It is parsed once at startup
//     too, so a broken file fails fast.
//   - ECR: ecr:GetAuthorizationToken through aws-sdk-go-v2 with the
//     standard credential chain (environment, shared config, SSO, instance
//     role...) and the region taken from the host. The token (12 hours) is
//     cached per registry host and fetched again RefreshBefore (30 min)
//     ahead of its expiry, so a long pull never starts on a token about to
//     lapse. Concurrent lookups of one host share one API call.
//   - Secrets never leave this package except as the Credentials a caller
//     asked for: errors name the host, the source and the field, never a
//     value. Credentials.Redact lets callers scrub messages from elsewhere
//     (a registry echoing a header back) before logging them.
package registryauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/containerd/errdefs"
)

// Credentials authenticate to one registry. A Password with an empty
// Username is an identity (refresh) token, as in config.json's
// "identitytoken".
type Credentials struct {
	Username string
	Password string
}

// IsZero reports whether c holds no credentials (anonymous access).
func (c Credentials) IsZero() bool { return c.Username == "" && c.Password == "" }

// String never shows the secret.
func (c Credentials) String() string {
	if c.IsZero() {
		return "anonymous"
	}
	return fmt.Sprintf("user %q (secret redacted)", c.Username)
}

// Secrets lists the strings that must never appear in output: the
// password, and the base64 forms a registry or a log might carry.
func (c Credentials) Secrets() []string {
	if c.Password == "" {
		return nil
	}
	up := c.Username + ":" + c.Password
	return []string{
		c.Password,
		base64.StdEncoding.EncodeToString([]byte(up)),
		base64.URLEncoding.EncodeToString([]byte(up)),
		base64.StdEncoding.EncodeToString([]byte(c.Password)),
	}
}

// Redact replaces every secret of c in s.
func (c Credentials) Redact(s string) string {
	for _, sec := range c.Secrets() {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

// Source says where credentials came from, for logs and error messages.
type Source string

// The sources, in precedence order.
const (
	SourceRequest    Source = "credentials passed with the request"
	SourceHelper     Source = "config.json credential helper"
	SourceAuths      Source = "config.json auths"
	SourceCredsStore Source = "config.json credsStore"
	SourceECR        Source = "Amazon ECR (GetAuthorizationToken)"
	SourceNone       Source = "none (anonymous)"
)

// Config holds the keychain's settings; the zero value means "no
// config.json, ECR with the SDK's defaults".
type Config struct {
	// ConfigPath is a Docker-style config.json; empty: none.
	ConfigPath string
	// ECR configures the native ECR path.
	ECR    ECRConfig
	Logger *slog.Logger
}

// Keychain resolves credentials for registry hosts.
type Keychain struct {
	configPath string
	ecr        *ecrTokens
	log        *slog.Logger
}

// New validates cfg (the config file must exist and parse) and returns a
// keychain.
func New(cfg Config) (*Keychain, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	k := &Keychain{configPath: cfg.ConfigPath, log: cfg.Logger, ecr: newECRTokens(cfg.ECR)}
	if k.configPath != "" {
		if _, err := k.readConfig(); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Lookup returns the credentials for host (a registry host as in an image
// reference: "registry.example:5000", "docker.io"). No credentials is not
// an error: the result is zero with SourceNone. An error means a source
// that should have answered failed (an unreadable config file, a failing
// helper, ECR refusing), and says which.
func (k *Keychain) Lookup(ctx context.Context, host string) (Credentials, Source, error) {
	if k.configPath != "" {
		cf, err := k.readConfig()
		if err != nil {
			return Credentials{}, "", err
		}
		if c, src, ok, err := cf.lookup(ctx, host); err != nil || ok {
			return c, src, err
		}
	}
	if region, ok := ECRRegion(host); ok {
		c, err := k.ecr.get(ctx, host, region)
		if err != nil {
			return Credentials{}, SourceECR, err
		}
		return c, SourceECR, nil
	}
	return Credentials{}, SourceNone, nil
}

// --- config.json --------------------------------------------------------------

// configFile is the part of Docker's config.json that matters here.
type configFile struct {
	Auths       map[string]authEntry `json:"auths"`
	CredHelpers map[string]string    `json:"credHelpers"`
	CredsStore  string               `json:"credsStore"`
	path        string
}

type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// maxConfigSize bounds the file read at every pull.
const maxConfigSize = 1 << 20

func (k *Keychain) readConfig() (*configFile, error) {
	f, err := os.Open(k.configPath)
	if err != nil {
		return nil, fmt.Errorf("registry config %s: %v: %w", k.configPath, errors.Unwrap(err), errdefs.ErrFailedPrecondition)
	}
	defer f.Close()
	var cf configFile
	dec := json.NewDecoder(&limitedReader{r: f, n: maxConfigSize})
	if err := dec.Decode(&cf); err != nil {
		return nil, fmt.Errorf("registry config %s is not valid JSON (want {\"auths\": {...}, \"credHelpers\": {...}}): %v: %w",
			k.configPath, jsonErrorWithoutValue(err), errdefs.ErrFailedPrecondition)
	}
	cf.path = k.configPath
	for key, e := range cf.Auths {
		if _, err := e.credentials(); err != nil {
			return nil, fmt.Errorf("registry config %s: auths[%q]: %v: %w", k.configPath, key, err, errdefs.ErrFailedPrecondition)
		}
	}
	for key, name := range cf.CredHelpers {
		if !validHelperName(name) {
			return nil, fmt.Errorf("registry config %s: credHelpers[%q]: helper name %q must be letters, digits, '-', '_' or '.': %w", k.configPath, key, name, errdefs.ErrFailedPrecondition)
		}
	}
	if cf.CredsStore != "" && !validHelperName(cf.CredsStore) {
		return nil, fmt.Errorf("registry config %s: credsStore %q must be letters, digits, '-', '_' or '.': %w", k.configPath, cf.CredsStore, errdefs.ErrFailedPrecondition)
	}
	return &cf, nil
}

// jsonErrorWithoutValue keeps a decode error's position but not the bytes
// it quotes (they may be a secret).
func jsonErrorWithoutValue(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q has the wrong type (%s)", te.Field, te.Value)
	}
	return "malformed"
}

func (e authEntry) credentials() (Credentials, error) {
	switch {
	case e.IdentityToken != "":
		return Credentials{Username: "", Password: e.IdentityToken}, nil
	case e.Auth != "":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(e.Auth))
		if err != nil {
			return Credentials{}, errors.New(`"auth" is not base64`)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok || user == "" {
			return Credentials{}, errors.New(`"auth" must encode USER:PASSWORD`)
		}
		return Credentials{Username: user, Password: pass}, nil
	case e.Username != "" || e.Password != "":
		if e.Username == "" || e.Password == "" {
			return Credentials{}, errors.New(`"username" and "password" go together`)
		}
		return Credentials{Username: e.Username, Password: e.Password}, nil
	}
	return Credentials{}, nil
}

// hostKeys are the config.json keys that may name host.
func hostKeys(host string) []string {
	keys := []string{host}
	if host == "docker.io" || host == "registry-1.docker.io" || host == "index.docker.io" {
		keys = append(keys, "https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
	}
	return keys
}

// normalizeKey turns an auths key ("https://host:port/v1/") into a host.
func normalizeKey(key string) string {
	if i := strings.Index(key, "://"); i >= 0 {
		key = key[i+3:]
	}
	if i := strings.IndexByte(key, '/'); i >= 0 {
		key = key[:i]
	}
	return strings.ToLower(key)
}

func (cf *configFile) lookup(ctx context.Context, host string) (Credentials, Source, bool, error) {
	keys := hostKeys(strings.ToLower(host))
	for _, k := range keys {
		if name, ok := cf.CredHelpers[k]; ok {
			c, found, err := runHelper(ctx, name, host)
			if err != nil {
				return Credentials{}, SourceHelper, false, fmt.Errorf("registry config %s: credHelpers[%q]: %w", cf.path, k, err)
			}
			return c, SourceHelper, found, nil
		}
	}
	for key, e := range cf.Auths {
		for _, k := range keys {
			if normalizeKey(key) == normalizeKey(k) {
				c, err := e.credentials()
				if err != nil {
					return Credentials{}, SourceAuths, false, fmt.Errorf("registry config %s: auths[%q]: %v: %w", cf.path, key, err, errdefs.ErrFailedPrecondition)
				}
				if !c.IsZero() {
					return c, SourceAuths, true, nil
				}
			}
		}
	}
	if cf.CredsStore != "" {
		c, found, err := runHelper(ctx, cf.CredsStore, host)
		if err != nil {
			return Credentials{}, SourceCredsStore, false, fmt.Errorf("registry config %s: credsStore: %w", cf.path, err)
		}
		return c, SourceCredsStore, found, nil
	}
	return Credentials{}, SourceNone, false, nil
}

type limitedReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxConfigSize)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
