package fshelper

import (
	"encoding/binary"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultMaxWatches is a watch's inotify descriptor budget when the
// daemon sends none.
const DefaultMaxWatches = 1024

const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_DELETE | unix.IN_DELETE_SELF |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_MOVE_SELF

// watcher is one watch: an inotify instance of the helper's own (charged
// to the sandbox user, in the sandbox's user namespace), the directories
// it watches by descriptor, and the budget of descriptors.
type watcher struct {
	h         *helper
	fd        int
	root      string
	recursive bool
	max       int
	wds       map[int32]string // descriptor → path below the root ("" is the root)
	rootWD    int32
	overflow  bool // the budget ran out: said once
	started   bool // the header is out: events may follow
	last      Event
}

// watch streams inotify events for the path (and, recursively, every
// directory below it, up to the descriptor budget) until stdin closes or
// the watched path goes away. The header frame says the watches are in
// place: events after it are not missed.
func (h *helper) watch() error {
	w := &watcher{h: h, root: h.req.Path, recursive: h.req.Recursive, max: h.req.MaxWatches, wds: map[int32]string{}}
	if w.max <= 0 {
		w.max = DefaultMaxWatches
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return pathErr("inotify_init", w.root, err)
	}
	defer unix.Close(fd)
	w.fd = fd
	wd, err := unix.InotifyAddWatch(fd, w.root, watchMask)
	if err != nil {
		return pathErr("inotify_add_watch", w.root, err)
	}
	w.rootWD = int32(wd)
	w.wds[w.rootWD] = ""
	if w.recursive {
		if err := w.addBelow("", false); err != nil {
			return err
		}
		if w.overflow {
			return errorf(CodeLimit, "%s has more directories than the %d a watch may hold; watch a smaller tree or without recursive", w.root, w.max)
		}
	}
	info, err := lstatInfo(w.root)
	if err != nil {
		return err
	}
	if err := h.out.JSON(KindHeader, Header{Info: info}); err != nil {
		return err
	}
	if err := h.out.Flush(); err != nil {
		return err
	}
	w.started = true
	buf := make([]byte, 64<<10)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: 0, Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		if fds[1].Revents != 0 {
			// The daemon sends nothing after the request: anything on
			// stdin, or its end, means stop.
			return h.out.JSON(KindResult, Result{})
		}
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return pathErr("read inotify", w.root, err)
		}
		done, err := w.events(buf[:n])
		if err != nil {
			return err
		}
		if err := h.out.Flush(); err != nil {
			return err
		}
		if done {
			return h.out.JSON(KindResult, Result{})
		}
	}
}

// addBelow watches the directories below rel (never through a symlink);
// with report, what it finds is reported as created (it appeared between
// its parent's event and its own watch).
func (w *watcher) addBelow(rel string, report bool) error {
	fd, err := unix.Open(joinRel(w.root, rel), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // gone again, or not ours to read
	}
	defer unix.Close(fd)
	return walkDir(fd, rel, 0, func(n *node) (bool, error) {
		if report {
			if err := w.emit(EventCreate, n.rel); err != nil {
				return false, err
			}
		}
		if !n.isDir() {
			return false, nil
		}
		return w.add(n.rel), nil
	})
}

// add watches one directory below the root, within the budget.
func (w *watcher) add(rel string) bool {
	if len(w.wds) >= w.max {
		if !w.overflow && w.started {
			w.emit(EventOverflow, rel)
		}
		w.overflow = true
		return false
	}
	wd, err := unix.InotifyAddWatch(w.fd, joinRel(w.root, rel), watchMask|unix.IN_ONLYDIR|unix.IN_DONT_FOLLOW)
	if err != nil {
		return false
	}
	w.wds[int32(wd)] = rel
	return true
}

// emit sends one event, dropping an exact repeat of the previous one.
func (w *watcher) emit(typ, rel string) error {
	ev := Event{Type: typ, Path: joinRel(w.root, rel)}
	if ev == w.last && typ != EventOverflow {
		return nil
	}
	w.last = ev
	return w.h.out.JSON(KindEntry, ev)
}

// events handles one read of inotify events; done means the root is gone.
func (w *watcher) events(buf []byte) (bool, error) {
	for len(buf) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(buf[0:4]))
		mask := binary.NativeEndian.Uint32(buf[4:8])
		nameLen := int(binary.NativeEndian.Uint32(buf[12:16]))
		if unix.SizeofInotifyEvent+nameLen > len(buf) {
			break
		}
		name := strings.TrimRight(string(buf[unix.SizeofInotifyEvent:unix.SizeofInotifyEvent+nameLen]), "\x00")
		buf = buf[unix.SizeofInotifyEvent+nameLen:]
		if mask&unix.IN_Q_OVERFLOW != 0 {
			if err := w.emit(EventOverflow, ""); err != nil {
				return false, err
			}
			continue
		}
		dir, ok := w.wds[wd]
		if !ok {
			continue
		}
		rel := dir
		if name != "" {
			rel = joinRel(dir, name)
			if dir == "" {
				rel = name
			}
		}
		isDir := mask&unix.IN_ISDIR != 0
		var err error
		switch {
		case mask&unix.IN_IGNORED != 0:
			delete(w.wds, wd)
			if wd == w.rootWD {
				return true, nil
			}
		case mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
			err = w.emit(EventCreate, rel)
			if err == nil && isDir && w.recursive && w.add(rel) {
				err = w.addBelow(rel, true)
			}
		case mask&unix.IN_MODIFY != 0:
			err = w.emit(EventWrite, rel)
		case mask&unix.IN_DELETE != 0:
			err = w.emit(EventRemove, rel)
		case mask&unix.IN_MOVED_FROM != 0:
			err = w.emit(EventRename, rel)
		case mask&unix.IN_DELETE_SELF != 0 && wd == w.rootWD:
			err = w.emit(EventRemove, "")
		case mask&unix.IN_MOVE_SELF != 0 && wd == w.rootWD:
			if err = w.emit(EventRename, ""); err == nil {
				return true, nil
			}
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}
