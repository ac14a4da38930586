package runtime

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/matrx-dev/matrx/runtime/execagent"
)

// agentChild is a command the exec agent started, as the host holds it:
// the host ends of its three pipes, its host pid, a pidfd watch on it and
// its exec cgroup. Both users of the agent (execViaAgent, filesViaAgent)
// start their child through startAgentChild, so the order that makes the
// agent path as safe as the runtime path lives in one place: the child is
// found among the agent's own children, watched and moved into its cgroup
// before the caller writes anything to its stdin (the exec wrapper's gate
// line, the files helper's request); until then it does nothing.
type agentChild struct {
	cmd     *execagent.Cmd
	stdin   *os.File // write end
	stdout  *os.File // read end
	stderr  *os.File // read end
	hostPid int
	watch   *childWatch
	group   *execGroup
}

// startAgentChild starts req through a with fresh pipes and returns it in
// its cgroup (named cgroupName). bigPipes enlarges the stdin and stdout
// pipes (the files helper streams MiBs through them). An error wrapping
// execagent.ErrNotStarted means nothing ran and nothing will: the child,
// if there was one, saw its stdin end before a byte arrived and exits.
func startAgentChild(a *execagent.Agent, req execagent.Request, cgroupName string, bigPipes bool) (*agentChild, error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (*os.File, *os.File, error) {
		pr, pw, err := os.Pipe()
		if err == nil {
			files = append(files, pr, pw)
		}
		return pr, pw, err
	}
	inR, inW, err1 := pipe()
	outR, outW, err2 := pipe()
	errR, errW, err3 := pipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: pipes: %v", execagent.ErrNotStarted, err)
	}
	if bigPipes {
		setPipeSize(outW)
		setPipeSize(inW)
	}
	cmd, err := a.Start(req, inR, outW, errW)
	// The child holds its own copies now (or there is no child).
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		closeAll()
		return nil, err
	}
	c := &agentChild{cmd: cmd, stdin: inW, stdout: outR, stderr: errR}
	c.hostPid, err = a.ChildHostPid(cmd.NsPid)
	if err == nil {
		c.watch, err = watchChild(c.hostPid)
	}
	if err == nil {
		c.group, err = newExecGroup(c.hostPid, cgroupName)
	}
	if err != nil {
		c.close()
		return nil, fmt.Errorf("%w: %v", execagent.ErrNotStarted, err)
	}
	return c, nil
}

// wait blocks until the child has exited and returns how, or returns false
// when stop fires first. The agent's word comes first; when the agent is
// gone (the command may have killed it: it is the agent user's) or says
// nothing within a moment of the kernel reporting the exit, the status
// comes from the host's own pidfd of the child.
func (c *agentChild) wait(stop <-chan struct{}) (execagent.ExitResult, bool) {
	select {
	case ex := <-c.cmd.Exited():
		if ex.Err == nil {
			return ex, true
		}
	case <-c.watch.exited:
		select {
		case ex := <-c.cmd.Exited():
			if ex.Err == nil {
				return ex, true
			}
		case <-time.After(100 * time.Millisecond):
		}
		return c.watch.status(), true
	case <-stop:
		return execagent.ExitResult{}, false
	}
	select {
	case <-c.watch.exited:
		return c.watch.status(), true
	case <-stop:
		return execagent.ExitResult{}, false
	}
}

// close releases everything the host holds of the child except its
// cgroup (the caller removes that once nothing of it runs); closing stdin
// first means a child still waiting for its first byte exits at once.
func (c *agentChild) close() {
	c.stdin.Close()
	c.stdout.Close()
	c.stderr.Close()
	c.cmd.Close()
	if c.watch != nil {
		c.watch.close()
	}
}
