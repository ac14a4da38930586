package relay

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func newTestWriter(t *testing.T, capBytes, seg int64) (*logWriter, string) {
	t.Helper()
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	w, err := newLogWriter(root, capBytes, seg)
	if err != nil {
		t.Fatal(err)
	}
	return w, dir
}

// readAll reads a log from offset to its end record, returning the data
// bytes and the total lost.
func readAll(t *testing.T, dir string, offset int64) ([]byte, int64) {
	t.Helper()
	r, err := NewReader(dir, offset)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, MaxRecord)
	var out []byte
	var lost int64
	want := offset
	for {
		c, err := r.Next(buf)
		if errors.Is(err, io.EOF) {
			return out, lost
		}
		if err != nil {
			t.Fatalf("next at %d: %v", r.Offset(), err)
		}
		if c.Offset != want {
			t.Fatalf("chunk at %d, want %d", c.Offset, want)
		}
		if c.Kind == KindGap {
			lost += c.Lost
			want += c.Lost
			continue
		}
		out = append(out, c.Data...)
		want += int64(len(c.Data))
	}
}

func TestRoundTripAndResumeAtEveryOffset(t *testing.T) {
	w, dir := newTestWriter(t, 1<<20, 4096)
	var all []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		p := make([]byte, 1+rng.IntN(700))
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		kind := byte(KindStdout)
		if i%3 == 0 {
			kind = KindStderr
		}
		w.append(kind, p)
		all = append(all, p...)
	}
	w.end()
	got, lost := readAll(t, dir, 0)
	if lost != 0 || !bytes.Equal(got, all) {
		t.Fatalf("read %d bytes (lost %d), wrote %d", len(got), lost, len(all))
	}
	for _, off := range []int64{1, 4095, 4096, 17, int64(len(all) / 2), int64(len(all) - 1), int64(len(all))} {
		got, _ := readAll(t, dir, off)
		if !bytes.Equal(got, all[off:]) {
			t.Fatalf("resume at %d: got %d bytes, want %d", off, len(got), len(all)-int(off))
		}
	}
}

func TestCapDropsWholeOldestSegments(t *testing.T) {
	const capBytes, seg = 64 << 10, 8 << 10
	w, dir := newTestWriter(t, capBytes, seg)
	var all []byte
	for i := 0; i < 1000; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 1000)
		w.append(KindStdout, p)
		all = append(all, p...)
	}
	w.end()
	var disk int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		st, _ := e.Info()
		disk += st.Size()
	}
	if disk > capBytes+HeaderSize+MaxRecord {
		t.Fatalf("%d bytes on disk, cap %d", disk, capBytes)
	}
	got, lost := readAll(t, dir, 0)
	if lost == 0 || lost+int64(len(got)) != int64(len(all)) || !bytes.Equal(got, all[lost:]) {
		t.Fatalf("lost %d + kept %d != %d, or kept bytes are not the tail", lost, len(got), len(all))
	}
	if int64(len(got)) < capBytes/2 {
		t.Fatalf("kept only %d bytes of a %d cap", len(got), capBytes)
	}
}

func TestGapRecordKeepsOffsets(t *testing.T) {
	w, dir := newTestWriter(t, 1<<20, 64<<10)
	w.append(KindStdout, []byte("before"))
	w.loseLocked(100) // as after a failed write
	w.append(KindStderr, []byte("after"))
	w.end()
	r, _ := NewReader(dir, 0)
	defer r.Close()
	buf := make([]byte, MaxRecord)
	var kinds []byte
	var offs []int64
	for {
		c, err := r.Next(buf)
		if err != nil {
			break
		}
		kinds = append(kinds, c.Kind)
		offs = append(offs, c.Offset)
	}
	if !bytes.Equal(kinds, []byte{KindStdout, KindGap, KindStderr}) || offs[1] != 6 || offs[2] != 106 {
		t.Fatalf("kinds %v offsets %v", kinds, offs)
	}
}

func TestReaderWaitsForTornTail(t *testing.T) {
	w, dir := newTestWriter(t, 1<<20, 64<<10)
	w.append(KindStdout, []byte("one"))
	// Half a record, as a reader may see it mid-write.
	f, _ := os.OpenFile(filepath.Join(dir, SegmentName(0)), os.O_WRONLY|os.O_APPEND, 0)
	var h [HeaderSize]byte
	putHeader(h[:], header{kind: KindStdout, length: 3, offset: 3})
	f.Write(h[:10])
	r, _ := NewReader(dir, 0)
	defer r.Close()
	buf := make([]byte, MaxRecord)
	if c, err := r.Next(buf); err != nil || string(c.Data) != "one" {
		t.Fatalf("%q %v", c.Data, err)
	}
	if _, err := r.Next(buf); !errors.Is(err, ErrNoData) {
		t.Fatalf("torn header: %v, want ErrNoData", err)
	}
	f.Write(h[10:])
	f.Write([]byte("tw"))
	if _, err := r.Next(buf); !errors.Is(err, ErrNoData) {
		t.Fatalf("torn data: %v, want ErrNoData", err)
	}
	f.Write([]byte("o"))
	f.Close()
	if c, err := r.Next(buf); err != nil || string(c.Data) != "two" {
		t.Fatalf("%q %v", c.Data, err)
	}
}

func TestSegmentNames(t *testing.T) {
	for _, off := range []int64{0, 1, 1 << 40} {
		if got, ok := parseSegmentName(SegmentName(off)); !ok || got != off {
			t.Fatalf("%d -> %q -> %d", off, SegmentName(off), got)
		}
	}
	for _, bad := range []string{"x.log", "00.log", "000000000000000g.log", "0000000000000000.txt", "ffffffffffffffff.log"} {
		if _, ok := parseSegmentName(bad); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
}

// FuzzReader feeds arbitrary segment contents to the reader: it must never
// panic, loop forever or return data beyond what the file holds.
func FuzzReader(f *testing.F) {
	var rec [HeaderSize + 3]byte
	putHeader(rec[:], header{kind: KindStdout, length: 3, offset: 0})
	copy(rec[HeaderSize:], "abc")
	f.Add(rec[:], int64(0))
	f.Add(append(rec[:], rec[:]...), int64(1))
	f.Fuzz(func(t *testing.T, b []byte, off int64) {
		if off < 0 || off > 1<<20 {
			return
		}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, SegmentName(0)), b, 0o600)
		r, err := NewReader(dir, off)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		buf := make([]byte, MaxRecord)
		total := 0
		for i := 0; i < len(b)+2; i++ {
			c, err := r.Next(buf)
			if err != nil {
				return
			}
			total += len(c.Data)
			if total > len(b) {
				t.Fatalf("returned %d data bytes from a %d-byte file", total, len(b))
			}
		}
		t.Fatalf("no end after %d calls", len(b)+2)
	})
}
