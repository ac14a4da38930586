package cold

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a fake "mount-s3" FUSE daemon when it is run
// through a symlink of that name (see fakeMountS3Binary). Its behaviour is
// chosen by the bucket argument:
//
//	fake-fuse   mounts a real FUSE file system (fstype fuse.fakefs) on the
//	            mountpoint argument and serves a root directory whose mtime
//	            is the daemon's pid; SIGUSR1 drops the FUSE connection while
//	            the process stays alive (the mount then answers ENOTCONN).
//	fake-fail   writes an error to stderr and exits 3 without mounting.
//	fake-hang   writes a line to stderr and never mounts.
//	fake-gated  mounts like fake-fuse but holds the kernel's INIT until
//	            the file DIR/gate exists; if DIR/fail exists then, it exits
//	            without answering (as s3fs does when its bucket check
//	            fails), else it serves like fake-fuse.
//
// Every run writes its pid to DIR/pid-BUCKET-PID, DIR being the symlink's
// directory, so tests can check no process is left.
func fakeMountS3(args []string) int {
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "fake mount-s3: usage: mount-s3 BUCKET DIRECTORY [options]")
		return 2
	}
	bucket, mountpoint := args[0], args[1]
	pid := os.Getpid()
	_ = os.WriteFile(filepath.Join(filepath.Dir(os.Args[0]), fmt.Sprintf("pid-%s-%d", bucket, pid)), nil, 0o644)

	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	switch bucket {
	case "fake-fail":
		fmt.Fprintln(os.Stderr, "Error: Failed to create S3 client: bucket fake-fail does not exist")
		return 3
	case "fake-hang":
		fmt.Fprintln(os.Stderr, "fake mount-s3: connecting to S3...")
		<-term
		return 0
	case "fake-fuse":
		return serveFakeFUSE(mountpoint, uint32(pid), term, nil)
	case "fake-gated":
		dir := filepath.Dir(os.Args[0])
		return serveFakeFUSE(mountpoint, uint32(pid), term, func() bool {
			for {
				if _, err := os.Stat(filepath.Join(dir, "gate")); err == nil {
					break
				}
				select {
				case <-term:
					return false
				case <-time.After(5 * time.Millisecond):
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "fail")); err == nil {
				// As long as s3fs's check takes at the least (a round
				// trip), so the start has seen the mount by then.
				time.Sleep(100 * time.Millisecond)
				fmt.Fprintln(os.Stderr, "fake mount-s3: bucket check failed")
				return false
			}
			return true
		})
	}
	fmt.Fprintf(os.Stderr, "fake mount-s3: unknown bucket %q\n", bucket)
	return 2
}

// FUSE protocol constants (linux/fuse.h).
const (
	fuseLookup      = 1
	fuseForget      = 2
	fuseGetattr     = 3
	fuseInit        = 26
	fuseInterrupt   = 36
	fuseDestroy     = 38
	fuseBatchForget = 42
	fuseInHeaderLen = 40
)

// serveFakeFUSE serves the fake file system on mountpoint. beforeInit, when
// set, runs before INIT is answered; false ends the daemon unanswered.
func serveFakeFUSE(mountpoint string, pid uint32, term chan os.Signal, beforeInit func() bool) int {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake mount-s3: open /dev/fuse:", err)
		return 1
	}
	opts := "fd=" + strconv.Itoa(fd) + ",rootmode=40000,user_id=0,group_id=0,allow_other"
	if err := unix.Mount("fakefs", mountpoint, "fuse.fakefs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		fmt.Fprintln(os.Stderr, "fake mount-s3: mount:", err)
		return 1
	}
	fmt.Fprintln(os.Stdout, "fake mount-s3: mounted", mountpoint)

	drop := make(chan os.Signal, 1)
	signal.Notify(drop, syscall.SIGUSR1)
	buf := make([]byte, 1<<17)
	for {
		select {
		case <-term:
			_ = unix.Close(fd)
			return 0
		case <-drop:
			// Closing the only reference to the device ends the
			// connection: the mount stays, answering ENOTCONN.
			_ = unix.Close(fd)
			fmt.Fprintln(os.Stderr, "fake mount-s3: dropped the FUSE connection")
			<-term
			return 0
		default:
		}
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, _ = unix.Poll(fds, 20)
			continue
		case err == unix.ENODEV: // unmounted
			return 0
		case err != nil:
			fmt.Fprintln(os.Stderr, "fake mount-s3: read:", err)
			return 1
		}
		if n < fuseInHeaderLen {
			continue
		}
		req := buf[:n]
		opcode := binary.LittleEndian.Uint32(req[4:])
		unique := binary.LittleEndian.Uint64(req[8:])
		switch opcode {
		case fuseForget, fuseBatchForget, fuseInterrupt:
			// no reply
		case fuseInit:
			if beforeInit != nil && !beforeInit() {
				_ = unix.Close(fd)
				return 1
			}
			out := make([]byte, 64)
			binary.LittleEndian.PutUint32(out[0:], 7)      // major
			binary.LittleEndian.PutUint32(out[4:], 31)     // minor
			binary.LittleEndian.PutUint32(out[8:], 0)      // max_readahead
			binary.LittleEndian.PutUint32(out[20:], 1<<16) // max_write
			binary.LittleEndian.PutUint32(out[24:], 1)     // time_gran
			binary.LittleEndian.PutUint16(out[16:], 16)    // max_background
			binary.LittleEndian.PutUint16(out[18:], 12)    // congestion_threshold
			binary.LittleEndian.PutUint16(out[28:], 1)     // max_pages
			replyFUSE(fd, unique, 0, out)
		case fuseGetattr:
			out := make([]byte, 16+88)
			binary.LittleEndian.PutUint64(out[0:], 0) // attr_valid: always ask
			a := out[16:]
			binary.LittleEndian.PutUint64(a[0:], 1)                   // ino
			binary.LittleEndian.PutUint64(a[32:], uint64(pid))        // mtime
			binary.LittleEndian.PutUint32(a[60:], unix.S_IFDIR|0o755) // mode
			binary.LittleEndian.PutUint32(a[64:], 2)                  // nlink
			binary.LittleEndian.PutUint32(a[80:], 4096)               // blksize
			replyFUSE(fd, unique, 0, out)
		case fuseDestroy:
			replyFUSE(fd, unique, 0, nil)
		case fuseLookup:
			replyFUSE(fd, unique, -int32(unix.ENOENT), nil)
		default:
			replyFUSE(fd, unique, -int32(unix.ENOSYS), nil)
		}
	}
}

func replyFUSE(fd int, unique uint64, errno int32, body []byte) {
	out := make([]byte, 16+len(body))
	binary.LittleEndian.PutUint32(out[0:], uint32(len(out)))
	binary.LittleEndian.PutUint32(out[4:], uint32(errno))
	binary.LittleEndian.PutUint64(out[8:], unique)
	copy(out[16:], body)
	for i := 0; i < 100; i++ {
		if _, err := unix.Write(fd, out); err != unix.EAGAIN {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
