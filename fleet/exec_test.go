package fleet

import (
	"bytes"
	"os/exec"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func nowish() metav1.Time { return metav1.NewTime(time.Unix(1700000000, 0)) }

func TestQuoteArgv(t *testing.T) {
	for _, argv := range [][]string{
		{"echo", "a b", "c"},
		{"printf", "%s\n", "it's", `"q"`, "$HOME", "`id`", ""},
		{"sh", "-c", "echo '$x'; exit 3"},
	} {
		out, err := exec.Command("sh", "-c", "for a in "+quoteArgv(argv[1:])+`; do printf '[%s]' "$a"; done`).Output()
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		for _, a := range argv[1:] {
			want.WriteString("[" + a + "]")
		}
		if string(out) != want.String() {
			t.Errorf("quoteArgv(%q): the shell saw %q, want %q", argv, out, want.String())
		}
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 1, "c\n"},
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc\n", 9, "a\nb\nc\n"},
		{"a\nb\nc", 1, "c"},
		{"a\nb\nc", 2, "b\nc"},
		{"", 3, ""},
	} {
		if got := string(lastLines([]byte(tc.in), tc.n)); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestLimitWriter(t *testing.T) {
	var b bytes.Buffer
	w := &limitWriter{w: &b, n: 5}
	if n, err := w.Write([]byte("abc")); n != 3 || err != nil {
		t.Fatal(n, err)
	}
	if n, err := w.Write([]byte("defg")); n != 2 || err != errLimit {
		t.Fatal(n, err)
	}
	if _, err := w.Write([]byte("x")); err != errLimit || b.String() != "abcde" {
		t.Fatal(err, b.String())
	}
}
