package mountinfo

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParse(t *testing.T) {
	in := "36 35 98:0 /mnt1 /mnt\\0402 rw,noatime shared:1 master:2 - ext3 /dev/root rw,errors=continue\n" +
		"37 36 0:5 / /proc rw - proc proc rw\n"
	ms, err := Parse(strings.NewReader(in))
	if err != nil || len(ms) != 2 {
		t.Fatalf("%v %+v", err, ms)
	}
	m := ms[0]
	if m.ID != 36 || m.Parent != 35 || m.Mountpoint != "/mnt 2" || m.FSType != "ext3" || m.Source != "/dev/root" ||
		!m.Shared() || len(m.SuperOptions) != 2 || m.SuperOptions[1] != "errors=continue" {
		t.Fatalf("entry %+v", m)
	}
	if ms[1].Shared() {
		t.Fatal("proc is not shared")
	}
	for _, bad := range []string{"x", "1 2 3 4 5 6", "a b 0:1 / /x rw - t s o", "1 2 0:1 / /x rw t s o"} {
		if _, err := Parse(strings.NewReader(bad)); !errdefs.IsDataLoss(err) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`a\040b`: "a b", `a\\b`: `a\\b`, `\134`: `\`, `\777`: `\777`, `x\04`: `x\04`, "plain": "plain"} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsMountpoint(t *testing.T) {
	if !IsMountpoint("/proc") {
		t.Fatal("/proc is not a mount point?")
	}
	if IsMountpoint(t.TempDir()) {
		t.Fatal("a fresh temp dir is a mount point")
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue")
	f.Fuzz(func(t *testing.T, line string) {
		e, err := ParseLine(line)
		if err == nil && e.FSType == "" {
			t.Fatalf("accepted %q without a filesystem type", line)
		}
	})
}
