package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/runtime"
)

// Images of sandboxes. The lifecycle decides when an image is pulled
// (config.pull on create) and when one may go (delete, prune); the runtime
// does the pulling and deleting.
//
//   - config.pull is if_not_present (default: pull only when the image is
//     not there), always (pull on every create; a registry that cannot be
//     reached then fails the create) or never (the image must have been
//     pulled or imported; a missing one is a 404 saying how to get it).
//   - Creates that need the same image at the same time share one pull;
//     each waits for it only as long as its own request lives, and the pull
//     finishes for the others (and the next create) if one gives up.
//   - An image is "in use" from the moment a create starts resolving it
//     until the sandbox is destroyed: by the in-flight count here until the
//     container exists, by the record (a sandbox not in a terminal state)
//     and by containerd (a container made from it) after. Delete refuses an
//     image in use (409); prune keeps those and the pinned ones (the
//     daemon's default image and --pin-image).

// Pull policies of config.pull.
const (
	PullIfNotPresent = "if_not_present"
	PullAlways       = "always"
	PullNever        = "never"
)

// pullTimeout bounds one pull made on behalf of creates.
const pullTimeout = 30 * time.Minute

// imageState is the manager's bookkeeping of images.
type imageState struct {
	mu       sync.Mutex
	starting map[string]int         // image → creates between resolving it and their container
	pulls    map[string]*sharedPull // image → the pull creates are waiting for
}

// sharedPull is one pull that concurrent creates wait for.
type sharedPull struct {
	done   chan struct{}
	digest string
	err    error
}

func validatePull(p string) (string, error) {
	switch p {
	case "":
		return PullIfNotPresent, nil
	case PullIfNotPresent, PullAlways, PullNever:
		return p, nil
	}
	return "", invalid("config.pull %q: want %s (default), %s or %s", p, PullIfNotPresent, PullAlways, PullNever)
}

// acquireImage marks name in use by a starting sandbox; the returned func
// releases it.
func (m *Manager) acquireImage(name string) func() {
	m.images.mu.Lock()
	m.images.starting[name]++
	m.images.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			m.images.mu.Lock()
			if m.images.starting[name]--; m.images.starting[name] <= 0 {
				delete(m.images.starting, name)
			}
			m.images.mu.Unlock()
		})
	}
}

// ensureImage makes image present according to policy and returns its
// digest.
func (m *Manager) ensureImage(ctx context.Context, image, policy string) (string, error) {
	if policy != PullAlways {
		d, err := m.rt.ImageDigest(ctx, image)
		if err == nil || policy == PullNever || !errdefs.IsNotFound(err) {
			return d, err
		}
		d, err = m.sharedPull(ctx, image)
		if err != nil {
			return "", fmt.Errorf("image %s is not present here (pull with config.pull %q, or import it with 'matrx image import'), and pulling it failed: %w", image, PullNever, err)
		}
		return d, nil
	}
	return m.sharedPull(ctx, image)
}

// sharedPull pulls image, or joins the pull of it already running.
func (m *Manager) sharedPull(ctx context.Context, image string) (string, error) {
	m.images.mu.Lock()
	p, running := m.images.pulls[image]
	if !running {
		p = &sharedPull{done: make(chan struct{})}
		m.images.pulls[image] = p
		// The pull belongs to every create waiting for it, not to the
		// first one's request.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pullTimeout)
		go func() {
			defer cancel()
			start := time.Now()
			info, err := m.rt.Pull(pctx, runtime.PullRequest{Ref: image})
			p.digest, p.err = info.Digest, err
			m.images.mu.Lock()
			delete(m.images.pulls, image)
			m.images.mu.Unlock()
			close(p.done)
			if err == nil {
				m.log.Info("image pulled for sandbox creates", "image", image, "digest", info.Digest, "duration_ms", time.Since(start).Milliseconds())
			}
		}()
	}
	m.images.mu.Unlock()
	select {
	case <-p.done:
		return p.digest, p.err
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the pull of %s: %w", image, ctx.Err())
	}
}

// pinned lists the images prune keeps whatever uses them.
func (m *Manager) pinned() map[string]string {
	out := map[string]string{m.limits.DefaultImage: "the daemon's default image (--image)"}
	for _, p := range m.pins {
		out[p] = "pinned (--pin-image)"
	}
	return out
}

// imageUsers maps every image in use to who uses it: live records,
// containers, and creates that have not made their container yet.
func (m *Manager) imageUsers(ctx context.Context) (map[string][]string, error) {
	users := map[string][]string{}
	rs, err := m.List(ctx, "", false)
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		users[r.Config.Image] = append(users[r.Config.Image], r.ID)
	}
	inUse, err := m.rt.ImagesInUse(ctx)
	if err != nil {
		return nil, err
	}
	for img, ids := range inUse {
		for _, id := range ids {
			if !containsString(users[img], id) {
				users[img] = append(users[img], id)
			}
		}
	}
	for img, n := range m.images.starting {
		users[img] = append(users[img], fmt.Sprintf("%d sandbox(es) starting", n))
	}
	for _, ids := range users {
		sort.Strings(ids)
	}
	return users, nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// normalizeImage validates a client's image reference and returns the name
// containerd stores it under.
func normalizeImage(field, ref string) (string, error) {
	if err := validateImageAs(field, ref); err != nil {
		return "", err
	}
	name, err := runtime.NormalizeImageRef(ref)
	if err != nil {
		return "", invalid("%s %q is not a valid image reference (want [REGISTRY/]REPOSITORY[:TAG][@DIGEST], lowercase)", field, ref)
	}
	return name, nil
}

// ValidatePull checks an explicit pull request and normalizes its
// reference, before a stream of progress starts.
func (m *Manager) ValidatePull(req *runtime.PullRequest) error {
	name, err := normalizeImage("ref", req.Ref)
	if err != nil {
		return err
	}
	if err := runtime.ValidatePlatform(req.Platform); err != nil {
		return err
	}
	req.Ref = name
	return nil
}

// PullImage pulls an image for an explicit request (POST /images/pull),
// with the request's credentials if it carries any. It does not join the
// pulls creates share: its credentials and progress are its own.
func (m *Manager) PullImage(ctx context.Context, req runtime.PullRequest) (runtime.ImageInfo, error) {
	name, err := normalizeImage("ref", req.Ref)
	if err != nil {
		return runtime.ImageInfo{}, err
	}
	req.Ref = name
	info, err := m.rt.Pull(ctx, req)
	if err == nil {
		m.ImagesChanged()
	}
	return info, err
}

// DeleteImage removes an image no sandbox uses (409 naming the users
// otherwise).
func (m *Manager) DeleteImage(ctx context.Context, ref string) (string, error) {
	name, err := normalizeImage("image", ref)
	if err != nil {
		return "", err
	}
	m.images.mu.Lock()
	defer m.images.mu.Unlock()
	users, err := m.imageUsers(ctx)
	if err != nil {
		return "", err
	}
	if u := users[name]; len(u) > 0 {
		return "", fmt.Errorf("image %s is in use by %s: %w", name, strings.Join(u, ", "), errdefs.ErrFailedPrecondition)
	}
	if err := m.rt.DeleteImage(ctx, name); err != nil {
		return "", err
	}
	m.log.Info("image deleted", "image", name)
	return name, nil
}

// KeptImage is an image prune left, and why.
type KeptImage struct {
	Name, Reason string
}

// PruneResult is what prune did.
type PruneResult struct {
	Deleted []string
	Kept    []KeptImage
}

// PruneImages deletes every image no sandbox uses and nothing pins.
func (m *Manager) PruneImages(ctx context.Context) (PruneResult, error) {
	res := PruneResult{Deleted: []string{}, Kept: []KeptImage{}}
	m.images.mu.Lock()
	defer m.images.mu.Unlock()
	imgs, err := m.rt.Images(ctx)
	if err != nil {
		return res, err
	}
	users, err := m.imageUsers(ctx)
	if err != nil {
		return res, err
	}
	pins := m.pinned()
	var errs []error
	for _, img := range imgs {
		switch {
		case len(users[img.Name]) > 0:
			res.Kept = append(res.Kept, KeptImage{img.Name, "in use by " + strings.Join(users[img.Name], ", ")})
		case pins[img.Name] != "":
			res.Kept = append(res.Kept, KeptImage{img.Name, pins[img.Name]})
		default:
			if err := m.rt.DeleteImage(ctx, img.Name); err != nil {
				if errdefs.IsFailedPrecondition(err) {
					res.Kept = append(res.Kept, KeptImage{img.Name, err.Error()})
					continue
				}
				errs = append(errs, err)
				continue
			}
			res.Deleted = append(res.Deleted, img.Name)
		}
	}
	m.log.Info("images pruned", "deleted", res.Deleted, "kept", len(res.Kept))
	return res, errors.Join(errs...)
}
