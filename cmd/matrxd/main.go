// Command matrxd is the matrx sandbox daemon. See package daemon.
package main

import (
	"os"

	"github.com/matrx-dev/matrx/daemon"
)

func main() {
	if err := daemon.App().Run(os.Args); err != nil {
		os.Exit(1)
	}
}
