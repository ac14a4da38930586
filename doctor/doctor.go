// Package doctor checks that a host can run matrxd: containerd and runc
// (and crun when matrxd is configured with it),
// cgroups, overlayfs, loop devices and mkfs.ext4 for disk quotas, FUSE and
// its S3 drivers, CNI plugins, kernel knobs,
// the S3 bucket, disk space, the API socket, the SSH gateway's host key
// (its fingerprint, for clients' known_hosts) and the default image. Each
// check returns PASS, WARN or FAIL with what it found and, when it is not
// PASS, how to fix it. `matrx doctor` prints the report; a FAIL makes it
// exit non-zero.
//
// It runs without the daemon and only reads: it never starts, mounts,
// installs or changes anything on the host, and it talks to nothing but
// containerd's socket, the API socket and the configured S3 endpoint.
//
// Every check is a small function over [Host], the roots of /proc, /sys,
// /dev and /etc plus the PATH and CNI directories it looks in, so that
// tests point a check at a fake tree to play a broken host.
package doctor

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/matrx-dev/matrx/hostconfig"
)

// Status is a check's verdict.
type Status string

// Verdicts, from good to bad.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Result is one check's outcome.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	// Detail says what was found, with real values (versions, paths).
	Detail string `json:"detail"`
	// Fix says what to do; empty on PASS.
	Fix string `json:"fix,omitempty"`
}

// Report is the outcome of every check, in a fixed order.
type Report struct {
	// OK is false when any check failed.
	OK     bool     `json:"ok"`
	Checks []Result `json:"checks"`
}

// Result returns the named check's result.
func (r Report) Result(check string) (Result, bool) {
	for _, c := range r.Checks {
		if c.Check == check {
			return c, true
		}
	}
	return Result{}, false
}

// Count returns how many checks ended with s.
func (r Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// WriteTable prints the report as a table, each WARN or FAIL followed by
// its fix, then a one-line summary.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tDETAIL")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Check, oneLine(c.Detail))
		if c.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", oneLine(c.Fix))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d checks: %d passed, %d warnings, %d failed\n",
		len(r.Checks), r.Count(Pass), r.Count(Warn), r.Count(Fail))
	return err
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Config is what the checks compare the host against: matrxd's settings.
// Empty fields take matrxd's defaults (package hostconfig).
type Config struct {
	ContainerdAddress   string
	ContainerdNamespace string
	StateDir            string
	Socket              string
	SocketGroup         string
	Image               string
	// OCIRuntime is matrxd's --oci-runtime (runc when empty).
	OCIRuntime string
	// S3 is the bucket matrxd stores users' files in; no bucket means
	// local storage under the state dir. Credentials come from the
	// standard AWS chain, as for matrxd.
	S3 hostconfig.S3
}

func (c *Config) defaults() {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.ContainerdAddress, hostconfig.ContainerdAddress)
	set(&c.ContainerdNamespace, hostconfig.ContainerdNamespace)
	set(&c.StateDir, hostconfig.StateDir)
	set(&c.Socket, hostconfig.Socket)
	set(&c.SocketGroup, hostconfig.SocketGroup)
	set(&c.Image, hostconfig.Image)
}

// Host is where the checks look. Tests replace it with a fake tree.
type Host struct {
	// Proc, Sys, Dev and Etc are the roots of /proc, /sys, /dev and /etc.
	Proc, Sys, Dev, Etc string
	// Path is the list of directories binaries are looked up in
	// (PATH syntax).
	Path string
	// CNIDirs are searched for CNI plugins, in order.
	CNIDirs []string
}

// RealHost is this machine. Its Path is $PATH plus the sbin directories a
// non-root shell may lack (runc lives in /usr/sbin on Debian).
func RealHost() Host {
	return Host{
		Proc: "/proc", Sys: "/sys", Dev: "/dev", Etc: "/etc",
		Path:    os.Getenv("PATH") + string(os.PathListSeparator) + "/usr/local/sbin:/usr/sbin:/sbin",
		CNIDirs: []string{"/usr/lib/cni", "/opt/cni/bin"},
	}
}

// Option configures optional knobs of Run.
type Option func(*env)

// WithHost points the checks at another host tree (tests).
func WithHost(h Host) Option { return func(e *env) { e.host = h } }

// WithTimeout bounds each check that talks to a service (default 10s).
func WithTimeout(d time.Duration) Option { return func(e *env) { e.timeout = d } }

// env is what every check sees.
type env struct {
	cfg     Config
	host    Host
	timeout time.Duration

	// The containerd client is shared by the containerd and image checks.
	ctrd    *containerd.Client
	ctrdErr error
}

// check is one named host check.
type check struct {
	name string
	run  func(ctx context.Context, e *env) Result
}

// checks lists every check in report order. containerd runs before image,
// which reuses its connection.
func checks() []check {
	return []check{
		{"containerd", checkContainerd},
		{"runc", checkRunc},
		{"oci-runtime", checkOCIRuntime},
		{"cgroups", checkCgroups},
		{"overlayfs", checkOverlay},
		{"disk-quota", checkDiskQuota},
		{"fuse-device", checkFUSEDevice},
		{"fuse-driver", checkFUSEDriver},
		{"fuse-allow-other", checkFUSEConf},
		{"cni-plugins", checkCNI},
		{"ip-forward", checkIPForward},
		{"user-namespaces", checkUserNS},
		{"s3-bucket", checkS3},
		{"state-disk", checkDisk},
		{"socket", checkSocket},
		{"ssh-host-key", checkSSHHostKey},
		{"image", checkImage},
	}
}

// Run runs every check and returns the report. It does not fail: a check
// that cannot run reports why.
func Run(ctx context.Context, cfg Config, opts ...Option) Report {
	cfg.defaults()
	e := &env{cfg: cfg, host: RealHost(), timeout: 10 * time.Second}
	for _, o := range opts {
		o(e)
	}
	defer e.close()
	rep := Report{OK: true}
	for _, c := range checks() {
		r := c.run(ctx, e)
		r.Check = c.name
		if r.Status == Pass {
			r.Fix = ""
		}
		if r.Status == Fail {
			rep.OK = false
		}
		rep.Checks = append(rep.Checks, r)
	}
	return rep
}

func (e *env) close() {
	if e.ctrd != nil {
		e.ctrd.Close()
	}
}

func pass(format string, a ...any) Result {
	return Result{Status: Pass, Detail: fmt.Sprintf(format, a...)}
}

func warn(fix, format string, a ...any) Result {
	return Result{Status: Warn, Detail: fmt.Sprintf(format, a...), Fix: fix}
}

func fail(fix, format string, a ...any) Result {
	return Result{Status: Fail, Detail: fmt.Sprintf(format, a...), Fix: fix}
}

// storageIsS3 reports whether matrxd is configured with a bucket, which
// makes FUSE a hard requirement.
func (e *env) storageIsS3() bool { return e.cfg.S3.Bucket != "" }
