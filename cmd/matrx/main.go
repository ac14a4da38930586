// Command matrx is the matrx CLI. See package ctl.
package main

import (
	"os"

	"github.com/matrx-dev/matrx/ctl"
)

func main() {
	if err := ctl.App().Run(os.Args); err != nil {
		os.Exit(1)
	}
}
