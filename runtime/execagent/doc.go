// Package execagent is the exec agent: a small server inside each sandbox
// that starts the commands of the exec API without the OCI runtime.
//
// # Why
//
// A `runc exec` costs 25-40 ms on a 2-vCPU host (a Go binary start, its
// nsexec re-exec, the seccomp filter compiled again, three shim RPCs and
// FIFO set-up), more than the command most agents run. The agent is
// started once per sandbox through the runtime (`matrx-init exec-agent`,
// as the agent user) and from then on forks each command itself: a
// connection, a fork, an exec.
//
// # Why a hostile sandbox gains nothing from it
//
// The agent is started with exactly the process spec of an agent exec
// (runtime.execProcess for the agent user: uid/gid 1000, every capability
// set empty, no_new_privs, the sandbox's seccomp filter, rlimits and OOM
// score), and what it starts inherits exactly that: it can do nothing the
// agent user cannot already do. Root execs never go through it (it could
// not start them) and keep using the OCI runtime. So the threats are only
// about the channel:
//
//   - Who may ask it to run something. It listens on an abstract Unix
//     socket in the sandbox's network namespace, where every process of
//     the sandbox can connect. It serves only peers outside its PID
//     namespace (SO_PEERCRED reports pid 0 for them): matrxd. A process of
//     the sandbox is refused before anything is read. (It could gain
//     nothing anyway: the agent runs what it runs as the same user.)
//   - Who answers the daemon. The agent user can kill the agent (same
//     uid) and bind the name itself. matrxd connects only to the process
//     it started: the listener's SO_PEERCRED pid must be the agent's pid
//     while a pidfd of that very process says it has not exited (so the
//     pid cannot have been reused). Anything else and the exec takes the
//     OCI runtime path; the agent is started again. The agent also makes
//     itself non-dumpable, so no process of the same uid can ptrace it or
//     take its listening socket.
//   - What it answers. Each reply is one JSON line of at most MaxReply
//     bytes, read with deadlines; a pid it reports is accepted only if it
//     names a child of the agent, so a lying agent could at worst point at
//     another of its own children, never at a root process.
//   - The command's output never passes through it: matrxd makes the
//     pipes and hands their far ends over with SCM_RIGHTS; the agent
//     passes them on as the command's stdin, stdout and stderr and closes
//     its copies.
//
// The gate the OCI path has (the command waits for one line on stdin,
// sent once its shell is in its exec cgroup, so nothing forks away from the
// timeout kill) is kept: matrxd moves the child into its cgroup, then
// writes the line. A request that fails before the gate (any error of the
// agent) closes the gate without the line, and the wrapper then exits
// without running the command, so falling back to the OCI runtime can
// never run a command twice.
package execagent
