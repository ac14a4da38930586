#!/usr/bin/env bash
# bootstrap/install.sh — idempotent host install for matrxd.
#
# Supported hosts: Debian 12+, Ubuntu 22.04+ (apt) and Amazon Linux 2023 (dnf),
# detected from /etc/os-release. Run as root from a checkout after `make build`.
#
# Modes:
#   install.sh --packages-only   distro packages the build and the test suite need
#                                (containerd, runc, image tools, FUSE, awscli...)
#   install.sh                   (default) packages + everything else: mount-s3
#                                (pinned, SHA-256 verified), /etc/fuse.conf
#                                user_allow_other, the matrx group, binaries from
#                                build/bin, systemd units, and (only when systemd
#                                is PID 1) enabling and starting matrxd.
#
# Flags:
#   --test-tools         also install test-only tools (vagrant, for
#                        `vagrant validate`); combines with --packages-only
#   --with-networking    enable IPv4 forwarding (sandboxes with network access)
#   --without-mount-s3   do not install mount-s3 (s3fs remains as FUSE client)
#   --bin-dir DIR        take matrxd, matrx, matrx-init from DIR (default:
#                        build/bin of this checkout)
#   --dry-run            print what would be done; change nothing (root not
#                        required)
#   -h, --help           this text
#
# Environment:
#   MATRX_MOUNT_S3_BASE_URL  mirror of https://s3.amazonaws.com/mountpoint-s3-release
#   MATRX_MOUNT_S3_VERSION, MATRX_MOUNT_S3_SHA256
#                            pin another mount-s3 release (both required)
#   MATRX_OS_RELEASE         os-release file to read (default /etc/os-release)
#   MATRX_BOOTSTRAP_FAIL_STEP  test hook: fail on purpose at the first step
#                            whose name matches this glob
#
# Fails loudly: an ERR trap names the step that failed.
set -Eeuo pipefail

STEP="start"
trap 'echo "bootstrap: FAILED at step: ${STEP} (line ${LINENO})" >&2' ERR

step() {
  STEP="$1"
  echo "bootstrap: ${STEP}"
  # shellcheck disable=SC2053 # glob match is intended
  if [[ -n "${MATRX_BOOTSTRAP_FAIL_STEP:-}" && "$STEP" == ${MATRX_BOOTSTRAP_FAIL_STEP} ]]; then
    echo "bootstrap: MATRX_BOOTSTRAP_FAIL_STEP matches '${STEP}': failing on purpose" >&2
    false
  fi
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"

MODE="full"
TEST_TOOLS=0
WITH_NETWORKING=0
WITH_MOUNT_S3=1
DRY_RUN=0
BIN_DIR="${REPO}/build/bin"
while (($#)); do
  case "$1" in
    --packages-only) MODE="packages" ;;
    --test-tools) TEST_TOOLS=1 ;;
    --with-networking) WITH_NETWORKING=1 ;;
    --without-mount-s3) WITH_MOUNT_S3=0 ;;
    --dry-run) DRY_RUN=1 ;;
    --bin-dir) (($# > 1)) || { echo "bootstrap: --bin-dir needs a directory" >&2; exit 2; }
               BIN_DIR="$2"; shift ;;
    --bin-dir=*) BIN_DIR="${1#--bin-dir=}" ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bootstrap: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

if ((!DRY_RUN)) && [[ $EUID -ne 0 ]]; then
  echo "bootstrap: must run as root" >&2
  exit 1
fi

# run CMD...: execute, or in --dry-run print it.
run() {
  if ((DRY_RUN)); then
    printf 'bootstrap: [dry-run] would run:'
    printf ' %q' "$@"
    printf '\n'
    return 0
  fi
  "$@"
}
# note MSG: what --dry-run would have done without a command to show.
would() { echo "bootstrap: [dry-run] would $*"; }
# Problems a real run would stop at; --dry-run reports them and goes on.
PROBLEMS=()
problem() {
  if ((DRY_RUN)); then
    echo "bootstrap: [dry-run] a real run would FAIL here: $*" >&2
    PROBLEMS+=("$*")
    return 0
  fi
  echo "bootstrap: $*" >&2
  return 1
}

WORKDIR=""
cleanup() { [[ -z "$WORKDIR" ]] || rm -rf -- "$WORKDIR"; }
trap cleanup EXIT

# ---------------------------------------------------------------------------
# Distribution and packages
# ---------------------------------------------------------------------------

step "detect os"
OS_RELEASE="${MATRX_OS_RELEASE:-/etc/os-release}"
[[ -r "$OS_RELEASE" ]] || { echo "bootstrap: cannot read ${OS_RELEASE}" >&2; false; }
# os-release is shell-compatible by specification; read it in a subshell so
# it cannot clobber our variables.
eval "$(
  # shellcheck disable=SC1090
  . "$OS_RELEASE"
  printf 'OS_ID=%q OS_LIKE=%q OS_VERSION=%q OS_NAME=%q\n' \
    "${ID:-}" "${ID_LIKE:-}" "${VERSION_ID:-}" "${PRETTY_NAME:-${ID:-unknown}}"
)"
case "$OS_ID" in
  debian) PKG=apt; [[ "${OS_VERSION%%.*}" -ge 12 ]] 2>/dev/null || echo "bootstrap: warning: ${OS_NAME} is older than Debian 12 (untested)" ;;
  ubuntu) PKG=apt; [[ "${OS_VERSION%%.*}" -ge 22 ]] 2>/dev/null || echo "bootstrap: warning: ${OS_NAME} is older than Ubuntu 22.04 (untested)" ;;
  amzn)
    [[ "$OS_VERSION" == 2023 ]] || { echo "bootstrap: Amazon Linux ${OS_VERSION} is not supported (need 2023: dnf, fuse3)" >&2; false; }
    PKG=dnf ;;
  *)
    case " $OS_LIKE " in
      *" debian "*|*" ubuntu "*) PKG=apt ;;
      *" fedora "*|*" rhel "*) PKG=dnf ;;
      *) echo "bootstrap: unsupported distribution '${OS_NAME}' (ID=${OS_ID} ID_LIKE=${OS_LIKE})" >&2; false ;;
    esac
    echo "bootstrap: warning: ${OS_NAME} is untested; treating it as ${PKG}-based" ;;
esac
echo "bootstrap: ${OS_NAME} (${PKG})"

# Packages: runtime (containerd, runc; crun, the other OCI runtime matrxd
# can run sandboxes with, `matrxd --oci-runtime crun`), init for sandboxes is our own static
# binary, image build (busybox-static, mmdebstrap), storage (fuse3, s3fs;
# e2fsprogs for the per-sandbox ext4 disk images),
# networking (CNI plugins, iptables), test tooling (awscli for the bench,
# systemd for `systemd-analyze verify` of our units).
# OPTIONAL packages are installed when the distribution has them and skipped
# with a warning otherwise.
if [[ "$PKG" == apt ]]; then
  PACKAGES=(
    containerd runc crun
    busybox-static mmdebstrap
    fuse3 s3fs
    e2fsprogs
    containernetworking-plugins iptables iproute2
    awscli
    ca-certificates curl make
    systemd
  )
  OPTIONAL=()
  if [[ "$OS_ID" == ubuntu ]]; then
    # Ubuntu 24.04 dropped the awscli deb (snap only).
    PACKAGES=("${PACKAGES[@]/awscli/}")
    OPTIONAL+=(awscli)
  fi
  # vagrant for `vagrant validate`; libseccomp-dev and pkg-config to build
  # runc 1.2 for the containerd 2 test pass (bootstrap/tools.sh).
  # openssh-client (ssh, scp, sftp) for the SSH gateway's end-to-end tests.
  # A real image registry for the pull tests: docker-registry (distribution
  # 2.8), htpasswd (apache2-utils) for its basic auth, skopeo to push our
  # own OCI archives to it. python3 for the exec agent tests' clients that
  # talk to the agent from inside a sandbox's namespaces (nsenter/unshare
  # come with util-linux, which Debian always has).
  TEST_PACKAGES=(vagrant libseccomp-dev pkg-config openssh-client docker-registry apache2-utils skopeo python3)
  PKG_TOOL=apt-get
else
  # Amazon Linux 2023 names. The image-build tools (busybox-static,
  # mmdebstrap) are Debian tools: build images on a Debian host or in the VM.
  PACKAGES=(
    containerd runc
    fuse3
    e2fsprogs
    iptables-nft iproute
    ca-certificates curl make tar
    systemd
  )
  OPTIONAL=(containernetworking-plugins s3fs-fuse awscli-2 crun)
  # No vagrant package on AL2023; `vagrant validate` tests skip there.
  TEST_PACKAGES=(openssh-clients python3)
  PKG_TOOL=dnf
fi
if ((TEST_TOOLS)); then
  PACKAGES+=("${TEST_PACKAGES[@]}")
fi

pkg_installed() {
  if [[ "$PKG" == apt ]]; then
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
  else
    rpm -q --quiet "$1" 2>/dev/null
  fi
}
pkg_available() {
  if [[ "$PKG" == apt ]]; then
    apt-cache show "$1" >/dev/null 2>&1
  else
    dnf -q list --available "$1" >/dev/null 2>&1
  fi
}

APT_UPDATED=0
pkg_install() { # pkg_install PKG... (names or ./local files)
  if [[ "$PKG" == apt ]]; then
    export DEBIAN_FRONTEND=noninteractive
    if ((!APT_UPDATED)); then
      run apt-get update -qq
      APT_UPDATED=1
    fi
    run apt-get install -y -qq --no-install-recommends --allow-downgrades "$@"
  else
    run dnf install -y -q "$@"
  fi
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    [[ -n "$p" ]] || continue
    pkg_installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    step "${PKG_TOOL} install ${missing[*]}"
    pkg_install "${missing[@]}"
  else
    step "${PKG} packages already installed"
  fi
  local opt=()
  for p in "${OPTIONAL[@]}"; do
    pkg_installed "$p" && continue
    if pkg_available "$p"; then opt+=("$p"); else echo "bootstrap: warning: optional package ${p} is not available on ${OS_NAME}; skipped"; fi
  done
  if ((${#opt[@]})); then
    step "install optional packages ${opt[*]}"
    pkg_install "${opt[@]}"
  fi
  # Debian's docker-registry enables a registry on :5000, every interface,
  # where systemd runs. The tests start their own on loopback: the
  # package's service must not run.
  if ((TEST_TOOLS)) && [[ -d /run/systemd/system ]] && pkg_installed docker-registry; then
    step "disable the docker-registry service (the tests run their own on loopback)"
    run systemctl disable --now docker-registry.service
  fi
}

if [[ "$MODE" == "packages" ]]; then
  install_packages
  exit 0
fi

# ---------------------------------------------------------------------------
# Full install
# ---------------------------------------------------------------------------

SYSTEMD_PID1=0
[[ -d /run/systemd/system ]] && SYSTEMD_PID1=1 # sd_booted(3)

step "preflight"
BINARIES=(matrxd matrx matrx-init matrx-relay)
for b in "${BINARIES[@]}"; do
  [[ -x "${BIN_DIR}/${b}" ]] || problem "missing ${BIN_DIR}/${b}: run 'make build' first (or pass --bin-dir)" || false
done
for u in matrxd.service matrxd.socket; do
  [[ -f "${HERE}/systemd/${u}" ]] || problem "missing ${HERE}/systemd/${u}" || false
done

# mount-s3 (AWS Mountpoint for Amazon S3), pinned. Downloaded from AWS's
# release bucket and installed only if its SHA-256 equals the pinned value.
# AWS publishes GPG signatures (.asc), not checksums, next to each package:
# a pinned value must be taken from a download whose signature was checked
# (see bootstrap/README.md). Sources of the values below:
#   rpm x86_64/arm64 1.14.0: as pinned by AWS's "Scale-Out Computing on AWS"
#     bootstrap templates (third-party record; not re-downloaded here).
#   tar.gz x86_64 1.24.0 (Debian/Ubuntu: the release tarball, unpacked to
#     /opt/aws/mountpoint-s3, needs only libfuse2): published with that
#     value in third-party install scripts that checked it against the
#     tarball they used (not re-downloaded here).
#   deb and tar.gz arm64: no published value found; TO-BE-FILLED makes the
#     install fail (use --without-mount-s3, or set
#     MATRX_MOUNT_S3_VERSION/MATRX_MOUNT_S3_SHA256 after verifying the
#     package's signature yourself).
declare -A MOUNT_S3_VERSIONS=([rpm]="1.14.0" [tar.gz]="1.24.0")
declare -A MOUNT_S3_SHA256=(
  [rpm-x86_64]="ea6f6f76602b0034642a88a8ce31542a185c36c9fa5e50c49dffe445b8b70cd7"
  [rpm-arm64]="5c13de3fa0a8fd884444c5bf149cc4c3967aadad5c6fc4925df2529d4a83a5dd"
  [tar.gz-x86_64]="a99bea20510eaabaf9d7cbfe95ab221a11005cacaa77cfc311a2912bbbdbfd72"
  [tar.gz-arm64]="TO-BE-FILLED"
)
MOUNT_S3_BASE_URL="${MATRX_MOUNT_S3_BASE_URL:-https://s3.amazonaws.com/mountpoint-s3-release}"

MOUNT_S3_FILE=""
fetch_mount_s3() {
  local version fmt arch sha
  fmt="tar.gz"; [[ "$PKG" == dnf ]] && fmt="rpm"
  version="${MOUNT_S3_VERSIONS[$fmt]}"
  if [[ -n "${MATRX_MOUNT_S3_VERSION:-}${MATRX_MOUNT_S3_SHA256:-}" ]]; then
    [[ -n "${MATRX_MOUNT_S3_VERSION:-}" && -n "${MATRX_MOUNT_S3_SHA256:-}" ]] ||
      { echo "bootstrap: set both MATRX_MOUNT_S3_VERSION and MATRX_MOUNT_S3_SHA256" >&2; return 1; }
    version="$MATRX_MOUNT_S3_VERSION"
  fi
  case "$(uname -m)" in
    x86_64) arch=x86_64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) echo "bootstrap: no mount-s3 build for $(uname -m)" >&2; return 1 ;;
  esac
  sha="${MATRX_MOUNT_S3_SHA256:-${MOUNT_S3_SHA256[${fmt}-${arch}]}}"

  if command -v mount-s3 >/dev/null && [[ "$(mount-s3 --version 2>/dev/null)" == *" ${version}"* ]]; then
    step "mount-s3 ${version} already installed"
    return 0
  fi
  step "fetch and verify mount-s3 ${version} (${fmt}, ${arch})"
  local rel="${version}/${arch}/mount-s3-${version}-${arch}.${fmt}"
  if [[ ! "$sha" =~ ^[0-9a-fA-F]{64}$ ]]; then
    problem "no pinned SHA-256 for ${MOUNT_S3_BASE_URL}/${rel} (have '${sha}'); refusing to install it unverified. Fill MOUNT_S3_SHA256[${fmt}-${arch}] in bootstrap/install.sh, set MATRX_MOUNT_S3_VERSION+MATRX_MOUNT_S3_SHA256, or pass --without-mount-s3" || return 1
    return 0
  fi
  if ((DRY_RUN)); then
    would "download ${MOUNT_S3_BASE_URL}/${rel} and require sha256 ${sha}"
    return 0
  fi
  if ! command -v curl >/dev/null; then
    pkg_install curl ca-certificates
  fi
  WORKDIR="$(mktemp -d /tmp/matrx-bootstrap.XXXXXX)"
  MOUNT_S3_FILE="${WORKDIR}/mount-s3-${version}-${arch}.${fmt}"
  MATRX_FETCH_BASE_URL="$MOUNT_S3_BASE_URL" "${HERE}/lib/fetch-verified.sh" "$rel" "$sha" "$MOUNT_S3_FILE"
}

# Fetch and verify first: a bad or missing checksum stops the run before the
# host has been changed.
if ((WITH_MOUNT_S3)); then
  fetch_mount_s3
else
  step "skip mount-s3 (--without-mount-s3): s3fs is the FUSE S3 client"
fi

install_packages

if [[ -n "$MOUNT_S3_FILE" ]]; then
  step "install mount-s3"
  if [[ "$MOUNT_S3_FILE" == *.tar.gz ]]; then
    # The release tarball is self-contained but for libfuse2.
    pkg_install libfuse2
    rm -rf /opt/aws/mountpoint-s3.new
    mkdir -p /opt/aws/mountpoint-s3.new
    tar -xzf "$MOUNT_S3_FILE" -C /opt/aws/mountpoint-s3.new
    [[ -x /opt/aws/mountpoint-s3.new/bin/mount-s3 ]] || problem "mount-s3 tarball has no bin/mount-s3" || false
    rm -rf /opt/aws/mountpoint-s3
    mv /opt/aws/mountpoint-s3.new /opt/aws/mountpoint-s3
    ln -sf /opt/aws/mountpoint-s3/bin/mount-s3 /usr/local/bin/mount-s3
  else
    # dnf resolves its dependency on fuse-libs.
    pkg_install "$MOUNT_S3_FILE"
  fi
fi

step "enable user_allow_other in /etc/fuse.conf"
# FUSE mounts made by matrxd (root) are bind-mounted into sandboxes whose
# processes run as other uids; without allow_other they get EACCES.
FUSE_CONF=/etc/fuse.conf
if [[ -f "$FUSE_CONF" ]] && grep -Eq '^[[:space:]]*user_allow_other[[:space:]]*$' "$FUSE_CONF"; then
  echo "bootstrap: user_allow_other already enabled"
elif [[ -f "$FUSE_CONF" ]] && grep -Eq '^[[:space:]]*#[[:space:]]*user_allow_other[[:space:]]*$' "$FUSE_CONF"; then
  run sed -i -E 's/^[[:space:]]*#[[:space:]]*(user_allow_other)[[:space:]]*$/\1/' "$FUSE_CONF"
elif ((DRY_RUN)); then
  would "append user_allow_other to ${FUSE_CONF}"
else
  printf 'user_allow_other\n' >>"$FUSE_CONF"
fi

if ((WITH_NETWORKING)); then
  step "enable IPv4 forwarding (--with-networking)"
  # Sandbox traffic is routed and NATed from the CNI bridge to the host's
  # uplink; that needs forwarding. Persisted for reboots, applied now.
  SYSCTL_FILE=/etc/sysctl.d/90-matrx.conf
  SYSCTL_LINE="net.ipv4.ip_forward = 1"
  if [[ -f "$SYSCTL_FILE" ]] && grep -qxF "$SYSCTL_LINE" "$SYSCTL_FILE"; then
    echo "bootstrap: ${SYSCTL_FILE} already present"
  elif ((DRY_RUN)); then
    would "write '${SYSCTL_LINE}' to ${SYSCTL_FILE}"
  else
    printf '# Written by matrx bootstrap/install.sh --with-networking\n%s\n' "$SYSCTL_LINE" >"$SYSCTL_FILE"
  fi
  run sysctl -q -w net.ipv4.ip_forward=1
  if [[ "$PKG" == dnf ]]; then
    # AL2023's CNI plugins may be missing (optional package); networking
    # cannot work without them.
    have_cni=0
    for d in /usr/libexec/cni /usr/lib/cni /opt/cni/bin; do
      if [[ -x "$d/bridge" ]]; then have_cni=1; fi
    done
    ((have_cni)) || problem "CNI plugins (bridge, host-local, portmap...) not found in /usr/libexec/cni, /usr/lib/cni or /opt/cni/bin" || false
  fi
else
  step "leave IP forwarding as it is (pass --with-networking to enable it)"
fi

step "create system group matrx"
# Members may use the API socket (matrxd.socket: SocketGroup=matrx, 0660).
if getent group matrx >/dev/null; then
  echo "bootstrap: group matrx exists"
else
  run groupadd --system matrx
fi

step "install binaries from ${BIN_DIR}"
install_file() { # install_file MODE SRC DEST: copy when different
  if [[ -f "$3" ]] && cmp -s "$2" "$3"; then
    echo "bootstrap: ${3} up to date"
    return 0
  fi
  # install(1) unlinks DEST first, so a running matrxd is not disturbed
  # (no ETXTBSY); the new binary takes effect on restart.
  run install -D -m "$1" "$2" "$3"
}
for b in "${BINARIES[@]}"; do
  if [[ -x "${BIN_DIR}/${b}" ]]; then
    install_file 0755 "${BIN_DIR}/${b}" "/usr/local/bin/${b}"
  elif ((DRY_RUN)); then
    would "install ${BIN_DIR}/${b} to /usr/local/bin/${b} (missing now)"
  fi
done
# matrx-vk, the fleet provider (docs/fleet.md), is optional: only hosts that
# join a Kubernetes cluster run it.
if [[ -x "${BIN_DIR}/matrx-vk" ]]; then
  install_file 0755 "${BIN_DIR}/matrx-vk" /usr/local/bin/matrx-vk
fi
# matrx-init is also bind-mounted into every sandbox as its PID 1 from here;
# matrx-relay, beside it, is started by the runc shim for every background
# process (its output relay).
for b in matrx-init matrx-relay; do
  if [[ -x "${BIN_DIR}/${b}" ]]; then
    install_file 0755 "${BIN_DIR}/${b}" "/usr/local/lib/matrx/${b}"
  elif ((DRY_RUN)); then
    would "install ${BIN_DIR}/${b} to /usr/local/lib/matrx/${b} (missing now)"
  fi
done

step "install systemd units"
# matrx-vk.service is installed but not enabled: joining a cluster needs its
# credentials first (docs/fleet.md).
for u in matrxd.service matrxd.socket matrx-vk.service; do
  install_file 0644 "${HERE}/systemd/${u}" "/etc/systemd/system/${u}"
done
if [[ -d /etc/matrx ]]; then
  echo "bootstrap: /etc/matrx exists"
else
  run install -d -m 0755 /etc/matrx
fi
ENV_FILE=/etc/matrx/matrxd.env
if [[ -e "$ENV_FILE" ]]; then
  echo "bootstrap: ${ENV_FILE} exists; left as it is"
elif ((DRY_RUN)); then
  would "write a commented template to ${ENV_FILE}"
else
  cat >"$ENV_FILE" <<'EOF'
# matrxd environment, read by matrxd.service (EnvironmentFile=).
# One VARIABLE=value per line; see `matrxd --help` for the variables matrxd
# reads. Written once by bootstrap/install.sh; never overwritten.
EOF
  chmod 0640 "$ENV_FILE"
fi

if ((SYSTEMD_PID1)); then
  step "enable and start matrxd"
  run systemctl daemon-reload
  run systemctl enable --now containerd.service
  run systemctl enable matrxd.socket matrxd.service
  run systemctl start matrxd.socket
  # restart (not start) so an upgraded binary takes effect; KillMode=process
  # keeps running sandboxes and FUSE mounts alive across it.
  run systemctl restart matrxd.service
  if ((!DRY_RUN)); then
    systemctl is-active --quiet matrxd.service
  fi
else
  step "skip systemctl: systemd is not PID 1"
  echo "bootstrap: PID 1 is '$(cat /proc/1/comm 2>/dev/null || echo unknown)', not systemd: units are installed in"
  echo "bootstrap: /etc/systemd/system but not enabled or started. Start containerd and"
  echo "bootstrap: /usr/local/bin/matrxd yourself (or boot this host with systemd)."
fi

if ((DRY_RUN)); then
  step "dry run done: nothing was changed"
  if ((${#PROBLEMS[@]})); then
    echo "bootstrap: [dry-run] a real run would stop at ${#PROBLEMS[@]} problem(s):"
    printf 'bootstrap: [dry-run]   - %s\n' "${PROBLEMS[@]}"
  fi
  exit 0
fi
step "done"
