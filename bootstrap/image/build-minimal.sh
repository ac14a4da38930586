#!/usr/bin/env bash
# bootstrap/image/build-minimal.sh OUT.tar — builds the tiny test image
# localhost/matrx/minimal:latest as an OCI archive, in seconds, offline.
#
# Contents: Debian's static busybox as /bin/busybox plus a symlink in /bin
# for every applet it lists, users root(0), agent(1000:1000, /home/agent,
# /bin/sh) and nobody(65534), /data/cold for agent, the usual empty mount
# points. Deliberately no bash: the daemon falls back to `sh -c` without
# /bin/bash, and tests rely on that. Run as root from anywhere; needs the
# busybox-static package (bootstrap/install.sh --packages-only).
set -Eeuo pipefail
# shellcheck source=bootstrap/image/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE_NAME="localhost/matrx/minimal:latest"
image_init minimal "$@"
ROOTFS="$WORK/rootfs"

step "find busybox-static"
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
  echo "image: busybox-static is not installed (apt-get install busybox-static)" >&2
  false
fi
BUSYBOX="$(dpkg-query -L busybox-static | grep -E '/bin/busybox$' | head -n1)"
BUSYBOX="$(realpath -e -- "$BUSYBOX")"
# Reproducible by default: everything is dated no later than the busybox
# binary shipped in the package.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(stat -c %Y -- "$BUSYBOX")}"

step "lay out the rootfs"
install -d -m 0755 "$ROOTFS"
(
  cd "$ROOTFS"
  install -d -m 0755 bin etc usr home data run dev var
  install -d -m 0555 proc sys
  install -d -m 0700 root
  install -d -m 1777 tmp var/tmp
  install -d -m 0755 -o 1000 -g 1000 home/agent data/cold
  # One bin directory; the other usual ones point at it, so
  # `#!/usr/bin/env sh` and /sbin/ip style paths resolve.
  ln -s bin sbin
  ln -s ../bin usr/bin
  ln -s ../bin usr/sbin
)

step "install busybox and its applets"
install -m 0755 -- "$BUSYBOX" "$ROOTFS/bin/busybox"
applets=0
while read -r applet; do
  [[ -n "$applet" && "$applet" != */* && "$applet" != busybox ]] || continue
  [[ -e "$ROOTFS/bin/$applet" || -L "$ROOTFS/bin/$applet" ]] && continue
  ln -s busybox "$ROOTFS/bin/$applet"
  applets=$((applets + 1))
done < <("$ROOTFS/bin/busybox" --list)
echo "image: ${applets} applet links"
[[ -L "$ROOTFS/bin/sh" ]] || { echo "image: busybox has no sh applet" >&2; false; }

step "write /etc"
cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
agent:x:1000:1000:agent:/home/agent:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
agent:x:1000:
nogroup:x:65534:
EOF
chmod 0644 "$ROOTFS"/etc/{passwd,group}
write_runtime_etc "$ROOTFS"

step "smoke-test the rootfs in a chroot"
# Proves busybox is really static (nothing else is in there) and the user
# database resolves.
got="$(chroot "$ROOTFS" /bin/sh -c 'id -u agent; id -g agent; ls -d /home/agent')"
[[ "$got" == $'1000\n1000\n/home/agent' ]] || {
  echo "image: unexpected chroot smoke test output: $got" >&2
  false
}

build_ocipack
pack_rootfs "$ROOTFS" "$IMAGE_NAME"
image_done "$IMAGE_NAME"
