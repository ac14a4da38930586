package hotsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
)

const manifestVersion = 1

// manifest records, per path relative to Dir, the object version a local
// file was last synced with and the file's state at that moment. It is the
// syncer's only memory: Up uploads what changed against it and deletes only
// what it still describes.
type manifest struct {
	Version   int               `json:"version"`
	Prefix    string            `json:"prefix"`
	SandboxID string            `json:"sandbox_id"`
	UpdatedAt time.Time         `json:"updated_at"`
	Files     map[string]*entry `json:"files"`
}

type entry struct {
	// ETag of the object at Prefix+path that the file corresponds to; empty
	// if the file never had an object (a create that lost a race).
	ETag string `json:"etag,omitempty"`
	// MD5 of the file's content when known (hex).
	MD5 string `json:"md5,omitempty"`
	// State of the local file when it was last synced.
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns,omitempty"`
	Ino     uint64 `json:"ino,omitempty"`
	// Conflict: the local state was saved as NAME.conflict-SANDBOX because
	// the object had changed; ETag still names the version it was based on.
	Conflict bool `json:"conflict,omitempty"`
}

// fileState is what Up compares against an entry.
type fileState struct {
	Size    int64
	MtimeNs int64
	CtimeNs int64
	Ino     uint64
}

func stateOf(fi os.FileInfo) fileState {
	ino, ctime := identity(fi)
	return fileState{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), CtimeNs: ctime, Ino: ino}
}

func (e *entry) sameState(st fileState) bool {
	return e.Size == st.Size && e.MtimeNs == st.MtimeNs && e.CtimeNs == st.CtimeNs && e.Ino == st.Ino
}

func (e *entry) setState(st fileState) {
	e.Size, e.MtimeNs, e.CtimeNs, e.Ino = st.Size, st.MtimeNs, st.CtimeNs, st.Ino
}

func newManifest(prefix, sandboxID string) *manifest {
	return &manifest{Version: manifestVersion, Prefix: prefix, SandboxID: sandboxID, Files: map[string]*entry{}}
}

// loadManifest reads the manifest; a missing file is an empty manifest.
func loadManifest(path, prefix, sandboxID string) (*manifest, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newManifest(prefix, sandboxID), false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read manifest %s: %w", path, err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, false, fmt.Errorf("manifest %s is corrupt: %w: %w", path, errdefs.ErrDataLoss, err)
	}
	if m.Version != manifestVersion {
		return nil, false, fmt.Errorf("manifest %s has version %d, want %d: %w", path, m.Version, manifestVersion, errdefs.ErrFailedPrecondition)
	}
	if m.Prefix != prefix {
		return nil, false, fmt.Errorf("manifest %s is for prefix %q, not %q: %w", path, m.Prefix, prefix, errdefs.ErrFailedPrecondition)
	}
	if m.Files == nil {
		m.Files = map[string]*entry{}
	}
	m.SandboxID = sandboxID
	return &m, true, nil
}

// save writes the manifest atomically: temp file, fsync, rename, fsync of
// the directory.
func (m *manifest) save(path string) error {
	m.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create manifest directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".manifest-*")
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync manifest: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename manifest into place: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
