package cold

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// stableAfter is how long a generation must have served before its death
// resets the remount backoff.
const stableAfter = time.Minute

// FUSEMount is a supervised FUSE mount made by MountS3 or S3FS. Its daemon
// mounts on Request.StageDir; the mount is then moved on top of
// Request.Mountpoint. A supervisor goroutine remounts (stacking a new mount on
// the dead one, see the package comment) when the daemon exits or the mount
// stops answering.
type FUSEMount struct {
	d     fuseDriver
	req   Request
	mp    string // resolved Request.Mountpoint
	stage string // resolved Request.StageDir
	log   *slog.Logger

	mu   sync.Mutex
	proc *process // serving generation; nil while remounting

	remounts atomic.Uint64
	probing  atomic.Bool
	cancel   context.CancelFunc
	done     chan struct{}

	unmountOnce sync.Once
	unmountErr  error
}

// process is one generation: a daemon and the mount it serves.
type process struct {
	cmd     *exec.Cmd
	pid     int
	out     *tailBuffer
	started time.Time
	exited  chan struct{}
	outDone chan struct{} // closed once its output pipe reached EOF
	err     error         // cmd.Wait's result; read after exited is closed
	mountID int           // the mount this generation put on the mountpoint
	// How long the start took, for the "cold mount ready" line: until the
	// daemon's mount showed on the stage, until it was moved onto the
	// mountpoint, and until it answered a stat there.
	stagedIn, movedIn, answeredIn time.Duration
}

func startFUSE(ctx context.Context, d fuseDriver, req Request) (Mount, error) {
	if req.UserID == "" {
		return nil, fmt.Errorf("cold: mount request without a user id: %w", errdefs.ErrInvalidArgument)
	}
	mp, err := existingDir("mountpoint", req.Mountpoint)
	if err != nil {
		return nil, err
	}
	stage, err := existingDir("stage dir", req.StageDir)
	if err != nil {
		return nil, err
	}
	if mp == stage {
		return nil, fmt.Errorf("cold: stage dir and mountpoint are both %s: %w", mp, errdefs.ErrInvalidArgument)
	}
	// Wait for the first answer only until one of this driver's mounts
	// has answered (see "Answered later"); until then also check where
	// the stage and the mountpoint are. After that the checks have
	// passed for a working mount and are left to the kernel (a move out
	// of a shared stage fails, with the same hint): the mount table is
	// hundreds of lines with many sandboxes, 2-7 ms of a create to read.
	waitAnswer := !d.proven.Load() || req.WaitAnswer
	var mounts []mountInfo
	if waitAnswer {
		if mounts, err = readMountinfo(); err != nil {
			return nil, err
		}
		if pm, ok := containingMount(mounts, filepath.Dir(stage)); !ok || pm.Shared() {
			return nil, fmt.Errorf("cold: stage dir %s must be below a private mount (the kernel refuses to move a mount out of a shared parent): %w",
				stage, errdefs.ErrFailedPrecondition)
		}
	}
	m := &FUSEMount{
		d:     d,
		req:   req,
		mp:    mp,
		stage: stage,
		log:   d.log.With("user_id", req.UserID, "driver", d.name, "mountpoint", mp),
		done:  make(chan struct{}),
	}
	if pm, ok := containingMount(mounts, filepath.Dir(mp)); ok && !pm.Shared() && !req.Private {
		m.log.Warn("cold mountpoint is not below a shared mount: remounts will not reach running sandboxes")
	}
	p, err := m.launch(ctx, waitAnswer)
	if err != nil {
		// Whatever failed, the next start proves the driver again.
		d.proven.Store(false)
		return nil, err
	}
	m.proc = p
	var unconfirmed *process
	if waitAnswer {
		m.logReady(p)
	} else {
		unconfirmed = p
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	go m.supervise(sctx, unconfirmed)
	return m, nil
}

// logReady logs a generation that answered, with how long its start took.
func (m *FUSEMount) logReady(p *process) {
	m.log.Info("cold mount ready", "pid", p.pid,
		"staged_ms", float64(p.stagedIn.Microseconds()/100)/10, "moved_ms", float64(p.movedIn.Microseconds()/100)/10, "answered_ms", float64(p.answeredIn.Microseconds()/100)/10)
}

// Path returns the mountpoint.
func (m *FUSEMount) Path() string { return m.mp }

// Remounts returns how many times the supervisor remounted.
func (m *FUSEMount) Remounts() uint64 { return m.remounts.Load() }

// PID returns the serving daemon's pid, or 0 while it is being remounted or
// after Unmount.
func (m *FUSEMount) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.pid
}

// Unmount stops supervision, unmounts every layer on the mountpoint (cleanly,
// lazily when busy), then stops the daemon: SIGTERM to its process group,
// SIGKILL after the stop timeout. It is safe to call more than once; later
// calls return the first call's result.
func (m *FUSEMount) Unmount(ctx context.Context) error {
	m.unmountOnce.Do(func() {
		m.cancel()
		<-m.done // an in-flight start sees the cancel and undoes itself
		m.mu.Lock()
		p := m.proc
		m.proc = nil
		m.mu.Unlock()
		var errs []error
		if err := unmountStack(m.mp); err != nil {
			errs = append(errs, err)
		}
		if p != nil {
			p.stop(m.d.o.stopTimeout)
		}
		if err := unmountStack(m.stage); err != nil {
			errs = append(errs, err)
		}
		m.unmountErr = errors.Join(errs...)
		if m.unmountErr != nil {
			m.log.Error("cold unmount failed", "error", m.unmountErr)
		} else {
			m.log.Info("cold mount unmounted", "remounts", m.remounts.Load())
		}
	})
	return m.unmountErr
}

// launch starts one generation and returns once its mount is on the
// mountpoint and, with waitAnswer, answers a stat there (without, the
// supervisor confirms it: see "Answered later"). On failure nothing of it
// is left: no process, no mount on the stage, no new layer on the
// mountpoint, no secret file.
func (m *FUSEMount) launch(ctx context.Context, waitAnswer bool) (_ *process, retErr error) {
	if err := unmountStack(m.stage); err != nil {
		return nil, err
	}
	cmd, err := m.d.build(m.req, m.stage)
	if err != nil {
		return nil, err
	}
	defer removeFiles(cmd.Secrets)
	argv := append([]string{cmd.Path}, cmd.Args...)
	if m.d.o.wrap != nil {
		argv = m.d.o.wrap(m.req.UserID, argv)
	}
	p, err := m.startProcess(argv, cmd.Env)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			p.stop(m.d.o.stopTimeout)
			_ = unmountStack(m.stage)
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, m.d.o.startTimeout)
	defer cancel()
	staged, err := m.waitStaged(ctx, p)
	if err != nil {
		return nil, err
	}
	p.stagedIn = time.Since(p.started)
	if err := unix.Mount(m.stage, m.mp, "", unix.MS_MOVE, ""); err != nil {
		hint := ""
		if errors.Is(err, unix.EINVAL) {
			hint = " (is the stage dir below a private mount?)"
		}
		return nil, fmt.Errorf("cold: move %s onto %s%s: %w: %w", m.stage, m.mp, hint, err, errdefs.ErrFailedPrecondition)
	}
	p.movedIn = time.Since(p.started)
	// A move keeps the mount's id: the mount the table showed on the stage
	// is now the top of the mountpoint's stack (the move succeeded, and the
	// mountpoint's parent is ours), with no second read of the table,
	// which is long with many sandboxes and waits for the namespace's
	// mount lock while other sandboxes mount.
	p.mountID = staged
	if !waitAnswer {
		return p, nil
	}
	if err := m.answers(ctx, p); err != nil {
		// Take our layer off again; the ones below are untouched.
		_ = unix.Unmount(m.mp, unix.MNT_DETACH)
		return nil, err
	}
	return p, nil
}

// answers stats the mountpoint, which the kernel holds until the daemon
// has answered its FUSE INIT (s3fs checks the bucket and the user's
// prefix before it answers), and checks the daemon is still there after.
// It records when the mount answered.
func (m *FUSEMount) answers(ctx context.Context, p *process) error {
	if err := statWithin(ctx, m.mp); err != nil {
		// A daemon that gave up (s3fs after a failed bucket check) says
		// why on its way out: wait a moment for its last lines.
		select {
		case <-p.exited:
			p.awaitOutput()
		case <-time.After(time.Second):
		}
		return fmt.Errorf("cold: %s mount of %s does not answer: %w; %s output: %s: %w",
			m.d.name, m.mp, err, m.d.name, p.out, errdefs.ErrUnavailable)
	}
	p.answeredIn = time.Since(p.started)
	select {
	case <-p.exited:
		return fmt.Errorf("cold: %s exited right after mounting (%s); output: %s: %w",
			m.d.name, p.status(), p.out, errdefs.ErrUnavailable)
	default:
	}
	m.d.proven.Store(true)
	return nil
}

// confirm waits for the first answer of a generation that startFUSE
// returned without waiting for it, and returns why the generation is
// broken, or "" when it answered (or ctx ended). A generation that does
// not answer makes the driver wait for the answer again at its next start.
func (m *FUSEMount) confirm(ctx context.Context, p *process) string {
	actx, cancel := context.WithTimeout(ctx, m.d.o.startTimeout)
	defer cancel()
	err := m.answers(actx, p)
	switch {
	case err == nil:
		m.logReady(p)
		return ""
	case ctx.Err() != nil:
		return ""
	}
	m.d.proven.Store(false)
	m.log.Error("cold mount did not answer after its start returned", "error", err)
	return "first answer failed: " + err.Error()
}

// startProcess runs argv in its own process group with a minimal environment,
// its stdout and stderr going to a tail buffer and the debug log.
func (m *FUSEMount) startProcess(argv, env []string) (*process, error) {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("cold: pipe: %w: %w", err, errdefs.ErrUnavailable)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=" + path}, env...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = w, w
	// Own process group: signals reach whatever the daemon forks. No
	// parent-death signal: Go delivers it when the forking OS thread exits,
	// not the process, and a daemon that outlives a crashed matrxd keeps
	// serving running sandboxes until its mount is removed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("cold: start %s: %w: %w", argv[0], err, errdefs.ErrFailedPrecondition)
	}
	w.Close()
	pid := cmd.Process.Pid
	log := m.log.With("pid", pid)
	p := &process{
		cmd:     cmd,
		pid:     pid,
		out:     newTailBuffer(4096, func(line string) { log.Debug("fuse daemon output", "line", line) }),
		started: time.Now(),
		exited:  make(chan struct{}),
		outDone: make(chan struct{}),
	}
	go func() {
		_, _ = io.Copy(p.out, r)
		r.Close()
		close(p.outDone)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	log.Debug("fuse daemon started", "argv0", argv[0])
	return p, nil
}

// waitStaged waits until a FUSE mount shows on the stage directory and
// returns its mount id. It looks again whenever the mount table changes
// (poll(2) on mountinfo), and at least every 5 ms: a new user's mount
// comes up 10-30 ms after its daemon starts, on a create's path, and the
// poll does not always wake for it (TestMountWaiterWakesOnMount); with a
// 25 ms tick half of the new users' mounts of a TTI run were seen at
// 25-28 ms, the others at 10-14. A look between changes is one openat2
// (mountedByLookup), the table is read only once something is on the stage.
func (m *FUSEMount) waitStaged(ctx context.Context, p *process) (mountID int, _ error) {
	const every = 5 * time.Millisecond
	changed := mountTableWaiter()
	defer changed.close()
	for {
		// Every mount anywhere on the host wakes every waiter, so the
		// table (what the mount is) is read only once something is on the
		// stage: 50 new users mounting at once woke each other ~50 times.
		if staged, known := mountedByLookup(m.stage); staged || !known {
			mounts, err := readMountinfo()
			if err != nil {
				return 0, err
			}
			if st := stackAt(mounts, m.stage); len(st) > 0 && m.d.o.isMounted(st[len(st)-1].FSType) {
				return st[len(st)-1].ID, nil
			}
		}
		select {
		case <-p.exited:
			p.awaitOutput()
			return 0, fmt.Errorf("cold: %s exited before mounting (%s); output: %s: %w",
				m.d.name, p.status(), p.out, errdefs.ErrUnavailable)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return 0, fmt.Errorf("cold: %s did not mount %s within %s; output: %s: %w",
					m.d.name, m.stage, m.d.o.startTimeout, p.out, errdefs.ErrUnavailable)
			}
			return 0, fmt.Errorf("cold: %s mount: %w", m.d.name, ctx.Err())
		default:
		}
		changed.wait(every)
	}
}

// mountWaiter wakes when this process's mount table changes: an open
// mountinfo polls POLLPRI once for each change since the last poll of it
// (or since the open), see proc(5), /proc/[pid]/mounts. Not every change
// wakes it on every kernel (TestMountWaiterWakesOnMount), so callers wait
// with a short timeout and look at the table again. Without the file it
// just sleeps.
type mountWaiter struct{ f *os.File }

func mountTableWaiter() mountWaiter {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountWaiter{}
	}
	return mountWaiter{f}
}

// wait returns after a change to the mount table, or after d.
func (w mountWaiter) wait(d time.Duration) {
	if w.f == nil {
		time.Sleep(d)
		return
	}
	fds := []unix.PollFd{{Fd: int32(w.f.Fd()), Events: unix.POLLPRI}}
	start := time.Now()
	for {
		left := max(d-time.Since(start), 0)
		_, err := unix.Poll(fds, int(left/time.Millisecond))
		switch {
		case err == unix.EINTR && left > 0:
			continue
		case err != nil && err != unix.EINTR:
			time.Sleep(left)
		}
		return
	}
}

func (w mountWaiter) close() {
	if w.f != nil {
		w.f.Close()
	}
}

// supervise watches the serving generation and remounts when it breaks,
// until ctx is cancelled. It first confirms unconfirmed, the generation
// startFUSE returned without waiting for its answer, when there is one.
func (m *FUSEMount) supervise(ctx context.Context, unconfirmed *process) {
	defer close(m.done)
	tick := time.NewTicker(m.d.o.probeInterval)
	defer tick.Stop()
	delay := m.d.o.backoffMin
	for {
		m.mu.Lock()
		p := m.proc
		m.mu.Unlock()
		var reason string
		if unconfirmed != nil {
			reason, unconfirmed = m.confirm(ctx, p), nil
		}
		if reason == "" {
			select {
			case <-ctx.Done():
				return
			case <-p.exited:
				reason = "fuse daemon exited"
			case <-tick.C:
				if reason = m.probe(p); reason == "" {
					continue
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("cold mount broken", "reason", reason, "pid", p.pid, "exit", p.status(), "output", p.out.String())
		p.stop(m.d.o.stopTimeout)
		m.mu.Lock()
		m.proc = nil
		m.mu.Unlock()
		if time.Since(p.started) >= stableAfter {
			delay = m.d.o.backoffMin
		} else if !sleep(ctx, delay) { // it died young: do not spin
			return
		} else {
			delay = min(2*delay, m.d.o.backoffMax)
		}
		if !m.remount(ctx, &delay) {
			return
		}
	}
}

// remount launches generations until one serves or ctx is cancelled.
func (m *FUSEMount) remount(ctx context.Context, delay *time.Duration) bool {
	for attempt := 1; ; attempt++ {
		p, err := m.launch(ctx, true)
		if err == nil {
			m.mu.Lock()
			m.proc = p
			m.mu.Unlock()
			n := m.remounts.Add(1)
			m.log.Info("cold mount remounted", "pid", p.pid, "remounts", n, "attempt", attempt)
			if m.req.OnRemount != nil {
				m.req.OnRemount()
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		m.log.Error("cold remount failed", "error", err, "attempt", attempt, "retry_in", *delay)
		if !sleep(ctx, *delay) {
			return false
		}
		*delay = min(2**delay, m.d.o.backoffMax)
	}
}

// probe returns why the generation's mount is broken, or "" when it serves
// (or cannot be judged right now). One statx of the mountpoint tells both
// whether the mount answers and whether it is still the one on top (its
// mount id): the mount table, which every user's probe read every
// interval before, is hundreds of lines with many sandboxes.
func (m *FUSEMount) probe(p *process) string {
	if !m.probing.CompareAndSwap(false, true) {
		return "" // the last stat still hangs; already logged
	}
	type answer struct {
		err     error
		mountID uint64
		known   bool
	}
	ac := make(chan answer, 1)
	go func() {
		defer m.probing.Store(false)
		var stx unix.Statx_t
		err := unix.Statx(unix.AT_FDCWD, m.mp, unix.AT_STATX_SYNC_AS_STAT, unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &stx)
		ac <- answer{err, stx.Mnt_id, stx.Mask&unix.STATX_MNT_ID != 0}
	}()
	var a answer
	select {
	case a = <-ac:
	case <-time.After(m.d.o.probeTimeout):
		m.log.Warn("cold mount slow to answer stat", "timeout", m.d.o.probeTimeout)
		return ""
	}
	switch {
	case a.err == nil && a.known && a.mountID != uint64(p.mountID):
		return "mount disappeared from the mountpoint"
	case a.err == nil:
		return ""
	case isDisconnected(a.err):
		return "mount not connected: " + a.err.Error()
	default:
		m.log.Warn("cold mount probe", "error", a.err)
		return ""
	}
}

// awaitOutput lets an exited daemon's last lines (why it gave up), which
// may still be in the pipe, arrive: unless a child it forked holds the
// pipe, they do at once.
func (p *process) awaitOutput() {
	select {
	case <-p.outDone:
	case <-time.After(time.Second):
	}
}

// status is the process's exit status, or "running".
func (p *process) status() string {
	select {
	case <-p.exited:
		if p.err == nil {
			return "exit status 0"
		}
		return p.err.Error()
	default:
		return "running"
	}
}

// stop ends the process: SIGTERM to its group, SIGKILL after timeout, and
// waits for it to be reaped.
func (p *process) stop(timeout time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = unix.Kill(-p.pid, unix.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = unix.Kill(-p.pid, unix.SIGKILL)
		<-p.exited
	}
}

// statWithin stats path, giving up when ctx ends (a hung FUSE daemon blocks
// stat; the goroutine returns once the mount is torn down).
func statWithin(ctx context.Context, path string) error {
	errc := make(chan error, 1)
	go func() {
		var st unix.Stat_t
		errc <- unix.Stat(path, &st)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return fmt.Errorf("stat %s: %w", path, ctx.Err())
	}
}
