package relay

import (
	"errors"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Watcher tells followers when a process directory changes (a record
// appended, a segment made or dropped, the exit status written), through
// one inotify instance for the whole daemon: the kernel's default limit is
// 128 instances per user, far fewer than followers.
type Watcher struct {
	f  *os.File
	fd int // f's descriptor, for inotify calls: used only under mu while open

	mu     sync.Mutex
	closed bool // Close ran: fd may now be another file's
	byWD   map[int32]*watch
	byPath map[string]*watch
}

type watch struct {
	path string
	wd   int32
	subs map[*Sub]struct{}
}

// Sub is one follower's subscription: C receives (coalesced) wakeups.
type Sub struct {
	C  chan struct{}
	w  *Watcher
	wt *watch
}

// NewWatcher starts the daemon's watcher.
func NewWatcher() (*Watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	w := &Watcher{f: os.NewFile(uintptr(fd), "inotify"), fd: fd, byWD: map[int32]*watch{}, byPath: map[string]*watch{}}
	go w.loop()
	return w, nil
}

const watchMask = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE | unix.IN_DELETE_SELF | unix.IN_ONLYDIR

// Watch subscribes to changes of dir.
func (w *Watcher) Watch(dir string) (*Sub, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, os.ErrClosed
	}
	wt := w.byPath[dir]
	if wt == nil {
		wd, err := unix.InotifyAddWatch(w.fd, dir, watchMask)
		if err != nil {
			return nil, err
		}
		if old := w.byWD[int32(wd)]; old != nil { // the same inode under another name
			wt = old
		} else {
			wt = &watch{path: dir, wd: int32(wd), subs: map[*Sub]struct{}{}}
			w.byWD[wt.wd] = wt
		}
		w.byPath[dir] = wt
	}
	s := &Sub{C: make(chan struct{}, 1), w: w, wt: wt}
	wt.subs[s] = struct{}{}
	return s, nil
}

// Close ends the subscription.
func (s *Sub) Close() {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(s.wt.subs, s)
	if len(s.wt.subs) == 0 && w.byWD[s.wt.wd] == s.wt {
		if !w.closed {
			unix.InotifyRmWatch(w.fd, uint32(s.wt.wd))
		}
		delete(w.byWD, s.wt.wd)
		for p, wt := range w.byPath {
			if wt == s.wt {
				delete(w.byPath, p)
			}
		}
	}
}

// Close stops the watcher. Subscriptions closed after it (an attach ending
// as the daemon stops) touch no descriptor.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return w.f.Close()
}

func (w *Watcher) loop() {
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			wt := w.byWD[ev.Wd]
			if wt == nil {
				continue
			}
			for s := range wt.subs {
				select {
				case s.C <- struct{}{}:
				default:
				}
			}
			if ev.Mask&unix.IN_IGNORED != 0 { // the directory is gone
				delete(w.byWD, ev.Wd)
				for p, x := range w.byPath {
					if x == wt {
						delete(w.byPath, p)
					}
				}
			}
		}
		w.mu.Unlock()
	}
}
