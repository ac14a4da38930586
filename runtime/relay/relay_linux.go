package relay

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The descriptors the runc shim hands a binary logger.
const (
	fdStdout = 3
	fdStderr = 4
	fdReady  = 5
)

// drainGrace is how long the relay keeps reading after SIGTERM (the shim
// deletes the process and waits up to 12 s for its logger): enough to take
// what the pipes hold, short enough that a background child still holding
// them does not hold up the delete.
const drainGrace = 250 * time.Millisecond

// readSize is the relay's read buffer per stream.
const readSize = 32 << 10

// Main is matrx-relay: it exits with 0 after its end record, 2 on bad
// arguments or a directory it cannot use.
func Main() {
	// A relay is long-lived and small: keep the heap close to its live size.
	debug.SetGCPercent(20)
	// Two pipes and a FIFO need no parallelism: fewer runtime threads.
	runtime.GOMAXPROCS(1)
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	ready := os.NewFile(fdReady, "ready")
	o, err := parse(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "matrx-relay:", err)
		return 2
	}
	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "matrx-relay:", err)
		return 2
	}
	fail := func(err error) int {
		if f, ferr := root.OpenFile(ErrorName, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); ferr == nil {
			f.WriteString(err.Error() + "\n")
			f.Close()
		}
		fmt.Fprintln(os.Stderr, "matrx-relay:", err)
		return 2
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE, syscall.SIGQUIT)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	w, err := newLogWriter(root, o.Cap, o.Segment)
	if err != nil {
		return fail(fmt.Errorf("first segment: %w", err))
	}
	var hold holder
	if o.Hold != "" {
		if err := hold.open(o.Hold); err != nil {
			return fail(err)
		}
	}
	ctl, err := root.OpenFile(CtlName, os.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fail(fmt.Errorf("control fifo: %w", err))
	}
	if st, err := ctl.Stat(); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		return fail(errors.New("control fifo is not a FIFO"))
	}
	go func() {
		b := make([]byte, 16)
		for {
			n, err := ctl.Read(b)
			for _, c := range b[:n] {
				if c == CmdReleaseStdin {
					hold.release()
				}
			}
			if err != nil {
				return
			}
		}
	}()
	pid, err := root.OpenFile(PidName, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fail(fmt.Errorf("pid file: %w", err))
	}
	pid.WriteString(strconv.Itoa(os.Getpid()))
	pid.Close()

	streams := []*os.File{pollable(fdStdout, "stdout")}
	kinds := []byte{KindStdout}
	if o.PTY {
		kinds[0] = KindPTY
		unix.Close(fdStderr) // the shim gives a terminal's logger an unused pipe
	} else {
		streams = append(streams, pollable(fdStderr, "stderr"))
		kinds = append(kinds, KindStderr)
	}
	ready.Write([]byte{1})
	ready.Close()

	var wg sync.WaitGroup
	for i, f := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, readSize)
			for {
				n, err := f.Read(buf)
				if n > 0 {
					w.append(kinds[i], buf[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-term:
		deadline := time.Now().Add(drainGrace)
		for _, f := range streams {
			f.SetReadDeadline(deadline)
		}
		<-done
	}
	w.end()
	hold.release()
	return 0
}

// pollable wraps an inherited pipe descriptor so that reads go through Go's
// poller (deadlines work, no thread parked per stream).
func pollable(fd int, name string) *os.File {
	unix.SetNonblock(fd, true)
	return os.NewFile(uintptr(fd), name)
}

// holder keeps the stdin FIFO open read-write until released.
type holder struct {
	mu sync.Mutex
	fd int
	ok bool
}

func (h *holder) open(path string) error {
	// Only the last two elements can be in reach of a sandbox (the control
	// directory's stdin directory and the FIFO): no symlink there.
	dfd, err := unix.Open(filepath.Dir(filepath.Dir(path)), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stdin fifo %s: %w", path, err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, filepath.Join(filepath.Base(filepath.Dir(path)), filepath.Base(path)), &unix.OpenHow{
		Flags:   unix.O_RDWR | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fmt.Errorf("stdin fifo %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		unix.Close(fd)
		return fmt.Errorf("stdin fifo %s is not a FIFO", path)
	}
	h.fd, h.ok = fd, true
	return nil
}

func (h *holder) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ok {
		unix.Close(h.fd)
		h.ok = false
	}
}
