// Package fshelper is the files helper: the code behind `matrx-init fs`,
// which runs inside a sandbox and performs one file operation of the files
// API (read, write, stat, list, mkdir, move, remove, watch, find, grep,
// tar in and out), and the framed protocol that matrxd speaks with it
// over the exec's stdin and stdout.
//
// It owns the in-sandbox half of file access and nothing else: it must
// not talk to containerd, HTTP or the daemon's state, and it links only
// the standard library and golang.org/x/sys (it is compiled into the
// static matrx-init, CGO_ENABLED=0; archtest checks the imports).
//
// # Why a helper inside the sandbox, and why that is safe
//
// Every file operation runs as a process of the sandbox: matrxd starts
// `/.matrx/init fs` through containerd's task exec with exactly an exec's
// hardening (runtime/spec.go execProcess: the requested sandbox user,
// agent or root as mapped by the user namespace, the same capability
// sets, seccomp profile and no_new_privs, and a per-exec cgroup). So:
//
//   - Paths are resolved by the kernel as for any process of the sandbox:
//     its root, its mount namespace, its symlinks (absolute ones resolve
//     against the sandbox's root; "a/link/.." follows the link first, as
//     RESOLVE_IN_ROOT would), its /proc. There is no host path anywhere
//     in the resolution, so no symlink, however it is swapped while an
//     operation runs, can make it reach a host file: the race the sandbox
//     can win is a race against itself. matrxd never opens a sandbox path
//     on the host.
//   - Permissions are the sandbox user's own: agent cannot write
//     /etc/passwd (read-only root filesystem, and not its file), cannot
//     read /etc/shadow; root is the sandbox's root with its seven
//     capabilities, never the host's. A daemon opening files as host root
//     would pass every permission check; the helper passes only the ones
//     the user would.
//   - Files it makes are owned by the requesting user without a chown.
//   - Its resources (memory, pids, inotify watches, CPU) are charged to the
//     sandbox, and a timeout or a cancelled request kills its cgroup.
//
// Within the sandbox it still never follows a symlink it did not mean to:
// a read opens with O_NONBLOCK (a FIFO does not block) and O_NOCTTY and
// fstats the descriptor before reading (a FIFO, socket or device is
// refused, not read); list, stat, find and tar report symlinks and never
// enter them (walks open each directory by name in its parent with
// O_NOFOLLOW); a write replaces the final component's target by
// temp-file-and-rename in the target's directory (a write to a symlink
// writes the file it points to, as shell redirection does); tar uploads
// refuse every entry that would land outside the target directory (see
// tarIn).
//
// # Protocol
//
// Frames are a kind byte, a 4-byte big-endian length and a payload (see
// the Kind constants). The daemon sends a Request frame, then for uploads
// the body as data frames and an end frame; a stdin that ends without the
// end frame is an aborted upload, and nothing is kept. The helper answers
// with an optional Header, data or entry frames, and exactly one Result or
// Error frame. Errors carry the errno (or a Code) and a message; the
// daemon maps them to its error classes in one place (runtime/files.go).
//
// The helper's output is hostile to matrxd: any process of the sandbox
// running as the same user may ptrace it. The Reader therefore bounds
// every frame (MaxData, MaxJSON), accepts only the kinds expected,
// decodes JSON strictly, and the Check methods bound every string that
// reaches an API client; the daemon never buffers a whole file.
package fshelper
