# shellcheck shell=bash
# bootstrap/image/lib.sh — shared by build-minimal.sh and build-sandbox.sh.
# Sourced, never run. Owns the parts both image builds have in common: the
# ERR trap that names the failed step, the root check, the temporary work
# directory under build/ (unmounted and removed on exit, also on failure),
# building ocipack once into build/bin/, and packing the rootfs with it.
#
# The sourcing script sets `set -Eeuo pipefail` itself, then calls
# image_init NAME "$@" before anything else.

STEP="start"
IMAGE_T0=$SECONDS

step() {
  STEP="$1"
  echo "image: [$((SECONDS - IMAGE_T0))s] ${STEP}"
}

# image_cleanup unmounts whatever is still mounted under the work directory
# (a build that died halfway may leave /proc or /dev mounted in a chroot),
# then removes it without crossing into any file system it could not unmount.
image_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "${WORK:-}" && -d "$WORK" ]]; then
    local m
    while read -r m; do
      [[ "$m" == "$WORK" || "$m" == "$WORK"/* ]] || continue
      umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(findmnt -rn -o TARGET | sort -r)
    rm -rf --one-file-system -- "$WORK"
  fi
  exit "$rc"
}

# image_init NAME OUT.tar — checks, traps, work directory. Sets REPO, OUT
# (absolute) and WORK.
image_init() {
  local name="$1"
  shift
  trap 'echo "image: FAILED at step: ${STEP} (line ${LINENO}, exit $?)" >&2' ERR
  if [[ $# -ne 1 || "$1" != *.tar ]]; then
    echo "usage: $0 OUT.tar" >&2
    exit 2
  fi
  if [[ $EUID -ne 0 ]]; then
    echo "image: must run as root (the rootfs has files owned by other users, and ocipack must read them all)" >&2
    exit 1
  fi
  REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  OUT="$(realpath -m -- "$1")"
  umask 022
  export LC_ALL=C TZ=UTC
  mkdir -p "$REPO/build/tmp"
  WORK="$(mktemp -d "$REPO/build/tmp/image-${name}.XXXXXX")"
  trap image_cleanup EXIT
  chmod 0755 "$WORK" # apt downloads as _apt, which must reach the rootfs
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# find_go prints the go command to use (root's PATH may lack /usr/local/go/bin).
# write_runtime_etc ROOTFS writes the /etc files the runtime owns: a plain
# hosts file, and empty hostname and resolv.conf that matrx replaces with its
# own (bind mounts) in every sandbox.
write_runtime_etc() {
  local root="$1"
  cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
  : >"$root/etc/hostname"
  : >"$root/etc/resolv.conf"
  chmod 0644 "$root"/etc/{hosts,hostname,resolv.conf}
}

find_go() {
  if command -v go >/dev/null 2>&1; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    echo /usr/local/go/bin/go
  else
    echo "image: no go toolchain found (PATH or /usr/local/go/bin)" >&2
    return 1
  fi
}

# build_ocipack builds bootstrap/image/ocipack into build/bin/ocipack (a
# no-op rebuild when nothing changed) and sets OCIPACK.
build_ocipack() {
  step "build ocipack"
  local go bin
  go="$(find_go)"
  bin="$REPO/build/bin/ocipack"
  mkdir -p "$REPO/build/bin"
  (cd "$REPO" && nice -n 10 "$go" build -o "$bin" ./bootstrap/image/ocipack)
  OCIPACK="$bin"
}

# pack_rootfs ROOTFS NAME [ocipack flags...] — writes $OUT.
pack_rootfs() {
  local rootfs="$1" name="$2"
  shift 2
  step "pack ${rootfs#"$REPO"/} as ${name}"
  nice -n 10 "$OCIPACK" --rootfs "$rootfs" --name "$name" --out "$OUT" "$@"
}

# fetch_pinned URL SHA512 — prints the path of URL's content, downloaded
# once into ${IMAGE_CACHE}/downloads/ (outside the clone, like the images)
# and checked against SHA512 (hex) every time it is used: a download that
# does not match is deleted and fails the build, so a pinned input can
# only ever be the bytes that were reviewed when it was pinned.
fetch_pinned() {
  local url="$1" want="$2" dir file got
  dir="$IMAGE_CACHE/downloads"
  file="$dir/${want:0:16}-$(basename -- "$url")"
  mkdir -p "$dir"
  if [[ ! -f "$file" ]]; then
    echo "image: downloading $url" >&2
    curl -fsSL --retry 3 -o "$file.part" -- "$url"
    mv -f -- "$file.part" "$file"
  fi
  got="$(sha512sum <"$file" | cut -d' ' -f1)"
  if [[ "$got" != "$want" ]]; then
    rm -f -- "$file"
    echo "image: $url has sha512 $got, pinned $want: refusing it" >&2
    return 1
  fi
  echo "$file"
}

# --- the build cache --------------------------------------------------------
#
# A slow image (the production one: minutes, hundreds of MB from the
# mirror) is built once per machine and kept OUTSIDE the clone, in
# ${MATRX_IMAGE_CACHE:-/var/cache/matrx/images}/NAME-KEY.tar, where KEY is a
# hash of everything that determines the archive: the build scripts (their
# package lists included), ocipack's sources and the versions of the modules
# and Go toolchain it is built with, the apt sources file, the architecture
# and a SOURCE_DATE_EPOCH override. A fresh clone (CI) with the same inputs
# links the cached archive instead of rebuilding. What the key cannot see is
# the mirror moving on (security updates): MATRX_IMAGE_REBUILD=1 builds anew
# and replaces the entry. Only the newest IMAGE_CACHE_KEEP (3) entries of a
# name are kept.

IMAGE_CACHE="${MATRX_IMAGE_CACHE:-/var/cache/matrx/images}"
IMAGE_CACHE_KEEP=3

# image_cache_key FILE... — prints the cache key of a build whose inputs are
# FILE... plus ocipack (sources, module versions, Go version).
image_cache_key() {
  local go
  go="$(find_go)"
  {
    echo "arch $(uname -m)"
    echo "epoch ${SOURCE_DATE_EPOCH:-}"
    "$go" version
    (cd "$REPO" && "$go" list -deps -f '{{with .Module}}{{.Path}}@{{.Version}}{{end}}' ./bootstrap/image/ocipack | sort -u)
    local f
    for f in "$@" "$REPO"/bootstrap/image/ocipack/*.go; do
      [[ "$f" == *_test.go ]] && continue
      [[ -f "$f" ]] || { echo "missing $f"; continue; }
      printf '%s ' "${f#"$REPO"/}"
      sha256sum <"$f" | cut -d' ' -f1
    done
  } | sha256sum | cut -c1-16
}

# image_link_cached ENTRY — points $OUT at the cache entry: a hard link
# when both are on one file system (the archive then survives the cache
# being pruned), a symbolic link otherwise.
image_link_cached() {
  local entry="$1" tmp
  mkdir -p "$(dirname "$OUT")"
  tmp="$(mktemp -u "$(dirname "$OUT")/.$(basename "$OUT").XXXXXX")"
  ln -- "$entry" "$tmp" 2>/dev/null || ln -s -- "$entry" "$tmp"
  mv -fT -- "$tmp" "$OUT"
}

# image_cache_prune NAME — keeps the newest IMAGE_CACHE_KEEP entries of NAME.
image_cache_prune() {
  local name="$1" old
  while read -r old; do
    [[ -n "$old" ]] && rm -f -- "$old" && echo "image: pruned old cache entry $old"
  done < <(ls -1t -- "$IMAGE_CACHE/$name"-*.tar 2>/dev/null | tail -n +$((IMAGE_CACHE_KEEP + 1)))
}

# image_done NAME — the closing summary.
image_done() {
  local name="$1" size
  size="$(du -h --apparent-size -- "$OUT" | cut -f1)"
  STEP="done"
  echo "image: ${IMAGE_VERB:-built} ${name} in $((SECONDS - IMAGE_T0))s"
  echo "image: ${OUT} (${size})"
  echo "image: import with: ctr -n NAMESPACE images import ${OUT}"
}
