package api

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPreviewSignatures(t *testing.T) {
	p := &previewConfig{PreviewConfig{Domain: "preview.example.com", Key: make([]byte, 32)}}
	now := time.Now()
	exp := now.Add(time.Hour)
	v := p.signed("sbx-0123456789ab", 8080, exp)
	if _, ok := p.validSigned(v, "sbx-0123456789ab", 8080, now); !ok {
		t.Fatalf("a fresh signature is refused: %s", v)
	}
	for name, c := range map[string]struct {
		v, id string
		port  int
		at    time.Time
	}{
		"expired":       {v, "sbx-0123456789ab", 8080, exp},
		"other port":    {v, "sbx-0123456789ab", 8081, now},
		"other sandbox": {v, "sbx-0123456789ac", 8080, now},
		"later expiry":  {strconv.FormatInt(exp.Unix()+3600, 10) + v[strings.Index(v, "."):], "sbx-0123456789ab", 8080, now},
		"empty":         {"", "sbx-0123456789ab", 8080, now},
		"no dot":        {"12345", "sbx-0123456789ab", 8080, now},
		"forged expiry": {"99999999999" + v[len("1234567890"):], "sbx-0123456789ab", 8080, now},
		"another key's": {(&previewConfig{PreviewConfig{Key: []byte("x")}}).signed("sbx-0123456789ab", 8080, exp), "sbx-0123456789ab", 8080, now},
	} {
		if _, ok := p.validSigned(c.v, c.id, c.port, c.at); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if p.token("sbx-0123456789ab") == p.token("sbx-0123456789ac") || p.token("sbx-0123456789ab") == "" {
		t.Error("tokens are not per sandbox")
	}
}

func TestPreviewHost(t *testing.T) {
	p := &previewConfig{PreviewConfig{Domain: "preview.example.com"}}
	for host, want := range map[string]string{
		"8080-sbx-0123456789ab.preview.example.com":      "sbx-0123456789ab:8080",
		"8080-SBX-0123456789AB.Preview.Example.com:8443": "sbx-0123456789ab:8080",
		"1-sbx-0123456789ab.preview.example.com.":        "sbx-0123456789ab:1",
		"0-sbx-0123456789ab.preview.example.com":         "",
		"08080-sbx-0123456789ab.preview.example.com":     "",
		"65536-sbx-0123456789ab.preview.example.com":     "",
		"8080-sbx-0123456789ab.example.com":              "",
		"a.8080-sbx-0123456789ab.preview.example.com":    "",
		"8080-sbx-x.preview.example.com":                 "",
		"preview.example.com":                            "",
		"8080.preview.example.com":                       "",
	} {
		id, port, ok := p.parseHost(host)
		got := ""
		if ok {
			got = id + ":" + itoaPort(port)
		}
		if got != want {
			t.Errorf("parseHost(%q) = %q, want %q", host, got, want)
		}
	}
}

func itoaPort(p int) string { return strconv.Itoa(p) }

func TestCutParam(t *testing.T) {
	for _, c := range []struct{ raw, val, rest string }{
		{"", "", ""},
		{"a=1&matrx_preview=x.y&b=%20", "x.y", "a=1&b=%20"},
		{"matrx_preview=1", "1", ""},
		{"b=2&a=1", "", "b=2&a=1"},
		{"matrx%5Fpreview=z&c", "z", "c"},
	} {
		val, rest := cutParam(c.raw, "matrx_preview")
		if val != c.val || rest != c.rest {
			t.Errorf("cutParam(%q) = %q %q, want %q %q", c.raw, val, rest, c.val, c.rest)
		}
	}
}

func TestLoadPreviewKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "preview.key")
	k1, err := LoadPreviewKey(path)
	if err != nil || len(k1) != 32 {
		t.Fatalf("new key: %v %d", err, len(k1))
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode())
	}
	k2, err := LoadPreviewKey(path)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("the key changed on reload: %v", err)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadPreviewKey(path); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}
