//go:build !linux

package hotsync

import (
	"fmt"
	"os"
	"time"
)

// identity is not available here: changes are detected by size and mtime.
func identity(os.FileInfo) (uint64, int64) { return 0, 0 }

// syncFS falls back to syncing the directory only.
func syncFS(f *os.File) error { return f.Sync() }

const readFlags = os.O_RDONLY

// space is unknown here: Down does not check for room up front, and
// uploads are not bounded by the disk's size.
func space(string) (fsSpace, bool) { return fsSpace{}, false }

type usage struct {
	allocated int64
	links     uint64
	ino       uint64
}

// diskUsage is unknown here.
func diskUsage(os.FileInfo) (usage, bool) { return usage{}, false }

// startWriteback is a no-op here: the final flush does the work.
func startWriteback(*os.File) {}

// WriteSentinel is not supported here: without it Up deletes nothing.
func WriteSentinel(dir, token string) error {
	return fmt.Errorf("hotsync: sentinels need Linux xattrs")
}

func readSentinel(*os.File) string { return "" }

func devOf(f *os.File, p string) (uint64, bool) { return 0, false }

func setTimesAt(parent *os.File, name string, ns int64) error { return nil }

func setTimes(f *os.File, ns int64) error {
	t := time.Unix(0, ns)
	return os.Chtimes(f.Name(), t, t)
}

const dirFlags = os.O_RDONLY
