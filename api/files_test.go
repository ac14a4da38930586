package api

import (
	"testing"

	"github.com/matrx-dev/matrx/runtime/fshelper"
)

func TestParseRange(t *testing.T) {
	for h, want := range map[string]*fshelper.Range{
		"bytes=0-99":     {Start: 0, End: 99},
		"bytes=100-":     {Start: 100, End: -1},
		"bytes=-500":     {Suffix: 500},
		"bytes=5-1":      nil,
		"bytes=0-1,5-6":  nil,
		"items=0-1":      nil,
		"bytes=-0":       nil,
		"bytes=x-":       nil,
		"":               nil,
		"bytes= 10 - 20": nil,
	} {
		got := parseRange(h)
		if (got == nil) != (want == nil) || got != nil && *got != *want {
			t.Errorf("parseRange(%q) = %+v, want %+v", h, got, want)
		}
	}
}

// FuzzParseRange: no header makes it panic or produce an inverted range.
func FuzzParseRange(f *testing.F) {
	f.Add("bytes=0-99")
	f.Add("bytes=-1")
	f.Fuzz(func(t *testing.T, h string) {
		r := parseRange(h)
		if r != nil && (r.Start < 0 || r.End >= 0 && r.End < r.Start || r.Suffix < 0) {
			t.Fatalf("%q → %+v", h, r)
		}
	})
}

func TestParseMode(t *testing.T) {
	for v, ok := range map[string]bool{"0644": true, "644": true, "1777": true, "0": true, "999": false, "-1": false, "07777777": false, "0x1": false} {
		if _, err := parseMode("mode", v); (err == nil) != ok {
			t.Errorf("parseMode(%q): %v", v, err)
		}
	}
}
