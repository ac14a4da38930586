// Package mountinfo parses /proc/PID/mountinfo (proc(5)): the one place
// that knows its format and escapes. It reads; it never mounts anything.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// Entry is one line of mountinfo.
type Entry struct {
	ID, Parent   int
	Root         string   // root of the mount within its filesystem
	Mountpoint   string   // relative to the reader's root, unescaped
	Optional     []string // "shared:N", "master:N", ...
	FSType       string
	Source       string
	SuperOptions []string
}

// Shared reports whether the mount has a "shared:N" tag.
func (e Entry) Shared() bool {
	for _, o := range e.Optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// Parse reads mountinfo lines:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Paths escape space, tab, newline and backslash as \ooo octal. A
// malformed line is an error wrapping errdefs.ErrDataLoss.
func Parse(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		e, err := ParseLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w: %w", err, errdefs.ErrUnavailable)
	}
	return out, nil
}

// ParseLine parses one mountinfo line.
func ParseLine(line string) (Entry, error) {
	bad := func() (Entry, error) {
		return Entry{}, fmt.Errorf("malformed mountinfo line %q: %w", line, errdefs.ErrDataLoss)
	}
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 7 || sep < 0 || len(f) < sep+3 {
		return bad()
	}
	id, err1 := strconv.Atoi(f[0])
	parent, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return bad()
	}
	e := Entry{
		ID:         id,
		Parent:     parent,
		Root:       Unescape(f[3]),
		Mountpoint: Unescape(f[4]),
		Optional:   append([]string(nil), f[6:sep]...),
		FSType:     f[sep+1],
		Source:     Unescape(f[sep+2]),
	}
	if len(f) > sep+3 {
		e.SuperOptions = strings.Split(f[sep+3], ",")
	}
	return e, nil
}

// Unescape decodes the kernel's \ooo octal escapes; anything else,
// including malformed escapes, is kept as is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			if s[i+1] <= '3' {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// Read parses a mountinfo file, e.g. /proc/self/mountinfo.
func Read(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	return Parse(f)
}

// IsMountpoint reports whether something is mounted at dir, in this
// process's mount namespace.
func IsMountpoint(dir string) bool {
	ms, err := Read("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	want := filepath.Clean(dir)
	for _, m := range ms {
		if m.Mountpoint == want {
			return true
		}
	}
	return false
}
