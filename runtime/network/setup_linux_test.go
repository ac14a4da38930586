package network

// Setup is SetupIn for a namespace the manager creates itself. Production
// code always attaches the namespace runc made (SetupIn); tests use this to
// exercise networking without a container.

import (
	"context"
)

// Setup creates the sandbox's network namespace, attaches it to the bridge
// (unless p.Mode is none), installs its firewall rules and writes its
// resolv.conf and hosts files. On any failure everything it made is undone.
// A sandbox id that is already set up is AlreadyExists.
func (m *Manager) Setup(ctx context.Context, id string, p Policy) (_ *Attachment, err error) {
	return m.setup(ctx, id, p, "")
}
