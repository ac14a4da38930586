package relay

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
)

// Options are the relay's arguments (all "--name value" pairs: the shim
// passes the URI's query in random order, so nothing is positional).
type Options struct {
	Dir     string // the process directory (root-only)
	Cap     int64  // bytes kept on disk
	Segment int64  // segment size
	PTY     bool   // fd 3 carries a terminal; fd 4 is unused
	Hold    string // stdin FIFO to hold open, or ""
}

// Args turns o into the URI query the runtime hands containerd.
func (o Options) Args() map[string]string {
	mode := "pipe"
	if o.PTY {
		mode = "pty"
	}
	m := map[string]string{
		"--dir": o.Dir, "--cap": strconv.FormatInt(o.Cap, 10),
		"--segment": strconv.FormatInt(o.Segment, 10), "--mode": mode,
	}
	if o.Hold != "" {
		m["--hold"] = o.Hold
	}
	return m
}

func parse(args []string) (Options, error) {
	var o Options
	var mode string
	fs := flag.NewFlagSet("matrx-relay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.Dir, "dir", "", "process directory")
	fs.Int64Var(&o.Cap, "cap", 16<<20, "bytes of output kept")
	fs.Int64Var(&o.Segment, "segment", 0, "segment size (default cap/8)")
	fs.StringVar(&mode, "mode", "pipe", "pipe or pty")
	fs.StringVar(&o.Hold, "hold", "", "stdin FIFO to hold open")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() != 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.Dir == "":
		return o, errors.New("--dir is required")
	case mode != "pipe" && mode != "pty":
		return o, fmt.Errorf("--mode %q: want pipe or pty", mode)
	case o.Cap < 64<<10:
		return o, fmt.Errorf("--cap %d: at least 65536", o.Cap)
	}
	o.PTY = mode == "pty"
	if o.Segment == 0 {
		o.Segment = max(o.Cap/8, 64<<10)
	}
	if o.Segment < 4<<10 || o.Segment > o.Cap {
		return o, fmt.Errorf("--segment %d: want 4096..cap", o.Segment)
	}
	return o, nil
}
