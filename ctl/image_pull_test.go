package ctl

import (
	"bytes"
	"strings"
	"testing"

	"github.com/matrx-dev/matrx/api/apitype"
)

func TestReadPassword(t *testing.T) {
	for in, want := range map[string]string{"s3cret\n": "s3cret", "s3cret\r\n": "s3cret", "s3cret": "s3cret", "a b\nsecond line\n": "a b"} {
		got, err := readPassword(strings.NewReader(in))
		if err != nil || got != want {
			t.Errorf("readPassword(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := readPassword(strings.NewReader("\n")); err == nil {
		t.Error("an empty password was accepted")
	}
}

func TestPullPrinter(t *testing.T) {
	ev := func(layer string, done, total int64) apitype.PullEvent {
		return apitype.PullEvent{Type: "progress", Layer: layer, Done: &done, Total: &total}
	}
	var plain bytes.Buffer
	p := newPullPrinter(&plain, "r/x:1", false)
	for _, e := range []apitype.PullEvent{ev("sha256:aaaaaaaaaaaaaaaa", 0, 2<<20), ev("sha256:aaaaaaaaaaaaaaaa", 1<<20, 2<<20), ev("sha256:bbbbbbbbbbbbbbbb", 5, 5), ev("sha256:aaaaaaaaaaaaaaaa", 2<<20, 2<<20), ev("sha256:aaaaaaaaaaaaaaaa", 2<<20, 2<<20)} {
		p.event(e)
	}
	p.finish(true)
	want := "layer aaaaaaaaaaaa: 2.0 MiB\nlayer bbbbbbbbbbbb: 0.0 MiB\nlayer bbbbbbbbbbbb: complete\nlayer aaaaaaaaaaaa: complete\n"
	if plain.String() != want {
		t.Errorf("plain lines:\n%s\nwant:\n%s", plain.String(), want)
	}
	var bar bytes.Buffer
	p = newPullPrinter(&bar, "r/x:1", true)
	p.event(ev("sha256:aaaaaaaaaaaaaaaa", 1<<20, 2<<20))
	p.finish(true)
	if out := bar.String(); !strings.Contains(out, "\rr/x:1 [") || !strings.Contains(out, "2.0 MiB / 2.0 MiB, 1/1 layers") || !strings.HasSuffix(out, "\n") {
		t.Errorf("bar: %q", out)
	}
}
