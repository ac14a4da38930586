package fshelper

import (
	"bufio"
	"bytes"
	"io"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of find and grep.
const (
	DefaultSearchLimit = 1000
	MaxSearchLimit     = 10000
	// DefaultBudget is how long a find or grep walks before it answers
	// with what it found so far (truncated).
	DefaultBudget = 30 * time.Second
	// maxGrepLine is how much of a line grep matches; the rest of a longer
	// line is skipped.
	maxGrepLine = 64 << 10
)

// search is what find and grep share: the limit, the budget and the count.
type search struct {
	limit     int
	deadline  time.Time
	count     int
	truncated bool
	ticks     int
}

func (h *helper) newSearch() *search {
	s := &search{limit: h.req.Limit}
	if s.limit <= 0 || s.limit > MaxSearchLimit {
		s.limit = DefaultSearchLimit
	}
	budget := time.Duration(h.req.BudgetMS) * time.Millisecond
	if budget <= 0 {
		budget = DefaultBudget
	}
	s.deadline = time.Now().Add(budget)
	return s
}

// tick reports whether the budget is spent (checked every few calls).
func (s *search) tick() bool {
	s.ticks++
	if s.ticks%128 == 0 && time.Now().After(s.deadline) {
		s.truncated = true
		return true
	}
	return false
}

// full reports whether one more result would exceed the limit.
func (s *search) full() bool {
	if s.count >= s.limit {
		s.truncated = true
		return true
	}
	return false
}

func (s *search) result() Result {
	return Result{Truncated: s.truncated, Count: int64(s.count)}
}

// find reports the entries below the path whose relative path matches
// the glob (MatchGlob), without following symlinks.
func (h *helper) find() error {
	p, pattern := h.req.Path, h.req.Pattern
	if err := CheckGlob(pattern); err != nil {
		return errorf(CodeInvalid, "%v", err)
	}
	rootfd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(rootfd)
	s := h.newSearch()
	err = walkDir(rootfd, "", 0, func(n *node) (bool, error) {
		if s.tick() {
			return false, errStop
		}
		if !MatchGlob(pattern, n.rel) {
			return true, nil
		}
		if s.full() {
			return false, errStop
		}
		info := infoOf(joinRel(p, n.rel), &n.st)
		if info.Type == TypeSymlink {
			info.SymlinkTarget, _ = readlink(n.dirfd, n.name)
		}
		s.count++
		return true, h.out.JSON(KindEntry, info)
	})
	if err != nil && err != errStop {
		return err
	}
	return h.out.JSON(KindResult, s.result())
}

// grep reports the lines matching a regular expression (RE2 syntax: linear
// time, whatever the pattern) in the file at the path or in the regular
// files below it (optionally only those whose name matches Glob). Files
// with a NUL byte in their first 8 KiB are binary and skipped.
func (h *helper) grep() error {
	p := h.req.Path
	re, err := regexp.Compile(h.req.Pattern)
	if err != nil {
		return errorf(CodeInvalid, "pattern: %v", err)
	}
	if h.req.Glob != "" {
		if err := CheckGlob(h.req.Glob); err != nil {
			return errorf(CodeInvalid, "%v", err)
		}
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return pathErr("fstat", p, err)
	}
	s := h.newSearch()
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if err := h.grepFile(s, re, fd, p); err != nil && err != errStop {
			return err
		}
	case unix.S_IFDIR:
		err = walkDir(fd, "", 0, func(n *node) (bool, error) {
			if s.tick() {
				return false, errStop
			}
			if n.st.Mode&unix.S_IFMT != unix.S_IFREG || h.req.Glob != "" && !MatchGlob(h.req.Glob, n.rel) {
				return true, nil
			}
			f, err := unix.Openat(n.dirfd, n.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
			if err != nil {
				return true, nil // unreadable: grep -s
			}
			defer unix.Close(f)
			return true, h.grepFile(s, re, f, joinRel(p, n.rel))
		})
		if err != nil && err != errStop {
			return err
		}
	default:
		return errorf(CodeNotRegular, "%s is not a regular file or a directory", p)
	}
	return h.out.JSON(KindResult, s.result())
}

// grepFile greps one open file (checked to be regular on its descriptor).
func (h *helper) grepFile(s *search, re *regexp.Regexp, fd int, p string) error {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	unix.SetNonblock(fd, false)
	r := bufio.NewReaderSize(fdReader(fd), maxGrepLine)
	if head, _ := r.Peek(8 << 10); bytes.IndexByte(head, 0) >= 0 {
		return nil
	}
	for line := int64(1); ; line++ {
		chunk, err := r.ReadSlice('\n')
		long := err == bufio.ErrBufferFull
		text := bytes.TrimRight(chunk, "\r\n")
		if len(chunk) > 0 && re.Match(text) {
			if s.full() {
				return errStop
			}
			s.count++
			m := Match{Path: p, Line: line, Text: strings.ToValidUTF8(string(text[:min(len(text), MaxMatchText)]), "\uFFFD")}
			if err := h.out.JSON(KindEntry, m); err != nil {
				return err
			}
		}
		for long { // skip the rest of an overlong line
			_, err = r.ReadSlice('\n')
			long = err == bufio.ErrBufferFull
		}
		if err != nil {
			return nil // EOF, or a read error: the next file
		}
		if s.tick() {
			return errStop
		}
	}
}

// fdReader reads a raw descriptor.
type fdReader int

func (f fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(f), p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}
