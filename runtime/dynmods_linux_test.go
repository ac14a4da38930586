package runtime

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/testenv"
)

// TestReconfigureCgroupKeepsOptions: the options a reconfigure passes are
// exactly the hierarchy's own. It uses a named cgroup v1 hierarchy of the
// test's own (no controllers), because cgroup v1 refuses a reconfigure
// whose flags differ from the mount's at all: with one option left out
// (xattr here; nsdelegate on a host's cgroup2 would be dropped silently)
// the reconfigure fails. The mount's own flags stay as they were.
func TestReconfigureCgroupKeepsOptions(t *testing.T) {
	testenv.NeedRoot(t, "mounts a cgroup hierarchy")
	dir := t.TempDir()
	name := fmt.Sprintf("matrx-dynmods-%d", os.Getpid())
	err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "none,name="+name+",xattr")
	if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
		testenv.Skip(t, "this kernel mounts no named cgroup v1 hierarchy: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount the test hierarchy: %v", err)
		}
	})
	info := func() *mountinfo.Info {
		t.Helper()
		ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
		if err != nil || len(ms) != 1 {
			t.Fatalf("mountinfo of %s: %v %v", dir, ms, err)
		}
		return ms[0]
	}
	before := info()
	m, err := cgroupMountAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name=" + name, "xattr"} {
		if !m.hasOption(want) {
			t.Fatalf("the test hierarchy's options %v lack %q", m.superOptions, want)
		}
	}
	if err := reconfigureCgroup(m); err != nil {
		t.Fatalf("a reconfigure with the hierarchy's own options failed: %v", err)
	}
	if after := info(); after.Options != before.Options || after.VFSOptions != before.VFSOptions {
		t.Errorf("the reconfigure changed the mount: %q %q -> %q %q", before.Options, before.VFSOptions, after.Options, after.VFSOptions)
	}
	// The check has teeth: leaving an option out is refused.
	short := cgroupFSMount{point: m.point, superOptions: slices.DeleteFunc(slices.Clone(m.superOptions), func(o string) bool { return o == "xattr" })}
	if err := reconfigureCgroup(short); err == nil {
		t.Error("cgroup v1 took a reconfigure without one of its options; this test would not see options dropped")
	}
}

// TestFavorCgroupDynMods runs what matrxd runs at startup on the host's
// own cgroup2 mount, from the option off: afterwards the mount lists
// favordynmods and every option it had. (Turning the option off first is
// harmless: it only makes cgroup moves slow again for the few
// microseconds until it is back on.)
func TestFavorCgroupDynMods(t *testing.T) {
	testenv.NeedRoot(t, "reconfigures the host's cgroup mount")
	m, err := cgroupMount()
	if errdefs.IsNotImplemented(err) {
		// A host with cgroup v1 alone: matrxd is told so and logs it;
		// there is nothing to change. (In `make test`'s crun pass, a
		// mount namespace without the cgroup2 mount, the host's is
		// reached through PID 1's root and tested below.)
		if _, changed, err := FavorCgroupDynMods(); !errdefs.IsNotImplemented(err) || changed {
			t.Fatalf("FavorCgroupDynMods without a cgroup2 mount: changed %v, %v; want ErrNotImplemented", changed, err)
		}
		t.Logf("no cgroup2 mount here: %v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if m.hasOption(dynModsOption) {
		off := m
		off.superOptions = slices.DeleteFunc(slices.Clone(m.superOptions), func(o string) bool { return o == dynModsOption })
		if err := reconfigureCgroup(off); err != nil {
			t.Fatalf("turn %s off for the test: %v", dynModsOption, err)
		}
		t.Cleanup(func() { FavorCgroupDynMods() })
		if m, err = m.reread(); err != nil || m.hasOption(dynModsOption) {
			t.Fatalf("%s still on after turning it off: %v %v", dynModsOption, m.superOptions, err)
		}
	}
	point, changed, err := FavorCgroupDynMods()
	if errdefs.IsNotImplemented(err) {
		testenv.Skip(t, "%v", err)
	}
	if err != nil || !changed || point != m.point {
		t.Fatalf("FavorCgroupDynMods: %s changed %v, %v (want %s changed)", point, changed, err, m.point)
	}
	after, err := m.reread()
	if err != nil {
		t.Fatal(err)
	}
	if own, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup2")); err == nil && len(own) == 0 && !m.viaInit {
		t.Errorf("no cgroup2 mount in this namespace, yet %s was not reached through PID 1's root", m.point)
	}
	for _, o := range append(slices.Clone(m.superOptions), dynModsOption) {
		if !after.hasOption(o) {
			t.Errorf("%s lacks %q after FavorCgroupDynMods: %v (before: %v)", point, o, after.superOptions, m.superOptions)
		}
	}
	if _, changed, err := FavorCgroupDynMods(); err != nil || changed {
		t.Errorf("a second FavorCgroupDynMods changed %v, %v; want nothing to do", changed, err)
	}
}
