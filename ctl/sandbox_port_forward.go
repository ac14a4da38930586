package ctl

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/client"
)

func portForwardCommand() *cli.Command {
	return &cli.Command{
		Name:      "port-forward",
		Usage:     "forward local TCP ports to ports inside a sandbox, over the daemon's socket",
		UsageText: "matrx port-forward ID [LOCAL:]REMOTE... [--address ADDR]",
		Description: `Listens on LOCAL (on 127.0.0.1 unless --address says otherwise) and carries
every connection to REMOTE on 127.0.0.1 inside the sandbox, through the
daemon's socket: nothing is opened on the host for anyone else, and it
works whatever the sandbox's network mode. LOCAL 0 picks a free port; a
bare PORT uses the same number on both sides. Runs until interrupted.

Examples:
   matrx port-forward sbx-0123456789ab 8080:80
   matrx port-forward sbx-0123456789ab 5432 0:3000`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "address", Value: "127.0.0.1", Usage: "local address to listen on"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 2 {
				return fmt.Errorf("port-forward needs a sandbox id and at least one [LOCAL:]REMOTE (see 'matrx port-forward --help'): %w", errdefs.ErrInvalidArgument)
			}
			var maps []portMapping
			for _, a := range c.Args().Slice()[1:] {
				m, err := parsePortMapping(a)
				if err != nil {
					return err
				}
				maps = append(maps, m)
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runPortForward(ctx, newClient(c), c.Args().First(), c.String("address"), maps, c.App.Writer, c.App.ErrWriter)
		},
	}
}

// portMapping is one LOCAL:REMOTE pair.
type portMapping struct{ local, remote int }

func parsePortMapping(s string) (portMapping, error) {
	l, r, found := strings.Cut(s, ":")
	if !found {
		l, r = s, s
	}
	local, lerr := strconv.Atoi(l)
	remote, rerr := strconv.Atoi(r)
	if lerr != nil || rerr != nil || local < 0 || local > 65535 || remote < 1 || remote > 65535 {
		return portMapping{}, fmt.Errorf("port mapping %q: want [LOCAL:]REMOTE, ports 1-65535 (LOCAL 0 picks one): %w", s, errdefs.ErrInvalidArgument)
	}
	return portMapping{local, remote}, nil
}

func runPortForward(ctx context.Context, cl *client.Client, id, addr string, maps []portMapping, w, errw io.Writer) error {
	s, err := cl.Get(ctx, id)
	if err != nil {
		return err
	}
	if s.Status != "ready" && s.Status != "running" {
		return fmt.Errorf("sandbox %s is %s, not running: %w", id, s.Status, errdefs.ErrFailedPrecondition)
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for _, m := range maps {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(m.local)))
		if err != nil {
			return fmt.Errorf("listen on %s port %d: %w", addr, m.local, err)
		}
		ls = append(ls, l)
		fmt.Fprintf(w, "Forwarding from %s -> %s:%d\n", l.Addr(), id, m.remote)
	}
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Add(1)
		go func(l net.Listener, remote int) {
			defer wg.Done()
			for {
				local, err := l.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					forwardOne(ctx, cl, id, remote, local, errw)
				}()
			}
		}(l, maps[i].remote)
	}
	<-ctx.Done()
	for _, l := range ls {
		l.Close()
	}
	wg.Wait()
	return nil
}

// forwardOne carries one local connection to the sandbox's port, both
// ways, passing half-closes on.
func forwardOne(ctx context.Context, cl *client.Client, id string, remote int, local net.Conn, errw io.Writer) {
	defer local.Close()
	up, err := cl.ConnectPort(ctx, id, remote)
	if err != nil {
		fmt.Fprintf(errw, "matrx: port-forward to %s:%d: %v\n", id, remote, err)
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { local.Close(); up.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		io.Copy(up, local)
		up.CloseWrite()
		close(done)
	}()
	io.Copy(local, up)
	if tc, ok := local.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	<-done
}
