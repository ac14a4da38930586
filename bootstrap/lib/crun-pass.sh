#!/usr/bin/env bash
# crun-pass.sh: the crun pass of `make test` (MATRX_TEST_OCI_RUNTIME=crun),
# run through without-cgroup2-controllers.sh. Budget: about 3.5 minutes.
#   containerd 2 (CONTAINERD2_DIR, idmapped mounts): the runtime package's
#     integration tests (~30 s) and the daemon's hostile suites (~90 s).
#   containerd 1.6 (chowned image copies): the runtime package's
#     integration tests (~45 s) except those on the 517 MB production
#     image (TestProductionImage here, and the hostile suites), which spend
#     ~2.5 min each making its chowned copy under a fresh containerd: they
#     pass with crun on 1.6 too (run by hand:
#     MATRX_TEST_OCI_RUNTIME=crun bash bootstrap/lib/without-cgroup2-controllers.sh go test ...),
#     and what they add over the 1.6 runtime tests is the image, not crun.
set -euo pipefail
GO=${GO:-go}
echo "== crun on containerd 1.6: runtime integration tests"
"$GO" test -race -count=1 -timeout 10m -skip '^TestProductionImage$' ./runtime/
export MATRX_TEST_CONTAINERD_DIR=$CONTAINERD2_DIR MATRX_TEST_EXPECT_IDMAP=1
echo "== crun on containerd 2: runtime integration tests, hostile suites"
"$GO" test -race -count=1 -timeout 10m ./runtime/
"$GO" test -race -count=1 -timeout 10m -run '^(TestHostileSandbox|TestFilesHostile)$' ./daemon/
