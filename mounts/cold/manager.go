package cold

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
)

// ManagerConfig holds the Manager's required dependencies.
type ManagerConfig struct {
	// Dir is the manager's state directory (for example
	// /var/lib/matrx/cold); see the package comment for its layout.
	Dir string
	// Driver mounts each user's cold files (see Select).
	Driver Driver
	// Logger receives lifecycle events with user_id and driver attributes.
	Logger *slog.Logger
}

// ManagerOption sets an optional knob of NewManager.
type ManagerOption func(*Manager)

// WithOwner sets the uid and gid that own cold files as sandboxes see them
// (default 1000:1000, the sandbox user "agent").
func WithOwner(uid, gid uint32) ManagerOption {
	return func(m *Manager) { m.uid, m.gid = uid, gid }
}

// WithRemountHook calls fn after each successful remount of a user's mount
// (for a metrics counter). fn must not block.
func WithRemountHook(fn func(userID ids.UserID)) ManagerOption {
	return func(m *Manager) { m.onRemount = fn }
}

// Manager hands out one refcounted mount per user below Dir/mnt.
type Manager struct {
	driver    Driver
	log       *slog.Logger
	uid, gid  uint32
	onRemount func(userID ids.UserID)

	dir     string // resolved Dir
	root    string // Dir/mnt, shared
	stage   string // Dir/stage, private
	cache   string // Dir/cache
	secrets string // Dir/secrets
	allDir  string // Dir/all, with WithSharedMount

	boundRoot, boundStage, boundAll, boundSpare bool // this manager made the bind mounts

	shared bool        // WithSharedMount
	all    sharedState // the shared daemon, guarded by mu
	spares spareSet    // WithSpares

	remounts atomic.Uint64

	mu     sync.Mutex
	users  map[ids.UserID]*entry
	closed bool
}

// entry is one user's mount and its references.
type entry struct {
	refs      int
	ready     chan struct{} // closed when the first Acquire's mount finished
	mount     Mount         // set before ready closes, nil on failure
	err       error         // the mount's error, set before ready closes
	releasing bool          // the last reference is gone; unmounting
	gone      chan struct{} // closed once the entry left the map
}

// Root returns the shared directory below which mountpoints live (Dir/mnt).
func (m *Manager) Root() string { return m.root }

// Driver returns the driver the manager mounts with.
func (m *Manager) Driver() Driver { return m.driver }

// Remounts returns how many remounts happened across all users.
func (m *Manager) Remounts() uint64 { return m.remounts.Load() }

// Mountpoint returns the directory Acquire returns for userID
// (Dir/mnt/users/USER/cold), without mounting anything.
func (m *Manager) Mountpoint(userID ids.UserID) (string, error) {
	return userPath(m.root, userID, "cold")
}

// Acquire takes a reference on userID's cold mount, mounting it if this is
// the first one, and returns the host directory to bind into the sandbox
// (with rbind,rslave). Every successful Acquire must be paired with one
// Release. Concurrent Acquires of one user share one mount; an Acquire that
// overlaps the unmount after the last Release waits for it, then mounts anew.
func (m *Manager) Acquire(ctx context.Context, userID ids.UserID) (string, error) {
	mp, err := m.Mountpoint(userID)
	if err != nil {
		return "", err
	}
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return "", fmt.Errorf("cold: manager is closed: %w", errdefs.ErrFailedPrecondition)
		}
		e := m.users[userID]
		switch {
		case e != nil && e.releasing:
			gone := e.gone
			m.mu.Unlock()
			select {
			case <-gone:
				continue
			case <-ctx.Done():
				return "", fmt.Errorf("cold: acquire %s: %w", userID, ctx.Err())
			}
		case e != nil:
			e.refs++
			m.mu.Unlock()
			select {
			case <-e.ready:
			case <-ctx.Done():
				_ = m.drop(context.WithoutCancel(ctx), userID, e)
				return "", fmt.Errorf("cold: acquire %s: %w", userID, ctx.Err())
			}
			if e.err != nil {
				return "", e.err
			}
			return mp, nil
		}
		e = &entry{refs: 1, ready: make(chan struct{}), gone: make(chan struct{})}
		m.users[userID] = e
		m.mu.Unlock()

		mnt, err := m.mount(ctx, userID, mp)
		m.mu.Lock()
		e.mount, e.err = mnt, err
		if err != nil {
			delete(m.users, userID)
			close(e.gone)
		}
		close(e.ready)
		m.mu.Unlock()
		if err != nil {
			return "", err
		}
		return mp, nil
	}
}

// Release drops a reference taken by Acquire; the last one unmounts the
// user's mount and removes its directories. Releasing a user without a
// reference fails with errdefs.ErrFailedPrecondition.
func (m *Manager) Release(ctx context.Context, userID ids.UserID) error {
	m.mu.Lock()
	e := m.users[userID]
	if e == nil || e.releasing {
		m.mu.Unlock()
		return fmt.Errorf("cold: release %s: not acquired: %w", userID, errdefs.ErrFailedPrecondition)
	}
	select {
	case <-e.ready:
	default: // every reference still belongs to an Acquire in progress
		m.mu.Unlock()
		return fmt.Errorf("cold: release %s: not acquired yet: %w", userID, errdefs.ErrFailedPrecondition)
	}
	m.mu.Unlock()
	return m.drop(ctx, userID, e)
}

// drop removes one reference from e and tears the mount down when it was
// the last.
func (m *Manager) drop(ctx context.Context, userID ids.UserID, e *entry) error {
	m.mu.Lock()
	if m.users[userID] != e {
		m.mu.Unlock()
		return nil // its mount failed: nothing to drop
	}
	e.refs--
	if e.refs > 0 {
		m.mu.Unlock()
		return nil
	}
	e.releasing = true
	m.mu.Unlock()

	<-e.ready // refs only reach 0 after the mounting Acquire returned
	var err error
	if e.mount != nil {
		err = m.teardown(ctx, userID, e.mount)
	}
	m.mu.Lock()
	delete(m.users, userID)
	close(e.gone)
	m.mu.Unlock()
	return err
}

// mount creates the user's directories and mounts; on failure it removes
// what it created.
func (m *Manager) mount(ctx context.Context, userID ids.UserID, mp string) (_ Mount, retErr error) {
	if m.shared {
		return m.mountUserBind(ctx, userID, mp)
	}
	if sp := m.takeSpare(); sp != nil {
		mnt, err := m.mountFromSpare(ctx, userID, mp, sp)
		if err == nil {
			return mnt, nil
		}
		// A name in the bucket the bind refuses (a symlink where the
		// user's directory should be) is no reason to refuse the user a
		// daemon of their own, which serves the prefix itself.
		m.log.Warn("cold spare could not serve the user; starting a daemon of their own", "user_id", userID, "spare", sp.label, "error", err)
	}
	stage, err := userPath(m.stage, userID)
	if err != nil {
		return nil, err
	}
	cache, err := userPath(m.cache, userID)
	if err != nil {
		return nil, err
	}
	userDir := filepath.Dir(mp)
	var undo []func()
	defer func() {
		if retErr != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Dir(userDir), 0o711}, // mnt/users
		{userDir, 0o711},
		{mp, 0o755},
		{filepath.Dir(stage), 0o700},
		{stage, 0o700},
		{filepath.Dir(cache), 0o700},
		{cache, 0o700},
	} {
		if err := ensureDir(d.path, d.mode); err != nil {
			return nil, err
		}
	}
	undo = append(undo, func() {
		_ = os.RemoveAll(cache) // never a mountpoint; holds only cached data
		_ = os.Remove(stage)    // never RemoveAll: it could hold a mount
		_ = os.Remove(mp)
		_ = os.Remove(userDir)
	})
	req := Request{
		UserID:     userID,
		Mountpoint: mp,
		StageDir:   stage,
		CacheDir:   cache,
		SecretDir:  m.secrets,
		UID:        m.uid,
		GID:        m.gid,
		OnRemount: func() {
			m.remounts.Add(1)
			if m.onRemount != nil {
				m.onRemount(userID)
			}
		},
	}
	mnt, err := m.driver.Mount(ctx, req)
	if err != nil {
		m.log.Error("cold mount failed", "user_id", userID, "error", err)
		return nil, err
	}
	return mnt, nil
}

// makeMountpoint creates the user's mountpoint mp (Dir/mnt/users/USER/cold)
// and the directories above it, 0711 on the way so that a runtime in a
// user namespace reaches the bind source.
func makeMountpoint(mp string) error {
	userDir := filepath.Dir(mp)
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Dir(userDir), 0o711}, {userDir, 0o711}, {mp, 0o755}} {
		if err := ensureDir(d.path, d.mode); err != nil {
			return err
		}
	}
	return nil
}

// teardown unmounts and removes the user's directories (only once nothing
// is mounted on them).
func (m *Manager) teardown(ctx context.Context, userID ids.UserID, mnt Mount) error {
	if err := mnt.Unmount(ctx); err != nil {
		return err
	}
	return m.removeUserDirs(userID)
}

func (m *Manager) removeUserDirs(userID ids.UserID) error {
	mp, err := m.Mountpoint(userID)
	if err != nil {
		return err
	}
	stage, _ := userPath(m.stage, userID)
	cache, _ := userPath(m.cache, userID)
	var errs []error
	for _, d := range []string{mp, filepath.Dir(mp), stage} {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(cache); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cold: remove directories of %s: %w: %w", userID, err, errdefs.ErrUnavailable)
	}
	return nil
}

// CloseIdle unmounts what no sandbox uses, for a daemon that stops while
// sandboxes may keep running: the spares nobody took (and their refill),
// and the shared mount when no user holds a reference. Every mount a user
// holds stays; it outlives the daemon.
func (m *Manager) CloseIdle(ctx context.Context) error {
	return errors.Join(m.closeSpares(ctx), m.closeIdleShared(ctx))
}

// Close unmounts every user's mount, whatever its references, and then the
// manager's own bind mounts when nothing is left below them. Call it after
// the sandboxes are gone; a daemon that wants running sandboxes to keep
// their cold files across a restart does not call Close.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	users := make(map[ids.UserID]*entry, len(m.users))
	for u, e := range m.users {
		users[u] = e
	}
	m.mu.Unlock()
	var errs []error
	for u, e := range users {
		<-e.ready
		m.mu.Lock()
		owned := m.users[u] == e && !e.releasing
		if owned {
			e.releasing = true
		}
		m.mu.Unlock()
		if !owned {
			<-e.gone // a Release is tearing it down
			continue
		}
		if e.mount != nil {
			if err := m.teardown(ctx, u, e.mount); err != nil {
				errs = append(errs, err)
			}
		}
		m.mu.Lock()
		delete(m.users, u)
		close(e.gone)
		m.mu.Unlock()
	}
	if err := m.closeShared(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := m.closeSpares(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := m.unbindIfEmpty(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
