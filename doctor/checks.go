package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/hostconfig"
)

var versionRe = regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`)

// majorMinor extracts the first "X.Y" of a version string.
func majorMinor(v string) (int, int, bool) {
	m := versionRe.FindStringSubmatch(v)
	if m == nil {
		return 0, 0, false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major, minor, true
}

// socketPath strips a unix:// scheme from a containerd address.
func socketPath(addr string) string { return strings.TrimPrefix(addr, "unix://") }

const fixStartContainerd = "start containerd (`systemctl start containerd`, or `containerd &` where PID 1 is not systemd; `make up` does it) " +
	"or point --containerd-address / MATRX_CONTAINERD_ADDRESS at its socket"

// containerdClient connects once; the image check reuses the connection.
func (e *env) containerdClient(ctx context.Context) (*containerd.Client, string, error) {
	addr := socketPath(e.cfg.ContainerdAddress)
	if e.ctrd != nil || e.ctrdErr != nil {
		return e.ctrd, addr, e.ctrdErr
	}
	st, err := os.Stat(addr)
	switch {
	case errors.Is(err, os.ErrNotExist):
		e.ctrdErr = fmt.Errorf("no containerd socket at %s: %w", addr, errdefs.ErrNotFound)
	case errors.Is(err, os.ErrPermission):
		e.ctrdErr = fmt.Errorf("cannot reach %s: %w", addr, errdefs.ErrPermissionDenied)
	case err != nil:
		e.ctrdErr = fmt.Errorf("stat %s: %w", addr, err)
	case st.Mode()&os.ModeSocket == 0:
		e.ctrdErr = fmt.Errorf("%s is not a socket: %w", addr, errdefs.ErrFailedPrecondition)
	}
	if e.ctrdErr != nil {
		return nil, addr, e.ctrdErr
	}
	c, err := containerd.New(addr, containerd.WithTimeout(e.timeout))
	if err != nil {
		e.ctrdErr = fmt.Errorf("connect to %s: %w", addr, err)
		return nil, addr, e.ctrdErr
	}
	e.ctrd = c
	return c, addr, nil
}

func checkContainerd(ctx context.Context, e *env) Result {
	c, addr, err := e.containerdClient(ctx)
	switch {
	case errdefs.IsNotFound(err):
		return fail(fixStartContainerd, "no socket at %s: containerd is not running (or listens elsewhere)", addr)
	case errdefs.IsPermissionDenied(err):
		return fail("run `matrx doctor` as root (containerd's socket is root-only)", "permission denied on %s", addr)
	case errdefs.IsFailedPrecondition(err):
		return fail(fixStartContainerd, "%s exists but is not a socket", addr)
	case err != nil:
		return fail(fixStartContainerd, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	v, err := c.Version(ctx)
	if err != nil {
		e.ctrdErr = fmt.Errorf("containerd at %s does not answer: %w", addr, err)
		if isPermission(err) {
			return fail("run `matrx doctor` as root (containerd's socket is root-only)", "%v", e.ctrdErr)
		}
		return fail("check containerd's log and restart it; "+fixStartContainerd, "%v", e.ctrdErr)
	}
	found := fmt.Sprintf("containerd %s (revision %s) at %s", v.Version, v.Revision, addr)
	major, minor, ok := majorMinor(v.Version)
	switch {
	case !ok:
		return warn("check that this is containerd 1.6 or newer", "%s: version not understood", found)
	case major < 1 || (major == 1 && minor < 6):
		return warn("upgrade containerd to 1.6 or newer (Debian 12: apt-get install containerd)", "%s is older than 1.6, the oldest release matrx runs on", found)
	}
	return pass("%s", found)
}

func isPermission(err error) bool {
	return errors.Is(err, os.ErrPermission) || strings.Contains(strings.ToLower(err.Error()), "permission denied")
}

func checkImage(ctx context.Context, e *env) Result {
	c, _, err := e.containerdClient(ctx)
	if err == nil && c == nil {
		err = errdefs.ErrUnavailable
	}
	if err != nil {
		return warn("fix the containerd check first", "not checked: containerd is unreachable")
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(ctx, e.cfg.ContainerdNamespace), e.timeout)
	defer cancel()
	img, err := c.GetImage(ctx, e.cfg.Image)
	if errdefs.IsNotFound(err) {
		if !strings.HasPrefix(e.cfg.Image, "localhost/") {
			// A registry image: the first create pulls it (config.pull
			// if_not_present), if the registry and credentials allow.
			return warn("pull it now to find out whether the registry and credentials work: `matrx image pull "+e.cfg.Image+"`",
				"image %s is not in containerd namespace %q yet: the first create without config.image pulls it", e.cfg.Image, e.cfg.ContainerdNamespace)
		}
		fix := "import it: `matrx image import ARCHIVE` with matrxd running"
		if e.cfg.Image == hostconfig.Image {
			fix = "build and import it: `make image`, then `matrx image import build/images/sandbox.tar` (make up does both)"
		}
		return fail(fix, "image %s is not in containerd namespace %q: creates without config.image fail", e.cfg.Image, e.cfg.ContainerdNamespace)
	}
	if err != nil {
		return warn("fix the containerd check first", "cannot look up image %s: %v", e.cfg.Image, err)
	}
	size, _ := img.Size(ctx)
	digest := img.Target().Digest.String()
	if len(digest) > 19 {
		digest = digest[:19]
	}
	return pass("%s present in namespace %q (%s, %.1f MiB)", e.cfg.Image, e.cfg.ContainerdNamespace, digest, float64(size)/(1<<20))
}

func checkRunc(ctx context.Context, e *env) Result {
	const fix = "install runc (Debian: apt-get install runc; bootstrap/install.sh does it)"
	p, err := e.host.lookPath("runc")
	if err != nil {
		return fail(fix, "runc not found in %s", e.host.Path)
	}
	line, err := firstLineOf(ctx, e.timeout, p, "--version")
	if err != nil {
		return fail(fix, "%s does not run: %v", p, err)
	}
	v := strings.TrimPrefix(line, "runc version ")
	major, _, ok := majorMinor(v)
	if !ok {
		return warn("check the runc binary", "%s: version not understood: %q", p, line)
	}
	if major < 1 {
		return warn("upgrade runc to 1.0 or newer (Debian 12: apt-get install runc)", "runc %s at %s is older than 1.0", v, p)
	}
	return pass("runc %s at %s", v, p)
}

// checkOCIRuntime checks the OCI runtime matrxd is configured with
// (--oci-runtime): runc needs nothing beyond the runc check; crun must be
// installed and, on a hybrid cgroup host, find no controller in cgroup2,
// which crun refuses ("cgroups in hybrid mode not supported") and matrxd
// refuses at startup.
func checkOCIRuntime(ctx context.Context, e *env) Result {
	name := e.cfg.OCIRuntime
	switch name {
	case "", "runc":
		return pass("runc (the default; see the runc check)")
	case "crun":
	default:
		return fail("set --oci-runtime (MATRX_OCI_RUNTIME) to runc or crun", "oci runtime %q is not one matrxd knows", name)
	}
	const fix = "install crun (Debian: apt-get install crun; bootstrap/install.sh does it), or use --oci-runtime runc"
	p, err := e.host.lookPath("crun")
	if err != nil {
		return fail(fix, "crun not found in %s", e.host.Path)
	}
	line, err := firstLineOf(ctx, e.timeout, p, "--version")
	if err != nil {
		return fail(fix, "%s does not run: %v", p, err)
	}
	ctrls, err := os.ReadFile(e.host.sys("fs/cgroup/unified/cgroup.controllers"))
	if err == nil && strings.TrimSpace(string(ctrls)) != "" {
		return fail("mount those controllers as cgroup v1 hierarchies (as systemd's hybrid layout does), boot with cgroup v2 only, or use --oci-runtime runc",
			"%s at %s refuses this hybrid cgroup host: its cgroup2 (/sys/fs/cgroup/unified) holds controllers (%s)", line, p, strings.TrimSpace(string(ctrls)))
	}
	return pass("%s at %s", line, p)
}

// cgroupControllersV1 are the controllers matrx uses: cpu quota, memory,
// pids limits, and freezer (v1) to kill an exec's whole process tree.
func cgroupControllersV1() []string { return []string{"cpu", "memory", "pids", "freezer"} }

func checkCgroups(_ context.Context, e *env) Result {
	ms, err := mounts(e.host)
	if err != nil {
		return fail("mount /proc", "cannot read the mount table: %v", err)
	}
	for _, m := range ms {
		if m.fstype == "cgroup2" && m.point == "/sys/fs/cgroup" {
			return checkCgroupV2(e)
		}
	}
	enabled := map[string]bool{}
	ls, err := lines(e.host.proc("cgroups"))
	if err != nil {
		return fail("mount /proc", "cannot read /proc/cgroups: %v", err)
	}
	for _, l := range ls {
		f := strings.Fields(l)
		if len(f) == 4 && f[3] == "1" {
			enabled[f[0]] = true
		}
	}
	mounted := map[string]bool{}
	hybrid := false
	for _, m := range ms {
		switch m.fstype {
		case "cgroup":
			for _, o := range m.superOpts {
				mounted[o] = true
			}
		case "cgroup2":
			hybrid = true
		}
	}
	if len(mounted) == 0 {
		return fail("mount the cgroup v1 controllers under /sys/fs/cgroup (e.g. `mount -t cgroup -o memory cgroup /sys/fs/cgroup/memory`) or boot with cgroup v2",
			"no cgroup filesystem is mounted")
	}
	var disabled, unmounted []string
	for _, c := range cgroupControllersV1() {
		switch {
		case !enabled[c]:
			disabled = append(disabled, c)
		case !mounted[c]:
			unmounted = append(unmounted, c)
		}
	}
	mode := "v1"
	if hybrid {
		mode = "v1 (hybrid: cgroup2 also mounted)"
	}
	if len(disabled) > 0 {
		return fail("enable them in the kernel (remove cgroup_disable= from the kernel command line; CONFIG_CGROUP_*)",
			"cgroup %s: controllers not enabled in /proc/cgroups: %s", mode, strings.Join(disabled, ", "))
	}
	if len(unmounted) > 0 {
		return fail("mount each one, e.g. `mkdir -p /sys/fs/cgroup/freezer && mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer`",
			"cgroup %s: controllers not mounted: %s", mode, strings.Join(unmounted, ", "))
	}
	return pass("cgroup %s: %s enabled and mounted", mode, strings.Join(cgroupControllersV1(), ", "))
}

func checkCgroupV2(e *env) Result {
	s, err := readTrimmed(e.host.sys("fs/cgroup/cgroup.controllers"))
	if err != nil {
		return fail("check the cgroup2 mount at /sys/fs/cgroup", "cgroup v2: cannot read cgroup.controllers: %v", err)
	}
	have := strings.Fields(s)
	var missing []string
	for _, c := range []string{"cpu", "memory", "pids"} {
		if !slices.Contains(have, c) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fail("enable the controllers in the kernel, and make sure no cgroup v1 hierarchy holds them (cgroup_no_v1=all)",
			"cgroup v2: controllers missing from cgroup.controllers: %s (have: %s)", strings.Join(missing, ", "), s)
	}
	return pass("cgroup v2: %s available (freezer is built in)", s)
}

func checkOverlay(_ context.Context, e *env) Result {
	ls, err := lines(e.host.proc("filesystems"))
	if err != nil {
		return fail("mount /proc", "cannot read /proc/filesystems: %v", err)
	}
	for _, l := range ls {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == "overlay" {
			return pass("overlay listed in /proc/filesystems")
		}
	}
	return fail("`modprobe overlay` and persist it (`echo overlay > /etc/modules-load.d/matrx.conf`)",
		"overlay is not in /proc/filesystems: containerd's overlayfs snapshotter cannot work")
}

// checkDiskQuota: each sandbox's home is an ext4 image on a loop device
// (mounts/disk), made with mkfs.ext4. matrxd's default quota is on.
func checkDiskQuota(_ context.Context, e *env) Result {
	const off = "; or run matrxd with --default-disk-mb 0 (no disk quotas: a sandbox can fill the state disk)"
	st, err := os.Stat(e.host.dev("loop-control"))
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return fail("`modprobe loop` (in a container or VM, pass /dev/loop-control and the loop devices through)"+off,
			"/dev/loop-control is missing or not a device: sandbox disks cannot be attached")
	}
	mkfs, err := e.host.lookPath("mkfs.ext4")
	if err != nil {
		return fail("`apt-get install e2fsprogs` (dnf on AL2023)"+off, "mkfs.ext4 is not in PATH: sandbox disks cannot be formatted")
	}
	ls, err := lines(e.host.proc("filesystems"))
	if err != nil {
		return fail("mount /proc", "cannot read /proc/filesystems: %v", err)
	}
	for _, l := range ls {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == "ext4" {
			return pass("/dev/loop-control, %s, ext4 in /proc/filesystems", mkfs)
		}
	}
	return fail("`modprobe ext4`"+off, "ext4 is not in /proc/filesystems: sandbox disks cannot be mounted")
}

func checkFUSEDevice(_ context.Context, e *env) Result {
	p := e.host.dev("fuse")
	const fix = "`modprobe fuse` (in a container or VM, pass the /dev/fuse device through)"
	st, err := os.Stat(p)
	if err == nil && st.Mode()&os.ModeCharDevice != 0 {
		return pass("/dev/fuse is a character device")
	}
	what := "missing"
	if err == nil {
		what = "not a character device"
	}
	if e.storageIsS3() {
		return fail(fix, "/dev/fuse is %s: S3 cold storage cannot be mounted", what)
	}
	return warn(fix, "/dev/fuse is %s: only local storage can work (no S3 bucket is configured)", what)
}

func checkFUSEDriver(ctx context.Context, e *env) Result {
	const fix = "install mount-s3 (bootstrap/install.sh installs the pinned release), or `apt-get install s3fs` as the fallback"
	if p, err := e.host.lookPath("mount-s3"); err == nil {
		v, err := firstLineOf(ctx, e.timeout, p, "--version")
		if err != nil {
			return fail(fix, "%s does not run: %v", p, err)
		}
		return pass("%s at %s", v, p)
	}
	if p, err := e.host.lookPath("s3fs"); err == nil {
		v, err := firstLineOf(ctx, e.timeout, p, "--version")
		if err != nil {
			return fail(fix, "%s does not run: %v", p, err)
		}
		return warn("install mount-s3 for the preferred driver (bootstrap/install.sh)", "only the fallback driver s3fs is installed: %s at %s", v, p)
	}
	if e.storageIsS3() {
		return fail(fix, "neither mount-s3 nor s3fs is in PATH: S3 cold storage cannot be mounted")
	}
	return warn(fix, "neither mount-s3 nor s3fs is in PATH (fine while storage is local)")
}

func checkFUSEConf(_ context.Context, e *env) Result {
	const fix = "`echo user_allow_other >> /etc/fuse.conf`"
	ls, err := lines(e.host.etc("fuse.conf"))
	if errors.Is(err, os.ErrNotExist) {
		return warn("install fuse3 (`apt-get install fuse3`), then "+fix, "/etc/fuse.conf does not exist")
	}
	if err != nil {
		return warn(fix, "cannot read /etc/fuse.conf: %v", err)
	}
	if slices.Contains(ls, "user_allow_other") {
		return pass("user_allow_other is set in /etc/fuse.conf")
	}
	return warn(fix, "user_allow_other is not set in /etc/fuse.conf: FUSE mounts made by non-root users cannot be shared with sandboxes (allow_other)")
}

// cniPlugins are the plugins sandbox networking uses.
func cniPlugins() []string {
	return []string{"bridge", "host-local", "loopback", "portmap", "firewall"}
}

func checkCNI(_ context.Context, e *env) Result {
	cniPlugins := cniPlugins()
	found := map[string]string{}
	for _, dir := range e.host.CNIDirs {
		for _, p := range cniPlugins {
			if _, ok := found[p]; ok {
				continue
			}
			if st, err := os.Stat(filepath.Join(dir, p)); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
				found[p] = dir
			}
		}
	}
	var missing, dirs []string
	for _, p := range cniPlugins {
		if d, ok := found[p]; !ok {
			missing = append(missing, p)
		} else if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	if len(missing) > 0 {
		return warn("`apt-get install containernetworking-plugins` (bootstrap/install.sh does it)",
			"CNI plugins missing from %s: %s (sandboxes get no network beyond loopback)", strings.Join(e.host.CNIDirs, " and "), strings.Join(missing, ", "))
	}
	return pass("%s found in %s", strings.Join(cniPlugins, ", "), strings.Join(dirs, ", "))
}

func checkIPForward(_ context.Context, e *env) Result {
	const fix = "`sysctl -w net.ipv4.ip_forward=1` and persist it in /etc/sysctl.d/99-matrx.conf"
	n, err := readInt(e.host.proc("sys/net/ipv4/ip_forward"))
	if err != nil {
		return warn(fix, "cannot read net.ipv4.ip_forward: %v", err)
	}
	if n == 0 {
		return warn(fix, "net.ipv4.ip_forward = 0: sandboxes on a bridge network cannot reach beyond the host")
	}
	return pass("net.ipv4.ip_forward = %d", n)
}

func checkUserNS(_ context.Context, e *env) Result {
	const fix = "`sysctl -w user.max_user_namespaces=15000` and persist it in /etc/sysctl.d/99-matrx.conf"
	n, err := readInt(e.host.proc("sys/user/max_user_namespaces"))
	if errors.Is(err, os.ErrNotExist) {
		return warn("use a kernel built with CONFIG_USER_NS", "the kernel has no user namespaces (no /proc/sys/user/max_user_namespaces)")
	}
	if err != nil {
		return warn(fix, "cannot read user.max_user_namespaces: %v", err)
	}
	if n <= 0 {
		return warn(fix, "user.max_user_namespaces = %d: user namespaces are disabled", n)
	}
	detail := fmt.Sprintf("user.max_user_namespaces = %d", n)
	// Debian's knob: it only restricts unprivileged users, and matrxd
	// runs as root.
	if c, err := readInt(e.host.proc("sys/kernel/unprivileged_userns_clone")); err == nil {
		detail += fmt.Sprintf(", kernel.unprivileged_userns_clone = %d", c)
		if c == 0 {
			detail += " (unprivileged users cannot create them; matrxd runs as root and is not affected)"
		}
	}
	return pass("%s", detail)
}

const (
	gib      = 1 << 30
	diskWarn = 10 * gib
	diskFail = 1 * gib
)

func checkDisk(_ context.Context, e *env) Result {
	// The state dir may not exist before the first start: measure the
	// filesystem it will be created on.
	dir := filepath.Clean(e.cfg.StateDir)
	for {
		if _, err := os.Stat(dir); err == nil || dir == filepath.Dir(dir) {
			break
		}
		dir = filepath.Dir(dir)
	}
	avail, total, err := diskSpace(dir)
	if err != nil {
		return warn("check that the state dir is on a mounted filesystem", "cannot measure free space at %s: %v", dir, err)
	}
	found := fmt.Sprintf("%.1f GiB free of %.1f GiB at %s", float64(avail)/gib, float64(total)/gib, dir)
	if dir != filepath.Clean(e.cfg.StateDir) {
		found += fmt.Sprintf(" (state dir %s does not exist yet)", e.cfg.StateDir)
	}
	const fix = "free space on that filesystem, or move --state-dir / MATRX_STATE_DIR to a larger one"
	switch {
	case avail < diskFail:
		return fail(fix, "%s: below 1 GiB, sandboxes' records and homes cannot be written", found)
	case avail < diskWarn:
		return warn(fix, "%s: below 10 GiB", found)
	}
	return pass("%s", found)
}

func checkSocket(ctx context.Context, e *env) Result {
	p := e.cfg.Socket
	const start = "start matrxd (`make up`, or `systemctl start matrxd.socket`) or point --socket / MATRX_SOCKET at its socket"
	st, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return warn(start, "no socket at %s: matrxd is not running here", p)
	}
	if err != nil {
		return warn(start, "cannot stat %s: %v", p, err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		return warn("remove "+p+" (matrxd refuses to replace a file that is not a socket), then "+start, "%s exists but is not a socket", p)
	}
	var problems, fixes []string
	if perm := st.Mode().Perm(); perm != 0o660 {
		problems = append(problems, fmt.Sprintf("mode %04o, want 0660", perm))
		fixes = append(fixes, "chmod 0660 "+p)
	}
	group := "?"
	if gid, ok := ownerGID(st); ok {
		group = groupName(e.host, gid)
		if group != e.cfg.SocketGroup {
			problems = append(problems, fmt.Sprintf("group %s, want %s", group, e.cfg.SocketGroup))
			fixes = append(fixes, fmt.Sprintf("create the group (`groupadd --system %s`) and restart matrxd, which sets it", e.cfg.SocketGroup))
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "unix", p)
	if err != nil {
		if errors.Is(err, os.ErrPermission) || isPermission(err) {
			problems = append(problems, "cannot connect as this user (not in group "+e.cfg.SocketGroup+"?)")
			fixes = append(fixes, "add your user to group "+e.cfg.SocketGroup+" (`usermod -aG "+e.cfg.SocketGroup+" USER`)")
		} else {
			problems = append(problems, "nothing answers on it (stale socket of a stopped matrxd)")
			fixes = append(fixes, start)
		}
	} else {
		c.Close()
	}
	if len(problems) > 0 {
		return warn(strings.Join(fixes, "; "), "%s: %s", p, strings.Join(problems, "; "))
	}
	return pass("%s: socket, mode 0660, group %s, answering", p, group)
}
