package doctor

import (
	"slices"
	"testing"
)

func TestParseMount(t *testing.T) {
	m, ok := parseMount(`80 22 0:50 / /tmp/with\040space\134back rw master:3 - ext4 /dev/vda rw,resv_strict`)
	if !ok || m.point != `/tmp/with space\back` || m.fstype != "ext4" || !slices.Equal(m.superOpts, []string{"rw", "resv_strict"}) {
		t.Fatalf("parseMount = %+v, %v", m, ok)
	}
	for _, bad := range []string{"", "1 2 3", "1 1 0:1 / / rw shared:1 ext4 a b"} {
		if _, ok := parseMount(bad); ok {
			t.Errorf("parseMount(%q) accepted", bad)
		}
	}
}

func FuzzParseMount(f *testing.F) {
	f.Add(`22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw`)
	f.Add(`1 1 0:1 \ \0 \777\1234 rw - a b c`)
	f.Fuzz(func(t *testing.T, line string) {
		if m, ok := parseMount(line); ok && m.fstype == "" {
			t.Fatalf("parsed %q with an empty fstype", line)
		}
	})
}
