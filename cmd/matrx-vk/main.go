// Command matrx-vk registers a matrxd host as a Kubernetes node (Virtual
// Kubelet) and runs the Pods bound to it as sandboxes. See docs/fleet.md.
package main

import (
	"os"

	"github.com/matrx-dev/matrx/fleet"
)

func main() {
	if err := fleet.App().Run(os.Args); err != nil {
		os.Exit(1)
	}
}
