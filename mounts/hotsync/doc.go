// Package hotsync owns the copy of a user's hot storage between the object
// store (`users/USER/hot/`) and the host directory that is bind-mounted into a
// sandbox as /home/agent, and the manifest that records what was synced.
//
// A [Syncer] serves one sandbox:
//
//   - [Syncer.Down] materializes every object under the prefix into Dir
//     (nested directories, any content), owned by the sandbox user
//     (1000:1000), in parallel, and writes the manifest: per path, the ETag
//     of the object version and the state (size, mtime, ctime, inode) of the
//     file written, plus its MD5 when it was streamed in order.
//   - [Syncer.Up] walks Dir and uploads what changed against the manifest
//     (size/mtime/ctime/inode, then the MD5 when only the metadata moved): new
//     files create-only (If-None-Match: *), changed files replace-only-if-
//     unchanged (If-Match: manifest ETag). A refused write means someone else
//     (another sandbox of the same user) changed the object meanwhile: ours
//     is saved as NAME.conflict-SANDBOXID, theirs is kept, and the conflict is
//     reported. Files that are gone are deleted with If-Match: manifest ETag.
//     Then the manifest describes the new state, so a repeated Up is a no-op
//     and periodic checkpoints upload only what changed since the last one.
//
// The manifest lives outside Dir (the sandbox cannot edit it) and is written
// atomically (temp file, fsync, rename), after a syncfs of Dir on Down, so it
// never describes data a host crash could lose. Up can run while the sandbox
// works (periodic checkpoints): a file is read through one open descriptor
// and the manifest records its state from before the read, so a file
// modified during its upload is uploaded again by the next Up.
//
// Transient failures (errdefs.ErrUnavailable) are retried with backoff, on
// top of the object store's own per-request retries; ctx bounds everything.
// All errors are wrapped onto errdefs classes.
//
// # What this package must not do
//
//   - It never deletes an object it did not see unchanged: deletes carry
//     If-Match with the ETag recorded at the last sync, objects that are not
//     in the manifest (added by someone else) are never deleted, and if any
//     part of Dir could not be read, Up deletes nothing at all.
//   - It never follows symlinks: the walk does not descend into them,
//     symlinks and special files (FIFOs, sockets, devices) are reported as
//     rejected, and every file is opened through an [os.Root] on Dir and
//     checked to be the regular file the walk saw. Down never writes outside
//     Dir: keys that are not valid relative paths are reported, not written.
//   - A sandbox cannot amplify its disk quota into an unbounded upload: when
//     the files to upload claim more bytes than the filesystem holding Dir
//     can store, sparse files and extra hard links are rejected (their
//     earlier objects stay). With Config.DirIsMount, an unmounted disk is
//     refused rather than read as "every file deleted", and Down refuses
//     files that cannot fit before writing any (NoRoomError).
//   - It never drops a file silently: names that cannot be S3 keys (invalid
//     UTF-8, key longer than 1024 bytes) are reported as rejected, excluded
//     files as skipped.
//   - It does not know about sandboxes' lifecycles, containers or users
//     beyond the prefix, directory, owner and sandbox id it is given.
//
// Down expects Dir to be empty or a stale copy that may be overwritten: it
// replaces files at the paths of listed objects and leaves other files alone.
// A top-level `.keep` (the marker objstore.EnsurePrefix writes) is reserved and
// neither downloaded nor uploaded. Executable bits and other modes are not
// preserved (S3 objects have none): files come down 0644, directories 0755.
package hotsync
