package hotsync

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containerd/errdefs"
)

// manifestVersion 2 is JSON lines: a header object, then one object per
// entry ({"k": KEY, ...}), written and read as a stream so that a large
// manifest is never one buffer. Version 1 (one object with a "files" map)
// is still read.
const manifestVersion = 2

// manifest records, per key relative to the prefix (a directory as
// "dir/"), the object version a local entry was last synced with and the
// entry's state at that moment. It is the syncer's only memory: Up uploads
// what changed against it and deletes only what it still describes.
type manifest struct {
	Version   int       `json:"version"`
	Prefix    string    `json:"prefix"`
	SandboxID string    `json:"sandbox_id"`
	UpdatedAt time.Time `json:"updated_at"`
	// EmptyHeld: the last pass found the tree empty while the manifest
	// held many entries and held the deletions back (the mass-deletion
	// guard); the next verified pass that still finds it empty applies
	// them.
	EmptyHeld bool              `json:"empty_held,omitempty"`
	Files     map[string]*entry `json:"files,omitempty"` // version 1 only, on disk
	entries   map[string]*entry
}

// line is one entry line of a version 2 manifest.
type line struct {
	Key string `json:"k"`
	entry
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
	// Kind is "" (a regular file), "dir" or "link"; Mode the permission
	// bits stored with the object; Raw the entry's real relative path when
	// it is not valid UTF-8 (base64url; the key is its escaped form).
	Kind string `json:"kind,omitempty"`
	Mode uint32 `json:"mode,omitempty"`
	Raw  string `json:"raw,omitempty"`
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
	return &manifest{Version: manifestVersion, Prefix: prefix, SandboxID: sandboxID, entries: map[string]*entry{}}
}

// loadManifest reads the manifest; a missing file is an empty manifest.
func loadManifest(path, prefix, sandboxID string) (*manifest, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newManifest(prefix, sandboxID), false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read manifest %s: %w", path, err)
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReaderSize(f, 64<<10))
	corrupt := func(err error) (*manifest, bool, error) {
		return nil, false, fmt.Errorf("manifest %s is corrupt: %w: %w", path, errdefs.ErrDataLoss, err)
	}
	var m manifest
	if err := dec.Decode(&m); err != nil {
		return corrupt(err)
	}
	switch m.Version {
	case 1:
		m.entries = m.Files
		m.Files = nil
	case manifestVersion:
		m.entries = map[string]*entry{}
		for {
			var l line
			err := dec.Decode(&l)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return corrupt(err)
			}
			e := l.entry
			m.entries[l.Key] = &e
		}
	default:
		return nil, false, fmt.Errorf("manifest %s has version %d, want %d: %w", path, m.Version, manifestVersion, errdefs.ErrFailedPrecondition)
	}
	if m.Prefix != prefix {
		return nil, false, fmt.Errorf("manifest %s is for prefix %q, not %q: %w", path, m.Prefix, prefix, errdefs.ErrFailedPrecondition)
	}
	if m.entries == nil {
		m.entries = map[string]*entry{}
	}
	m.Version = manifestVersion
	m.SandboxID = sandboxID
	return &m, true, nil
}

// save writes the manifest atomically (temp file, fsync, rename, fsync of
// the directory), streaming one line per entry in key order.
func (m *manifest) save(path string) error {
	m.UpdatedAt = time.Now().UTC()
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".manifest-*")
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	w := bufio.NewWriterSize(f, 64<<10)
	enc := json.NewEncoder(w)
	err = enc.Encode(struct {
		Version   int       `json:"version"`
		Prefix    string    `json:"prefix"`
		SandboxID string    `json:"sandbox_id"`
		UpdatedAt time.Time `json:"updated_at"`
		EmptyHeld bool      `json:"empty_held,omitempty"`
	}{manifestVersion, m.Prefix, m.SandboxID, m.UpdatedAt, m.EmptyHeld})
	for _, k := range slices.Sorted(maps.Keys(m.entries)) {
		if err != nil {
			break
		}
		err = enc.Encode(line{Key: k, entry: *m.entries[k]})
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
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

// manifestMissing reports whether no manifest file is at path (any other
// answer, an error too, counts as there).
func manifestMissing(path string) bool {
	_, err := os.Lstat(path)
	return errors.Is(err, fs.ErrNotExist)
}
