package fshelper

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Operations.
const (
	OpRead     = "read"     // a regular file's bytes (Range); Header then data
	OpReadTar  = "read_tar" // a file or a directory tree as a tar stream
	OpWrite    = "write"    // body → temp file → rename
	OpWriteTar = "write_tar"
	OpStat     = "stat"
	OpList     = "list"
	OpMkdir    = "mkdir"
	OpMove     = "move"
	OpRemove   = "remove"
	OpWatch    = "watch"
	OpFind     = "find"
	OpGrep     = "grep"
)

// Request is what the daemon asks the helper to do (the first frame).
type Request struct {
	Op   string `json:"op"`
	Path string `json:"path"`
	// To is the destination of a move.
	To string `json:"to,omitempty"`
	// Mode is the permission bits of a written file or a made directory
	// (0 with HasMode unset: keep a replaced file's mode, else 0644/0755).
	Mode    uint32 `json:"mode,omitempty"`
	HasMode bool   `json:"has_mode,omitempty"`
	// Parents makes missing parent directories (write, mkdir, write_tar).
	Parents   bool `json:"parents,omitempty"`
	Overwrite bool `json:"overwrite,omitempty"`
	Recursive bool `json:"recursive,omitempty"`
	// Range selects the bytes of a read.
	Range *Range `json:"range,omitempty"`
	// Depth, Limit and Cursor page a list (Limit also bounds find/grep).
	Depth  int    `json:"depth,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	Cursor string `json:"cursor,omitempty"`
	// Pattern is find's glob or grep's regular expression; Glob filters
	// the files grep reads by name.
	Pattern string `json:"pattern,omitempty"`
	Glob    string `json:"glob,omitempty"`
	// MaxBytes bounds the bytes a tar may unpack (holes of sparse entries
	// included).
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// MaxWatches bounds a watch's inotify watch descriptors.
	MaxWatches int `json:"max_watches,omitempty"`
	// BudgetMS bounds how long a find or grep walks before it answers
	// with what it has (truncated).
	BudgetMS int64 `json:"budget_ms,omitempty"`
}

// Range is a single HTTP byte range: Start-End inclusive, End -1 for "to
// the end"; Suffix > 0 for the last Suffix bytes.
type Range struct {
	Start  int64 `json:"start"`
	End    int64 `json:"end"`
	Suffix int64 `json:"suffix,omitempty"`
}

// File types as the API reports them.
const (
	TypeFile    = "file"
	TypeDir     = "dir"
	TypeSymlink = "symlink"
	TypeOther   = "other"
)

// Info describes one file, as lstat sees it inside the sandbox.
type Info struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Type string `json:"type"`
	// Kind refines TypeOther: fifo, socket, char_device, block_device.
	Kind          string `json:"kind,omitempty"`
	Size          int64  `json:"size"`
	Mode          uint32 `json:"mode"` // permission, setuid/setgid and sticky bits
	MtimeNS       int64  `json:"mtime_ns"`
	UID           uint32 `json:"uid"`
	GID           uint32 `json:"gid"`
	SymlinkTarget string `json:"symlink_target,omitempty"`
}

// Check refuses an Info no honest helper sends. Its strings reach API
// clients, so they are bounded; names come from the sandbox and may hold
// anything but NUL and '/'.
func (i Info) Check() error {
	switch i.Type {
	case TypeFile, TypeDir, TypeSymlink, TypeOther:
	default:
		return protocolError("file type %q", i.Type)
	}
	switch i.Kind {
	case "", "fifo", "socket", "char_device", "block_device":
	default:
		return protocolError("file kind %q", i.Kind)
	}
	switch {
	case len(i.Path) > MaxEntryPath || len(i.Name) > MaxEntryPath:
		return protocolError("file name too long")
	case len(i.SymlinkTarget) > MaxPath:
		return protocolError("symlink target too long")
	case i.Size < 0:
		return protocolError("negative size")
	case i.Mode > 0o7777:
		return protocolError("mode %o", i.Mode)
	case strings.IndexByte(i.Path, 0) >= 0 || strings.IndexByte(i.Name, 0) >= 0 || strings.IndexByte(i.SymlinkTarget, 0) >= 0:
		return protocolError("NUL in a name")
	}
	return nil
}

// Header announces a stream. For a read, Offset and Length are the bytes
// that follow (Length exactly, in data frames); for a tar, Length is -1.
type Header struct {
	Info   Info  `json:"info"`
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Watch event types.
const (
	EventCreate   = "create"
	EventWrite    = "write"
	EventRemove   = "remove"
	EventRename   = "rename"
	EventOverflow = "overflow" // events were lost (queue overflow or the watch limit): rescan
)

// Event is one change a watch saw.
type Event struct {
	Type string `json:"type"`
	Path string `json:"path"`
}

// Check refuses an Event no honest helper sends.
func (e Event) Check() error {
	switch e.Type {
	case EventCreate, EventWrite, EventRemove, EventRename, EventOverflow:
	default:
		return protocolError("event type %q", e.Type)
	}
	if len(e.Path) > MaxEntryPath || strings.IndexByte(e.Path, 0) >= 0 {
		return protocolError("event path")
	}
	return nil
}

// MaxMatchText bounds the text of one grep match.
const MaxMatchText = 1024

// Match is one line grep found.
type Match struct {
	Path string `json:"path"`
	Line int64  `json:"line"`
	Text string `json:"text"`
}

// Check refuses a Match no honest helper sends.
func (m Match) Check() error {
	if len(m.Path) > MaxEntryPath || len(m.Text) > MaxMatchText+8 || m.Line < 1 ||
		strings.IndexByte(m.Path, 0) >= 0 {
		return protocolError("grep match")
	}
	return nil
}

// Result is the last frame of a successful operation.
type Result struct {
	// Created: write, write_tar and mkdir made something new (a move:
	// nothing was replaced).
	Created bool `json:"created,omitempty"`
	// Info is the file written, made or moved.
	Info *Info `json:"info,omitempty"`
	// Truncated: a list, find or grep stopped at its limit or budget.
	Truncated bool   `json:"truncated,omitempty"`
	Cursor    string `json:"cursor,omitempty"`
	// Count is the entries a tar held or a stream sent.
	Count int64 `json:"count,omitempty"`
	// Skipped counts what a tar left out (special files, unreadable
	// entries, other filesystems).
	Skipped int64 `json:"skipped,omitempty"`
}

// Error codes that are not an errno.
const (
	CodeInvalid    = "invalid"     // the request or its body is bad (a tar entry, a cursor, a pattern)
	CodeNotRegular = "not_regular" // a read of a FIFO, socket or device
	CodeIsDir      = "is_dir"      // a read of a directory without tar
	CodeRange      = "range"       // the range starts past the end
	CodeTooLarge   = "too_large"   // a tar unpacks to more than MaxBytes
	CodeLimit      = "limit"       // a watch would need more descriptors than allowed
	CodeAborted    = "aborted"     // the upload ended without its end frame
	CodeChanged    = "changed"     // the file changed while it was read
)

// Error is the last frame of a failed operation: an errno (0 if none) or
// a code, and a message.
type Error struct {
	Errno   int    `json:"errno,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
	// Size is the file's size, for CodeRange.
	Size int64 `json:"size,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Clean bounds and sanitizes what a helper said about an error, for the
// daemon's logs and API responses: at most MaxMessage bytes of valid
// UTF-8, control characters replaced.
func (e *Error) Clean() {
	e.Message = cleanText(e.Message, MaxMessage)
	if e.Errno < 0 || e.Errno > 4095 {
		e.Errno = 0
	}
	switch e.Code {
	case "", CodeInvalid, CodeNotRegular, CodeIsDir, CodeRange, CodeTooLarge, CodeLimit, CodeAborted, CodeChanged:
	default:
		e.Code = ""
	}
}

// cleanText keeps at most max bytes of s as printable UTF-8.
func cleanText(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("…")
			break
		}
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// errorf builds an Error with a code.
func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
