package execagent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
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
	for {
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		go handle(c)
	}
}

// handle serves one connection: one command.
func handle(fd int) {
	conn := os.NewFile(uintptr(fd), "exec-agent-conn")
	defer conn.Close()
	// Only matrxd, which is outside the sandbox's PID namespace (pid 0 as
	// seen from here), may ask: see the package doc.
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil || cred.Pid != 0 {
		return
	}
	req, files, err := readRequest(fd, conn)
	if err != nil {
		reply(conn, Reply{Error: err.Error()})
		return
	}
	proc, err := os.StartProcess(req.Argv[0], req.Argv, &os.ProcAttr{
		Dir: "/", Env: req.Env, Files: files,
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		reply(conn, Reply{Error: "start: " + err.Error()})
		return
	}
	if !reply(conn, Reply{Pid: proc.Pid}) {
		// matrxd is gone: the child never gets its gate line and exits
		// without running the command (see the package doc).
		proc.Wait()
		return
	}
	state, err := proc.Wait()
	if err != nil {
		reply(conn, Reply{Error: "wait: " + err.Error()})
		return
	}
	code := state.ExitCode()
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	reply(conn, Reply{Exit: &code})
}

// readRequest reads the framed request and the three descriptors sent
// with its first byte.
func readRequest(fd int, conn *os.File) (Request, []*os.File, error) {
	var head [4]byte
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := unix.Recvmsg(fd, head[:], oob, unix.MSG_CMSG_CLOEXEC)
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
func reply(conn *os.File, r Reply) bool {
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
