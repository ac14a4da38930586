// Package relay owns the output log of a background process and the relay
// that writes it: matrx-relay (cmd/matrx-relay) is the binary containerd's
// runc shim starts as the process's "binary logger", and this package is
// both its body (Main) and the reader matrxd uses to serve the log.
//
// # Why a relay started by the shim
//
// A background process must outlive matrxd (kill -9, upgrade, crash): its
// output, its stdin and its terminal must not depend on the daemon being
// there. The runc shim already outlives matrxd, and for a stdout URI of the
// form binary:///path?k=v it starts that binary with the process's stdout
// read end on fd 3, its stderr read end on fd 4 and a "ready" pipe on fd 5,
// for pipes and for terminals alike (for a terminal it copies the console
// master into fd 3). containerd's cio.LogFile would not do: it writes stdout
// and stderr into one unframed file, and it is not accepted for a terminal.
// So the relay owns the output from the first byte, matrxd only reads files.
//
// # What it does, and all it does
//
//   - Reads fd 3 and fd 4 as fast as they fill and appends each chunk as one
//     framed record (kind, offset, length, bytes) to segment files in its
//     own directory, a root-only (0700) directory under the daemon's state
//     dir. The process never blocks on a full pipe while the daemon is away:
//     nothing the relay does waits for matrxd.
//   - Keeps at most --cap bytes on disk by deleting whole oldest segments;
//     a reader that asks for an offset that was dropped learns how many
//     bytes it missed. A write that fails (disk full) loses its bytes but
//     not their offsets: a gap record says how many were lost, so offsets
//     stay the byte positions of the process's output.
//   - Holds the process's stdin FIFO open read-write (--hold): the FIFO
//     then always has a writer, so matrxd dying or restarting never gives
//     the process (or, for a terminal, the shim's console copy) an EOF. It
//     never reads from it. On the command "c" on its control FIFO (written
//     only by matrxd) it lets go, so that stdin can reach EOF when a client
//     asks for it.
//   - Ends when its output pipes reach EOF (for a terminal: fd 3) or when
//     the shim sends SIGTERM (on delete of the process), after draining what
//     the pipes hold; the last record is an end record.
//
// # Why a hostile sandbox cannot abuse it
//
// The relay runs on the host as root (the shim's child), but it parses
// nothing the sandbox sends: the bytes from the pipes are copied into
// records verbatim, never interpreted, so no output can steer it. It writes
// only files it creates itself (O_CREAT|O_EXCL|O_NOFOLLOW, 0600) relative to
// a directory fd of its own root-only directory, which nothing in a sandbox
// can reach; their total size is bounded by --cap (plus one record). The
// only path it opens that a sandbox can see is the stdin FIFO of a process
// without a terminal, in the sandbox's control directory: it is opened with
// openat2(RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS), O_NOFOLLOW and
// O_NONBLOCK, and refused unless fstat says FIFO, so a sandbox that swaps it
// can at worst make the relay hold a FIFO of the sandbox's own, which it
// never reads or writes. Its arguments and its control FIFO come from
// matrxd (through containerd, and a root-only directory). What it costs is
// bounded too: one small process per background process (its memory is
// measured by the runtime's tests), disk bounded by --cap, and CPU in
// proportion to the output the sandbox pays to produce (it runs outside the
// sandbox's CPU cgroup, like the shim's own copy loops).
//
// # On-disk format
//
// A process directory holds segments named by the offset of their first
// record, as 16 lowercase hex digits plus ".log". A record is a 16-byte
// header followed by its data:
//
//	byte 0     kind: 1 stdout, 2 stderr, 3 pty (terminal output), 16 gap, 32 end
//	bytes 1-3  zero
//	bytes 4-7  length, little-endian uint32 (data bytes; for a gap, bytes lost
//	           and no data follows; 0 for end)
//	bytes 8-15 offset, little-endian uint64: the byte position of the first
//	           data byte in the process's output (all streams, in order)
//
// Each record is written with one write(2). A reader may see the newest
// record half-written and waits for the rest; offsets must be contiguous, a
// record that breaks that is corruption and is reported, never skipped
// silently.
//
// It must stay small and stdlib-only (plus x/sys): it runs once per
// background process. It knows nothing about containerd or sandboxes.
package relay
