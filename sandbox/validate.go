package sandbox

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

var (
	envKeyRe   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	labelKeyRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._/-]{0,61}[a-zA-Z0-9])?$`)
	imageRe    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._/:@-]{0,254}$`)
)

// reservedEnv are set by matrx on every process; a request may not override
// them (an agent that could lie about SANDBOX_ID could confuse its SDK).
// ORCHESTRATOR_URL and MATRX_API_SOCKET say where the sandbox listener is.
var reservedEnv = map[string]bool{
	"SANDBOX_ID": true, "USER_ID": true, "HOT_PATH": true, "COLD_PATH": true,
	"ORCHESTRATOR_URL": true, "MATRX_API_SOCKET": true,
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

func validateEnv(env map[string]string, field string) error {
	if len(env) > 128 {
		return invalid("%s has %d entries, at most 128 allowed", field, len(env))
	}
	for k, v := range env {
		if !envKeyRe.MatchString(k) {
			return invalid("%s key %q is invalid: want [A-Za-z_][A-Za-z0-9_]*, at most 128 chars", field, k)
		}
		if reservedEnv[k] {
			return invalid("%s key %q is reserved by matrx", field, k)
		}
		if len(v) > 8192 || strings.IndexByte(v, 0) >= 0 || !utf8.ValidString(v) {
			return invalid("%s value of %q is invalid: at most 8192 bytes of UTF-8 without NUL", field, k)
		}
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	if len(labels) > 32 {
		return invalid("config.labels has %d entries, at most 32 allowed", len(labels))
	}
	for k, v := range labels {
		if !labelKeyRe.MatchString(k) {
			return invalid("config.labels key %q is invalid: 1-63 of [a-zA-Z0-9._/-], alphanumeric at both ends", k)
		}
		if len(v) > 255 || strings.IndexByte(v, 0) >= 0 || !utf8.ValidString(v) {
			return invalid("config.labels value of %q is invalid: at most 255 bytes of UTF-8", k)
		}
	}
	return nil
}

func validateImageAs(field, name string) error {
	if !imageRe.MatchString(name) || strings.Contains(name, "..") {
		return invalid("%s %q is not a valid image reference", field, name)
	}
	return nil
}

// validateCwd checks an exec working directory.
func validateCwd(cwd string) error {
	if len(cwd) > 4096 || strings.IndexByte(cwd, 0) >= 0 || !utf8.ValidString(cwd) {
		return invalid("cwd is invalid: at most 4096 bytes of UTF-8 without NUL")
	}
	if !path.IsAbs(cwd) {
		return invalid("cwd %q must be an absolute path", cwd)
	}
	return nil
}

// MaxIdempotencyKey bounds an Idempotency-Key.
const MaxIdempotencyKey = 255

// validateIdempotencyKey accepts an empty key (none) or 1-255 printable
// ASCII characters without spaces.
func validateIdempotencyKey(k string) error {
	if len(k) > MaxIdempotencyKey {
		return invalid("Idempotency-Key is %d characters, at most %d allowed", len(k), MaxIdempotencyKey)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return invalid("Idempotency-Key may hold only printable ASCII characters without spaces")
		}
	}
	return nil
}

// MaxPublicPorts bounds config.public_ports.
const MaxPublicPorts = 16

// validatePublicPorts checks config.public_ports: TCP ports, each once.
func validatePublicPorts(ports []int) error {
	if len(ports) > MaxPublicPorts {
		return invalid("config.public_ports has %d entries, at most %d allowed", len(ports), MaxPublicPorts)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < 1 || p > 65535 {
			return invalid("config.public_ports entry %d is not a TCP port (1-65535)", p)
		}
		if seen[p] {
			return invalid("config.public_ports lists %d twice", p)
		}
		seen[p] = true
	}
	return nil
}
