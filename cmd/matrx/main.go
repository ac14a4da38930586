// Command matrx is the matrx CLI. See package ctl.
package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/ctl"
)

func main() {
	if err := ctl.Run(ctl.App(), os.Args); err != nil {
		if ec, ok := err.(cli.ExitCoder); ok {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}
