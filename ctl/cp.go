package ctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/client"
)

func cpCommand() *cli.Command {
	return &cli.Command{
		Name:      "cp",
		Usage:     "copy files and directories between the host and a sandbox",
		UsageText: "matrx cp [flags] SRC DST",
		Description: `One side is ID:PATH (a path in the sandbox), the other a local path, or -
for a tar stream on stdin or stdout, as docker cp does. A directory is
copied whole (modes, modification times and symlinks kept; special files
skipped). If DST is an existing directory, or ends with /, SRC is copied
into it under its own name; otherwise DST is created. Files are written atomically in the
sandbox, as --user (agent by default), and a tar coming out of a sandbox
is unpacked locally without ever leaving DST. A progress bar shows on a
terminal for large transfers.

Examples:
   matrx cp ./data.csv sbx-0123456789ab:/home/agent/data.csv
   matrx cp ./project sbx-0123456789ab:/home/agent/
   matrx cp sbx-0123456789ab:/home/agent/report.pdf .
   matrx cp sbx-0123456789ab:/home/agent/out ./out
   tar -c -C src . | matrx cp - sbx-0123456789ab:/home/agent/src
   matrx cp sbx-0123456789ab:/home/agent/src - | tar -t`,
		Flags: []cli.Flag{
			userFlag(),
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"},
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 2, "a source and a destination"); err != nil {
				return err
			}
			src, dst := parseCpArg(c.Args().Get(0)), parseCpArg(c.Args().Get(1))
			o := cpOptions{user: c.String("user"), progress: !c.Bool("quiet") && isTerminal(os.Stderr), errw: c.App.ErrWriter}
			cl := newClient(c)
			switch {
			case src.id != "" && dst.id != "":
				return fmt.Errorf("cp: both sides are in a sandbox; copy through the host (or exec cp inside one sandbox): %w", errdefs.ErrInvalidArgument)
			case src.id == "" && dst.id == "":
				return fmt.Errorf("cp: neither side is in a sandbox (write one as ID:PATH): %w", errdefs.ErrInvalidArgument)
			case dst.id != "":
				if src.path == "-" {
					return cpTarIn(c.Context, cl, c.App.Reader, dst, o)
				}
				return cpUp(c.Context, cl, src.path, dst, o)
			default:
				if dst.path == "-" {
					return cpTarOut(c.Context, cl, src, c.App.Writer, o)
				}
				return cpDown(c.Context, cl, src, dst.path, o)
			}
		},
	}
}

type cpArg struct{ id, path string }

// parseCpArg splits ID:PATH; anything else is a local path (write
// ./a:b for a local name with a colon).
func parseCpArg(s string) cpArg {
	if id, p, ok := strings.Cut(s, ":"); ok && id != "" && !strings.Contains(id, "/") {
		return cpArg{id: id, path: p}
	}
	return cpArg{path: s}
}

type cpOptions struct {
	user     string
	progress bool
	errw     io.Writer
}

func (a cpArg) check() error {
	if !strings.HasPrefix(a.path, "/") {
		return fmt.Errorf("cp: %s:%s: the sandbox path must be absolute: %w", a.id, a.path, errdefs.ErrInvalidArgument)
	}
	return nil
}

// remoteIsDir reports whether the sandbox path exists as a directory.
func remoteIsDir(ctx context.Context, cl *client.Client, a cpArg, user string) (bool, error) {
	info, err := cl.StatFile(ctx, a.id, a.path, user)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if info.Type == "symlink" {
		// A link to a directory is a directory to copy into.
		l, lerr := cl.ListFiles(ctx, a.id, strings.TrimRight(a.path, "/")+"/", client.ListFilesOptions{User: user, Limit: 1})
		return lerr == nil && l != nil, nil
	}
	return info.Type == "dir", nil
}

func cpUp(ctx context.Context, cl *client.Client, local string, dst cpArg, o cpOptions) error {
	if err := dst.check(); err != nil {
		return err
	}
	st, err := os.Stat(local)
	if err != nil {
		return err
	}
	target := dst.path
	into, err := remoteIsDir(ctx, cl, dst, o.user)
	if err != nil {
		return err
	}
	// DST/ names a directory, made if missing.
	slash := strings.HasSuffix(dst.path, "/")
	if into || slash {
		target = path.Join(dst.path, filepath.Base(filepath.Clean(local)))
	}
	if st.IsDir() {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeLocalTar(pw, local)) }()
		body := newProgress(pr, -1, "upload "+local, o)
		defer body.done()
		_, err := cl.WriteTar(ctx, dst.id, target, body, client.WriteOptions{User: o.user, Parents: true, Size: -1})
		pr.CloseWithError(io.ErrClosedPipe)
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("cp: %s is not a regular file or a directory: %w", local, errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	body := newProgress(f, st.Size(), "upload "+local, o)
	defer body.done()
	mode := fmt.Sprintf("%04o", st.Mode().Perm())
	_, err = cl.WriteFile(ctx, dst.id, target, body, client.WriteOptions{User: o.user, Mode: mode, Size: st.Size(), Parents: slash})
	return err
}

func cpTarIn(ctx context.Context, cl *client.Client, r io.Reader, dst cpArg, o cpOptions) error {
	if err := dst.check(); err != nil {
		return err
	}
	body := newProgress(r, -1, "upload tar", o)
	defer body.done()
	_, err := cl.WriteTar(ctx, dst.id, dst.path, body, client.WriteOptions{User: o.user, Parents: true, Size: -1})
	return err
}

func cpTarOut(ctx context.Context, cl *client.Client, src cpArg, w io.Writer, o cpOptions) error {
	if err := src.check(); err != nil {
		return err
	}
	rc, err := cl.ReadTar(ctx, src.id, src.path, o.user)
	if err != nil {
		return err
	}
	defer rc.Close()
	body := newProgress(rc, -1, "download tar", o)
	defer body.done()
	_, err = io.Copy(w, body)
	return err
}

func cpDown(ctx context.Context, cl *client.Client, src cpArg, local string, o cpOptions) error {
	if err := src.check(); err != nil {
		return err
	}
	info, err := cl.StatFile(ctx, src.id, src.path, o.user)
	if err != nil {
		return err
	}
	isDir := info.Type == "dir"
	if info.Type == "symlink" {
		isDir, _ = remoteIsDir(ctx, cl, src, o.user)
	}
	target := local
	if st, err := os.Stat(local); err == nil && st.IsDir() {
		target = filepath.Join(local, path.Base(strings.TrimRight(src.path, "/")))
	}
	if isDir {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		rc, err := cl.ReadTar(ctx, src.id, src.path, o.user)
		if err != nil {
			return err
		}
		defer rc.Close()
		body := newProgress(rc, -1, "download "+src.path, o)
		defer body.done()
		return extractLocalTar(body, target)
	}
	fr, err := cl.ReadFile(ctx, src.id, src.path, client.ReadOptions{User: o.user})
	if err != nil {
		return err
	}
	defer fr.Close()
	body := newProgress(fr, fr.Length, "download "+src.path, o)
	defer body.done()
	// Into a temp file beside the target, renamed once complete.
	tmp, err := os.CreateTemp(filepath.Dir(target), ".matrx-cp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, body); err != nil {
		tmp.Close()
		return err
	}
	mode, _ := parseOctal(info.Mode)
	tmp.Chmod(os.FileMode(mode) & 0o777)
	if err := tmp.Close(); err != nil {
		return err
	}
	if !fr.ModTime.IsZero() {
		os.Chtimes(tmp.Name(), fr.ModTime, fr.ModTime)
	}
	return os.Rename(tmp.Name(), target)
}

func parseOctal(s string) (uint32, error) {
	var m uint32
	_, err := fmt.Sscanf(s, "%o", &m)
	return m, err
}
