package daemon

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/registryauth"
	"github.com/urfave/cli/v2"
)

// RegistryConfig is how matrxd pulls images from registries.
type RegistryConfig struct {
	// ConfigPath is a Docker-style config.json ("auths", "credHelpers",
	// "credsStore"); empty: none. ECR registries need no entry.
	ConfigPath string
	// Insecure lists HOST[:PORT] registries spoken to in plain HTTP.
	Insecure []string
	// PinnedImages are never pruned (the default image never is either).
	PinnedImages []string
	// ECR tunes the native ECR path (tests point Endpoint at a stand-in).
	ECR registryauth.ECRConfig
	// Endpoints sends a registry's requests elsewhere (runtime.RegistryConfig);
	// no flag: a mirror or test stand-in set by code.
	Endpoints map[string]string
}

func registryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "registry-config", EnvVars: []string{"MATRX_REGISTRY_CONFIG"}, Usage: "Docker-style config.json with registry credentials (auths, credHelpers, credsStore); read again at every pull"},
		&cli.StringSliceFlag{Name: "insecure-registry", EnvVars: []string{"MATRX_INSECURE_REGISTRIES"}, Usage: "HOST:PORT of a registry spoken to in plain HTTP (a local mirror, tests); repeatable"},
		&cli.StringSliceFlag{Name: "pin-image", EnvVars: []string{"MATRX_PIN_IMAGES"}, Usage: "image that `matrx image prune` never deletes, besides the default image; repeatable"},
	}
}

func registryConfigFrom(c *cli.Context) RegistryConfig {
	return RegistryConfig{
		ConfigPath:   c.String("registry-config"),
		Insecure:     c.StringSlice("insecure-registry"),
		PinnedImages: c.StringSlice("pin-image"),
	}
}

// Validate checks the values; the config file itself is parsed when the
// daemon starts (openRegistries), so a broken one fails fast.
func (r RegistryConfig) Validate() error {
	for _, h := range r.Insecure {
		if err := runtime.ValidateRegistryHost(h); err != nil {
			return fmt.Errorf("insecure registry: %w", err)
		}
	}
	for _, p := range r.PinnedImages {
		if _, err := runtime.NormalizeImageRef(p); err != nil {
			return fmt.Errorf("pin-image: %w", err)
		}
	}
	if r.ConfigPath != "" {
		st, err := os.Stat(r.ConfigPath)
		if err != nil {
			return fmt.Errorf("registry config %s: %v: %w", r.ConfigPath, err, errdefs.ErrInvalidArgument)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("registry config %s is not a regular file: %w", r.ConfigPath, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// openRegistries builds the runtime's registry access: the keychain
// (config.json parsed now, so a broken file fails at startup) and the
// plain-HTTP list.
func openRegistries(cfg RegistryConfig, log *slog.Logger) (runtime.RegistryConfig, error) {
	keys, err := registryauth.New(registryauth.Config{ConfigPath: cfg.ConfigPath, ECR: cfg.ECR, Logger: log})
	if err != nil {
		return runtime.RegistryConfig{}, err
	}
	if cfg.ConfigPath != "" {
		if st, err := os.Stat(cfg.ConfigPath); err == nil && st.Mode().Perm()&0o077 != 0 {
			log.Warn("registry config is readable by other users; it holds credentials (chmod 600)", "path", cfg.ConfigPath, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
		}
	}
	if len(cfg.Insecure) > 0 {
		log.Warn("plain-HTTP registries: pulls from them are neither encrypted nor authenticated", "registries", cfg.Insecure)
	}
	return runtime.RegistryConfig{Keychain: keys, Insecure: cfg.Insecure, Endpoints: cfg.Endpoints}, nil
}
