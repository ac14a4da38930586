package cold

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A mount made while waitStaged's waiter waits can wake it before its
// timeout. On the development VM's kernel (6.18) a Go process's poll
// misses many changes (2-6 of 10 mounts woke it early in five runs; a
// Python loop doing the same woke 10 of 10), which waitStaged's 5 ms cap
// bounds; so this asks for one early wake in ten mounts: a waiter that
// never wakes early (a wrong poll event, say) fails it.
func TestMountWaiterWakesOnMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	dir := t.TempDir()
	early := 0
	for i := 0; i < 10; i++ {
		w := mountTableWaiter()
		if w.f == nil {
			t.Fatal("no /proc/self/mountinfo")
		}
		woke := make(chan struct{})
		go func() { w.wait(2 * time.Second); close(woke) }()
		time.Sleep(20 * time.Millisecond)
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-woke:
			early++
		case <-time.After(time.Second):
			<-woke
		}
		w.close()
		if err := unix.Unmount(dir, 0); err != nil {
			t.Fatal(err)
		}
	}
	if early < 1 {
		t.Fatalf("the waiter woke early for %d of 10 mounts, want at least one", early)
	}
	t.Logf("woke early for %d of 10 mounts", early)
}
