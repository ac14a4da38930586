#!/usr/bin/env bash
# bootstrap/lib/fetch-verified.sh — download a file and install it only if its
# SHA-256 matches a pinned value.
#
# Usage: fetch-verified.sh URL SHA256 DEST
#
#   URL     absolute (https://host/path) or relative (path). A relative URL is
#           joined to $MATRX_FETCH_BASE_URL, which is how bootstrap/install.sh
#           names its downloads, so a mirror (or a test server) can stand in
#           for the real site by setting that one variable.
#   SHA256  64 hex digits, the expected digest. Anything else (empty, a
#           placeholder like "TO-BE-FILLED") is refused: verification is never
#           skipped.
#   DEST    where the verified file ends up. Its directory must exist.
#
# Guarantees:
#   - DEST is written only after the digest matched, by an atomic rename of a
#     temp file in DEST's directory; on any failure (download error, mismatch,
#     signal) the temp file is removed and DEST is left as it was.
#   - Plain http is allowed only to loopback hosts (127.0.0.0/8, localhost,
#     [::1]); everything else must be https, and redirects may not downgrade.
#   - A DEST that already has the expected digest is kept (idempotent re-runs
#     download nothing).
#
# Exit status: 0 installed or already present; 1 download or checksum failure;
# 2 usage error.
set -Eeuo pipefail

prog="fetch-verified"
die() { echo "${prog}: $1" >&2; exit "${2:-1}"; }

if [[ $# -ne 3 ]]; then
  echo "usage: $0 URL SHA256 DEST" >&2
  exit 2
fi
url="$1" want="${2,,}" dest="$3"

if [[ ! "$want" =~ ^[0-9a-f]{64}$ ]]; then
  die "refusing to download ${url}: expected SHA-256 '${2}' is not 64 hex digits (pin a real checksum; verification is never skipped)" 2
fi

if [[ "$url" != *://* ]]; then
  base="${MATRX_FETCH_BASE_URL:-}"
  [[ -n "$base" ]] || die "relative URL '${url}' but MATRX_FETCH_BASE_URL is not set" 2
  url="${base%/}/${url#/}"
fi

# Scheme policy: https anywhere, http only to this machine.
loopback_re='^http://(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|localhost|\[::1\])(:[0-9]+)?(/|$)'
if [[ "$url" == https://* ]]; then
  proto="=https"
elif [[ "$url" =~ $loopback_re ]]; then
  proto="=http,https"
else
  die "refusing ${url}: only https (or http to loopback, for tests) is allowed" 2
fi

dest_dir="$(dirname -- "$dest")"
[[ -d "$dest_dir" ]] || die "destination directory ${dest_dir} does not exist" 2

command -v curl >/dev/null || die "curl is required" 2
command -v sha256sum >/dev/null || die "sha256sum is required" 2

sha256_of() { sha256sum -- "$1" | { read -r sum _; echo "$sum"; }; }

if [[ -f "$dest" ]] && [[ "$(sha256_of "$dest")" == "$want" ]]; then
  echo "${prog}: ${dest} already present with sha256 ${want}"
  exit 0
fi

tmp="$(mktemp "${dest_dir}/.$(basename -- "$dest").XXXXXX.part")"
cleanup() { rm -f -- "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "${prog}: downloading ${url}"
if ! curl --fail --silent --show-error --location \
     --proto "$proto" --proto-redir "$proto" \
     --connect-timeout 20 --max-time "${MATRX_FETCH_TIMEOUT:-600}" --retry 3 \
     --output "$tmp" -- "$url"; then
  die "download of ${url} failed; nothing installed at ${dest}"
fi

got="$(sha256_of "$tmp")"
if [[ "$got" != "$want" ]]; then
  die "CHECKSUM MISMATCH for ${url}: expected sha256 ${want}, got ${got}; nothing installed at ${dest}"
fi

chmod 0644 -- "$tmp"
mv -f -- "$tmp" "$dest"
echo "${prog}: verified sha256 ${want} -> ${dest}"
