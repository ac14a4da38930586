package hotsync

import (
	"encoding/base64"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/objstore"
)

// Object metadata written with every object (the s3fs/rclone convention,
// so that other S3 tools see sensible objects):
//
//	mode          decimal st_mode, file type bits included (s3fs): 33261 is
//	              a regular file 0755, 41471 a symlink, 16877 a directory
//	mtime         seconds.nanoseconds since the epoch ("1709294400.123456789";
//	              rclone's format, s3fs reads the seconds)
//	matrx-writer  "SANDBOX BASE": the sandbox that wrote this version and the
//	              ETag of the version it replaced ("-" for a create); how a
//	              retried or crashed upload recognises its own write
//	matrx-name    the raw path (base64url) when the name is not valid UTF-8
const (
	metaMode   = "mode"
	metaMtime  = "mtime"
	metaWriter = "matrx-writer"
	metaName   = "matrx-name"
)

// Kinds of manifest entries.
const (
	kindFile = ""
	kindDir  = "dir"
	kindLink = "link"
)

// File type bits of st_mode (stat(2)), as s3fs stores them.
const (
	sIFREG = 0o100000
	sIFDIR = 0o040000
	sIFLNK = 0o120000
	sIFMT  = 0o170000
)

// restorableBits are the mode bits Down restores: permissions and the
// sticky bit; never setuid or setgid.
const restorableBits = 0o1777

// maxLinkTarget bounds a symlink object's body (PATH_MAX).
const maxLinkTarget = 4096

// objectMeta is what an object's metadata says about the entry it holds.
type objectMeta struct {
	kind    string
	mode    uint32 // permission bits (restorableBits)
	mtimeNs int64  // 0: unknown
	raw     string // the entry's real relative path, if not the key's
	writer  string // sandbox id of the writer
	base    string // ETag the writer replaced, "" for a create
}

func encodeMeta(kind string, mode uint32, mtimeNs int64, rawRel, escapedRel, writer, base string) objstore.Metadata {
	typ := uint32(sIFREG)
	switch kind {
	case kindDir:
		typ = sIFDIR
	case kindLink:
		typ = sIFLNK
	}
	if base == "" {
		base = "-"
	}
	m := objstore.Metadata{
		metaMode:   strconv.FormatUint(uint64(typ|mode&restorableBits), 10),
		metaMtime:  formatMtime(mtimeNs),
		metaWriter: writer + " " + base,
	}
	if rawRel != escapedRel {
		m[metaName] = encodeRaw(rawRel)
	}
	return m
}

func formatMtime(ns int64) string {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return fmt.Sprintf("%d.%09d", sec, nsec)
}

// parseMtime reads "SEC", "SEC.FRACTION" (up to nanoseconds).
func parseMtime(s string) (int64, bool) {
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || n < -1<<33 || n > 1<<35 {
		return 0, false
	}
	var ns int64
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		f, err := strconv.ParseUint(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		if err != nil {
			return 0, false
		}
		ns = int64(f)
	}
	return n*1e9 + ns, true
}

// decodeMeta reads an object's metadata. Objects without any (written by
// other tools or older versions) are regular files 0644 (directories 0755)
// dated by their LastModified.
func decodeMeta(info objstore.ObjectInfo, isDirKey bool) objectMeta {
	om := objectMeta{kind: kindFile, mode: 0o644}
	if isDirKey {
		om.kind, om.mode = kindDir, 0o755
	}
	if !info.LastModified.IsZero() {
		om.mtimeNs = info.LastModified.UnixNano()
	}
	if v, ok := info.Meta[metaMode]; ok {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			switch n & sIFMT {
			case sIFDIR:
				if isDirKey {
					om.kind = kindDir
				}
			case sIFLNK:
				if !isDirKey {
					om.kind = kindLink
				}
			}
			om.mode = uint32(n) & restorableBits
		}
	}
	if v, ok := info.Meta[metaMtime]; ok {
		if ns, ok := parseMtime(v); ok {
			om.mtimeNs = ns
		}
	}
	if v, ok := info.Meta[metaName]; ok {
		if b, err := base64.RawURLEncoding.DecodeString(v); err == nil {
			om.raw = string(b)
		}
	}
	if v, ok := info.Meta[metaWriter]; ok {
		om.writer, om.base, _ = strings.Cut(v, " ")
		if om.base == "-" {
			om.base = ""
		}
	}
	return om
}

// escapeName maps a relative path that is not valid UTF-8 to an object key
// that is: every byte of an invalid sequence becomes "%XX". Valid paths
// are their own keys (so existing objects keep their names). The raw path
// travels in the matrx-name metadata.
func escapeName(rel string) string {
	if utf8.ValidString(rel) {
		return rel
	}
	var b strings.Builder
	for i := 0; i < len(rel); {
		r, n := utf8.DecodeRuneInString(rel[i:])
		if r == utf8.RuneError && n <= 1 {
			fmt.Fprintf(&b, "%%%02X", rel[i])
			i++
			continue
		}
		b.WriteString(rel[i : i+n])
		i += n
	}
	return b.String()
}

// rawPath validates the raw path an object's metadata names for the key
// rel: it must be a plain relative path (no empty, "." or ".." segment,
// no NUL, segments of at most 255 bytes) whose escaped form is exactly
// rel, so that metadata can never move a file to another place than its
// key names.
func rawPath(raw, rel string) (string, error) {
	if raw == "" {
		return rel, nil
	}
	if escapeName(raw) != rel {
		return "", fmt.Errorf("metadata name does not match key %q: %w", rel, errdefs.ErrInvalidArgument)
	}
	for seg := range strings.SplitSeq(raw, "/") {
		if seg == "" || seg == "." || seg == ".." || len(seg) > 255 || strings.IndexByte(seg, 0) >= 0 {
			return "", fmt.Errorf("metadata name of key %q is not a plain relative path: %w", rel, errdefs.ErrInvalidArgument)
		}
	}
	return raw, nil
}

// modeOf returns the permission bits of a walked entry.
func modeOf(fi fs.FileInfo) uint32 {
	m := fi.Mode()
	perm := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	return perm
}

// Trash layout: a propagated deletion or an overwrite first copies the
// object to
//
//	TRASHPREFIX/YYYY-MM-DD/HHMMSS.NNNNNNNNN-SANDBOX/REL
//
// (UTC), kept for the retention period and pruned by day.

// TrashKey is where the version of rel (relative to the hot prefix)
// trashed at t by sandbox goes.
func TrashKey(trashPrefix string, t time.Time, sandboxID, rel string) string {
	t = t.UTC()
	return trashPrefix + t.Format("2006-01-02") + "/" + t.Format("150405") + fmt.Sprintf(".%09d", t.Nanosecond()) + "-" + sandboxID + "/" + rel
}

// ParseTrashKey splits a key made by TrashKey.
func ParseTrashKey(trashPrefix, key string) (at time.Time, rel string, ok bool) {
	rest, ok := strings.CutPrefix(key, trashPrefix)
	if !ok {
		return time.Time{}, "", false
	}
	day, rest, ok1 := strings.Cut(rest, "/")
	stamp, rel, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || len(stamp) < 16 || rel == "" {
		return time.Time{}, "", false
	}
	at, err := time.Parse("2006-01-02 150405.000000000", day+" "+stamp[:16])
	if err != nil {
		return time.Time{}, "", false
	}
	return at, rel, true
}

// TrashDay returns the day directory ("YYYY-MM-DD/") a trash key is in.
func TrashDay(trashPrefix, key string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(key, trashPrefix)
	if !ok {
		return time.Time{}, false
	}
	day, _, _ := strings.Cut(rest, "/")
	d, err := time.Parse("2006-01-02", day)
	return d, err == nil
}

// dirKey is the key of a directory's marker object (s3fs: "dir/").
func dirKey(rel string) string { return rel + "/" }

// parentDirs yields the directories above rel, deepest first.
func parentDirs(rel string) []string {
	var out []string
	for d := path.Dir(rel); d != "." && d != "/"; d = path.Dir(d) {
		out = append(out, d)
	}
	return out
}

func encodeRaw(rel string) string { return base64.RawURLEncoding.EncodeToString([]byte(rel)) }

func decodeRaw(s string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return string(b), err
}
