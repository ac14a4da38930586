package relay

import (
	"os"
	"sync"
)

// segment is one segment file the writer has made and not yet dropped.
type segment struct {
	start, size int64
}

// logWriter appends records to a process directory, rotating segments at
// segSize and deleting the oldest ones so that the total stays within cap
// (plus at most one record). It never blocks on anything but the disk, and
// a failed write loses data, never offsets (see gap records).
type logWriter struct {
	mu      sync.Mutex
	root    *os.Root
	cap     int64
	segSize int64
	segs    []segment // oldest first; the last one is being written
	total   int64
	cur     *os.File
	off     int64 // offset of the next byte
	lost    int64 // bytes lost since lostAt, not yet recorded
	lostAt  int64
	buf     []byte
}

func newLogWriter(root *os.Root, capBytes, segSize int64) (*logWriter, error) {
	w := &logWriter{root: root, cap: capBytes, segSize: segSize, buf: make([]byte, HeaderSize+MaxRecord)}
	f, err := root.OpenFile(SegmentName(0), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	w.cur = f
	w.segs = []segment{{start: 0}}
	return w, nil
}

// append records p (at most MaxRecord bytes) as output of kind.
func (w *logWriter) append(kind byte, p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.flushLost() {
		w.loseLocked(int64(len(p)))
		return
	}
	if !w.writeRecord(header{kind: kind, length: uint32(len(p)), offset: w.off}, p) {
		w.loseLocked(int64(len(p)))
		return
	}
	w.off += int64(len(p))
}

// end writes the end record (after any pending gap).
func (w *logWriter) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.flushLost() {
		w.writeRecord(header{kind: KindEnd, offset: w.off}, nil)
	}
	w.cur.Close()
}

func (w *logWriter) loseLocked(n int64) {
	if w.lost == 0 {
		w.lostAt = w.off
	}
	w.lost += n
	w.off += n
}

// flushLost writes the gap records for lost bytes; false if it could not.
func (w *logWriter) flushLost() bool {
	for w.lost > 0 {
		n := min(w.lost, 1<<31)
		if !w.writeRecord(header{kind: KindGap, length: uint32(n), offset: w.lostAt}, nil) {
			return false
		}
		w.lost -= n
		w.lostAt += n
	}
	return true
}

// writeRecord writes one record with one write(2), rotating and dropping
// segments first. On a failed or short write the segment is cut back to
// its last whole record.
func (w *logWriter) writeRecord(h header, data []byte) bool {
	n := int64(HeaderSize + len(data))
	last := &w.segs[len(w.segs)-1]
	if last.size > 0 && last.size+n > w.segSize {
		if f, err := w.root.OpenFile(SegmentName(h.offset), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			w.cur.Close()
			w.cur = f
			w.segs = append(w.segs, segment{start: h.offset})
			last = &w.segs[len(w.segs)-1]
		}
		// Without a new segment the current one grows past segSize; the
		// cap below still holds across segments.
	}
	for len(w.segs) > 1 && w.total+n > w.cap {
		if err := w.root.Remove(SegmentName(w.segs[0].start)); err != nil && !os.IsNotExist(err) {
			break
		}
		w.total -= w.segs[0].size
		w.segs = w.segs[1:]
		last = &w.segs[len(w.segs)-1]
	}
	b := w.buf[:n]
	putHeader(b, h)
	copy(b[HeaderSize:], data)
	m, err := w.cur.Write(b)
	if err != nil || int64(m) != n {
		if m > 0 {
			w.cur.Truncate(last.size)
		}
		return false
	}
	last.size += n
	w.total += n
	return true
}
