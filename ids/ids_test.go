package ids

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParseUserID(t *testing.T) {
	for _, c := range []struct {
		id string
		ok bool
	}{
		{"alice", true}, {"a.b-c_D9", true}, {"..x", true}, {"x..", true}, {strings.Repeat("a", 255), true},
		{"", false}, {".", false}, {"..", false}, {"a/b", false}, {"a b", false}, {"a\x00", false},
		{"ü", false}, {strings.Repeat("a", 256), false},
	} {
		u, err := ParseUserID(c.id)
		if (err == nil) != c.ok {
			t.Errorf("ParseUserID(%q) = %v, want ok=%v", c.id, err, c.ok)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseUserID(%q): error %v is not InvalidArgument", c.id, err)
		}
		if err == nil && u.String() != c.id {
			t.Errorf("ParseUserID(%q) = %q", c.id, u)
		}
	}
}

func TestKeyPrefix(t *testing.T) {
	if p := MustParseUserID("alice").KeyPrefix("hot"); p != "users/alice/hot/" {
		t.Fatalf("KeyPrefix = %q", p)
	}
}

// A record holding an invalid user id fails to decode.
func TestUserIDDecodes(t *testing.T) {
	var r struct {
		U UserID `json:"u"`
	}
	if err := json.Unmarshal([]byte(`{"u":"alice"}`), &r); err != nil || r.U != "alice" {
		t.Fatalf("%v %q", err, r.U)
	}
	if err := json.Unmarshal([]byte(`{"u":".."}`), &r); err == nil {
		t.Fatal("decoded an invalid user id")
	}
	if b, _ := json.Marshal(r); string(b) != `{"u":"alice"}` {
		t.Fatalf("encodes as %s", b)
	}
}

func TestSandboxIDs(t *testing.T) {
	for i := 0; i < 100; i++ {
		if id := NewSandboxID(); !ValidSandboxID(id) {
			t.Fatalf("NewSandboxID() = %q is not valid", id)
		}
	}
	for _, s := range []string{"", "sbx-", "sbx-doesnotexist", "sbx-0123456789AB", "sbx-0123456789abc", "x-0123456789ab"} {
		if ValidSandboxID(s) {
			t.Errorf("ValidSandboxID(%q)", s)
		}
	}
}
