// Package sshgate is matrxd's SSH gateway: one SSH server (on
// golang.org/x/crypto/ssh) for every sandbox, so that no sandbox runs an
// sshd, holds a key or opens a port, whatever its image. It owns the host
// key, authentication (a public key granted to one sandbox and one user,
// sandbox.GrantAccess) and the relaying of channels; it owns no process:
// every shell, command and SFTP server is a process of the sandbox
// (sandbox.Manager.StartProcess: exec's hardening, env and cgroups, as the
// session's user, inside the sandbox's namespaces), and port forwarding
// dials from inside the sandbox's own network namespace (Manager.Dial).
//
// What a client gets:
//   - public-key authentication only; the SSH user must be the user the
//     key was granted for (agent or root); every login and every rejection
//     is logged with the key's fingerprint (and the sandbox, once known);
//   - sessions: a shell or a command, with a terminal (pty-req,
//     window-change) or without (stdout and stderr apart, stdin with EOF),
//     the command's exit status, signals, env requests for LANG, LC_* and
//     TERM only, and the "sftp" subsystem (/.matrx/init sftp, which scp
//     uses as well);
//   - direct-tcpip (ssh -L) to localhost inside the sandbox only;
//   - nothing else: agent forwarding, X11, remote forwarding
//     (tcpip-forward) and every other channel or request are refused.
//
// A connection lives only while its grant does: it is checked every
// checkEvery and closed once the sandbox stops, the key is revoked or the
// key expires, which ends its sessions. When a session's channel closes
// while its process still runs, the process tree gets SIGHUP, then SIGKILL
// after hangupGrace, and the process is forgotten (its output with it).
//
// Process output reaches the client through the process's output relay
// (runtime/relay), which keeps at most the process output limit on disk:
// a client that falls further behind loses the oldest bytes. A terminal
// shows a notice and goes on; a session without a terminal (a byte stream:
// sftp, `ssh host cat file`) is ended with exit status 255 and a message
// on stderr rather than passing on a corrupt stream. SFTP never gets there
// (a client asks for at most a few MiB at a time).
package sshgate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/crypto/ssh"

	"github.com/matrx-dev/matrx/sandbox"
)

// Tunables.
const (
	// checkEvery is how often a connection's grant is re-checked.
	checkEvery = 2 * time.Second
	// handshakeTimeout bounds key exchange and authentication.
	handshakeTimeout = 30 * time.Second
	// maxChannels bounds the open channels of one connection.
	maxChannels = 64
	// DefaultMaxConns bounds the gateway's connections at once.
	DefaultMaxConns = 1024
	// hangupGrace is how long a session's process has after SIGHUP.
	hangupGrace = 2 * time.Second
)

// Config holds the gateway's dependencies.
type Config struct {
	Manager *sandbox.Manager
	HostKey ssh.Signer
	Logger  *slog.Logger
	// MaxConns bounds connections at once (default DefaultMaxConns).
	MaxConns int
}

// Gateway is the SSH server.
type Gateway struct {
	mgr  *sandbox.Manager
	key  ssh.Signer
	log  *slog.Logger
	sem  chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]struct{}
}

// New checks the configuration.
func New(cfg Config) (*Gateway, error) {
	if cfg.Manager == nil || cfg.HostKey == nil {
		return nil, fmt.Errorf("ssh gateway needs a sandbox manager and a host key: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	return &Gateway{mgr: cfg.Manager, key: cfg.HostKey, log: cfg.Logger, sem: make(chan struct{}, cfg.MaxConns), conn: map[net.Conn]struct{}{}}, nil
}

// Fingerprint is the host key's SHA256 fingerprint.
func (g *Gateway) Fingerprint() string { return ssh.FingerprintSHA256(g.key.PublicKey()) }

// KnownHosts is the known_hosts line of the gateway reached at host:port.
func (g *Gateway) KnownHosts(host string, port int) string {
	return KnownHostsLine(host, port, g.key.PublicKey())
}

// KnownHostsLine is a known_hosts line for key at host:port ("[host]:port"
// unless the port is 22).
func KnownHostsLine(host string, port int, key ssh.PublicKey) string {
	h := host
	if port != 22 {
		h = "[" + host + "]:" + strconv.Itoa(port)
	}
	return h + " " + string(ssh.MarshalAuthorizedKey(key)[:len(ssh.MarshalAuthorizedKey(key))-1])
}

// Serve accepts connections on l until ctx ends, then closes every
// connection (ending its sessions) and returns once they are gone.
func (g *Gateway) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer func() {
		g.mu.Lock()
		for c := range g.conn {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("ssh gateway accept: %w", err)
		}
		select {
		case g.sem <- struct{}{}:
		default:
			g.log.Warn("ssh connection refused: the gateway is at its connection limit", "remote", c.RemoteAddr().String(), "limit", cap(g.sem))
			c.Close()
			continue
		}
		g.mu.Lock()
		g.conn[c] = struct{}{}
		g.mu.Unlock()
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer func() { <-g.sem }()
			defer func() {
				g.mu.Lock()
				delete(g.conn, c)
				g.mu.Unlock()
				c.Close()
			}()
			g.handle(ctx, c)
		}()
	}
}

// serverConfig is a connection's SSH configuration. The login a key opens
// travels in the Permissions of the key that authenticated.
func (g *Gateway) serverConfig(ctx context.Context, remote string) *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-matrx",
		MaxAuthTries:  6,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			fp := ssh.FingerprintSHA256(key)
			l, err := g.mgr.LookupAccess(ctx, key.Marshal())
			reject := func(reason string, err error) (*ssh.Permissions, error) {
				attrs := []any{"fingerprint", fp, "ssh_user", meta.User(), "remote", remote, "reason", reason}
				if l != nil {
					attrs = append(attrs, "sandbox_id", l.SandboxID, "user_id", l.UserID)
				}
				g.log.Warn("ssh login rejected", attrs...)
				return nil, err
			}
			switch {
			case err != nil && errdefs.IsNotFound(err):
				return reject("no running sandbox holds this key", err)
			case err != nil:
				return reject(err.Error(), err)
			case meta.User() != l.User:
				return reject(fmt.Sprintf("the key was granted for user %s", l.User), fmt.Errorf("user %q does not match the grant", meta.User()))
			}
			return &ssh.Permissions{Extensions: map[string]string{
				"sandbox_id": l.SandboxID, "user_id": l.UserID, "user": l.User, "fingerprint": fp,
			}}, nil
		},
	}
	cfg.AddHostKey(g.key)
	return cfg
}

// handle serves one connection.
func (g *Gateway) handle(ctx context.Context, c net.Conn) {
	remote := c.RemoteAddr().String()
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(c, g.serverConfig(ctx, remote))
	if err != nil {
		g.log.Debug("ssh handshake ended", "remote", remote, "error", err)
		return
	}
	c.SetDeadline(time.Time{})
	defer sc.Close()
	ext := sc.Permissions.Extensions
	login := &sandbox.Login{SandboxID: ext["sandbox_id"], UserID: ext["user_id"], User: ext["user"], Fingerprint: ext["fingerprint"]}
	log := g.log.With("sandbox_id", login.SandboxID, "user_id", login.UserID, "fingerprint", login.Fingerprint, "ssh_user", login.User)
	log.Info("ssh login", "remote", remote, "client", string(sc.ClientVersion()))
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The connection lives while its grant does.
	go func() {
		t := time.NewTicker(checkEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				sc.Close()
				return
			case <-t.C:
				if !g.mgr.AccessValid(ctx, login) {
					log.Info("ssh connection closed: its sandbox stopped, or its key was revoked or expired")
					sc.Close()
					return
				}
			}
		}
	}()
	go g.globalRequests(reqs, log)
	var wg sync.WaitGroup
	open := make(chan struct{}, maxChannels)
	for nc := range chans {
		select {
		case open <- struct{}{}:
		default:
			nc.Reject(ssh.ResourceShortage, fmt.Sprintf("at most %d channels per connection", maxChannels))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-open }()
			g.channel(ctx, login, nc, log)
		}()
	}
	cancel()
	wg.Wait()
	log.Info("ssh connection ended", "remote", remote, "duration_ms", time.Since(start).Milliseconds())
}

// globalRequests refuses every global request: remote forwarding
// (tcpip-forward) above all.
func (g *Gateway) globalRequests(reqs <-chan *ssh.Request, log *slog.Logger) {
	for r := range reqs {
		if r.Type == "tcpip-forward" || r.Type == "streamlocal-forward@openssh.com" {
			log.Warn("ssh remote forwarding refused", "request", r.Type)
		}
		if r.WantReply {
			r.Reply(false, nil)
		}
	}
}

// channel dispatches a new channel by type.
func (g *Gateway) channel(ctx context.Context, login *sandbox.Login, nc ssh.NewChannel, log *slog.Logger) {
	switch nc.ChannelType() {
	case "session":
		ch, reqs, err := nc.Accept()
		if err != nil {
			return
		}
		s := &session{g: g, login: login, ch: ch, log: log}
		s.serve(ctx, reqs)
	case "direct-tcpip":
		g.directTCPIP(ctx, login, nc, log)
	default:
		log.Warn("ssh channel refused", "type", nc.ChannelType())
		nc.Reject(ssh.Prohibited, nc.ChannelType()+" channels are not allowed")
	}
}

// directTCPIP serves ssh -L: a TCP connection to a port on localhost
// inside the sandbox's own network namespace, nothing else.
func (g *Gateway) directTCPIP(ctx context.Context, login *sandbox.Login, nc ssh.NewChannel, log *slog.Logger) {
	var p struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
		nc.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	switch p.Host {
	case "localhost", "127.0.0.1", "::1", login.SandboxID:
	default:
		log.Warn("ssh forwarding refused", "host", p.Host, "port", p.Port)
		nc.Reject(ssh.Prohibited, fmt.Sprintf("forwarding reaches only ports inside the sandbox: use localhost, not %q", p.Host))
		return
	}
	if p.Port < 1 || p.Port > 65535 {
		nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("port %d is not a TCP port", p.Port))
		return
	}
	up, err := g.mgr.Dial(ctx, login.SandboxID, int(p.Port))
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		up.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	stop := context.AfterFunc(ctx, func() { ch.Close(); up.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		copyAll(up, ch)
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		copyAll(ch, up)
		ch.CloseWrite()
	}()
	wg.Wait()
	ch.Close()
	up.Close()
}
