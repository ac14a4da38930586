// Package hotsync owns the copy of a user's hot storage between the object
// store (`users/USER/hot/`) and the host directory that is bind-mounted into a
// sandbox as /home/agent, and the manifest that records what was synced.
//
// A [Syncer] serves one sandbox:
//
//   - [Syncer.Down] materializes every object under the prefix into Dir
//     (nested directories, any content), owned by the sandbox user
//     (1000:1000), in parallel, and writes the manifest: per entry, the ETag
//     of the object version and the state (size, mtime, ctime, inode) of the
//     entry written, plus its MD5 when it was streamed in order.
//   - [Syncer.Up] walks Dir and uploads what changed against the manifest
//     (size/mtime/ctime/inode, then the MD5, mode and mtime when only the
//     ctime moved): new entries create-only (If-None-Match: *), changed ones
//     replace-only-if-unchanged (If-Match: manifest ETag). A refused write
//     means someone else (another sandbox of the same user) changed the
//     object meanwhile: ours is saved as NAME.conflict-SANDBOXID, theirs is
//     kept, and the conflict is reported. Entries that are gone are deleted
//     with If-Match: manifest ETag. Then the manifest describes the new
//     state, so a repeated Up is a no-op and periodic checkpoints upload
//     only what changed since the last one.
//   - [Syncer.Finish] is the final Up and the removal of the directory under
//     one lock: no checkpoint can run between them or after them.
//
// # What a round trip keeps
//
// A user's files come back as they were left: contents, permission bits
// (executables stay executable) and the sticky bit, mtimes to the
// nanosecond (files', directories' and symlinks' own), symlinks as symlinks
// (their target, never followed), empty directories, and names that are not
// valid UTF-8. Owners are always the sandbox user; setuid and setgid bits
// are never restored; FIFOs, sockets and devices are not stored (reported
// as rejected). .git/ is synced: the default excludes ([DefaultExcludes])
// are exactly the old system's, `*.tmp`, `.DS_Store` and `__pycache__/`.
//
// Modes and mtimes live in object metadata with the s3fs/rclone convention,
// so other S3 tools see sensible objects: `x-amz-meta-mode` is the decimal
// st_mode with its file-type bits (s3fs), `x-amz-meta-mtime`
// "SECONDS.NANOSECONDS" (rclone's format; s3fs reads the seconds). A
// symlink is an object whose body is its target and whose mode says
// S_IFLNK (s3fs); a directory is a zero-byte marker "PATH/" (s3fs, the S3
// console) carrying its own mode and mtime. A name that is not valid UTF-8
// (S3 keys must be) gets an escaped key, each invalid byte as "%XX", and
// its raw path in `x-amz-meta-matrx-name` (base64url); Down writes the raw
// name, and only if it escapes back to exactly the key, so metadata can
// never move a file elsewhere. Two names that escape alike (a literal
// "%FF" and the byte 0xFF) are reported, not merged. Objects without
// metadata (older versions, other tools) come down as 0644 files and 0755
// directories dated by their LastModified. versitygw's posix backend keeps
// user metadata in a `user.metadata` xattr of each object's file (tested:
// objstore TestVersitygwKeepsMetadataInXattrs), so its filesystem needs
// user xattrs; objstore.Local keeps it in `user.matrx.meta` and markers
// as directories carrying `user.matrx.marker`.
//
// # Deletions: a sync never deletes what it cannot see
//
// Deletions propagate, however many, only when the walk root is verified:
// it carries the sentinel (Config.Sentinel, written by [WriteSentinel] as
// the trusted.matrx.sentinel xattr when the home was made; no process in a
// sandbox can read or forge a trusted.* xattr) and, with Config.DirIsMount,
// it is a mount point on its own device. An empty mount point, a removed
// image, a directory recreated in its place or another filesystem mounted
// over it carries no sentinel, so nothing is deleted. Independently, a
// walk that finds no entry at all while the manifest holds at least
// [MassDeletionMin] entries holds its deletions back for one pass
// (recorded in the manifest); the next verified pass that still finds the
// tree empty applies them, so a user who really emptied their home loses
// nothing they meant to keep and keeps nothing they deleted. Held
// deletions make Up return a [HeldError] (the sync is not complete, the
// directory stays on the host, the record says why). A deletion is never
// sent after a walk that could not read part of Dir, or over the names
// cap.
//
// Every other deletion is conditional: If-Match with the ETag recorded at
// the last sync, so an object someone else changed stays; objects not in
// the manifest (added by someone else) are never deleted.
//
// With Config.TrashPrefix, every object Up deletes or overwrites is first
// copied on the server side to `users/USER/trash/DAY/TIME-SANDBOX/PATH`
// ([TrashKey]): a propagated deletion is recoverable (mounts owns retention,
// pruning and restore). A version that cannot be copied (over 5 GiB, the
// limit of one CopyObject, or a trash key over 1024 bytes) is logged and
// not kept; any other copy failure stops the write or delete.
//
// # Our own writes
//
// Every object carries `x-amz-meta-matrx-writer`, "SANDBOX BASE": the
// sandbox that wrote it and the ETag of the version it replaced. When a
// conditional write is refused, an object written by this sandbox on top
// of the version the manifest knows is our own earlier write (a PUT whose
// response was lost, a daemon killed after the upload and before the
// manifest was saved) and is replaced, at any size, instead of becoming a
// conflict copy.
//
// # Bounds
//
//   - Names: at most Config.MaxNames (default [DefaultMaxNames]) files,
//     directories and symlinks are synced, every hard link's name counted.
//     Over the cap a pass uploads the changes among the first MaxNames
//     names in walk order (sorted by name within each directory), sends no
//     deletion at all (names it did not look at must not look deleted), and
//     returns a HeldError with Result.OverLimit; Down writes at most
//     MaxNames entries and reports the rest.
//   - Bytes: a sandbox cannot amplify its disk quota into an unbounded
//     upload: when the files to upload claim more bytes than the filesystem
//     holding Dir can store, sparse files and extra hard links are rejected
//     (their earlier objects stay). Down refuses files that cannot fit
//     before writing any (NoRoomError).
//   - Time: Down, Up and Finish are serialized by a lock whose wait honours
//     the caller's context; every store request has its own deadline
//     (objstore).
//
// The manifest lives outside Dir (the sandbox cannot edit it), is JSON
// lines (a header, then one entry per line, written and read as a stream)
// and is written atomically (temp file, fsync, rename), after a syncfs of
// Dir on Down, so it never describes data a host crash could lose. Up can
// run while the sandbox works (periodic checkpoints): a file is read
// through one open descriptor and the manifest records its state from
// before the read, so a file modified during its upload is uploaded again
// by the next Up.
//
// Transient failures (errdefs.ErrUnavailable) are retried with backoff, on
// top of the object store's own per-request retries; ctx bounds everything.
// All errors are wrapped onto errdefs classes.
//
// # What this package must not do
//
//   - It never deletes an object it did not see unchanged, and never from a
//     root it cannot verify (above).
//   - It never follows symlinks: the walk does not descend into them, they
//     are stored as their targets, and every file is opened through an
//     [os.Root] on Dir (final components with O_NOFOLLOW) and checked to be
//     the entry the walk saw. Down never writes outside Dir: keys that are
//     not valid relative paths are reported, not written; symlinks are made
//     last, after every file and directory, so nothing is written through
//     them.
//   - It never drops an entry silently: what cannot be stored (special
//     files, keys longer than 1024 bytes, escaped names that collide) is
//     reported as rejected, excluded files as skipped.
//   - It does not know about sandboxes' lifecycles, containers or users
//     beyond the prefix, directory, owner and sandbox id it is given.
//
// Down expects Dir to be empty or a stale copy that may be overwritten: it
// replaces entries at the paths of listed objects and leaves other files
// alone; a file it fails to download is removed, not left half-written. A
// top-level `.keep` (the marker objstore.EnsurePrefix writes) is reserved
// and neither downloaded nor uploaded.
package hotsync
