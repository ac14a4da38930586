//go:build !linux

package s3test

import (
	"os"
	"syscall"
)

// sysProcAttr on non-Linux systems has no parent-death signal: use Main so
// the server is stopped after the tests.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(pid int, _ syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
