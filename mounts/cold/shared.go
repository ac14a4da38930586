package cold

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/ids"
)

// # One mount for all users (WithSharedMount, opt-in)
//
// By default every user gets a FUSE daemon of their own, started at their
// first sandbox: 15-30 ms on a create's path (its start; its bucket
// check is answered later), and fifty of them at once in
// a burst of new users. With WithSharedMount the manager instead runs one
// daemon for the whole bucket's users/ prefix, at Dir/all/users (Dir/all
// is 0700, so only root reaches it, and a private bind of itself, so
// nothing mounted there propagates anywhere), and a user's mountpoint
// becomes a bind mount of that user's own directory in it,
// Dir/all/users/USER/cold: a few syscalls instead of a process start. The
// bind sits on the user's mountpoint below the shared Dir/mnt like a
// per-user daemon's mount would, so slots, propagation into sandboxes and
// Release work unchanged.
//
// What a sandbox sees does not change: the bind's root is the user's cold
// directory, so ".." at /data/cold stays there (the kernel never walks
// above a mount's root), and the directory is opened beneath the shared
// root with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV before it
// is bound, so no name or symlink in the bucket can point a bind anywhere
// else. What does change, and why it is opt-in:
//
//   - One daemon's fate is every user's: if it dies, all cold mounts answer
//     ENOTCONN until the supervisor's remount, and one user's heavy reads
//     and writes share its throughput (and its data cache) with everyone.
//   - Its cache directory (Dir/cache/all) holds every user's cached cold
//     data in one root-only place.
//
// Remounts: the supervisor stacks the fresh daemon's mount on the shared
// mountpoint, which does not propagate into the per-user binds (their
// roots are below it). So after each remount the manager binds every
// held user's directory again, on top of their mountpoint: that new bind
// propagates into their sandboxes exactly as a per-user remount does (see
// "Propagation and remounting"). The shared mount stays up until Close;
// after a daemon restart the next Acquire stacks a new one on the old, and
// a user's new bind stacks on their old one.

// sharedLabel names the shared daemon where a driver names its daemon
// after a user (logs, s3fs instance name, credential file, systemd unit).
// A real user of that name cannot collide with it: with a shared mount no
// user has a daemon of their own.
var sharedLabel = ids.MustParseUserID("all-users")

// WithSharedMount serves every user's cold storage from one FUSE daemon on
// the bucket's users/ prefix, with a bind mount of the user's directory
// per user (see "One mount for all users"). Only the FUSE drivers have
// it: NewManager refuses it with the local driver, whose per-user mounts
// are binds already.
func WithSharedMount() ManagerOption { return func(m *Manager) { m.shared = true } }

// sharedState is the shared daemon's mount while the manager has one.
type sharedState struct {
	mount    Mount
	starting chan struct{} // closed when a start in progress ended
}

// sharedRoot returns the shared mount's root (Dir/all/users), starting
// the daemon on first use. A failed start is retried by the next caller.
func (m *Manager) sharedRoot(ctx context.Context) (string, error) {
	mp := filepath.Join(m.allDir, "users")
	m.mu.Lock()
	for m.all.starting != nil {
		ch := m.all.starting
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return "", fmt.Errorf("cold: wait for the shared mount: %w", ctx.Err())
		}
		m.mu.Lock()
	}
	if m.closed {
		m.mu.Unlock()
		return "", fmt.Errorf("cold: manager is closed: %w", errdefs.ErrFailedPrecondition)
	}
	if m.all.mount != nil {
		m.mu.Unlock()
		return mp, nil
	}
	ch := make(chan struct{})
	m.all.starting = ch
	m.mu.Unlock()

	mnt, err := m.startShared(ctx, mp)
	m.mu.Lock()
	m.all.mount, m.all.starting = mnt, nil
	close(ch)
	m.mu.Unlock()
	if err != nil {
		return "", err
	}
	return mp, nil
}

// startShared makes the shared daemon's directories and mounts it on mp.
func (m *Manager) startShared(ctx context.Context, mp string) (Mount, error) {
	stage := filepath.Join(m.stage, "all")
	cache := filepath.Join(m.cache, "all")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{mp, 0o755}, {stage, 0o700}, {cache, 0o700}} {
		if err := ensureDir(d.path, d.mode); err != nil {
			return nil, err
		}
	}
	mnt, err := m.driver.Mount(ctx, Request{
		UserID: sharedLabel, Prefix: "users/",
		Mountpoint: mp, StageDir: stage, CacheDir: cache, SecretDir: m.secrets,
		UID: m.uid, GID: m.gid, Private: true,
		OnRemount: func() {
			m.remounts.Add(1)
			m.restackUsers()
			if m.onRemount != nil {
				m.onRemount(sharedLabel)
			}
		},
	})
	if err != nil {
		m.log.Error("shared cold mount failed", "error", err)
		return nil, err
	}
	m.log.Info("shared cold mount ready", "mountpoint", mp)
	return mnt, nil
}

// restackUsers binds every held user's directory again on top of their
// mountpoint, after the shared daemon was remounted.
func (m *Manager) restackUsers() {
	m.mu.Lock()
	var binds []*userBind
	for _, e := range m.users {
		select {
		case <-e.ready:
		default:
			continue // its first bind comes after the remount
		}
		if b, ok := e.mount.(*userBind); ok {
			binds = append(binds, b)
		}
	}
	m.mu.Unlock()
	for _, b := range binds {
		if err := b.restack(); err != nil {
			m.log.Error("cold: rebind after the shared mount's remount failed; the user's sandboxes see a dead mount", "user_id", b.userID, "error", err)
		}
	}
}

// userBind is one user's mountpoint showing their directory of the shared
// mount. Its binds stack: one per (re)mount of the shared daemon.
type userBind struct {
	mu     sync.Mutex
	closed bool
	userID ids.UserID
	root   string // the shared mount's root
	mp     string
}

// restack binds the user's directory on top of the mountpoint again.
func (b *userBind) restack() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	return bindBeneath(b.root, b.userID, b.mp)
}

// Unmount removes every bind on the mountpoint (the shared daemon stays).
func (b *userBind) Unmount(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return unmountStack(b.mp)
}

// mountUserBind makes mp show userID's directory of the shared mount.
func (m *Manager) mountUserBind(ctx context.Context, userID ids.UserID, mp string) (Mount, error) {
	if err := makeMountpoint(mp); err != nil {
		return nil, err
	}
	root, err := m.sharedRoot(ctx)
	if err != nil {
		m.removeUserDirs(userID)
		return nil, err
	}
	b := &userBind{userID: userID, root: root, mp: mp}
	if err := bindBeneath(root, userID, mp); err != nil {
		m.log.Error("cold bind of the shared mount failed", "user_id", userID, "error", err)
		m.removeUserDirs(userID)
		return nil, err
	}
	return b, nil
}

// closeShared unmounts the shared daemon's mount, if there is one, and
// whatever a previous daemon left under it.
func (m *Manager) closeShared(ctx context.Context) error {
	if !m.shared {
		return nil
	}
	m.mu.Lock()
	mnt := m.all.mount
	m.all.mount = nil
	m.mu.Unlock()
	var err error
	if mnt != nil {
		err = mnt.Unmount(ctx)
	}
	return errors.Join(err, unmountStack(filepath.Join(m.allDir, "users")))
}

// closeIdleShared unmounts the shared mount when no user holds a
// reference (see CloseIdle).
func (m *Manager) closeIdleShared(ctx context.Context) error {
	if !m.shared {
		return nil
	}
	m.mu.Lock()
	idle := len(m.users) == 0 && m.all.starting == nil
	m.mu.Unlock()
	if !idle {
		return nil
	}
	return m.closeShared(ctx)
}

// sweepShared removes a shared mount a previous daemon left when this one
// has none (no sandbox that survived the restart needed it).
func (m *Manager) sweepShared() error {
	if !m.shared {
		return nil
	}
	m.mu.Lock()
	idle := m.all.mount == nil && m.all.starting == nil && len(m.users) == 0
	m.mu.Unlock()
	if !idle {
		return nil
	}
	return unmountStack(filepath.Join(m.allDir, "users"))
}
