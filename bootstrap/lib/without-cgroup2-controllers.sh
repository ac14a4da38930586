#!/usr/bin/env bash
# without-cgroup2-controllers.sh CMD...: runs CMD in a mount namespace of its
# own where a hybrid host's cgroup2 (/sys/fs/cgroup/unified) is unmounted,
# so that crun, which refuses a hybrid host whose cgroup2 holds controllers
# ("cgroups in hybrid mode not supported"; the CI and dev VMs have hugetlb
# there), sees a cgroup v1 host. Used by `make test`'s crun pass and `make
# bench`. Nothing changes outside the namespace: the host keeps its mounts,
# and mounts made inside (containerd's, the tests') end with it. On a
# cgroup v2 host, or a hybrid one whose cgroup2 has no controllers, CMD runs
# unchanged.
set -euo pipefail
# (cgroupfs files report size 0: read them, not test -s.)
if [[ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]]; then
  exec unshare --mount -- bash -c 'umount /sys/fs/cgroup/unified && exec "$@"' bash "$@"
fi
exec "$@"
