package execagent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Main is `matrx-init exec-agent`: it serves until it is killed (the
// sandbox's stop sends it SIGTERM like every other process, and the Go
// default for SIGTERM is to exit).
func Main(args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(os.Stderr, "matrx-init exec-agent: takes no arguments")
		return 2
	}
	if err := serve(); err != nil {
		fmt.Fprintln(os.Stderr, "matrx-init exec-agent:", err)
		return 1
	}
	return 0
}

func serve() error {
	// Not dumpable: a process of the same uid can neither ptrace the agent
	// nor open its /proc/PID/fd (and so not take its listening socket).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make the agent non-dumpable: %w", err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: SocketName}); err != nil {
		return fmt.Errorf("bind the agent socket: %w", err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		return err
	}
	// Through the runtime's poller, like every connection below: a
	// connection waiting for its bytes holds no OS thread (threads count
	// against the sandbox's pids limit).
	lf := os.NewFile(uintptr(fd), "exec-agent")
	ln, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		return err
	}
	r := startReaper()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		go handle(uc, r)
	}
}

// handle serves one connection: one command.
func handle(conn *net.UnixConn, r *reaper) {
	defer conn.Close()
	// Only matrxd, which is outside the sandbox's PID namespace (pid 0 as
	// seen from here), may ask: see the package doc.
	if pid, err := peerPid(conn); err != nil || pid != 0 {
		return
	}
	req, files, err := readRequest(conn)
	if err != nil {
		reply(conn, Reply{Error: err.Error()})
		return
	}
	stdio := make([]uintptr, len(files))
	for i, f := range files {
		stdio[i] = f.Fd()
	}
	// The reaper's lock is held across the fork so that the child's exit
	// cannot be reaped before its waiter is registered.
	r.mu.Lock()
	pid, err := syscall.ForkExec(req.Argv[0], req.Argv, &syscall.ProcAttr{
		Dir: "/", Env: req.Env, Files: stdio,
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	var exited chan syscall.WaitStatus
	if err == nil {
		exited = r.register(pid)
	}
	r.mu.Unlock()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		reply(conn, Reply{Error: "start: " + err.Error()})
		return
	}
	if !reply(conn, Reply{Pid: pid}) {
		// matrxd is gone: the child never gets its gate line and exits
		// without running the command (see the package doc).
		<-exited
		return
	}
	ws := <-exited
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	reply(conn, Reply{Exit: &code})
}

// reaper collects every child's exit with one SIGCHLD-driven loop, so a
// waiting command costs the agent a goroutine, not an OS thread (threads
// count against the sandbox's pids limit, which a command in a fork bomb
// has just exhausted).
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan syscall.WaitStatus
}

func startReaper() *reaper {
	r := &reaper{waiting: map[int]chan syscall.WaitStatus{}}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	go func() {
		for range sig {
			r.reap()
		}
	}()
	return r
}

// register makes the channel pid's status arrives on (r.mu held).
func (r *reaper) register(pid int) chan syscall.WaitStatus {
	c := make(chan syscall.WaitStatus, 1)
	r.waiting[pid] = c
	return c
}

func (r *reaper) reap() {
	for {
		r.mu.Lock()
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			r.mu.Unlock()
			return
		}
		if c := r.waiting[pid]; c != nil {
			c <- ws
			delete(r.waiting, pid)
		}
		r.mu.Unlock()
	}
}

// peerPid is the connecting process's pid as this PID namespace sees it.
func peerPid(conn *net.UnixConn) (int32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Pid, nil
}

// readRequest reads the framed request and the three descriptors sent
// with its first byte (received close-on-exec: ReadMsgUnix asks for it).
func readRequest(conn *net.UnixConn) (Request, []*os.File, error) {
	var head [4]byte
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(head[:], oob)
	if err != nil {
		return Request{}, nil, fmt.Errorf("read request: %w", err)
	}
	files, ferr := parseRights(oob[:oobn])
	fail := func(err error) (Request, []*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return Request{}, nil, err
	}
	if ferr != nil {
		return fail(ferr)
	}
	if len(files) != 3 {
		return fail(fmt.Errorf("request came with %d descriptors, want 3", len(files)))
	}
	if n < len(head) {
		if _, err := io.ReadFull(conn, head[n:]); err != nil {
			return fail(fmt.Errorf("read request: %w", err))
		}
	}
	size := binary.BigEndian.Uint32(head[:])
	if size == 0 || size > MaxRequest {
		return fail(fmt.Errorf("request of %d bytes (limit %d)", size, MaxRequest))
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(conn, body); err != nil {
		return fail(fmt.Errorf("read request: %w", err))
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		return fail(fmt.Errorf("decode request: %w", err))
	}
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return fail(errors.New("request without a program"))
	}
	return req, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse descriptors: %w", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, f := range fds {
			files = append(files, os.NewFile(uintptr(f), "exec-agent-stdio"))
		}
	}
	return files, nil
}

// reply writes one line; false if the connection is gone.
func reply(conn io.Writer, r Reply) bool {
	b, err := json.Marshal(r)
	if err != nil {
		return false
	}
	if len(b) >= MaxReply {
		b, _ = json.Marshal(Reply{Error: "reply too long"})
	}
	_, err = conn.Write(append(b, '\n'))
	return err == nil
}
