// Command matrx-init is PID 1 of every sandbox: it reaps orphaned processes
// and exits on SIGTERM/SIGINT, which takes the sandbox's PID namespace (and
// every process in it) down with it.
//
// It is a static binary bind-mounted read-only at /.matrx/init, so it works
// with any image (no tini or shell needed inside it) and runs as nobody with
// no capabilities. Why our own rather than tini: the image may not ship one,
// and tini's model ("run one child, exit when it exits") does not fit a
// sandbox whose work arrives later through exec.
package main

import "github.com/matrx-dev/matrx/runtime/initproc"

func main() { initproc.Main() }
