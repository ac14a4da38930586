// Command matrx-relay is the output relay of a background process, started
// by containerd's runc shim as the process's binary logger. It must stay a
// small static binary (CGO_ENABLED=0). See package runtime/relay.
package main

import "github.com/matrx-dev/matrx/runtime/relay"

func main() { relay.Main() }
