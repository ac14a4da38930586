//go:build !linux

package hotsync

import (
	"os"
	"time"
)

// identity is not available here: changes are detected by size and mtime.
func identity(os.FileInfo) (uint64, int64) { return 0, 0 }

// syncFS falls back to syncing the directory only.
func syncFS(f *os.File) error { return f.Sync() }

const readFlags = os.O_RDONLY

// setMtime sets the access and modification times of f.
func setMtime(f *os.File, t time.Time) error { return os.Chtimes(f.Name(), t, t) }

// freeSpace is unknown here: Down does not check for room up front.
func freeSpace(string) (free, block int64, ok bool) { return 0, 0, false }
