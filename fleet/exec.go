package fleet

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	vkerrdefs "github.com/virtual-kubelet/virtual-kubelet/errdefs"
	vkapi "github.com/virtual-kubelet/virtual-kubelet/node/api"
	utilexec "k8s.io/utils/exec"

	"github.com/matrx-dev/matrx/api/apitype"
)

// RunInContainer is `kubectl exec`: the command runs in the Pod's sandbox
// as matrxd's exec does (as agent, in the sandbox's remembered directory,
// with its timeout), and its exit code comes back to kubectl.
func (p *Provider) RunInContainer(ctx context.Context, namespace, name, container string, cmd []string, attach vkapi.AttachIO) error {
	sb, err := p.running(namespace, name, container)
	if err != nil {
		return err
	}
	if len(cmd) == 0 {
		return vkerrdefs.InvalidInput("no command")
	}
	if attach.TTY() {
		return vkerrdefs.InvalidInput("a terminal (-t) needs matrxd's process API, which this matrxd does not serve yet")
	}
	if attach.Stdin() != nil {
		return vkerrdefs.InvalidInput("stdin (-i) needs matrxd's process API, which this matrxd does not serve yet")
	}
	res, err := p.mx.Exec(ctx, sb.SandboxID, apitype.ExecRequest{Command: quoteArgv(cmd)})
	if err != nil {
		return fmt.Errorf("exec in sandbox %s: %w", sb.SandboxID, err)
	}
	if out := attach.Stdout(); out != nil {
		out.Write(outputBytes(res.Stdout, res.StdoutBase64))
	}
	if e := attach.Stderr(); e != nil {
		e.Write(outputBytes(res.Stderr, res.StderrBase64))
	}
	if res.ExitCode != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command exited with %d", res.ExitCode), Code: res.ExitCode}
	}
	return nil
}

// outputBytes is the exact output: the base64 copy when the text is not
// valid UTF-8.
func outputBytes(text, b64 string) []byte {
	if b64 != "" {
		if b, err := base64.StdEncoding.DecodeString(b64); err == nil {
			return b
		}
	}
	return []byte(text)
}

// quoteArgv makes a shell command line that runs argv exactly (matrxd's
// exec takes one command string for bash -c).
func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// GetContainerLogs is `kubectl logs`: the output of the Pod's main
// process (its container's command and args). A Pod without a command has
// no logs.
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, name, container string, opts vkapi.ContainerLogOpts) (io.ReadCloser, error) {
	if _, err := p.running(namespace, name, container); err != nil && !vkerrdefs.IsInvalidInput(err) {
		return nil, err
	}
	return io.NopCloser(strings.NewReader("")), nil
}

// AttachToContainer is `kubectl attach`; it needs matrxd's process API.
func (p *Provider) AttachToContainer(ctx context.Context, namespace, name, container string, attach vkapi.AttachIO) error {
	if _, err := p.running(namespace, name, container); err != nil {
		return err
	}
	return vkerrdefs.InvalidInput("attach needs matrxd's process API, which this matrxd does not serve yet")
}

// PortForward is refused: sandboxes accept no connections from outside
// their host's bridge (docs/security.md), and the provider does not tunnel
// around that.
func (p *Provider) PortForward(ctx context.Context, namespace, name string, port int32, stream io.ReadWriteCloser) error {
	stream.Close()
	return vkerrdefs.InvalidInput("port-forward is not supported: sandboxes accept no inbound connections")
}
