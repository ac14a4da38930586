package apitype

import (
	"encoding/base64"
	"time"
)

// PTYSize is a terminal's size.
type PTYSize struct {
	Rows int `json:"rows"`
	Cols int `json:"cols"`
}

// ProcessRequest is the body of POST /sandboxes/{id}/processes. Timeout is
// in seconds (0 or absent: none). A process with a pty always takes input;
// one without takes it only with stdin true.
type ProcessRequest struct {
	Command string            `json:"command"`
	Cwd     *string           `json:"cwd,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	User    string            `json:"user,omitempty"`
	Tag     string            `json:"tag,omitempty"`
	PTY     *PTYSize          `json:"pty,omitempty"`
	Timeout *int              `json:"timeout,omitempty"`
	Stdin   bool              `json:"stdin,omitempty"`
}

// Process is one background process. ExitCode and EndedAt are null while
// it runs; Pid is its pid inside the sandbox.
type Process struct {
	ProcessID string     `json:"process_id"`
	Tag       string     `json:"tag"`
	Status    string     `json:"status"` // running | exited
	Pid       int        `json:"pid"`
	StartedAt time.Time  `json:"started_at"`
	PTY       *PTYSize   `json:"pty"`
	Command   string     `json:"command"`
	User      string     `json:"user"`
	Stdin     bool       `json:"stdin"`
	ExitCode  *int       `json:"exit_code"`
	TimedOut  bool       `json:"timed_out"`
	EndedAt   *time.Time `json:"ended_at"`
}

// ProcessList answers GET /sandboxes/{id}/processes.
type ProcessList struct {
	Processes []Process `json:"processes"`
}

// ProcessSignalRequest is the body of POST .../processes/{process}/signal.
type ProcessSignalRequest struct {
	Signal string `json:"signal"`
}

// ResizeRequest is the body of POST .../processes/{process}/resize.
type ResizeRequest struct {
	Rows int `json:"rows"`
	Cols int `json:"cols"`
}

// Output event types (one JSON object per line of application/x-ndjson).
const (
	EventData      = "data"
	EventDropped   = "dropped"
	EventEnd       = "end"
	EventKeepalive = "keepalive"
	// EventResize is a control message an attach client sends.
	EventResize = "resize"
)

// NDJSON is the content type of streamed output.
const NDJSON = "application/x-ndjson"

// OutputEvent is one line of a process's output stream or of a streamed
// exec: "data" (stream, offset and exactly one of data, for valid UTF-8,
// or data_b64), "dropped" (bytes lost at the retention cap, from offset),
// "keepalive" (every 15 s on an idle follow), and last "end" (exit_code
// and timed_out; a streamed exec adds cwd). On an attach WebSocket, "end"
// is the server's last text frame and "resize" (rows, cols) the client's.
type OutputEvent struct {
	Type     string  `json:"type"`
	Stream   string  `json:"stream,omitempty"` // stdout | stderr | pty
	Offset   *int64  `json:"offset,omitempty"`
	Data     string  `json:"data,omitempty"`
	DataB64  string  `json:"data_b64,omitempty"`
	Bytes    int64   `json:"bytes,omitempty"`
	ExitCode *int    `json:"exit_code,omitempty"`
	TimedOut *bool   `json:"timed_out,omitempty"`
	Cwd      *string `json:"cwd,omitempty"`
	Rows     int     `json:"rows,omitempty"`
	Cols     int     `json:"cols,omitempty"`
}

// Payload decodes a data event's payload.
func (e OutputEvent) Payload() []byte {
	if e.DataB64 != "" {
		b, err := decodeB64(e.DataB64)
		if err == nil {
			return b
		}
	}
	return []byte(e.Data)
}

func decodeB64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
