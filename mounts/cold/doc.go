// Package cold serves each user's cold storage (large, rarely read files under
// s3://BUCKET/users/USER/cold/) as a host directory that the sandbox runtime
// bind-mounts into containers at /data/cold.
//
// It owns: the FUSE S3 client processes (mount-s3 or s3fs), their mounts, their
// supervision and remounting, the credential files they need, their cache
// directories, and the per-user, refcounted mountpoints below one manager
// directory. It must not: touch containers or their specs (the runtime binds
// the directory Manager.Acquire returns), talk to S3 itself (the FUSE client
// does), or place credentials anywhere a sandbox can see. Sandboxes never get
// /dev/fuse, CAP_SYS_ADMIN or credentials: all of that stays on the host.
//
// # Drivers
//
// A Driver makes a mountpoint show one user's cold files:
//
//   - "mount-s3" (MountS3, production default): AWS mountpoint-s3.
//   - "s3fs" (S3FS): Debian's s3fs-fuse, for hosts without mount-s3.
//   - "local" (Local): the storage backend is a local directory, so the
//     user's cold directory <storage>/users/USER/cold is bind-mounted onto the
//     mountpoint. A bind (rather than handing the storage directory itself to
//     the runtime) keeps one path layout, one propagation story and one
//     Acquire/Release contract for every driver.
//
// Select picks one from a configuration value auto|mount-s3|s3fs|local.
//
// # Layout of Manager.Dir
//
//	DIR/                      0711
//	  mnt/                    bind mount of itself, MS_SHARED, 0711
//	    users/USER/cold       mountpoint handed to the runtime (Acquire)
//	  stage/                  bind mount of itself, MS_PRIVATE, 0700
//	    users/USER/           where a FUSE daemon mounts before its mount
//	                          is moved onto the mountpoint
//	  cache/users/USER/       FUSE data cache, 0700 (unencrypted content)
//	  secrets/                s3fs passwd files, 0700; each file 0600,
//	                          removed as soon as its mount is in place
//	  all/users               with WithSharedMount only: the one daemon's
//	                          mountpoint (all/ is 0700 and a private bind
//	                          of itself); mnt/users/USER/cold are binds of
//	                          its USER/cold (see "One mount for all users")
//	  spare/LABEL             with WithSpares: a spare daemon's mountpoint
//	                          (users/; spare/ is 0700 and a private bind of
//	                          itself); stage/spares/LABEL and
//	                          cache/spares/LABEL are its stage and cache
//	                          (see "Spare daemons")
//
// Directories on the path to a mountpoint are 0711 so that a runtime in a
// user namespace can still reach the bind source; nothing else is readable
// by anyone but root. Only mnt/users/USER/cold is ever bound into a sandbox.
//
// # One mount per user, refcounted (the default)
//
// Concurrent sandboxes of one user share one mount: Acquire increments a
// per-user count and mounts on the first reference, Release unmounts on the
// last. Two FUSE clients on one prefix would each cache metadata and data of
// the same objects, double the memory and S3 traffic, and see each other's
// writes only after their metadata TTL; one shared mount is cheaper and
// gives all of a user's sandboxes the same view.
//
// # Propagation and remounting (why mounts are stacked, never replaced)
//
// The runtime binds the mountpoint into a container with rbind,rslave. When a
// FUSE mount is already on the mountpoint, that bind copies the FUSE mount
// itself, and the container's copy becomes a slave of the FUSE mount's peer
// group (mnt/ is shared, so mounts below it are shared). Consequences, all
// checked by tests in this package:
//
//   - Lazily unmounting a dead FUSE mount and mounting a fresh one in its
//     place does NOT reach running containers: the container keeps its copy
//     of the dead mount (ENOTCONN until it stops), and the new mount is not
//     in any group that copy is a slave of.
//   - Mounting the fresh FUSE mount ON TOP of the dead one does reach them:
//     the new mount is a child of the dead mount's root, so it propagates to
//     every slave copy of the dead mount.
//
// So a remount never detaches the dead mount on the mountpoint: the supervisor
// starts a new daemon that mounts on the private stage directory, and moves
// (MS_MOVE) that mount on top of the mountpoint's stack. (FUSE clients cannot
// mount directly on a dead FUSE mount: s3fs, for one, stats its mountpoint
// first and gives up with "Transport endpoint is not connected".) Each remount leaves one dead mount under the live one; Release and
// Unmount remove the whole stack. The stage must sit on a private mount because
// the kernel refuses to move a mount whose parent is shared.
//
// # Process supervision
//
// Each FUSE daemon runs in the foreground as a child process in its own
// process group, with a minimal environment (PATH, plus static S3 credentials
// for mount-s3 when configured). A mount is up when /proc/self/mountinfo shows
// a fuse or fuse.* mount on the stage directory, the move onto the
// mountpoint succeeded, and the mountpoint answers stat (see "Answered
// later" for when that last step is the supervisor's); otherwise the start
// fails with the daemon's output tail in the error, and the process, the
// stage mount and the credential file are gone. A supervisor goroutine
// remounts, with exponential backoff, when the process exits, the mount
// answers ENOTCONN/ENODEV, or the mount disappears, and counts remounts
// (FUSEMount.Remounts, Manager.Remounts, WithRemountHook). A stat that merely
// hangs is logged, not treated as death: S3 may be slow.
//
// # Answered later
//
// A FUSE mount is in the mount table before its daemon has answered the
// kernel's INIT, and s3fs answers INIT only after it checked the bucket: a
// GET on the bucket's root, which lists up to 1,000 keys of the whole
// bucket whatever the prefix (s3fs 1.90 has no cheaper check; its
// list_object_max_keys cannot go below 1000), then its check of the
// user's prefix, which asks S3 nothing (it stats the mount root, answered
// from the mountpoint). Measured here with local versitygw and 2,000
// objects in the bucket: the mount shows 14-21 ms after the daemon starts
// and answers 40-45 ms after that, half a new user's create. Until the
// INIT answer the kernel holds every request on the mount (a stat, an
// open, a readdir wait; none sees the empty directory below), so the
// answer need not be on a create's path once it is known that this
// driver's daemons answer with this configuration. So only until one of a
// driver's mounts has answered does a start wait for the answer (a wrong
// secret, endpoint or bucket then fails that start with s3fs's own words,
// TestS3FSBadCredentials) and check that the stage is below a private
// mount; after that a start returns once its mount is moved onto the
// mountpoint (a shared stage then fails the move, with the same error),
// and the supervisor confirms the answer first thing, within the start
// timeout. A generation that then does not answer is handled like one
// that broke later (remounted, with backoff; a sandbox's request in
// between fails with ENOTCONN instead of the create failing), and the
// driver waits for the answer again at its next start, as it does after
// any failed start (TestAnsweredLater, TestS3FSAnsweredLater; s3fs that
// refuses the credentials sometimes exits before its mount is seen, and
// that start fails as before). The credentials and the bucket are those the
// daemon's own S3 client uses, so after one answer a later failure means
// S3 itself failed, which the create sees in its other S3 calls. Remounts
// always wait for the answer: they are off any create's path, and the
// shared mount rebinds its users only onto a daemon that answers.
//
// Daemons get no parent-death signal. Go delivers PR_SET_PDEATHSIG when the
// OS thread that forked the child exits, not when the process does, so it
// could kill a healthy mount at random; and a daemon that outlives a crashed
// matrxd keeps serving running sandboxes. Such orphans exit by themselves
// when their mount is removed (FUSE clients exit on unmount).
//
// When systemd is PID 1 the lead can run each daemon in its own transient
// scope with WithCommandWrapper (for example "systemd-run --scope --collect
// --quiet --unit=matrx-cold-USER --"): with --scope systemd-run execs the
// command in place, so the supervised pid stays the FUSE daemon's.
//
// A daemon restart does not kill running containers' view forever: dead mounts
// left on a mountpoint by a previous daemon are stacked over by the next
// Acquire, or removed by Release or SweepStale.
package cold
