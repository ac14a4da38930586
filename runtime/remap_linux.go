package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"
)

// withRemappedSnapshot is containerd's WithUserNSRemappedSnapshot with one
// difference that matters: the remapped (chowned) copy of the image is a
// GC root. containerd's version leaves it unreferenced once the last
// container using it is gone, so the garbage collector deletes it and the
// next sandbox pays the full chown again (hundreds of ms for the minimal
// image, seconds for the production one). Here it is made once per image and
// id range and kept: it is a GC root, so it outlives the image too; remove
// it with `ctr snapshots rm` after deleting an image (see README).
func (r *Runtime) withRemappedSnapshot(id string, img containerd.Image) containerd.NewContainerOpts {
	return func(ctx context.Context, client *containerd.Client, c *containers.Container) error {
		diffIDs, err := img.RootFS(ctx)
		if err != nil {
			return err
		}
		parent := identity.ChainID(diffIDs).String()
		name := fmt.Sprintf("%s%d-%d-%s", remapPrefix, r.userns.Base, r.userns.Size, parent)
		sn := client.SnapshotService(r.snapshotter)
		if _, err := sn.Stat(ctx, name); err != nil {
			if !errdefs.IsNotFound(err) {
				return err
			}
			if err := r.makeRemapped(ctx, sn, name, parent); err != nil {
				return fmt.Errorf("remap image %s into the sandbox id range: %w", img.Name(), err)
			}
		}
		if _, err := sn.Prepare(ctx, id, name); err != nil {
			return err
		}
		c.Snapshotter = r.snapshotter
		c.SnapshotKey = id
		c.Image = img.Name()
		return nil
	}
}

func (r *Runtime) makeRemapped(ctx context.Context, sn snapshots.Snapshotter, name, parent string) error {
	key := fmt.Sprintf("%s-remap-%d", name, time.Now().UnixNano())
	mounts, err := sn.Prepare(ctx, key, parent)
	if err != nil {
		return err
	}
	defer sn.Remove(context.WithoutCancel(ctx), key) // a no-op once committed
	err = mount.WithTempMount(ctx, mounts, func(root string) error {
		return filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			st := info.Sys().(*syscall.Stat_t)
			if st.Uid >= r.userns.Size || st.Gid >= r.userns.Size {
				return fmt.Errorf("%s is owned by %d:%d, outside the mapped range", path, st.Uid, st.Gid)
			}
			// Lchown: never follow an image's symlink to a host file.
			if err := os.Lchown(path, int(r.userns.Base+st.Uid), int(r.userns.Base+st.Gid)); err != nil {
				return err
			}
			// chown clears setuid/setgid; keep the image's mode bits.
			if m := info.Mode(); m&os.ModeSymlink == 0 && m&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
				return os.Chmod(path, m)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	err = sn.Commit(ctx, name, key, snapshots.WithLabels(map[string]string{
		"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339),
	}))
	if errdefs.IsAlreadyExists(err) {
		return nil // a concurrent create made it first
	}
	return err
}
