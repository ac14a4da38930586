package runtime

// ViaAgent reports whether the sandbox's exec agent ran res's command.
func ViaAgent(res *ExecResult) bool { return res.viaAgent }

// SetExecAgent turns the exec agent path on or off for later execs.
func (r *Runtime) SetExecAgent(on bool) { r.noAgent.Store(!on) }

// ExecAgentPid is the host pid of sandbox id's agent as this runtime knows
// it (0: none).
func (r *Runtime) ExecAgentPid(id string) int {
	r.mu.Lock()
	st := r.tasks[id]
	r.mu.Unlock()
	if st == nil {
		return 0
	}
	st.agent.mu.Lock()
	defer st.agent.mu.Unlock()
	if st.agent.agent == nil {
		return 0
	}
	return st.agent.agent.Pid()
}

// InitPid is the host pid of sandbox id's PID 1 (0: not known).
func (r *Runtime) InitPid(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.tasks[id]; st != nil {
		return int(st.task.Pid())
	}
	return 0
}

// FilesViaAgent reports whether the sandbox's exec agent started c's helper.
func FilesViaAgent(c *FilesCall) bool { return c.viaAgent }
