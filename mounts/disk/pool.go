package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
)

// MinSize is the smallest disk Format makes.
const MinSize = 16 << 20

// Inodes is the inode count a disk of size bytes gets when a sandbox's
// hot tier may hold at most maxNames files, directories and symlinks: the
// cap, or mkfs's default (one per 16 KiB) when that is fewer. More inodes
// than names could never be synced (hot sync stops at the cap), and each
// costs 256 bytes of inode table.
func Inodes(size int64, maxNames int) int {
	return int(min(int64(maxNames), size/(16<<10)))
}

// Pool keeps a few freshly formatted images of one size (the daemon's
// default disk) ready, so that creating a sandbox renames one into place
// instead of running mkfs.ext4 (~10 ms of the create path). Images are
// never reused: each one is formatted once and handed out once, so no
// sandbox can see another's blocks.
//
// Images are formatted under a temporary name and renamed to
// ready-<size>-<inodes>-<uid>-<gid>-<n>.img only when complete, so after a crash the pool
// directory holds complete images (kept, if their size still matches) and
// partial ones (removed). The directory must be on the same filesystem as
// the places images are taken to.
type Pool struct {
	dir      string
	size     int64
	uid, gid int
	inodes   int
	want     int
	log      *slog.Logger

	mu      sync.Mutex
	ready   []string
	seq     int
	filling bool
	closed  bool
	wg      sync.WaitGroup
}

// NewPool opens (creating it) a pool of want images of size bytes with
// inodes inodes (see Inodes) in dir, owned by uid:gid, and starts filling
// it in the background.
func NewPool(dir string, size int64, uid, gid, inodes, want int, log *slog.Logger) (*Pool, error) {
	switch {
	case size < MinSize:
		return nil, fmt.Errorf("disk pool: size %d is below 16 MiB: %w", size, errdefs.ErrInvalidArgument)
	case want < 1 || want > 16:
		return nil, fmt.Errorf("disk pool: %d images: want 1 to 16: %w", want, errdefs.ErrInvalidArgument)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk pool: %w", err)
	}
	p := &Pool{dir: dir, size: size, uid: uid, gid: gid, inodes: inodes, want: want, log: log}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("disk pool: %w", err)
	}
	prefix := p.readyPrefix()
	for _, e := range ents {
		name := e.Name()
		if n, ok := strings.CutPrefix(name, prefix); ok && strings.HasSuffix(n, ".img") && len(p.ready) < want {
			p.ready = append(p.ready, filepath.Join(dir, name))
			if i, err := strconv.Atoi(strings.TrimSuffix(n, ".img")); err == nil && i >= p.seq {
				p.seq = i + 1
			}
			continue
		}
		// Partial, surplus, or of another size (the default changed).
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("disk pool: %w", err)
		}
	}
	p.refill()
	return p, nil
}

// Take moves a ready image of size bytes to img (which must not exist)
// and reports whether it did; on false the caller formats its own. It
// starts a refill either way.
func (p *Pool) Take(img string, size int64) bool {
	if p == nil || size != p.size {
		return false
	}
	defer p.refill()
	for {
		p.mu.Lock()
		if len(p.ready) == 0 {
			p.mu.Unlock()
			return false
		}
		src := p.ready[len(p.ready)-1]
		p.ready = p.ready[:len(p.ready)-1]
		p.mu.Unlock()
		err := os.Link(src, img) // fails if img exists, unlike rename
		switch {
		case err == nil:
			os.Remove(src)
			return true
		case errors.Is(err, fs.ErrNotExist): // gone from the pool dir: try the next
			continue
		case errors.Is(err, fs.ErrExist): // the caller's mistake: keep the image
			p.mu.Lock()
			p.ready = append(p.ready, src)
			p.mu.Unlock()
			return false
		default: // e.g. another filesystem: this image is of no use
			p.log.Warn("disk pool: cannot take an image; formatting one instead", "image", src, "error", err)
			os.Remove(src)
			return false
		}
	}
}

// readyPrefix names complete images of this pool's size and owner: after
// a restart with another default size or user-namespace base, older
// images do not match and are removed.
func (p *Pool) readyPrefix() string {
	return fmt.Sprintf("ready-%d-%d-%d-%d-", p.size, p.inodes, p.uid, p.gid)
}

// refill formats images in the background until want are ready.
func (p *Pool) refill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.filling || p.closed || len(p.ready) >= p.want {
		return
	}
	p.filling = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			p.mu.Lock()
			if p.closed || len(p.ready) >= p.want {
				p.filling = false
				p.mu.Unlock()
				return
			}
			n := p.seq
			p.seq++
			p.mu.Unlock()
			tmp := filepath.Join(p.dir, fmt.Sprintf("tmp-%d.img", n))
			final := filepath.Join(p.dir, fmt.Sprintf("%s%d.img", p.readyPrefix(), n))
			err := Format(tmp, p.size, p.uid, p.gid, p.inodes)
			if err == nil {
				err = os.Rename(tmp, final)
			}
			p.mu.Lock()
			if err != nil {
				os.Remove(tmp)
				p.filling = false
				p.mu.Unlock()
				p.log.Warn("disk pool: formatting failed; sandboxes format their own", "error", err)
				return
			}
			p.ready = append(p.ready, final)
			p.mu.Unlock()
		}
	}()
}

// Ready is how many images are ready now.
func (p *Pool) Ready() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// Close stops refilling and waits for a format in progress. Ready images
// stay for the next start.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
}
