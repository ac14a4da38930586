package execagent

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotStarted wraps every failure that happened before the agent
// started the command: the caller may run it another way (see the package
// doc: the command can no longer run once its gate is closed).
var ErrNotStarted = errors.New("exec agent did not start the command")

// startTimeout bounds how long the agent may take to fork a command.
const startTimeout = 5 * time.Second

// Agent is a running agent as matrxd knows it: the host pid of the process
// it started, pinned by a pidfd.
type Agent struct {
	pid   int
	pidfd int
}

// Open pins the agent process pid (a host pid, as containerd reports it).
func Open(pid int) (*Agent, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd of exec agent %d: %w", pid, err)
	}
	return &Agent{pid: pid, pidfd: fd}, nil
}

// Pid is the agent's host pid.
func (a *Agent) Pid() int { return a.pid }

// Alive reports whether the pinned process has not exited.
func (a *Agent) Alive() bool {
	for {
		fds := []unix.PollFd{{Fd: int32(a.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n == 0
	}
}

// Close releases the pidfd.
func (a *Agent) Close() { unix.Close(a.pidfd) }

// Cmd is one command the agent started.
type Cmd struct {
	// NsPid is the command's pid inside the sandbox, as the agent reported
	// it (see ChildHostPid to find and check it on the host).
	NsPid  int
	conn   *net.UnixConn
	exited chan ExitResult
}

// ExitResult is how a command ended, or why that could not be learned.
type ExitResult struct {
	Code int
	Err  error
}

// Start asks the agent to start req with the given stdio (the caller's
// ends are its own; these are passed on and may be closed afterwards).
func (a *Agent) Start(req Request, stdin, stdout, stderr *os.File) (*Cmd, error) {
	frame, err := encodeRequest(req)
	if err != nil {
		return nil, err
	}
	conn, err := a.dial()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotStarted, err)
	}
	c := &Cmd{conn: conn, exited: make(chan ExitResult, 1)}
	fail := func(err error) (*Cmd, error) {
		conn.Close()
		return nil, fmt.Errorf("%w: %v", ErrNotStarted, err)
	}
	conn.SetDeadline(time.Now().Add(startTimeout))
	rights := unix.UnixRights(int(stdin.Fd()), int(stdout.Fd()), int(stderr.Fd()))
	if _, _, err := conn.WriteMsgUnix(frame[:4], rights, nil); err != nil {
		return fail(fmt.Errorf("send request: %v", err))
	}
	if _, err := conn.Write(frame[4:]); err != nil {
		return fail(fmt.Errorf("send request: %v", err))
	}
	r := bufio.NewReaderSize(conn, MaxReply)
	rep, err := readReply(r)
	if err != nil {
		return fail(err)
	}
	if rep.Error != "" || rep.Pid <= 0 {
		return fail(fmt.Errorf("agent: %q", rep.Error))
	}
	c.NsPid = rep.Pid
	conn.SetDeadline(time.Time{})
	go func() {
		rep, err := readReply(r)
		switch {
		case err != nil:
			c.exited <- ExitResult{Err: err}
		case rep.Exit == nil:
			c.exited <- ExitResult{Err: fmt.Errorf("exec agent: %q", rep.Error)}
		default:
			c.exited <- ExitResult{Code: *rep.Exit}
		}
	}()
	return c, nil
}

// Exited delivers the command's end once.
func (c *Cmd) Exited() <-chan ExitResult { return c.exited }

// Close drops the connection (the command is not affected).
func (c *Cmd) Close() { c.conn.Close() }

func readReply(r *bufio.Reader) (Reply, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return Reply{}, fmt.Errorf("exec agent reply longer than %d bytes", MaxReply)
		}
		return Reply{}, fmt.Errorf("read exec agent reply: %w", err)
	}
	return decodeReply(line)
}

// dial connects to the agent's socket in its network namespace and checks
// that the listener is the pinned process (see the package doc).
func (a *Agent) dial() (*net.UnixConn, error) {
	if !a.Alive() {
		return nil, errors.New("exec agent has exited")
	}
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", a.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the agent's network namespace: %w", err)
	}
	defer unix.Close(ns)
	fd, err := socketIn(ns)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "exec-agent")
	defer f.Close()
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: SocketName}); err != nil {
		return nil, fmt.Errorf("connect to exec agent: %w", err)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, fmt.Errorf("exec agent credentials: %w", err)
	}
	// Checked after the pid: while the pinned process lives, its pid
	// cannot name another process.
	if int(cred.Pid) != a.pid || !a.Alive() {
		return nil, fmt.Errorf("exec agent socket is held by pid %d, not the agent %d", cred.Pid, a.pid)
	}
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, errors.New("exec agent connection is not a Unix socket")
	}
	return uc, nil
}

// socketIn makes a non-blocking Unix socket in network namespace ns (an
// abstract address is looked up in the namespace of the socket, so
// connect can happen back home). The thread that switched is put back, or
// dies with its goroutine if it cannot be.
func socketIn(ns int) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("open own network namespace: %w", err)}
			return
		}
		defer unix.Close(home)
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("enter the agent's network namespace: %w", err)}
			return
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// ChildHostPid finds the host pid of the agent's child whose pid in the
// sandbox is nsPid. Only the agent's own children are candidates, so a
// lying agent cannot point matrxd at any other process.
func (a *Agent) ChildHostPid(nsPid int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", a.pid))
	if err != nil {
		return 0, fmt.Errorf("list exec agent threads: %w", err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", a.pid, t.Name()))
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(b)) {
			var child int
			if _, err := fmt.Sscan(field, &child); err != nil {
				continue
			}
			if p, ok := nsPidOf(child); ok && p == nsPid {
				return child, nil
			}
		}
	}
	return 0, fmt.Errorf("exec agent reported pid %d, which is none of its children", nsPid)
}

// Probe connects and hangs up: nil once the agent accepts connections.
func (a *Agent) Probe() error {
	c, err := a.dial()
	if err != nil {
		return err
	}
	return c.Close()
}
