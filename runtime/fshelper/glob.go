package fshelper

import (
	"fmt"
	"path"
	"strings"
)

// CheckGlob reports a malformed find/grep glob.
func CheckGlob(pattern string) error {
	if pattern == "" {
		return fmt.Errorf("glob is empty")
	}
	for _, seg := range strings.Split(pattern, "/") {
		if seg == "**" {
			continue
		}
		if _, err := path.Match(seg, "x"); err != nil {
			return fmt.Errorf("glob %q: %v", pattern, err)
		}
	}
	return nil
}

// MatchGlob reports whether rel, a slash-separated path below the searched
// directory, matches pattern. Each segment is a path.Match pattern
// (*, ?, [...]); "**" matches any number of segments, none included. A
// pattern without a slash matches the last element at any depth, as
// find -name does ("*.go"); one with a slash matches the whole relative
// path ("src/**/*.go"); a leading "/" is dropped.
func MatchGlob(pattern, rel string) bool {
	pattern = strings.TrimPrefix(pattern, "/")
	if !strings.Contains(pattern, "/") && pattern != "**" {
		ok, _ := path.Match(pattern, rel[strings.LastIndexByte(rel, '/')+1:])
		return ok
	}
	return matchSegments(strings.Split(pattern, "/"), strings.Split(rel, "/"))
}

// matchSegments matches segment lists by dynamic programming (linear in
// the product of their lengths, however many "**" the pattern holds):
// ok[j] says whether the pattern so far matches the first j segments.
func matchSegments(p, s []string) bool {
	ok := make([]bool, len(s)+1)
	ok[0] = true
	next := make([]bool, len(s)+1)
	for _, seg := range p {
		if seg == "**" {
			seen := false
			for j := range ok {
				seen = seen || ok[j]
				next[j] = seen
			}
		} else {
			next[0] = false
			for j := 1; j <= len(s); j++ {
				m, _ := path.Match(seg, s[j-1])
				next[j] = ok[j-1] && m
			}
		}
		ok, next = next, ok
	}
	return ok[len(s)]
}
