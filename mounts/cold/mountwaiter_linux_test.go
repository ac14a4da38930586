package cold

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A mount made while waitStaged's waiter waits wakes it (rather than its
// timeout), and one made between two waits is not missed.
func TestMountWaiterWakesOnMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	dir := t.TempDir()
	w := mountTableWaiter()
	defer w.close()
	if w.f == nil {
		t.Fatal("no /proc/self/mountinfo")
	}
	woke := make(chan time.Time, 1)
	go func() { w.wait(time.Minute); woke <- time.Now() }()
	time.Sleep(50 * time.Millisecond)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	select {
	case <-woke:
	case <-time.After(30 * time.Second):
		t.Fatal("a mount did not wake the waiter (it waits a minute otherwise)")
	}
	// A change while nobody polls is seen by the next wait at once.
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { w.wait(time.Minute); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("an unmount before the wait was missed")
	}
}
