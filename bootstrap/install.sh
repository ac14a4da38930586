#!/usr/bin/env bash
# bootstrap/install.sh — idempotent host install for matrxd.
#
# Modes:
#   install.sh --packages-only   apt packages the build and the test suite need
#                                (containerd, runc, image tools, FUSE, awscli...)
#   install.sh                   (default) packages + everything else
#
# Fails loudly: an ERR trap names the step that failed.
set -Eeuo pipefail

STEP="start"
trap 'echo "bootstrap: FAILED at step: ${STEP} (line ${LINENO})" >&2' ERR

step() { STEP="$1"; echo "bootstrap: ${STEP}"; }

MODE="full"
for arg in "$@"; do
  case "$arg" in
    --packages-only) MODE="packages" ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "bootstrap: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [[ $EUID -ne 0 ]]; then
  echo "bootstrap: must run as root" >&2
  exit 1
fi

# Packages: runtime (containerd, runc), init for sandboxes is our own static
# binary, image build (busybox-static, mmdebstrap), storage (fuse3, s3fs),
# networking (CNI plugins, iptables), test tooling (awscli for the bench).
PACKAGES=(
  containerd runc
  busybox-static mmdebstrap
  fuse3 s3fs
  containernetworking-plugins iptables iproute2
  awscli
  ca-certificates curl make
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  step "apt packages already installed"
fi

[[ "$MODE" == "packages" ]] && exit 0

step "done"
