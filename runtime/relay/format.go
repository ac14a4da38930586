package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Record kinds.
const (
	KindStdout = 1
	KindStderr = 2
	KindPTY    = 3
	KindGap    = 16
	KindEnd    = 32
)

// HeaderSize is the size of a record header.
const HeaderSize = 16

// MaxRecord bounds one record's data (the relay reads at most this much at
// once); a header claiming more is corruption.
const MaxRecord = 64 << 10

// Well-known file names in a process directory.
const (
	// CtlName is the control FIFO matrxd writes commands to.
	CtlName = "ctl"
	// PidName holds the relay's pid once it is ready.
	PidName = "relay.pid"
	// ErrorName holds why the relay could not start.
	ErrorName = "relay.error"
)

// CmdReleaseStdin, written to the control FIFO, makes the relay close its
// hold on the stdin FIFO.
const CmdReleaseStdin = 'c'

const segSuffix = ".log"

// SegmentName is the file name of the segment starting at offset.
func SegmentName(offset int64) string {
	return fmt.Sprintf("%016x%s", offset, segSuffix)
}

// parseSegmentName returns the start offset of a segment file name.
func parseSegmentName(name string) (int64, bool) {
	hex, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(hex, 16, 63)
	if err != nil {
		return 0, false
	}
	return int64(v), true
}

// header is a decoded record header.
type header struct {
	kind   byte
	length uint32
	offset int64
}

func putHeader(b []byte, h header) {
	b[0] = h.kind
	b[1], b[2], b[3] = 0, 0, 0
	binary.LittleEndian.PutUint32(b[4:8], h.length)
	binary.LittleEndian.PutUint64(b[8:16], uint64(h.offset))
}

// ErrCorrupt reports a record that cannot be right.
var ErrCorrupt = errors.New("relay log: corrupt record")

func parseHeader(b []byte) (header, error) {
	h := header{kind: b[0], length: binary.LittleEndian.Uint32(b[4:8]), offset: int64(binary.LittleEndian.Uint64(b[8:16]))}
	if b[1] != 0 || b[2] != 0 || b[3] != 0 || h.offset < 0 {
		return h, ErrCorrupt
	}
	switch h.kind {
	case KindStdout, KindStderr, KindPTY:
		if h.length == 0 || h.length > MaxRecord {
			return h, ErrCorrupt
		}
	case KindGap:
		if h.length == 0 {
			return h, ErrCorrupt
		}
	case KindEnd:
		if h.length != 0 {
			return h, ErrCorrupt
		}
	default:
		return h, ErrCorrupt
	}
	return h, nil
}

// dataLen is how many bytes of data follow the header in the file.
func (h header) dataLen() int64 {
	if h.kind == KindGap || h.kind == KindEnd {
		return 0
	}
	return int64(h.length)
}
