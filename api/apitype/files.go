package apitype

// Content types of the files API.
const (
	// ContentTypeBinary is a file's bytes (downloads, and uploads of one
	// file).
	ContentTypeBinary = "application/octet-stream"
	// ContentTypeTar is a tar stream: a download of a directory (ask with
	// Accept) or an upload to unpack into one.
	ContentTypeTar = "application/x-tar"
	// ContentTypeNDJSON is a stream of JSON lines (file watches).
	ContentTypeNDJSON = "application/x-ndjson"
)

// FileInfo describes one file as the sandbox sees it (lstat: a symlink is
// described, not followed). Mode is octal ("0644", setuid/setgid/sticky
// bits included as a fourth digit); Mtime is RFC 3339 with nanoseconds;
// UID and GID are as the sandbox sees them (1000 is agent).
type FileInfo struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// Type is file, dir, symlink or other; Kind says which other: fifo,
	// socket, char_device or block_device.
	Type          string  `json:"type"`
	Kind          string  `json:"kind,omitempty"`
	Size          int64   `json:"size"`
	Mode          string  `json:"mode"`
	Mtime         string  `json:"mtime"`
	UID           uint32  `json:"uid"`
	GID           uint32  `json:"gid"`
	SymlinkTarget *string `json:"symlink_target"`
}

// FileList answers GET /sandboxes/{id}/files/list and .../find: at most
// the limit of entries; Truncated says there are more, and a list's
// Cursor continues after the last one.
type FileList struct {
	Entries   []FileInfo `json:"entries"`
	Truncated bool       `json:"truncated"`
	Cursor    string     `json:"cursor,omitempty"`
}

// MkdirRequest is POST /sandboxes/{id}/files/mkdir. Mode is octal
// (default "0755").
type MkdirRequest struct {
	Path    string `json:"path"`
	Parents bool   `json:"parents,omitempty"`
	Mode    string `json:"mode,omitempty"`
}

// MoveRequest is POST /sandboxes/{id}/files/move.
type MoveRequest struct {
	From      string `json:"from"`
	To        string `json:"to"`
	Overwrite bool   `json:"overwrite,omitempty"`
}

// FileEvent is one line of GET /sandboxes/{id}/files/watch: create,
// write, remove, rename (the old name; the new one is a create), or
// overflow (events were lost: look again).
type FileEvent struct {
	Type string `json:"type"`
	Path string `json:"path"`
}

// GrepMatch is one matching line.
type GrepMatch struct {
	Path string `json:"path"`
	Line int64  `json:"line"`
	Text string `json:"text"`
}

// GrepResult answers GET /sandboxes/{id}/files/grep.
type GrepResult struct {
	Matches   []GrepMatch `json:"matches"`
	Truncated bool        `json:"truncated"`
}
