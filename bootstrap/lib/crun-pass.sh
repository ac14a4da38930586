#!/usr/bin/env bash
# crun-pass.sh: the crun pass of `make test` (MATRX_TEST_OCI_RUNTIME=crun):
# the runtime package's integration tests and the daemon's hostile suites,
# on containerd 1.6 and then on containerd 2 (CONTAINERD2_DIR, idmapped
# mounts). Run through without-cgroup2-controllers.sh.
set -euo pipefail
GO=${GO:-go}
hostile='^(TestHostileSandbox|TestFilesHostile)$'
for ctrd in 1.6 2; do
  if [[ "$ctrd" == 2 ]]; then
    export MATRX_TEST_CONTAINERD_DIR=$CONTAINERD2_DIR MATRX_TEST_EXPECT_IDMAP=1
  fi
  echo "== crun on containerd $ctrd"
  "$GO" test -race -count=1 -timeout 10m ./runtime/
  "$GO" test -race -count=1 -timeout 10m -run "$hostile" ./daemon/
done
