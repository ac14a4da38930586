// Package disk gives a sandbox its disk quota: the sandbox's home is a
// sparse ext4 image on a loop device, sized to the quota. Writing past it
// fails with ENOSPC inside the sandbox and touches nothing outside.
//
// Why a loop image and not XFS project quotas: it works on any host
// filesystem (the state dir is ext4 on Debian/Ubuntu/AL2023 by default), a
// sparse image costs only what is written, and mkfs of a 20 GiB sparse
// image takes ~20 ms. The image is also the filesystem hot sync writes
// into, so `hotbench` measures sync against one made by Make.
//
// Inodes: an image gets as many inodes as hot sync syncs names per
// sandbox (Inodes: the daemon's --hot-max-names, 200,000 by default, or
// mkfs's one per 16 KiB when that is fewer), so a sandbox cannot make
// millions of entries the sync would have to stop at; hard links still
// multiply names, which hot sync's own cap bounds. The pool's images are
// made the same way (their names carry the inode count).
//
// What mkfs writes: with lazy inode-table and journal initialisation, a
// 20 GiB image gets 328 KiB of metadata and nothing else. Without
// "-O ^resize_inode" it was 4.4 MiB: the blocks ext4 reserves so that an
// online resize2fs can grow the group descriptor table 1024-fold, written
// for every image although no sandbox disk is ever grown (the quota is
// fixed at create; resize2fs could still grow an image offline, or online
// through meta_bg). Those 4.4 MiB were page-cache pages to allocate, zero
// and fill: mkfs went from 6.1 to 2.7 ms of CPU alone, and from 10.2 to
// 2.4 % of a burst of creates' CPU samples (bench/doc.go). The
// kernel's lazy zeroing of the inode tables after the mount stays: on a
// loop device it punches holes (WRITE_ZEROES), so it costs little and the
// image stays sparse.
//
// This package does not decide whether a disk fits the host: mounts
// admits disks against the state filesystem's free space.
package disk
