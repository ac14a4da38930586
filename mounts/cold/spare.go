package cold

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/matrx-dev/matrx/ids"
)

// # Spare daemons (WithSpares)
//
// A new user's first sandbox waits for that user's FUSE daemon to start
// (s3fs: 15-30 ms and a process start; fifty of them at once in a burst
// of new users), which is most of what a claim from the warm pool costs
// beyond --cold-shared. With WithSpares(n) the manager keeps up to n
// daemons started ahead, each on the bucket's users/ prefix at
// Dir/spare/LABEL (Dir/spare is 0700 and a private bind of itself, as
// Dir/all is), already past their bucket check (a spare's start always
// waits for the daemon's answer: it is off every create's path). A new
// user's first Acquire takes one and binds the user's own directory of it,
// Dir/spare/LABEL/USER/cold, onto their mountpoint, exactly as the shared
// mount does ("One mount for all users": openat2 beneath the root, no
// symlinks, no mount crossings, the opened directory is the bind's
// source). From then on the daemon is that user's and no one else's: the
// user's later Acquires share it, its remounts rebind the user's
// directory, and the last Release unmounts both the bind and the daemon.
// So the fate and the throughput stay per user, as without spares; what a
// spare changes is only when its daemon started, and that it was started
// on users/ rather than on users/USER/cold/. The kernel confines what the
// daemon is asked to the bind's subtree (no path from /data/cold reaches
// above its root), as it confines the shared mount's binds; the daemon's
// own credentials were the whole bucket's before (a per-user daemon signs
// with the same keys).
//
// The pool refills one daemon at a time, and only once no spare was taken
// for spareQuiet (a burst's claims do not compete with new s3fs starts).
// A spare's daemon is named after its label (spare.HEX), not a user: its
// logs, credential file and systemd unit keep that name after it was
// taken; the "cold spare taken" line ties the label to the user.
//
// After a daemon restart the spares a previous run left are detached:
// one nobody took exits with its mount; one a user took keeps serving
// that user's existing binds (they hold its mount) until the user's next
// Acquire stacks a fresh mount on top, as a per-user daemon left by a
// previous run does. Their cache directories are removed, which is also
// what a fresh per-user daemon does to its predecessor's (del_cache).

// spareQuiet is how long after the last take a spare is started again.
const spareQuiet = 300 * time.Millisecond

// maxSpares bounds WithSpares (each spare is an idle FUSE daemon: s3fs holds ~2.5 MiB of private memory).
const maxSpares = 64

// WithSpares keeps up to n FUSE daemons started ahead for new users (see
// "Spare daemons"). Only the FUSE drivers without WithSharedMount have
// spares: NewManager refuses n > 0 otherwise, and n beyond maxSpares.
func WithSpares(n int) ManagerOption { return func(m *Manager) { m.spares.want = n } }

// spareSet is the manager's spares; ready and lastTake are guarded by
// Manager.mu.
type spareSet struct {
	want     int
	ready    []*spare
	lastTake time.Time
	kick     chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
	taken    atomic.Uint64
}

// spare is one daemon started ahead; user is set once a user took it.
type spare struct {
	label ids.UserID
	root  string // Dir/spare/LABEL: the daemon's mountpoint (users/)
	stage string // Dir/stage/spares/LABEL
	cache string // Dir/cache/spares/LABEL
	mount Mount
	user  atomic.Pointer[userBind]
}

// SpareStats reports how many spares are ready and how many users got one.
func (m *Manager) SpareStats() (ready int, taken uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.spares.ready), m.spares.taken.Load()
}

// spareDir is Dir/spare.
func (m *Manager) spareDir() string { return filepath.Join(m.dir, "spare") }

// startSpareRefill starts the goroutine that keeps the spares topped up.
func (m *Manager) startSpareRefill() {
	ctx, cancel := context.WithCancel(context.Background())
	m.spares.kick = make(chan struct{}, 1)
	m.spares.cancel, m.spares.done = cancel, make(chan struct{})
	go m.refillSpares(ctx)
}

// refillSpares starts spares one at a time while fewer than wanted are
// ready, each after spareQuiet without a take, backing off on failures.
func (m *Manager) refillSpares(ctx context.Context) {
	defer close(m.spares.done)
	const backoffMin, backoffMax = 500 * time.Millisecond, 30 * time.Second
	backoff := backoffMin
	for {
		m.mu.Lock()
		need := len(m.spares.ready) < m.spares.want && !m.closed
		wait := spareQuiet - time.Since(m.spares.lastTake)
		m.mu.Unlock()
		switch {
		case !need:
			select {
			case <-m.spares.kick:
				continue
			case <-ctx.Done():
				return
			}
		case wait > 0:
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		sp, err := m.startSpare(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Warn("cold spare start failed; retrying", "error", err, "retry_in", backoff.String())
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff = backoffMin
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			m.removeSpare(context.WithoutCancel(ctx), sp)
			return
		}
		m.spares.ready = append(m.spares.ready, sp)
		m.mu.Unlock()
	}
}

// startSpare starts one daemon on users/ and waits for its answer.
func (m *Manager) startSpare(ctx context.Context) (_ *spare, retErr error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("cold: spare label: %w", err)
	}
	label := ids.MustParseUserID("spare." + hex.EncodeToString(b[:]))
	sp := &spare{
		label: label,
		root:  filepath.Join(m.spareDir(), label.String()),
		stage: filepath.Join(m.stage, "spares", label.String()),
		cache: filepath.Join(m.cache, "spares", label.String()),
	}
	defer func() {
		if retErr != nil {
			m.removeSpareDirs(sp)
		}
	}()
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{sp.root, 0o755}, {filepath.Dir(sp.stage), 0o700}, {sp.stage, 0o700}, {filepath.Dir(sp.cache), 0o700}, {sp.cache, 0o700}} {
		if err := ensureDir(d.path, d.mode); err != nil {
			return nil, err
		}
	}
	mnt, err := m.driver.Mount(ctx, Request{
		UserID: label, Prefix: "users/",
		Mountpoint: sp.root, StageDir: sp.stage, CacheDir: sp.cache, SecretDir: m.secrets,
		UID: m.uid, GID: m.gid, Private: true, WaitAnswer: true,
		OnRemount: func() {
			m.remounts.Add(1)
			b := sp.user.Load()
			if b == nil {
				return
			}
			if err := b.restack(); err != nil {
				m.log.Error("cold: rebind after a remount failed; the user's sandboxes see a dead mount", "user_id", b.userID, "spare", label, "error", err)
			}
			if m.onRemount != nil {
				m.onRemount(b.userID)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	sp.mount = mnt
	return sp, nil
}

// takeSpare hands out a ready spare, or nil, and wakes the refill.
func (m *Manager) takeSpare() *spare {
	if m.spares.want <= 0 {
		return nil
	}
	m.mu.Lock()
	var sp *spare
	if n := len(m.spares.ready); n > 0 {
		sp = m.spares.ready[0]
		m.spares.ready = m.spares.ready[1:]
	}
	m.spares.lastTake = time.Now()
	m.mu.Unlock()
	select {
	case m.spares.kick <- struct{}{}:
	default:
	}
	return sp
}

// mountFromSpare makes mp show userID's directory of a spare, which is
// the user's from then on. On failure the spare is removed.
func (m *Manager) mountFromSpare(ctx context.Context, userID ids.UserID, mp string, sp *spare) (Mount, error) {
	if err := makeMountpoint(mp); err != nil {
		m.removeSpare(ctx, sp)
		return nil, err
	}
	b := &userBind{userID: userID, root: sp.root, mp: mp}
	// Set before the first bind, under the bind's lock: a remount in
	// between rebinds after it, never before it unseen.
	b.mu.Lock()
	sp.user.Store(b)
	err := bindBeneath(sp.root, userID, mp)
	b.closed = err != nil
	b.mu.Unlock()
	if err != nil {
		m.removeSpare(ctx, sp)
		return nil, err
	}
	m.spares.taken.Add(1)
	m.log.Info("cold spare taken", "user_id", userID, "spare", sp.label)
	return &spareMount{m: m, sp: sp, bind: b}, nil
}

// spareMount is a user's mount served by a spare's daemon.
type spareMount struct {
	m    *Manager
	sp   *spare
	bind *userBind
}

// Unmount removes the user's binds, then the daemon and its directories.
func (s *spareMount) Unmount(ctx context.Context) error {
	if err := s.bind.Unmount(ctx); err != nil {
		return err
	}
	return s.m.removeSpare(ctx, s.sp)
}

// removeSpare unmounts a spare's daemon and removes its directories.
func (m *Manager) removeSpare(ctx context.Context, sp *spare) error {
	if sp.mount != nil {
		if err := sp.mount.Unmount(ctx); err != nil {
			return err
		}
	}
	return m.removeSpareDirs(sp)
}

// removeSpareDirs removes a spare's directories (Remove, never RemoveAll,
// on the two that are mountpoints).
func (m *Manager) removeSpareDirs(sp *spare) error {
	var errs []error
	for _, d := range []string{sp.root, sp.stage} {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(sp.cache); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeSpares stops the refill and removes the spares nobody took.
func (m *Manager) closeSpares(ctx context.Context) error {
	if m.spares.cancel == nil {
		return nil
	}
	m.spares.cancel()
	<-m.spares.done
	m.mu.Lock()
	ready := m.spares.ready
	m.spares.ready = nil
	m.mu.Unlock()
	var errs []error
	for _, sp := range ready {
		if err := m.removeSpare(ctx, sp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
