package relay

import (
	"errors"
	"io"
	"os"
	"sort"
)

// Chunk is what a Reader returns: output bytes, or a gap.
type Chunk struct {
	// Kind is KindStdout, KindStderr or KindPTY for data, KindGap when
	// Lost bytes starting at Offset are gone (dropped at the cap, or lost
	// to a failed write).
	Kind   byte
	Offset int64
	// Data aliases the buffer passed to Next.
	Data []byte
	Lost int64
}

// ErrNoData means the reader is at the end of what has been written so
// far: wait for the directory to change and call Next again.
var ErrNoData = errors.New("relay log: no more data yet")

// Reader reads a process's output log from an offset, across segments,
// while the relay may still be writing it. It is not safe for concurrent
// use; open one per client.
type Reader struct {
	root     *os.Root
	off      int64
	f        *os.File
	segStart int64
	pos      int64
	ended    bool
	hdr      [HeaderSize]byte
}

// NewReader opens the log in dir for reading from offset.
func NewReader(dir string, offset int64) (*Reader, error) {
	if offset < 0 {
		return nil, errors.New("relay log: negative offset")
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &Reader{root: root, off: offset}, nil
}

// Offset is the offset of the next byte Next will return.
func (r *Reader) Offset() int64 { return r.off }

// Close releases the reader's files.
func (r *Reader) Close() error {
	if r.f != nil {
		r.f.Close()
	}
	return r.root.Close()
}

// segments lists the start offsets of the segments present, ascending.
func (r *Reader) segments() ([]int64, error) {
	d, err := r.root.Open(".")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, n := range names {
		if s, ok := parseSegmentName(n); ok {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// next returns the start of the first segment after the current one, or
// -1.
func (r *Reader) nextSegment() (int64, error) {
	segs, err := r.segments()
	if err != nil {
		return -1, err
	}
	for _, s := range segs {
		if s > r.segStart {
			return s, nil
		}
	}
	return -1, nil
}

// Next returns the next chunk. buf must hold at least MaxRecord bytes;
// the chunk's Data aliases it. Errors: ErrNoData (nothing more yet), io.EOF
// (the relay wrote its end record), ErrCorrupt.
func (r *Reader) Next(buf []byte) (Chunk, error) {
	if len(buf) < MaxRecord {
		return Chunk{}, errors.New("relay log: buffer smaller than MaxRecord")
	}
	if r.ended {
		return Chunk{}, io.EOF
	}
	for {
		if r.f == nil {
			segs, err := r.segments()
			if err != nil {
				return Chunk{}, err
			}
			if len(segs) == 0 {
				return Chunk{}, ErrNoData
			}
			if r.off < segs[0] {
				c := Chunk{Kind: KindGap, Offset: r.off, Lost: segs[0] - r.off}
				r.off = segs[0]
				return c, nil
			}
			i := sort.Search(len(segs), func(i int) bool { return segs[i] > r.off }) - 1
			f, err := r.root.Open(SegmentName(segs[i]))
			if errors.Is(err, os.ErrNotExist) {
				continue // dropped just now: list again
			}
			if err != nil {
				return Chunk{}, err
			}
			r.f, r.segStart, r.pos = f, segs[i], 0
		}
		n, err := r.f.ReadAt(r.hdr[:], r.pos)
		if n < HeaderSize {
			if err != nil && !errors.Is(err, io.EOF) {
				return Chunk{}, err
			}
			next, lerr := r.nextSegment()
			if lerr != nil {
				return Chunk{}, lerr
			}
			if next < 0 {
				return Chunk{}, ErrNoData // the relay is mid-write, or idle
			}
			// A newer segment exists, so this one is final now; it may have
			// grown between the read above and the listing: read again.
			if n, _ = r.f.ReadAt(r.hdr[:], r.pos); n == HeaderSize {
				continue
			}
			if n > 0 {
				return Chunk{}, ErrCorrupt // a torn header in a finished segment
			}
			r.f.Close()
			r.f = nil
			if next > r.off {
				c := Chunk{Kind: KindGap, Offset: r.off, Lost: next - r.off}
				r.off = next
				return c, nil
			}
			continue
		}
		h, err := parseHeader(r.hdr[:])
		if err != nil {
			return Chunk{}, err
		}
		span := int64(h.length)
		if h.kind == KindEnd {
			span = 0
		}
		if h.offset+span <= r.off && h.kind != KindEnd {
			r.pos += HeaderSize + h.dataLen() // before the wanted offset
			continue
		}
		if h.offset > r.off {
			return Chunk{}, ErrCorrupt // offsets must be contiguous
		}
		switch h.kind {
		case KindEnd:
			r.ended = true
			return Chunk{}, io.EOF
		case KindGap:
			c := Chunk{Kind: KindGap, Offset: r.off, Lost: h.offset + span - r.off}
			r.off = h.offset + span
			r.pos += HeaderSize
			return c, nil
		}
		data := buf[:h.length]
		m, err := r.f.ReadAt(data, r.pos+HeaderSize)
		if m < len(data) {
			if err != nil && !errors.Is(err, io.EOF) {
				return Chunk{}, err
			}
			next, lerr := r.nextSegment()
			if lerr != nil {
				return Chunk{}, lerr
			}
			if next < 0 {
				return Chunk{}, ErrNoData // half-written
			}
			if m, _ = r.f.ReadAt(data, r.pos+HeaderSize); m < len(data) {
				return Chunk{}, ErrCorrupt // torn in a finished segment
			}
		}
		skip := r.off - h.offset
		c := Chunk{Kind: h.kind, Offset: r.off, Data: data[skip:]}
		r.off = h.offset + span
		r.pos += HeaderSize + int64(h.length)
		return c, nil
	}
}

// EndOffset is the offset just past the last whole record written so far
// (where a reader that wants only new output starts).
func EndOffset(dir string) (int64, error) {
	r, err := NewReader(dir, 0)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	segs, err := r.segments()
	if err != nil || len(segs) == 0 {
		return 0, err
	}
	f, err := r.root.Open(SegmentName(segs[len(segs)-1]))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	end, pos := segs[len(segs)-1], int64(0)
	var hb [HeaderSize]byte
	for {
		if n, _ := f.ReadAt(hb[:], pos); n < HeaderSize {
			return end, nil
		}
		h, err := parseHeader(hb[:])
		if err != nil {
			return end, nil
		}
		if h.kind != KindEnd {
			end = h.offset + int64(h.length)
		}
		pos += HeaderSize + h.dataLen()
	}
}
