package doctor

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// Host paths: each maps an absolute host path onto the (possibly fake) root.

func (h Host) proc(rel string) string { return filepath.Join(h.Proc, rel) }
func (h Host) sys(rel string) string  { return filepath.Join(h.Sys, rel) }
func (h Host) dev(rel string) string  { return filepath.Join(h.Dev, rel) }
func (h Host) etc(rel string) string  { return filepath.Join(h.Etc, rel) }

// lookPath finds an executable regular file called name in h.Path.
func (h Host) lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(h.Path) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not in PATH: %w", name, errdefs.ErrNotFound)
}

// readTrimmed reads a small file (a /proc or /sys knob) without its
// trailing newline.
func readTrimmed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// readInt reads a file holding one integer.
func readInt(path string) (int64, error) {
	s, err := readTrimmed(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s holds %q, not a number: %w", path, s, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// lines returns the lines of a file with comments (#...) and surrounding
// blanks removed, skipping empty ones.
func lines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// firstLineOf runs `bin args...` and returns the first line of its output.
func firstLineOf(ctx context.Context, timeout time.Duration, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, first)
	}
	return strings.TrimSpace(first), nil
}

// mount is one line of /proc/self/mountinfo.
type mount struct {
	point, fstype string
	superOpts     []string
}

func mounts(h Host) ([]mount, error) {
	ls, err := lines(h.proc("self/mountinfo"))
	if err != nil {
		return nil, err
	}
	var out []mount
	for _, l := range ls {
		if m, ok := parseMount(l); ok {
			out = append(out, m)
		} // a fake tree may hold partial lines; skip them
	}
	return out, nil
}

// parseMount reads the fields doctor needs from one mountinfo line
// (proc(5)): "36 35 98:0 /mnt1 /mnt2 rw master:1 - ext3 /dev/root rw".
// Doctor reads a host tree that may be a test's fake, on any OS, so it
// parses this little itself (the mounts packages use moby/sys/mountinfo,
// which is Linux-only).
func parseMount(line string) (mount, bool) {
	f := strings.Fields(line)
	sep := slices.Index(f, "-")
	if len(f) < 7 || sep < 6 || len(f) < sep+3 {
		return mount{}, false
	}
	m := mount{point: unescapeOctal(f[4]), fstype: f[sep+1]}
	if len(f) > sep+3 {
		m.superOpts = strings.Split(f[sep+3], ",")
	}
	return m, true
}

// unescapeOctal decodes the kernel's \ooo escapes in mountinfo paths.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// groupName maps a gid to its name through the host's /etc/group.
func groupName(h Host, gid uint32) string {
	ls, _ := lines(h.etc("group"))
	for _, l := range ls {
		f := strings.Split(l, ":")
		if len(f) >= 3 && f[2] == strconv.FormatUint(uint64(gid), 10) {
			return f[0]
		}
	}
	return strconv.FormatUint(uint64(gid), 10)
}
