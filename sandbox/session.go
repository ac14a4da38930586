package sandbox

import (
	"context"

	"github.com/matrx-dev/matrx/runtime"
)

// ForgetProcess removes a process and its output at once, killing its tree
// if it still runs, instead of keeping it for the retention period: an SSH
// session's shell or command is nobody's to list or read once the session
// is over.
func (m *Manager) ForgetProcess(ctx context.Context, p *runtime.Process) error {
	m.procMu.Lock()
	defer m.procMu.Unlock()
	return m.rt.RemoveProcess(ctx, p)
}
