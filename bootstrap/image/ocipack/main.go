// Command ocipack packs a root filesystem directory into an OCI image archive:
// a tar of an OCI image layout (oci-layout, index.json, blobs/sha256/...) with
// one gzip layer, ready for containerd's Import or `ctr images import`.
//
// It owns exactly that conversion, directory in, archive out. It must not
// build or modify the root filesystem (the build scripts next to it do that),
// talk to containerd, or reach the network. No registry is reachable where
// matrx runs, so images are built locally and imported from these archives.
//
// Run it as root: the layer records the owner, group and mode of every file as
// stat reports them, and only root can read every file of a real rootfs.
//
//	ocipack --rootfs DIR --name localhost/matrx/minimal:latest --out build/images/minimal.tar
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ocipack: %v\n", err)
		os.Exit(1)
	}
}

// envList is a repeatable --env flag.
type envList []string

func (e *envList) String() string { return strings.Join(*e, ",") }

func (e *envList) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("env %q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

// run turns the command line into a Config and packs.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ocipack", flag.ContinueOnError)
	var (
		cfg       Config
		env       envList
		epoch     = fs.String("source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "clamp file mtimes to, and date the image at, this Unix time (default $SOURCE_DATE_EPOCH; empty: keep mtimes, no date)")
		allowUser = fs.Bool("allow-non-root", false, "pack even when not running as root (ownership and unreadable files will be wrong)")
	)
	fs.StringVar(&cfg.RootFS, "rootfs", "", "root filesystem directory to pack (required)")
	fs.StringVar(&cfg.Name, "name", "", "image name, e.g. localhost/matrx/minimal:latest (required)")
	fs.StringVar(&cfg.Out, "out", "", "output archive path (required)")
	fs.StringVar(&cfg.User, "user", "1000:1000", "image config User")
	fs.StringVar(&cfg.WorkingDir, "workdir", "/home/agent", "image config WorkingDir")
	fs.Var(&env, "env", "image config Env entry KEY=VALUE, repeatable (default PATH only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.RootFS == "" || cfg.Name == "" || cfg.Out == "" {
		fs.Usage()
		return errors.New("--rootfs, --name and --out are required")
	}
	if os.Geteuid() != 0 && !*allowUser {
		return errors.New("must run as root to read every file and its ownership (or pass --allow-non-root)")
	}
	cfg.Arch = runtime.GOARCH
	cfg.Env = env
	if len(cfg.Env) == 0 {
		cfg.Env = []string{DefaultPath}
	}
	if *epoch != "" {
		sec, err := strconv.ParseInt(*epoch, 10, 64)
		if err != nil || sec < 0 {
			return fmt.Errorf("source date epoch %q: want a non-negative Unix time", *epoch)
		}
		cfg.SourceDate = time.Unix(sec, 0).UTC()
	}

	res, err := Pack(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ocipack: wrote %s\n", cfg.Out)
	fmt.Fprintf(stdout, "  image    %s\n", res.Name)
	fmt.Fprintf(stdout, "  manifest %s\n", res.Manifest)
	fmt.Fprintf(stdout, "  layer    %s (%d bytes gzip, %d bytes tar, %d entries, %d skipped)\n",
		res.Layer, res.LayerSize, res.TarSize, res.Entries, len(res.Skipped))
	if len(res.Skipped) > 0 {
		fmt.Fprintf(stdout, "  skipped  %s (device nodes and sockets; the runtime provides /dev)\n", strings.Join(res.Skipped, " "))
	}
	return nil
}
