package ctl

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
)

func sshCommand() *cli.Command {
	return &cli.Command{
		Name:      "ssh",
		Usage:     "open a shell (or run a command) in a sandbox with the system's ssh, through matrxd's SSH gateway",
		UsageText: "matrx ssh ID [--root] [--ttl DURATION] [-- COMMAND...]",
		Description: `Makes a key pair here (the private key never leaves this machine), has the
daemon grant its public key for the sandbox, and runs ssh with it, checking
the gateway's host key against what the daemon says it is. The key is
revoked when ssh ends, and the session ends if the sandbox stops first.
Needs the ssh client (Debian: openssh-client) and a daemon started with
--ssh-address (the default).

Examples:
   matrx ssh sbx-0123456789ab
   matrx ssh sbx-0123456789ab --root -- apt-get update
   matrx ssh sbx-0123456789ab -- 'cd /tmp && ls'`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "root", Usage: "log in as root instead of agent"},
			&cli.DurationFlag{Name: "ttl", Value: time.Hour, Usage: "how long the key (and so the session) may last, up to 24h"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return fmt.Errorf("ssh needs a sandbox id (see 'matrx ssh --help'): %w", errdefs.ErrInvalidArgument)
			}
			args := c.Args().Slice()
			cmd := args[1:]
			if len(cmd) > 0 && cmd[0] == "--" {
				cmd = cmd[1:]
			}
			user := "agent"
			if c.Bool("root") {
				user = "root"
			}
			code, err := runSSH(c.Context, newClient(c), args[0], user, c.Duration("ttl"), cmd, c.App.Writer, c.App.ErrWriter)
			if err != nil {
				return err
			}
			if code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}

// runSSH grants a fresh key, runs ssh with it, and revokes it.
func runSSH(ctx context.Context, cl *client.Client, id, user string, ttl time.Duration, command []string, w, errw io.Writer) (int, error) {
	bin, err := exec.LookPath("ssh")
	if err != nil {
		return 0, fmt.Errorf("the ssh client is not installed (Debian: apt-get install openssh-client): %w", errdefs.ErrFailedPrecondition)
	}
	if ttl < time.Second || ttl > 24*time.Hour {
		return 0, fmt.Errorf("--ttl %v: want 1s to 24h: %w", ttl, errdefs.ErrInvalidArgument)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return 0, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return 0, err
	}
	secs := int64(ttl / time.Second)
	a, err := cl.GrantAccess(ctx, id, apitype.AccessRequest{
		User: user, TTLSeconds: &secs, PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))),
	})
	if err != nil {
		return 0, err
	}
	// However ssh ends, the key goes.
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := cl.RevokeAccess(rctx, id, a.Fingerprint); err != nil && !errdefs.IsNotFound(err) {
			fmt.Fprintf(errw, "matrx: revoke the session's key %s: %v\n", a.Fingerprint, err)
		}
	}()
	dir, err := os.MkdirTemp("", "matrx-ssh-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	block, err := ssh.MarshalPrivateKey(priv, "matrx ssh "+id)
	if err != nil {
		return 0, err
	}
	key, known := filepath.Join(dir, "key"), filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		return 0, err
	}
	if err := os.WriteFile(known, []byte(a.KnownHosts+"\n"), 0o600); err != nil {
		return 0, err
	}
	args := []string{
		"-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + known, "-o", "GlobalKnownHostsFile=/dev/null",
		"-p", strconv.Itoa(a.Port), a.Username + "@" + a.Host,
	}
	if len(command) > 0 {
		args = append(args, "--")
		args = append(args, command...)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, w, errw
	// ^C belongs to ssh (the terminal sends it to both): this process only
	// waits for it to end.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("run ssh: %w", err)
	}
	return 0, nil
}
