package registryauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// helperTimeout bounds one credential helper run.
const helperTimeout = 10 * time.Second

// maxHelperOutput bounds what a helper may print.
const maxHelperOutput = 64 << 10

func validHelperName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return false
		}
	}
	return !strings.Contains(name, "..")
}

// runHelper runs docker-credential-NAME get with host on stdin, the
// protocol of github.com/docker/docker-credential-helpers: the answer is
// {"Username": ..., "Secret": ...}; a Username of "<token>" marks an
// identity token. "credentials not found" on stdout is not an error: the
// host is then anonymous.
func runHelper(ctx context.Context, name, host string) (Credentials, bool, error) {
	prog := "docker-credential-" + name
	path, err := exec.LookPath(prog)
	if err != nil {
		return Credentials{}, false, fmt.Errorf("credential helper %s is not installed (not on matrxd's PATH): %w", prog, errdefs.ErrFailedPrecondition)
	}
	ctx, cancel := context.WithTimeout(ctx, helperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "get")
	cmd.Stdin = strings.NewReader(host)
	var stdout, stderr capped
	stdout.limit, stderr.limit = maxHelperOutput, 512
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	out := bytes.TrimSpace(stdout.Bytes())
	if runErr != nil {
		// The protocol reports "not found" on stdout with a non-zero exit.
		if strings.Contains(strings.ToLower(string(out)), "credentials not found") {
			return Credentials{}, false, nil
		}
		if ctx.Err() != nil {
			return Credentials{}, false, fmt.Errorf("credential helper %s did not answer within %v: %w", prog, helperTimeout, errdefs.ErrUnavailable)
		}
		// stderr only: a failing helper's stdout may still hold a secret.
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = runErr.Error()
		}
		return Credentials{}, false, fmt.Errorf("credential helper %s failed: %s: %w", prog, msg, errdefs.ErrFailedPrecondition)
	}
	var ans struct {
		Username string `json:"Username"`
		Secret   string `json:"Secret"`
	}
	if err := json.Unmarshal(out, &ans); err != nil {
		return Credentials{}, false, fmt.Errorf("credential helper %s printed something that is not its JSON answer: %w", prog, errdefs.ErrFailedPrecondition)
	}
	if ans.Username == "<token>" {
		ans.Username = ""
	}
	c := Credentials{Username: ans.Username, Password: ans.Secret}
	return c, !c.IsZero(), nil
}

// capped keeps the first limit bytes written to it and drops the rest.
type capped struct {
	bytes.Buffer
	limit int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.limit - c.Len(); room > 0 {
		if len(p) > room {
			c.Buffer.Write(p[:room])
		} else {
			c.Buffer.Write(p)
		}
	}
	return len(p), nil
}
