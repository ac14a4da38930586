package cold

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/ids"
)

// bindBeneath makes root/USER/cold (creating what is missing, through the
// FUSE mount of users/: the shared one or a spare) and bind-mounts it on target. Each step resolves one name
// beneath the previous directory with no symlink, no magic link and no
// mount crossing (openat2), and the bind's source is the opened directory
// itself, so no object name or symlink in the bucket can point the bind
// anywhere but the user's own directory.
func bindBeneath(root string, userID ids.UserID, target string) error {
	name := userID.String()
	if name == "." || name == ".." {
		return fmt.Errorf("cold: user id %q cannot name a directory: %w", name, errdefs.ErrInvalidArgument)
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cold: open the users/ mount %s: %w: %w", root, err, errdefs.ErrUnavailable)
	}
	defer func() { unix.Close(dir) }()
	for _, elem := range []string{name, "cold"} {
		if err := unix.Mkdirat(dir, elem, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("cold: create %s's directory %q in the users/ mount: %w: %w", userID, elem, err, errdefs.ErrUnavailable)
		}
		fd, err := unix.Openat2(dir, elem, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
		})
		if err != nil {
			return fmt.Errorf("cold: open %s's directory %q in the users/ mount (it must be a plain directory): %w: %w", userID, elem, err, errdefs.ErrUnavailable)
		}
		unix.Close(dir)
		dir = fd
	}
	if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(dir), target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("cold: bind %s's directory of the users/ mount onto %s: %w: %w", userID, target, err, errdefs.ErrUnavailable)
	}
	return nil
}
