package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"
)

// Images are resolved by name in the daemon's namespace. They arrive
// through Import (an OCI archive) or Pull (a registry, pull.go), and leave
// through DeleteImage, which refuses while a container uses the image and
// also drops the image's user-namespace copy (remap_linux.go) when no other
// image shares its layers.

// ImageInfo describes one image in the daemon's namespace.
type ImageInfo struct {
	Name      string    `json:"name"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// Import reads an OCI image archive, stores its images in the daemon's
// namespace, unpacks them for the snapshotter and returns their names.
func (r *Runtime) Import(ctx context.Context, archive io.Reader) ([]string, error) {
	ctx = r.nsCtx(ctx)
	imgs, err := r.client.Import(ctx, archive)
	if err != nil {
		return nil, fmt.Errorf("import image archive: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("image archive names no image (annotate the index with io.containerd.image.name): %w", errdefs.ErrInvalidArgument)
	}
	var names []string
	for _, m := range imgs {
		img := containerd.NewImage(r.client, m)
		if err := img.Unpack(ctx, r.snapshotter); err != nil {
			return nil, fmt.Errorf("unpack image %s: %w", m.Name, err)
		}
		names = append(names, m.Name)
	}
	sort.Strings(names)
	return names, nil
}

// Images lists the images in the daemon's namespace.
func (r *Runtime) Images(ctx context.Context) ([]ImageInfo, error) {
	ctx = r.nsCtx(ctx)
	imgs, err := r.client.ListImages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]ImageInfo, 0, len(imgs))
	for _, img := range imgs {
		size, _ := img.Size(ctx)
		m := img.Metadata()
		out = append(out, ImageInfo{Name: m.Name, Digest: m.Target.Digest.String(), Size: size, CreatedAt: m.CreatedAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// HasImage reports whether an image of this name exists.
func (r *Runtime) HasImage(ctx context.Context, name string) (bool, error) {
	_, err := r.client.GetImage(r.nsCtx(ctx), name)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// ImageDigest returns the digest of the image called name, or NotFound
// saying how to get it.
func (r *Runtime) ImageDigest(ctx context.Context, name string) (string, error) {
	img, err := r.client.GetImage(r.nsCtx(ctx), name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return "", notPresent(name)
		}
		return "", fmt.Errorf("get image %q: %w", name, err)
	}
	return img.Target().Digest.String(), nil
}

func notPresent(name string) error {
	return fmt.Errorf("image %q is not present (pull it with 'matrx image pull %s' or import an archive with 'matrx image import'): %w", name, name, errdefs.ErrNotFound)
}

// ImagesInUse maps each image name that a sandbox container was created
// from to those containers' ids.
func (r *Runtime) ImagesInUse(ctx context.Context) (map[string][]string, error) {
	cs, err := r.client.ContainerService().List(r.nsCtx(ctx))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := map[string][]string{}
	for _, c := range cs {
		if c.Image != "" {
			out[c.Image] = append(out[c.Image], c.ID)
		}
	}
	for _, ids := range out {
		sort.Strings(ids)
	}
	return out, nil
}

// DeleteImage removes an image and, when no other image shares its
// layers, the user-namespace copy made from it. It refuses (FailedPrecondition)
// while a container uses the image. Space is reclaimed before it returns.
func (r *Runtime) DeleteImage(ctx context.Context, name string) error {
	ctx = r.nsCtx(ctx)
	img, err := r.client.GetImage(ctx, name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("image %q: %w", name, errdefs.ErrNotFound)
		}
		return fmt.Errorf("get image %q: %w", name, err)
	}
	inUse, err := r.ImagesInUse(ctx)
	if err != nil {
		return err
	}
	if ids := inUse[name]; len(ids) > 0 {
		return fmt.Errorf("image %q is used by sandbox %s: %w", name, strings.Join(ids, ", "), errdefs.ErrFailedPrecondition)
	}
	if err := r.dropRemapped(ctx, img); err != nil {
		r.log.Warn("delete image: user-namespace copy kept", "image", name, "error", err)
	}
	if err := r.client.ImageService().Delete(ctx, name, images.SynchronousDelete()); err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("image %q: %w", name, errdefs.ErrNotFound)
		}
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	r.log.Info("image deleted", "image", name)
	return nil
}

// dropRemapped removes the chowned user-namespace copies (containerd 1.6,
// remap_linux.go) of img's layers unless another image has the same
// layers. A copy a container still stands on is kept (the snapshotter
// refuses to remove a parent).
func (r *Runtime) dropRemapped(ctx context.Context, img containerd.Image) error {
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return err
	}
	chain := identity.ChainID(diffIDs).String()
	imgs, err := r.client.ListImages(ctx)
	if err != nil {
		return err
	}
	for _, other := range imgs {
		if other.Name() == img.Name() {
			continue
		}
		if ids, err := other.RootFS(ctx); err == nil && identity.ChainID(ids).String() == chain {
			return nil
		}
	}
	sn := r.client.SnapshotService(r.snapshotter)
	var names []string
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, remapPrefix) && strings.HasSuffix(info.Name, "-"+chain) {
			names = append(names, info.Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := sn.Remove(ctx, n); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// resolveImage finds an image by name and makes sure it is unpacked.
func (r *Runtime) resolveImage(ctx context.Context, name string) (containerd.Image, error) {
	img, err := r.client.GetImage(ctx, name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, notPresent(name)
		}
		return nil, fmt.Errorf("get image %q: %w", name, err)
	}
	ok, err := img.IsUnpacked(ctx, r.snapshotter)
	if err != nil {
		return nil, fmt.Errorf("check image %q: %w", name, err)
	}
	if !ok {
		if err := img.Unpack(ctx, r.snapshotter); err != nil {
			return nil, fmt.Errorf("unpack image %q: %w", name, err)
		}
	}
	return img, nil
}

func withNamespace(ctx context.Context, ns string) context.Context {
	return namespaces.WithNamespace(ctx, ns)
}

// nullIO gives PID 1 no stdio: it has nothing to say.
var nullIO = cio.NullIO
