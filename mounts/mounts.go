// Package mounts owns host-side storage that sandboxes see through bind
// mounts: each sandbox's hot directory (a disk image from mounts/disk,
// synced with users/USER/hot/ by mounts/hotsync), the users' refcounted
// cold mounts (mounts/cold), the trash of hot files, and the admission of
// sandbox disks against the host's free space. It prepares directories on
// the host; it never talks to containerd and never decides lifecycle.
//
// A sandbox's hot directory, <hot root>/<sandbox id>/:
//
//	home/          the sandbox's /home/agent (home.img mounted, or a plain dir)
//	home.img       the disk image (when the sandbox has a disk quota)
//	disk           present when home is a disk: a missing image is never
//	               mistaken for a plain directory
//	sentinel       the token written on home as trusted.matrx.sentinel at
//	               PrepareHot: hot sync deletes only from a home carrying it
//	manifest.json  hot sync's record of what is in the bucket
//	user           the owner's user id
//	removing       the tombstone: removal began; no syncer is made and the
//	               image is never mounted again
//
// Decisions, and why:
//
//   - The final sync and the removal run under the sandbox's sync lock
//     (hotsync.Syncer.Finish): a checkpoint queued behind the final sync
//     finds the syncer closed instead of walking a home being unmounted.
//     The tombstone, written before the unmount, covers what the lock does
//     not: a Storage made afresh (a restart, another code path) never
//     re-mounts or syncs a home being removed.
//   - Deleted and overwritten hot objects are kept by server-side copies
//     under users/USER/trash/, not by bucket versioning (trash.go says why).
//   - Cold references are held per sandbox: a sandbox that never acquired
//     one (its acquire failed at recovery) releases nothing.
//   - A disk is admitted only if every disk on the host could fill up:
//     the sum of what the existing images may still grow by, plus the new
//     size, must fit the state filesystem's free space less a reserve
//     (DiskReserve, 1 GiB: the registry, manifests, logs), times
//     DiskOvercommit (1 by default: no overcommit). Otherwise the create
//     fails with errclass.ErrInsufficientStorage (HTTP 507) naming the
//     sizes. Sparse images cost only what is written, so an operator who
//     knows the sandboxes write little of their quotas may overcommit;
//     the cost is that sandboxes that do write can fill the host.
//   - Disks are formatted with as many inodes as hot sync syncs names
//     (MaxNames, 200,000; disk.Inodes).
package mounts

import (
	"golang.org/x/sys/unix"
)

// fsFree returns the size and the bytes available to unprivileged
// writers of the filesystem holding dir.
func fsFree(dir string) (total, free int64, ok bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, false
	}
	return int64(st.Blocks) * int64(st.Bsize), int64(st.Bavail) * int64(st.Bsize), true
}

// fileSpace returns a file's apparent size and the bytes it holds on disk.
func fileSpace(p string) (apparent, allocated int64, ok bool) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, 0, false
	}
	return st.Size, st.Blocks * 512, true
}
