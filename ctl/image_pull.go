package ctl

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
)

func imagePullCommand() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "pull an image from its registry",
		UsageText: "matrx image pull REF [--username USER --password-stdin] [--platform OS/ARCH] [--json]",
		Description: `Pulls REF through the daemon and prints the name it is stored under and its
digest. Without --username the daemon's credentials are used (--registry-config,
or Amazon ECR for *.dkr.ecr.REGION.amazonaws.com). With --username the password
is read from stdin (never from the command line, where ps would show it) and
used for this pull only. On a terminal a progress bar shows the download;
otherwise each layer prints a line when it starts and when it is complete.

Examples:
   matrx image pull registry.example:5000/team/sandbox:1.4
   echo "$TOKEN" | matrx image pull registry.example:5000/team/sandbox:1.4 --username ci --password-stdin`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "username", Usage: "registry user for this pull (with --password-stdin)"},
			&cli.BoolFlag{Name: "password-stdin", Usage: "read the registry password (or token) from stdin"},
			&cli.StringFlag{Name: "platform", Usage: "os/arch[/variant] (default: the daemon's)"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := exactArgs(c, 1, "one image reference"); err != nil {
				return err
			}
			o := pullOptions{req: apitype.PullRequest{Ref: c.Args().First(), Platform: c.String("platform")}, json: c.Bool("json")}
			switch {
			case c.Bool("password-stdin"):
				pw, err := readPassword(os.Stdin)
				if err != nil {
					return err
				}
				o.req.Auth = &apitype.RegistryAuth{Username: c.String("username"), Password: pw}
			case c.IsSet("username"):
				return fmt.Errorf("--username needs --password-stdin (a password on the command line would show in ps): %w", errdefs.ErrInvalidArgument)
			}
			o.bar = writerIsTerminal(c.App.Writer) && !o.json
			return runPull(c.Context, newClient(c), o, c.App.Writer)
		},
	}
}

// readPassword reads the first line of r, without its line ending.
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read password from stdin: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", fmt.Errorf("--password-stdin: stdin held no password: %w", errdefs.ErrInvalidArgument)
	}
	return pw, nil
}

// writerIsTerminal reports whether w is a terminal (progress.go's
// isTerminal, for any writer).
func writerIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}

type pullOptions struct {
	req  apitype.PullRequest
	json bool
	bar  bool
}

func runPull(ctx context.Context, cl *client.Client, o pullOptions, w io.Writer) error {
	p := newPullPrinter(w, o.req.Ref, o.bar)
	progress := p.event
	if o.json {
		progress = nil
	}
	done, err := cl.PullImage(ctx, o.req, progress)
	p.finish(err == nil)
	if err != nil {
		return err
	}
	if o.json {
		return printJSON(w, done)
	}
	_, err = fmt.Fprintf(w, "%s %s\n", done.Image, done.Digest)
	return err
}

// pullPrinter shows a pull's progress: a bar redrawn in place on a
// terminal, plain lines (a layer's start and end) elsewhere.
type pullPrinter struct {
	w      io.Writer
	ref    string
	bar    bool
	layers map[string]*[2]int64 // done, total
	order  []string
	drawn  time.Time
}

func newPullPrinter(w io.Writer, ref string, bar bool) *pullPrinter {
	return &pullPrinter{w: w, ref: ref, bar: bar, layers: map[string]*[2]int64{}}
}

func (p *pullPrinter) event(ev apitype.PullEvent) {
	if ev.Done == nil || ev.Total == nil {
		return
	}
	l, seen := p.layers[ev.Layer]
	if !seen {
		l = &[2]int64{}
		p.layers[ev.Layer] = l
		p.order = append(p.order, ev.Layer)
	}
	wasDone := seen && l[1] > 0 && l[0] >= l[1]
	l[0], l[1] = *ev.Done, *ev.Total
	if p.bar {
		if time.Since(p.drawn) > 100*time.Millisecond {
			p.draw()
		}
		return
	}
	short := shortDigest(ev.Layer)
	if !seen {
		fmt.Fprintf(p.w, "layer %s: %s\n", short, mib(l[1]))
	}
	if !wasDone && l[1] > 0 && l[0] >= l[1] {
		fmt.Fprintf(p.w, "layer %s: complete\n", short)
	}
}

func (p *pullPrinter) draw() {
	var done, total int64
	complete := 0
	for _, d := range p.order {
		l := p.layers[d]
		done, total = done+l[0], total+l[1]
		if l[1] > 0 && l[0] >= l[1] {
			complete++
		}
	}
	const width = 30
	filled := 0
	if total > 0 {
		filled = int(done * width / total)
	}
	fmt.Fprintf(p.w, "\r%s [%s%s] %s / %s, %d/%d layers ", p.ref,
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), mib(done), mib(total), complete, len(p.order))
	p.drawn = time.Now()
}

func (p *pullPrinter) finish(ok bool) {
	if p.bar && len(p.order) > 0 {
		if ok {
			for _, l := range p.layers {
				l[0] = l[1]
			}
		}
		p.draw()
		fmt.Fprintln(p.w)
	}
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
