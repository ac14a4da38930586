// Command matrx-init is the static binary every sandbox has at
// /.matrx/init (bind-mounted read-only). It is a multi-call binary:
//
//   - without arguments it is PID 1 (package runtime/initproc): it reaps
//     orphaned processes and exits on SIGTERM/SIGINT, which takes the
//     sandbox's PID namespace (and every process in it) down with it (on
//     linux/amd64 the waiting runs without the Go runtime and re-executes
//     with `pid1-stopping` to stop: initproc's "Idle PID 1");
//   - `fs` is the files helper (package runtime/fshelper), which matrxd
//     execs inside the sandbox for each file operation of the API;
//   - `sftp` is the SFTP server of the SSH gateway's sftp subsystem
//     (package runtime/sftpserver), run inside the sandbox as the
//     session's user;
//   - `exec-agent` is the exec agent (package runtime/execagent), which
//     matrxd starts once per sandbox as the agent user and which then
//     starts the agent user's execs without the OCI runtime.
//
// Why our own rather than tini: the image may not ship one, and tini's
// model ("run one child, exit when it exits") does not fit a sandbox
// whose work arrives later through exec. Why one binary for the helpers
// too: it is already in every sandbox, read-only and the daemon's own,
// whatever the image holds. It is built with CGO_ENABLED=0 and links only
// the standard library, golang.org/x/sys and, for sftp, github.com/pkg/sftp
// with what it needs (archtest checks it). Each subcommand lives in its own
// package; this file only dispatches.
package main

import (
	"fmt"
	"os"

	"github.com/matrx-dev/matrx/runtime/execagent"
	"github.com/matrx-dev/matrx/runtime/fshelper"
	"github.com/matrx-dev/matrx/runtime/initproc"
	"github.com/matrx-dev/matrx/runtime/sftpserver"
)

func main() {
	if len(os.Args) < 2 {
		initproc.Main()
		return
	}
	switch os.Args[1] {
	case "fs":
		os.Exit(fshelper.Main(os.Args[2:]))
	case "sftp":
		os.Exit(sftpserver.Main(os.Args[2:]))
	case "exec-agent":
		os.Exit(execagent.Main(os.Args[2:]))
	case initproc.StoppingArg:
		initproc.Stopping()
	default:
		fmt.Fprintf(os.Stderr, "matrx-init: unknown subcommand %q (none: PID 1; fs: the files helper; sftp: the SFTP server; exec-agent: the exec agent)\n", os.Args[1])
		os.Exit(2)
	}
}
