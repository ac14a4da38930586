package fshelper

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Frame kinds. A frame is one kind byte, a 4-byte big-endian payload
// length, and the payload.
const (
	// KindRequest (daemon → helper) is the first frame on stdin: a JSON
	// Request.
	KindRequest byte = 'Q'
	// KindData carries raw bytes: an upload's body (daemon → helper) or a
	// download's (helper → daemon).
	KindData byte = 'D'
	// KindHole (helper → daemon) is a run of zero bytes in a download: its
	// payload is the run's length, 8 bytes big-endian. The helper sends a
	// sparse file's holes this way (SEEK_HOLE) instead of pushing their
	// zeros through the pipe; Read expands them. The daemon's announced
	// length check bounds them like data.
	KindHole byte = 'O'
	// KindEnd (daemon → helper, empty) says the upload's body is complete.
	// A stdin that ends without it is an aborted upload: nothing is kept.
	KindEnd byte = 'Z'
	// KindHeader (helper → daemon) is a JSON Header: what is about to be
	// streamed, sent before the first data or entry frame.
	KindHeader byte = 'H'
	// KindEntry (helper → daemon) is one JSON item of a stream: an Info
	// (list, find), a Match (grep) or an Event (watch).
	KindEntry byte = 'E'
	// KindResult (helper → daemon) is the JSON Result; the last frame.
	KindResult byte = 'R'
	// KindError (helper → daemon) is a JSON Error; the last frame.
	KindError byte = 'X'
)

// Bounds the reader enforces. The helper's output is hostile (the sandbox
// can ptrace its own processes, or replace them): nothing it sends is
// trusted to be short, well-formed or in order.
const (
	// MaxData bounds one data frame.
	MaxData = 1 << 20
	// MaxJSON bounds one JSON frame (request, header, entry, result, error).
	MaxJSON = 64 << 10
	// MaxPath bounds a path in a request (Linux's PATH_MAX).
	MaxPath = 4096
	// MaxEntryPath bounds a path the helper reports (a deep tree's paths
	// can be longer than PATH_MAX).
	MaxEntryPath = 16 << 10
	// MaxMessage bounds the message of an Error as the daemon keeps it.
	MaxMessage = 1024
)

// ErrProtocol is a frame the reader refuses: unknown kind, oversized,
// malformed JSON, or a stream that ends in the middle of a frame.
var ErrProtocol = errors.New("files helper protocol violation")

func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// Reader reads frames. Data frames are read through Read, which spans
// consecutive data frames and reports io.EOF at the first frame of another
// kind (which Next then returns).
type Reader struct {
	r       *bufio.Reader
	allowed string // kinds this side may receive
	kind    byte   // current frame
	remain  int    // unread payload bytes of a data frame
	zeros   int64  // unread zero bytes of a hole frame
	held    bool   // a frame header was read by Read and awaits Next
	payload []byte // JSON payload of the current frame
	err     error  // sticky
}

// NewReader reads frames of the given kinds from r; any other kind is a
// protocol error.
func NewReader(r io.Reader, kinds ...byte) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), allowed: string(kinds)}
}

// Next advances to the next frame and returns its kind. What is left of a
// data frame is skipped. io.EOF means the stream ended between frames;
// anything else ending the stream is a protocol error.
func (f *Reader) Next() (byte, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.held {
		f.held = false
		return f.kind, nil
	}
	if f.remain > 0 {
		if _, err := f.r.Discard(f.remain); err != nil {
			return 0, f.fail(protocolError("stream ended inside a data frame"))
		}
		f.remain = 0
	}
	f.zeros = 0
	if err := f.header(); err != nil {
		return 0, err
	}
	return f.kind, nil
}

// header reads one frame header (and a JSON payload whole).
func (f *Reader) header() error {
	var h [5]byte
	if _, err := io.ReadFull(f.r, h[:]); err != nil {
		if errors.Is(err, io.EOF) {
			f.err = io.EOF
			return io.EOF
		}
		return f.fail(protocolError("stream ended inside a frame header"))
	}
	kind, n := h[0], binary.BigEndian.Uint32(h[1:])
	if bytes.IndexByte([]byte(f.allowed), kind) < 0 {
		return f.fail(protocolError("unexpected frame kind %q", kind))
	}
	f.kind = kind
	switch kind {
	case KindData:
		if n > MaxData {
			return f.fail(protocolError("data frame of %d bytes (max %d)", n, MaxData))
		}
		f.remain = int(n)
		f.payload = f.payload[:0]
	case KindHole:
		var b [8]byte
		if n != uint32(len(b)) {
			return f.fail(protocolError("hole frame of %d bytes (want 8)", n))
		}
		if _, err := io.ReadFull(f.r, b[:]); err != nil {
			return f.fail(protocolError("stream ended inside a hole frame"))
		}
		z := binary.BigEndian.Uint64(b[:])
		if z == 0 || z > 1<<62 {
			return f.fail(protocolError("hole of %d bytes", z))
		}
		f.zeros = int64(z)
		f.payload = f.payload[:0]
	case KindEnd:
		if n != 0 {
			return f.fail(protocolError("end frame with a payload"))
		}
		f.payload = f.payload[:0]
	default:
		if n > MaxJSON {
			return f.fail(protocolError("%q frame of %d bytes (max %d)", kind, n, MaxJSON))
		}
		if cap(f.payload) < int(n) {
			f.payload = make([]byte, n)
		}
		f.payload = f.payload[:n]
		if _, err := io.ReadFull(f.r, f.payload); err != nil {
			return f.fail(protocolError("stream ended inside a %q frame", kind))
		}
	}
	return nil
}

func (f *Reader) fail(err error) error {
	f.err = err
	return err
}

// Len is the payload length of the current JSON frame.
func (f *Reader) Len() int { return len(f.payload) }

// Decode decodes the current JSON frame into v, strictly: unknown fields
// and trailing data are protocol errors.
func (f *Reader) Decode(v any) error {
	if f.kind == KindData || f.kind == KindHole || f.kind == KindEnd || f.kind == 0 {
		return protocolError("decode of a %q frame", f.kind)
	}
	dec := json.NewDecoder(bytes.NewReader(f.payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return f.fail(protocolError("%q frame: %v", f.kind, err))
	}
	if dec.More() {
		return f.fail(protocolError("%q frame: trailing data", f.kind))
	}
	return nil
}

// Read reads the payload of the current data (or hole) frame and of the
// data and hole frames that follow it. At the first frame of another kind
// it returns io.EOF and holds that frame for Next.
func (f *Reader) Read(p []byte) (int, error) {
	for f.remain == 0 && f.zeros == 0 {
		if f.err != nil {
			return 0, f.err
		}
		if f.held || (f.kind != KindData && f.kind != KindHole) {
			return 0, io.EOF
		}
		if err := f.header(); err != nil {
			if err == io.EOF {
				// A stream may not end where data was expected.
				return 0, f.fail(protocolError("stream ended where data or a final frame was expected"))
			}
			return 0, err
		}
		if f.kind != KindData && f.kind != KindHole {
			f.held = true
			return 0, io.EOF
		}
	}
	if f.zeros > 0 {
		n := int(min(int64(len(p)), f.zeros))
		clear(p[:n])
		f.zeros -= int64(n)
		return n, nil
	}
	if len(p) > f.remain {
		p = p[:f.remain]
	}
	n, err := f.r.Read(p)
	f.remain -= n
	if err != nil && f.remain > 0 {
		return n, f.fail(protocolError("stream ended inside a data frame"))
	}
	return n, nil
}

// Writer writes frames. It buffers; call Flush to push them out.
type Writer struct {
	w   *bufio.Writer
	err error
}

// NewWriter writes frames to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriterSize(w, 64<<10)} }

func (f *Writer) frame(kind byte, payload []byte) error {
	if f.err != nil {
		return f.err
	}
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := f.w.Write(h[:]); err != nil {
		f.err = err
		return err
	}
	if _, err := f.w.Write(payload); err != nil {
		f.err = err
		return err
	}
	return nil
}

// JSON writes v as one frame of kind.
func (f *Writer) JSON(kind byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > MaxJSON {
		return fmt.Errorf("%q frame of %d bytes exceeds %d", kind, len(b), MaxJSON)
	}
	return f.frame(kind, b)
}

// Write writes p as data frames.
func (f *Writer) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), MaxData)
		if err := f.frame(KindData, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// Hole writes a run of n zero bytes as hole frames.
func (f *Writer) Hole(n int64) error {
	var b [8]byte
	for n > 0 {
		c := min(n, 1<<62)
		binary.BigEndian.PutUint64(b[:], uint64(c))
		if err := f.frame(KindHole, b[:]); err != nil {
			return err
		}
		n -= c
	}
	return nil
}

// ReadFrom copies r as data frames, MaxData at a time, without an extra
// copy through the buffer for large chunks.
func (f *Writer) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		c, err := r.Read(buf)
		if c > 0 {
			if _, werr := f.Write(buf[:c]); werr != nil {
				return n, werr
			}
			n += int64(c)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Failed reports whether writing to the underlying writer failed (so a
// copy's error is the writer's, not its source's).
func (f *Writer) Failed() bool { return f.err != nil }

// End writes the end-of-body frame.
func (f *Writer) End() error { return f.frame(KindEnd, nil) }

// Flush pushes buffered frames out.
func (f *Writer) Flush() error {
	if f.err != nil {
		return f.err
	}
	f.err = f.w.Flush()
	return f.err
}
