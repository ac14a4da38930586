package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// User namespaces. With them on, every sandbox runs in its own user
// namespace whose ids 0-65535 map to host ids Base..Base+65535: container
// root is an unprivileged host user, and the agent (1000) is host uid
// Base+1000. The image's files must appear owned by the mapped ids, and
// how depends on what containerd offers (detected at startup from the
// snapshotter's capabilities):
//
//   - containerd ≥ 2 whose overlayfs snapshotter reports "remap-ids" (a
//     kernel with idmapped mounts, runc ≥ 1.2): the snapshotter mounts the
//     image layers idmapped; nothing is copied. `make test` runs the
//     user-namespace, exec, lifecycle, storage and hostile tests a second
//     time on containerd 2.2.9 + runc 1.2.6 for this path.
//   - containerd 1.6 (Debian 12): no idmapped mounts, so the image is
//     chowned into a copy, once per image and range, kept as a GC root
//     (remap_linux.go) and shared by later sandboxes.
//
// All sandboxes share one range (as Docker's userns-remap does). Sandboxes
// still cannot reach each other's processes (separate PID namespaces) or
// files (separate mounts).
//
// Pick a Base that no real host user or other tool's subuid range uses.

// UserNS is the id mapping of sandboxes; the zero value means "off".
type UserNS struct {
	Base uint32
	Size uint32
}

// Enabled reports whether sandboxes get a user namespace.
func (u UserNS) Enabled() bool { return u.Size > 0 }

// HostID maps an id inside a sandbox to the host.
func (u UserNS) HostID(id uint32) uint32 {
	if !u.Enabled() {
		return id
	}
	return u.Base + id
}

func (u UserNS) mappings() []specs.LinuxIDMapping {
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: u.Base, Size: u.Size}}
}

// snapshotterRemaps reports whether a snapshotter's capabilities include
// mapping ids itself ("remap-ids": containerd ≥ 2's overlayfs on a kernel
// with idmapped mounts). containerd 1.6 reports none, and then the image is
// chowned into a copy instead.
func snapshotterRemaps(caps []string) bool {
	for _, c := range caps {
		if c == "remap-ids" {
			return true
		}
	}
	return false
}

// DefaultUserNSBase is the first host id of the sandbox range.
const DefaultUserNSBase = 1_000_000

// DetectUserNS reports whether this kernel can run sandboxes in user
// namespaces, and if not, why.
func DetectUserNS() (bool, string) {
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		return false, "kernel has no user namespaces (/proc/self/ns/user missing)"
	}
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n == 0 {
			return false, "user.max_user_namespaces is 0"
		}
	}
	return true, ""
}

// NewUserNS validates a mapping of 65536 ids from base.
func NewUserNS(base uint32) (UserNS, error) {
	if base < 65536 || uint64(base)+65536 > 1<<32-1 {
		return UserNS{}, fmt.Errorf("user namespace base %d must be in [65536, 2^32-65537]: %w", base, errdefs.ErrInvalidArgument)
	}
	return UserNS{Base: base, Size: 65536}, nil
}

// EnsureTraversable makes every directory from dir up to / searchable by
// others (o+x, never o+r). With user namespaces runc's init runs as an
// unprivileged host uid and must reach the container's rootfs below
// containerd's state dir (/run/containerd is 0700 by default). It returns
// the directories it changed.
func EnsureTraversable(dir string) ([]string, error) {
	var changed []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return changed, fmt.Errorf("stat %s: %w", d, err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o001); err != nil {
				return changed, fmt.Errorf("make %s traversable: %w", d, err)
			}
			changed = append(changed, d)
		}
		if d == "/" || d == "." {
			return changed, nil
		}
	}
}

// remapPrefix names the chowned user-namespace copies of images
// (remap_linux.go): remapPrefix + "BASE-SIZE-CHAINID".
const remapPrefix = "matrx-userns-"
