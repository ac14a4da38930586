package cold

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/ids"
	"github.com/matrx-dev/matrx/testenv"
	"golang.org/x/sys/unix"
)

// skipOrFail skips the test for a missing host capability, or fails it when
// MATRX_REQUIRE_INTEGRATION=1 (CI): testenv.Skip.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	testenv.Skip(t, format, args...)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "test makes mounts and needs root")
	}
}

func requireFUSE(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		skipOrFail(t, "test needs FUSE: %v", err)
	}
}

// testLogger logs to t.Log until the test's cleanups end.
func testLogger(t *testing.T) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testLogWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// testDir returns a fresh directory (symlinks resolved). Whatever the test
// leaves mounted below it, or running with it on the command line, is
// removed when the test ends, even after a failure.
func testDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range processesMentioning(dir) {
			t.Errorf("killing leftover process %d: %s", pid, cmdline(pid))
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if ms := mountsAtOrBelow(t, dir); len(ms) > 0 {
			if !t.Failed() {
				t.Logf("detaching %d mounts below %s", len(ms), dir)
			}
			for i := len(ms) - 1; i >= 0; i-- { // newest first
				_ = unix.Unmount(ms[i].Mountpoint, unix.MNT_DETACH)
			}
		}
	})
	return dir
}

// mountsAtOrBelow lists the mounts on dir or below it, in mountinfo order.
func mountsAtOrBelow(t *testing.T, dir string) []mountInfo {
	t.Helper()
	ms, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	return append(stackAt(ms, dir), below(ms, dir)...)
}

// processesMentioning returns the pids (other than this process) whose
// command line contains s.
func processesMentioning(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if strings.Contains(cmdline(pid), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
}

func alive(pid int) bool { return unix.Kill(pid, 0) == nil }

// assertNoLeftovers checks that nothing the manager made remains below dir:
// no mount, no process, no credential file.
func assertNoLeftovers(t *testing.T, dir string) {
	t.Helper()
	for _, m := range mountsAtOrBelow(t, dir) {
		t.Errorf("leftover mount: %s (%s)", m.Mountpoint, m.FSType)
	}
	for _, pid := range processesMentioning(dir) {
		t.Errorf("leftover process %d: %s", pid, cmdline(pid))
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "secrets")); err == nil && len(entries) > 0 {
		t.Errorf("leftover credential files: %v", entries)
	}
}

// fakeMountS3Binary returns a "mount-s3" symlink to the test binary (see
// fake_linux_test.go) in a directory of its own.
func fakeMountS3Binary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "mount-s3")
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range fakePIDs(t, bin) {
			if strings.Contains(cmdline(pid), bin) {
				t.Errorf("fake daemon %d still running: %s", pid, cmdline(pid))
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	})
	return bin
}

// fakePIDs lists the pids the fake daemon runs recorded next to bin.
func fakePIDs(t *testing.T, bin string) []int {
	entries, err := os.ReadDir(filepath.Dir(bin))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "pid-") {
			continue
		}
		i := strings.LastIndexByte(e.Name(), '-')
		if pid, err := strconv.Atoi(e.Name()[i+1:]); err == nil {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// bindLikeContainer binds src at a new directory the way the runtime binds
// the mountpoint into a container (rbind, then rslave), and removes it at
// cleanup.
func bindLikeContainer(t *testing.T, src, target string) {
	t.Helper()
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatalf("rbind %s %s: %v", src, target, err)
	}
	t.Cleanup(func() { _ = unmountStack(target) })
	if err := unix.Mount("", target, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		t.Fatalf("make-rslave %s: %v", target, err)
	}
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mtimeOf(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Mtim.Sec
}

func topFSType(t *testing.T, path string) string {
	t.Helper()
	ms, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	st := stackAt(ms, path)
	if len(st) == 0 {
		return ""
	}
	return st[len(st)-1].FSType
}

// mountOf returns the mount serving userID.
func mountOf(t *testing.T, m *Manager, userID ids.UserID) Mount {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.users[userID]
	if e == nil {
		t.Fatalf("no mount for %s", userID)
	}
	return e.mount
}

func fuseMountOf(t *testing.T, m *Manager, userID ids.UserID) *FUSEMount {
	t.Helper()
	fm, ok := mountOf(t, m, userID).(*FUSEMount)
	if !ok {
		t.Fatalf("mount for %s is %T", userID, mountOf(t, m, userID))
	}
	return fm
}

func newTestManager(t *testing.T, dir string, d Driver, opts ...ManagerOption) *Manager {
	t.Helper()
	ctx := context.Background()
	m, err := NewManager(ctx, ManagerConfig{Dir: filepath.Join(dir, "cold"), Driver: d, Logger: testLogger(t)}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("close manager: %v", err)
		}
	})
	return m
}
