//go:build !linux

package main

import (
	"errors"
	"os"
)

var errNotSupported = errors.New("ocipack: packing a root filesystem is not supported on this OS (linux only)")

type fileStat struct {
	uid, gid uint32
	perm     uint32
	dev, ino uint64
	nlink    uint64
}

func statOf(os.FileInfo) (fileStat, error) { return fileStat{}, errNotSupported }

func readXattrs(string) (map[string]string, error) { return nil, errNotSupported }
