// Command hotbench measures hot sync against a private local versitygw, next
// to Debian's aws cli (`aws s3 sync`) on the same data in the same run, and
// prints a table. It is a benchmark, not a test: it asserts nothing about
// wall time.
//
//	go run ./mounts/hotsync/cmd/hotbench                 # both cases
//	go run ./mounts/hotsync/cmd/hotbench -cases small    # 2,000 files of 1–16 KiB
//	go run ./mounts/hotsync/cmd/hotbench -cases big      # one 512 MiB file
//	go run ./mounts/hotsync/cmd/hotbench -rtt 20ms       # with S3-like latency
//
// It needs versitygw (bootstrap/tools.sh, or $MATRX_VERSITYGW) and uses
// /usr/bin/aws (not a pyenv shim) when present; without aws it measures hot
// sync alone. All traffic stays on 127.0.0.1.
//
// As root, every directory either tool reads or writes is a sandbox disk
// made by the daemon's own code (mounts/disk: a loop-mounted ext4 image),
// because that is what a sandbox's home is. It matters for the small case:
// creating a file costs ~25 µs there, but ~0.7 ms on this VM's root
// filesystem (ext4 mounted with a vendor "resv_strict" option), which would
// turn the benchmark into a measure of the host's root disk. -disk=false
// uses plain directories under -workdir instead (the default when not root).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/matrx-dev/matrx/mounts/disk"
	"github.com/matrx-dev/matrx/mounts/hotsync"
	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/mounts/s3test"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hotbench:", err)
		os.Exit(1)
	}
}

type options struct {
	cases       string
	files       int
	minSize     int
	maxSize     int
	bigMiB      int
	awsPath     string
	workDir     string
	concurrency int
	verbose     bool
	cpuProfile  string
	disk        bool
	rtt         time.Duration
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var o options
	fl := flag.NewFlagSet("hotbench", flag.ContinueOnError)
	fl.StringVar(&o.cases, "cases", "small,big", "cases to run: small, big")
	fl.IntVar(&o.files, "files", 2000, "files in the small case")
	fl.IntVar(&o.minSize, "min", 1<<10, "smallest file of the small case, bytes")
	fl.IntVar(&o.maxSize, "max", 16<<10, "largest file of the small case, bytes")
	fl.IntVar(&o.bigMiB, "big", 512, "size of the big case's file, MiB")
	fl.StringVar(&o.awsPath, "aws", "/usr/bin/aws", "aws cli to compare with (empty: skip)")
	fl.StringVar(&o.workDir, "workdir", "", "scratch directory (default: a new temp dir, removed afterwards)")
	fl.IntVar(&o.concurrency, "concurrency", hotsync.DefaultConcurrency, "hot sync files in flight")
	fl.BoolVar(&o.verbose, "v", false, "log hot sync")
	fl.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to the file")
	fl.DurationVar(&o.rtt, "rtt", 0, "round-trip time added between the tools and the server (e.g. 20ms, as from EC2 to S3)")
	fl.BoolVar(&o.disk, "disk", os.Geteuid() == 0, "put the directories on sandbox disks (loop-mounted ext4, as the daemon does; needs root)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	work := o.workDir
	if work == "" {
		d, err := os.MkdirTemp("", "hotbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	releaseServer, err := o.place(filepath.Join(work, "versitygw"))
	if err != nil {
		return err
	}
	defer releaseServer()
	srv, err := s3test.Launch(ctx, s3test.Options{Dir: filepath.Join(work, "versitygw")})
	if err != nil {
		return fmt.Errorf("start versitygw: %w", err)
	}
	defer srv.Stop()
	bucket := "hotbench"
	if err := srv.CreateBucket(ctx, bucket); err != nil {
		return err
	}
	endpoint := srv.Endpoint
	if o.rtt > 0 {
		px, err := startDelayProxy(strings.TrimPrefix(srv.Endpoint, "http://"), o.rtt)
		if err != nil {
			return err
		}
		defer px.close()
		endpoint = "http://" + px.addr()
		fmt.Fprintf(out, "network: %v round trip added between both tools and the server (by a proxy in this process: its CPU shows in every client CPU figure)\n", o.rtt)
	}
	store, err := objstore.NewS3(ctx, objstore.S3Config{
		Bucket: bucket, Region: srv.Region, Endpoint: endpoint, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
	})
	if err != nil {
		return err
	}

	if o.awsPath != "" {
		if _, err := os.Stat(o.awsPath); err != nil {
			fmt.Fprintf(out, "aws cli %s not found: measuring hot sync alone\n", o.awsPath)
			o.awsPath = ""
		}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	if o.disk {
		fmt.Fprintln(out, "directories: sandbox disks (loop-mounted ext4 images, as the daemon makes them)")
	} else {
		fmt.Fprintln(out, "directories: plain directories under", work)
	}
	meter := cpuMeter{serverPid: srv.Pid()}
	var rows []row
	for _, name := range strings.Split(o.cases, ",") {
		src := filepath.Join(work, "src-"+name)
		dst := filepath.Join(work, "dst-hotsync-"+name)
		adst := filepath.Join(work, "dst-aws-"+name)
		release, err := o.place(src, dst, adst)
		if err != nil {
			return err
		}
		defer release()
		var files int
		var bytes int64
		switch name {
		case "small":
			files, bytes, err = genSmall(src, o.files, o.minSize, o.maxSize)
		case "big":
			files, bytes, err = genBig(src, int64(o.bigMiB)<<20)
		default:
			return fmt.Errorf("unknown case %q", name)
		}
		if err != nil {
			return fmt.Errorf("generate %s: %w", name, err)
		}
		label := fmt.Sprintf("%s (%d files, %.0f MB)", name, files, float64(bytes)/1e6)
		fmt.Fprintf(out, "case %s ...\n", label)

		// hot sync: up from the source, down into a fresh directory.
		up, err := hotsync.New(hotsync.Config{
			Store: store, Prefix: "bench/hotsync/" + name + "/", Dir: src,
			ManifestPath: filepath.Join(work, "manifest-up-"+name+".json"), SandboxID: "sbx-bench-up",
			Concurrency: o.concurrency, KeepOwner: os.Geteuid() != 0, Logger: logger,
		})
		if err != nil {
			return err
		}
		d, err := meter.timed(func() error { _, err := up.Up(ctx); return err })
		if err != nil {
			return fmt.Errorf("hot sync up: %w", err)
		}
		rows = append(rows, row{"hotsync", label, "up", bytes, d})

		down, err := hotsync.New(hotsync.Config{
			Store: store, Prefix: "bench/hotsync/" + name + "/", Dir: dst,
			ManifestPath: filepath.Join(work, "manifest-down-"+name+".json"), SandboxID: "sbx-bench-down",
			Concurrency: o.concurrency, KeepOwner: os.Geteuid() != 0, Logger: logger,
		})
		if err != nil {
			return err
		}
		d, err = meter.timed(func() error { _, err := down.Down(ctx); return err })
		if err != nil {
			return fmt.Errorf("hot sync down: %w", err)
		}
		if err := sameSize(src, dst, files, bytes); err != nil {
			return fmt.Errorf("hot sync down: %w", err)
		}
		rows = append(rows, row{"hotsync", label, "down", bytes, d})

		if o.awsPath != "" {
			url := "s3://" + bucket + "/bench/aws/" + name + "/"
			d, err := meter.timed(func() error { return awsSync(ctx, o.awsPath, srv, endpoint, work, src, url) })
			if err != nil {
				return fmt.Errorf("aws s3 sync up: %w", err)
			}
			rows = append(rows, row{"aws s3 sync", label, "up", bytes, d})
			d, err = meter.timed(func() error { return awsSync(ctx, o.awsPath, srv, endpoint, work, url, adst) })
			if err != nil {
				return fmt.Errorf("aws s3 sync down: %w", err)
			}
			if err := sameSize(src, adst, files, bytes); err != nil {
				return fmt.Errorf("aws s3 sync down: %w", err)
			}
			rows = append(rows, row{"aws s3 sync", label, "down", bytes, d})
		}
		// Free the disk before the next case.
		release()
	}
	printTable(out, rows)
	return nil
}

type row struct {
	tool, label, dir string
	bytes            int64
	m                measurement
}

func printTable(out io.Writer, rows []row) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tool\tcase\tdirection\tseconds\tMB/s\tvs aws\tclient CPU s\tserver CPU s\t")
	for _, r := range rows {
		speedup := ""
		if r.tool == "hotsync" {
			for _, a := range rows {
				if a.tool != "hotsync" && a.label == r.label && a.dir == r.dir {
					speedup = fmt.Sprintf("%.1fx", a.m.wall.Seconds()/r.m.wall.Seconds())
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%.1f\t%s\t%.2f\t%.2f\t\n", r.tool, r.label, r.dir, r.m.wall.Seconds(),
			float64(r.bytes)/1e6/r.m.wall.Seconds(), speedup, r.m.client.Seconds(), r.m.server.Seconds())
	}
	tw.Flush()
	fmt.Fprintf(out, "client CPU: hot sync in this process, or the aws cli; server CPU: versitygw. %d CPUs, shared by client and server.\n",
		runtime.NumCPU())
}

// cpuMeter reports the CPU time of this process, of its finished children
// (aws) and of the server, for the -cpu column.
type cpuMeter struct{ serverPid int }

type cpuSample struct{ self, children, server time.Duration }

func (m cpuMeter) sample() cpuSample {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return cpuSample{self: tv(self), children: tv(kids), server: procCPU(m.serverPid)}
}

// procCPU reads utime+stime of pid from /proc (0 where there is no /proc).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(fields[11], &ut)
	fmt.Sscan(fields[12], &st)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

type measurement struct {
	wall, client, server time.Duration
}

func (m cpuMeter) timed(fn func() error) (measurement, error) {
	s0 := m.sample()
	start := time.Now()
	err := fn()
	wall := time.Since(start)
	s1 := m.sample()
	return measurement{
		wall:   wall,
		client: s1.self - s0.self + s1.children - s0.children,
		server: s1.server - s0.server,
	}, err
}

// awsSync runs `aws s3 sync FROM TO` against the local server with a clean
// environment: no user AWS config, no pyenv.
func awsSync(ctx context.Context, aws string, srv *s3test.Server, endpoint, work, from, to string) error {
	home := filepath.Join(work, "aws-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, aws, "s3", "sync", from, to,
		"--endpoint-url", endpoint, "--only-show-errors", "--no-progress")
	cmd.Env = []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + home,
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"AWS_DEFAULT_REGION=" + srv.Region,
		"AWS_CONFIG_FILE=" + filepath.Join(home, "config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
	}
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, b)
	}
	return nil
}

// place creates dirs, each on its own sandbox disk with -disk, and returns
// what removes them (safe to call twice).
func (o options) place(dirs ...string) (release func(), err error) {
	var made []string
	release = func() {
		for _, d := range made {
			if o.disk {
				if err := disk.Unmount(d); err != nil {
					fmt.Fprintln(os.Stderr, "hotbench:", err)
					continue // never RemoveAll into a mounted image
				}
				os.Remove(d + ".img")
			}
			os.RemoveAll(d)
		}
		made = nil
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			release()
			return nil, err
		}
		made = append(made, d)
		if o.disk {
			if err := disk.Make(d+".img", d, 4<<30, os.Geteuid(), os.Getegid(), 0); err != nil {
				release()
				return nil, err
			}
		}
	}
	return release, nil
}

// genSmall writes n files of random sizes in [min, max] bytes, spread over
// nested directories.
func genSmall(dir string, n, minSize, maxSize int) (int, int64, error) {
	r := rand.New(rand.NewPCG(1, 2))
	var total int64
	buf := make([]byte, maxSize)
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%20), fmt.Sprintf("e%d", i%7))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return 0, 0, err
		}
		size := minSize + r.IntN(maxSize-minSize+1)
		for j := range size {
			buf[j] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d.dat", i)), buf[:size], 0o644); err != nil {
			return 0, 0, err
		}
		total += int64(size)
	}
	return n, total, nil
}

// genBig writes one file of size bytes of pseudo-random data.
func genBig(dir string, size int64) (int, int64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	f, err := os.Create(filepath.Join(dir, "big.bin"))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	src := rand.NewChaCha8([32]byte{7})
	if _, err := io.CopyN(f, src, size); err != nil {
		return 0, 0, err
	}
	return 1, size, f.Close()
}

// sameSize checks that dst holds as many files and bytes as src.
func sameSize(src, dst string, files int, bytes int64) error {
	var n int
	var b int64
	err := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n++
			b += fi.Size()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n != files || b != bytes {
		return fmt.Errorf("%s has %d files, %d bytes; %s has %d, %d", dst, n, b, src, files, bytes)
	}
	return nil
}
