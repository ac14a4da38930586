package daemon

import "testing"

func TestMemTotalMB(t *testing.T) {
	for in, want := range map[string]int64{
		"MemTotal:       24600432 kB\nMemFree:        20000000 kB\n": 24023,
		"MemFree: 1 kB\n":          0,
		"MemTotal: lots kB\n":      0,
		"":                         0,
		"MemTotal:        1023 kB": 0,
	} {
		if got := memTotalMB([]byte(in)); got != want {
			t.Errorf("memTotalMB(%q) = %d, want %d", in, got, want)
		}
	}
}
