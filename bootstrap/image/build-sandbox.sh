#!/usr/bin/env bash
# bootstrap/image/build-sandbox.sh OUT.tar — builds the production sandbox
# image localhost/matrx/sandbox:latest as an OCI archive.
#
# A Debian bookworm rootfs made with mmdebstrap (variant apt, no recommends)
# from the host's Debian apt sources, with the agent's tools: bash,
# coreutils, procps, python3, nodejs, git, curl, jq, ripgrep, fd-find (also
# as `fd`), tmux, less, ca-certificates. User agent 1000:1000 (/home/agent,
# bash), /data/cold owned by agent. No man pages, docs (copyright files
# stay), translations, apt lists or caches.
#
# Reproducible with the same mirror content: every mtime is clamped to
# SOURCE_DATE_EPOCH, which defaults to the newest Date: of the suites'
# Release files, so two builds against the same mirror state give the same
# bytes. Set SOURCE_DATE_EPOCH to override. APT_SOURCES names the sources
# file to build from (default: the host's Debian deb822 sources).
#
# Run as root; needs mmdebstrap and network access to the Debian mirror.
set -Eeuo pipefail
# shellcheck source=bootstrap/image/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE_NAME="localhost/matrx/sandbox:latest"
SUITE="bookworm"
PACKAGES=(
  bash coreutils procps less
  python3 nodejs
  git curl ca-certificates jq ripgrep fd-find tmux
  passwd # useradd, below
)
image_init sandbox "$@"
ROOTFS="$WORK/rootfs"

step "check tools"
for tool in mmdebstrap chroot; do
  command -v "$tool" >/dev/null || { echo "image: $tool not found (apt-get install mmdebstrap)" >&2; false; }
done

step "choose apt sources"
APT_SOURCES="${APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}"
MIRRORS=()
if [[ -f "$APT_SOURCES" ]] && grep -qw "$SUITE" "$APT_SOURCES"; then
  MIRRORS=("$APT_SOURCES")
  echo "image: apt sources from $APT_SOURCES"
else
  # mmdebstrap's default: deb.debian.org plus -updates and -security.
  echo "image: $APT_SOURCES missing or not $SUITE; using mmdebstrap's default mirrors"
fi

step "mmdebstrap $SUITE (${PACKAGES[*]})"
# The customize hook runs before mmdebstrap deletes the apt lists: it keeps
# the Release dates, the default SOURCE_DATE_EPOCH below.
include="$(IFS=,; echo "${PACKAGES[*]}")"
# shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
nice -n 10 mmdebstrap \
  --mode=root \
  --format=directory \
  --variant=apt \
  --include="$include" \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook='grep -h "^Date:" "$1"/var/lib/apt/lists/*Release > "$1/../release-dates" || true' \
  "$SUITE" "$ROOTFS" "${MIRRORS[@]}"

if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
  newest=0
  while read -r _ date; do
    t="$(date -d "$date" +%s)"
    ((t > newest)) && newest=$t
  done <"$WORK/release-dates"
  ((newest > 0)) || { echo "image: no Release dates recorded; set SOURCE_DATE_EPOCH" >&2; false; }
  export SOURCE_DATE_EPOCH=$newest
fi
echo "image: SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} ($(date -u -d "@${SOURCE_DATE_EPOCH}" +%FT%TZ))"

step "add user agent"
chroot "$ROOTFS" groupadd --gid 1000 agent
chroot "$ROOTFS" useradd --uid 1000 --gid 1000 --create-home --home-dir /home/agent \
  --shell /bin/bash --comment agent agent
chmod 0755 "$ROOTFS/home/agent"
install -d -m 0755 "$ROOTFS/data"
install -d -m 0755 -o 1000 -g 1000 "$ROOTFS/data/cold"

step "finish /etc and tools"
# fd-find installs the binary as fdfind (a clash with an older Debian package).
ln -sfn /usr/bin/fdfind "$ROOTFS/usr/local/bin/fd"
# mmdebstrap copied the host's; the runtime provides its own.
write_runtime_etc "$ROOTFS"

step "trim"
# Left by useradd and the package scripts; the apt lists and caches are
# already gone (mmdebstrap's cleanup).
rm -f "$ROOTFS"/etc/{passwd,group,shadow,gshadow,subuid,subgid}- \
  "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old
find "$ROOTFS/var/log" -type f -delete

step "smoke-test the rootfs in a chroot"
# shellcheck disable=SC2016 # expanded inside the chroot
chroot "$ROOTFS" /bin/bash -ec '
  for t in bash python3 node git curl jq rg fd fdfind tmux less ps; do command -v "$t" >/dev/null; done
  python3 -c "import ssl, json, sqlite3"
  [ "$(id -u agent):$(id -g agent)" = 1000:1000 ]
  [ "$(getent passwd agent | cut -d: -f6,7)" = /home/agent:/bin/bash ]
  [ -s /etc/ssl/certs/ca-certificates.crt ]
'

build_ocipack
pack_rootfs "$ROOTFS" "$IMAGE_NAME" \
  --env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --env "LANG=C.UTF-8"
du -sh --apparent-size "$ROOTFS" | sed 's/^/image: rootfs size /'
image_done "$IMAGE_NAME"
