#!/usr/bin/env bash
# bootstrap/tools.sh — builds the tools the test suite and the benchmarks need
# and makes them available under build/tools/ (relative to the repository
# root). Idempotent: a tool that is already present at the pinned version is
# not rebuilt.
#
# Built binaries live in a cache OUTSIDE the clone, keyed by tool and version
# (${MATRX_TOOLS_CACHE:-/var/cache/matrx/tools}/<name>@<version>/<name>), and
# build/tools/ holds symlinks into it: a fresh clone (CI) finds them there and
# only relinks, instead of spending minutes rebuilding from the module proxy.
# Changing a pinned version builds into a new cache entry; old entries are
# left alone (remove the cache dir to reclaim the space).
#
# Tools:
#   versitygw   S3-compatible server (posix backend) used by mounts/s3test.
#               Built from the Go module proxy at a pinned version (≈4 min cold).
#   containerd2/{containerd,containerd-shim-runc-v2,runc}
#               containerd 2 and runc 1.2 for the second test pass
#               (`make test`), where user namespaces use idmapped mounts.
#               ≈3 min cold; runc needs libseccomp-dev and pkg-config.
#   kube/{kube-apiserver,kube-scheduler,kubectl,etcd}
#               the Kubernetes control plane of the fleet tests (issue 17),
#               built from the tools modules under bootstrap/kube/ (their
#               go.mod pins k8s.io/kubernetes and etcd's embed package, with
#               the staging replaces k8s.io/kubernetes needs). ≈6 min cold on
#               2 vCPUs, built at the lowest priority (nice -n 19).
#
# Environment:
#   TOOLS_DIR   override the link directory (default: <repo>/build/tools)
#   MATRX_TOOLS_CACHE  the build cache (default: /var/cache/matrx/tools)
#   GO          go binary to use (default: go)
#
# Fails loudly: an ERR trap names the step that failed.
set -Eeuo pipefail

STEP="start"
trap 'echo "tools: FAILED at step: ${STEP} (line ${LINENO})" >&2' ERR

step() { STEP="$1"; echo "tools: ${STEP}"; }

VERSITYGW_MODULE="github.com/versity/versitygw"
VERSITYGW_VERSION="v1.8.0"
CONTAINERD2_MODULE="github.com/containerd/containerd/v2"
CONTAINERD2_VERSION="v2.2.9"
RUNC_MODULE="github.com/opencontainers/runc"
RUNC_VERSION="v1.2.6"

KUBERNETES_MODULE="k8s.io/kubernetes"
KUBERNETES_VERSION="v1.37.2"
ETCD_MODULE="go.etcd.io/etcd/server/v3"
ETCD_VERSION="v3.7.3"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-${REPO_ROOT}/build/tools}"
TOOLS_CACHE="${MATRX_TOOLS_CACHE:-/var/cache/matrx/tools}"
GO="${GO:-go}"

step "check go toolchain"
command -v "${GO}" >/dev/null || { echo "tools: go not found in PATH" >&2; false; }

step "create ${TOOLS_DIR} and ${TOOLS_CACHE}"
mkdir -p "${TOOLS_DIR}" "${TOOLS_CACHE}"

# module_version BINARY MODULE prints the version of MODULE that BINARY was
# built from (empty if the binary is missing or was not built from MODULE).
module_version() {
  local bin="$1" mod="$2"
  [[ -x "${bin}" ]] || return 0
  "${GO}" version -m "${bin}" 2>/dev/null | awk -v m="${mod}" '$1 == "mod" && $2 == m { print $3 }'
}

# build_go_tool NAME MODULE/CMD MODULE VERSION [SUBDIR] [BUILD TAGS]
# builds NAME into the cache entry NAME@VERSION (unless it is there already)
# and links build/tools[/SUBDIR]/NAME to it.
build_go_tool() {
  local name="$1" pkg="$2" mod="$3" version="$4" sub="${5:-}" tags="${6:-}"
  local dir="${TOOLS_DIR}${sub:+/${sub}}"
  local entry="${TOOLS_CACHE}/${name}@${version}${tags:+-${tags}}"
  mkdir -p "${dir}" "${entry}"
  local bin="${entry}/${name}"
  local have
  have="$(module_version "${bin}" "${mod}")"
  if [[ "${have}" == "${version}" ]]; then
    step "${name} ${version} already built (${entry})"
  else
    step "build ${name} ${version} into ${entry}"
    # Build into a scratch directory and move into place, so an interrupted
    # build never leaves a half-written binary that looks installed.
    local scratch
    scratch="$(mktemp -d "${entry}/.build-${name}.XXXXXX")"
    # GOFLAGS=-mod=mod keeps the repo's go.mod out of it: "go install
    # pkg@version" builds in module mode from the proxy, with the module's
    # own go.sum.
    (cd "${scratch}" && GOBIN="${scratch}" GOFLAGS=-mod=mod nice "${GO}" install ${tags:+-tags "${tags}"} "${pkg}@${version}") \
      || { rm -rf "${scratch}"; false; }
    mv -f "${scratch}/${name}" "${bin}"
    rmdir "${scratch}"
    have="$(module_version "${bin}" "${mod}")"
    step "verify ${name} version"
    [[ "${have}" == "${version}" ]] || { echo "tools: ${name} reports ${have:-nothing}, want ${version}" >&2; false; }
  fi
  step "link ${dir}/${name}"
  # A plain file left by an older tools.sh is replaced by the link.
  ln -sfn "${bin}" "${dir}/${name}"
}

# dep_version BINARY MODULE prints the version of MODULE that BINARY was
# built with, whether MODULE is its main module (a "tool" of a tools
# module) or a dependency (a main of the tools module itself).
dep_version() {
  local bin="$1" mod="$2"
  [[ -x "${bin}" ]] || return 0
  "${GO}" version -m "${bin}" 2>/dev/null | awk -v m="${mod}" '($1 == "mod" || $1 == "dep") && $2 == m { print $3; exit }'
}

# build_module_tool NAME PKG MODDIR MODULE VERSION SUBDIR [LDFLAGS]
# builds package PKG inside the tools module MODDIR (a directory of this
# repository with its own go.mod and go.sum, so its pins are checksum-
# verified and never mix with matrx's) into the cache entry NAME@VERSION,
# where VERSION is the version of MODULE that go.mod pins, and links
# build/tools/SUBDIR/NAME to it.
build_module_tool() {
  local name="$1" pkg="$2" moddir="$3" mod="$4" version="$5" sub="$6" ldflags="${7:-}"
  local dir="${TOOLS_DIR}/${sub}"
  local entry="${TOOLS_CACHE}/${name}@${version}"
  mkdir -p "${dir}" "${entry}"
  local bin="${entry}/${name}"
  local have
  have="$(dep_version "${bin}" "${mod}")"
  if [[ "${have}" == "${version}" ]]; then
    step "${name} (${mod} ${version}) already built (${entry})"
  else
    step "build ${name} (${mod} ${version}) into ${entry}"
    local scratch
    scratch="$(mktemp -d "${entry}/.build-${name}.XXXXXX")"
    (cd "${REPO_ROOT}/${moddir}" && GOFLAGS=-mod=readonly nice -n 19 "${GO}" build -trimpath ${ldflags:+-ldflags "${ldflags}"} -o "${scratch}/${name}" "${pkg}") \
      || { rm -rf "${scratch}"; false; }
    mv -f "${scratch}/${name}" "${bin}"
    rmdir "${scratch}"
    have="$(dep_version "${bin}" "${mod}")"
    step "verify ${name} version"
    [[ "${have}" == "${version}" ]] || { echo "tools: ${name} reports ${mod} ${have:-nothing}, want ${version}" >&2; false; }
  fi
  step "link ${dir}/${name}"
  ln -sfn "${bin}" "${dir}/${name}"
}

build_go_tool versitygw "${VERSITYGW_MODULE}/cmd/versitygw" "${VERSITYGW_MODULE}" "${VERSITYGW_VERSION}"

# containerd 2 with runc 1.2, for the second pass of the user-namespace
# tests: newer containerd maps ids with idmapped mounts instead of chowning a
# copy of the image (runtime/userns.go). Debian 12 ships only containerd 1.6,
# so they are built from the Go module proxy (runc needs libseccomp-dev).
build_go_tool containerd "${CONTAINERD2_MODULE}/cmd/containerd" "${CONTAINERD2_MODULE}" "${CONTAINERD2_VERSION}" containerd2
build_go_tool containerd-shim-runc-v2 "${CONTAINERD2_MODULE}/cmd/containerd-shim-runc-v2" "${CONTAINERD2_MODULE}" "${CONTAINERD2_VERSION}" containerd2
build_go_tool runc "${RUNC_MODULE}" "${RUNC_MODULE}" "${RUNC_VERSION}" containerd2 seccomp

# The Kubernetes control plane of the fleet tests (fleet/kubetest): the
# version the binaries report is set the way Kubernetes' own build sets it.
KUBE_MINOR="${KUBERNETES_VERSION#v1.}"; KUBE_MINOR="${KUBE_MINOR%%.*}"
KUBE_LDFLAGS="-X k8s.io/component-base/version.gitVersion=${KUBERNETES_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_MINOR} -X k8s.io/component-base/version.gitTreeState=clean"
for cmd in kube-apiserver kube-scheduler kubectl; do
  build_module_tool "${cmd}" "${KUBERNETES_MODULE}/cmd/${cmd}" bootstrap/kube/controlplane "${KUBERNETES_MODULE}" "${KUBERNETES_VERSION}" kube "${KUBE_LDFLAGS}"
done
build_module_tool etcd github.com/matrx-dev/matrx/bootstrap/kube/etcd bootstrap/kube/etcd "${ETCD_MODULE}" "${ETCD_VERSION}" kube

step "done"
