package daemon

import (
	"testing"

	"github.com/containerd/errdefs"
)

func TestParsePoolFlag(t *testing.T) {
	for _, tc := range []struct {
		in    string
		image string
		size  int
		ok    bool
	}{
		{"localhost/matrx/sandbox:latest=5", "localhost/matrx/sandbox:latest", 5, true},
		{"registry:5000/img:tag=0", "registry:5000/img:tag", 0, true},
		{"img", "", 0, false},
		{"=3", "", 0, false},
		{"img=", "", 0, false},
		{"img=-1", "", 0, false},
		{"img=1001", "", 0, false},
		{"img=two", "", 0, false},
	} {
		p, err := parsePoolFlag(tc.in)
		if !tc.ok {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%q: %v, want InvalidArgument", tc.in, err)
			}
			continue
		}
		if err != nil || p.Image != tc.image || p.Size != tc.size {
			t.Errorf("%q: %+v %v, want %s=%d", tc.in, p, err, tc.image, tc.size)
		}
	}
}
