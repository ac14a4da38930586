//go:build !linux

package ctl

import (
	"errors"
	"os"
)

type terminal struct{}

func terminalOf(*os.File) *terminal          { return nil }
func (t *terminal) size() (int, int)         { return 24, 80 }
func (t *terminal) makeRaw() (func(), error) { return nil, errors.New("raw terminal mode needs Linux") }
