// Package sftpserver is the sftp subcommand of matrx-init: the SFTP server
// of the SSH gateway's "sftp" subsystem (which OpenSSH's scp uses too).
// matrxd starts it inside the sandbox, as the session's user, with exec's
// hardening, as the session's process; it speaks SFTP on its stdin and
// stdout (github.com/pkg/sftp) and touches only what that user may touch in
// the sandbox's own mount namespace: every path, symlink and /proc link
// resolves in the sandbox's view, never the host's. It must not run in
// matrxd (there it would see the host's filesystem as root).
package sftpserver

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pkg/sftp"
)

// Main serves one SFTP session on stdin/stdout, relative paths starting
// in the working directory, and returns the exit code.
func Main(args []string) int {
	if len(args) > 0 {
		fmt.Fprintln(os.Stderr, "matrx-init sftp: takes no arguments (it serves SFTP on stdin and stdout)")
		return 2
	}
	opts := []sftp.ServerOption{}
	if wd, err := os.Getwd(); err == nil {
		opts = append(opts, sftp.WithServerWorkingDirectory(wd))
	}
	srv, err := sftp.NewServer(stdio{os.Stdin, os.Stdout}, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "matrx-init sftp:", err)
		return 1
	}
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(os.Stderr, "matrx-init sftp:", err)
		return 1
	}
	return 0
}

// stdio is the session's stream: requests on stdin, answers on stdout.
type stdio struct {
	io.Reader
	io.WriteCloser
}
