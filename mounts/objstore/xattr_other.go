//go:build !linux

package objstore

import (
	"errors"
	"os"
)

var errNoXattr = errors.New("extended attributes are not supported on this OS")

// Without extended attributes Local recomputes ETags on every access.
func getXattr(*os.File, string) ([]byte, error) { return nil, errNoXattr }

func setXattr(*os.File, string, []byte) error { return errNoXattr }

func fileID(os.FileInfo) uint64 { return 0 }

func removeXattr(int, string) error { return errNoXattr }
