package runtime

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// Images are resolved by name in the daemon's namespace. Today they arrive
// through Import (no registry is reachable from our hosts); a registry pull
// with credentials slots in behind resolveImage without touching callers.

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

// resolveImage finds an image by name and makes sure it is unpacked.
func (r *Runtime) resolveImage(ctx context.Context, name string) (containerd.Image, error) {
	img, err := r.client.GetImage(ctx, name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("image %q is not present (import it with 'matrx image import'): %w", name, errdefs.ErrNotFound)
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
