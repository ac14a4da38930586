#!/usr/bin/env bash
# bootstrap/up.sh — `make up`: start containerd (if it is not running) and
# matrxd, import the sandbox image, and show a sandbox running a command.
# `up.sh --down` stops the matrxd this script started (sandboxes keep
# running, by design: see package daemon).
#
# Where systemd is PID 1 the units in bootstrap/systemd are installed and
# used; elsewhere (containers, CI VMs without systemd) both daemons run as
# background processes with logs under /var/log/matrx.
set -Eeuo pipefail
STEP="start"
trap 'echo "up: FAILED at step: ${STEP} (line ${LINENO})" >&2' ERR
step() { STEP="$1"; echo "up: ${STEP}"; }

cd "$(dirname "$0")/.."
BIN="$PWD/build/bin"
SOCK="${MATRX_SOCKET:-/run/matrx/matrxd.sock}"
CTRD_SOCK="${MATRX_CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}"
LOGDIR=/var/log/matrx
PIDFILE=/run/matrx/matrxd.pid
mkdir -p "$LOGDIR" /run/matrx

if [[ "${1:-}" == "--down" ]]; then
  step "stop matrxd"
  if [[ -d /run/systemd/system ]]; then systemctl stop matrxd.service matrxd.socket || true; fi
  if [[ -f "$PIDFILE" ]]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; rm -f "$PIDFILE"; fi
  exit 0
fi

step "install binaries"
install -D -m 0755 "$BIN/matrxd" /usr/local/bin/matrxd
install -D -m 0755 "$BIN/matrx" /usr/local/bin/matrx
install -D -m 0755 "$BIN/matrx-init" /usr/local/lib/matrx/matrx-init
install -D -m 0755 "$BIN/matrx-relay" /usr/local/lib/matrx/matrx-relay
getent group matrx >/dev/null || groupadd --system matrx

step "start containerd"
if ! ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; then
  if [[ -d /run/systemd/system ]]; then
    systemctl enable --now containerd
  else
    nohup containerd >>"$LOGDIR/containerd.log" 2>&1 &
  fi
  for _ in $(seq 1 100); do ctr --address "$CTRD_SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr --address "$CTRD_SOCK" version >/dev/null
fi

step "start matrxd"
if ! matrx --socket "$SOCK" health >/dev/null 2>&1; then
  if [[ -d /run/systemd/system ]]; then
    install -m 0644 bootstrap/systemd/matrxd.service bootstrap/systemd/matrxd.socket /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable --now matrxd.socket matrxd.service
  else
    MATRX_INIT_PATH=/usr/local/lib/matrx/matrx-init nohup /usr/local/bin/matrxd --socket "$SOCK" \
      --containerd-address "$CTRD_SOCK" --log-format text >>"$LOGDIR/matrxd.log" 2>&1 &
    echo $! >"$PIDFILE"
  fi
  for _ in $(seq 1 100); do matrx --socket "$SOCK" health >/dev/null 2>&1 && break; sleep 0.1; done
  matrx --socket "$SOCK" health >/dev/null
fi

step "import sandbox image"
matrx --socket "$SOCK" image import build/images/sandbox.tar

step "demo sandbox"
id="$(matrx --socket "$SOCK" create --user demo)"
echo "up: created $id"
matrx --socket "$SOCK" exec "$id" -- 'echo "hello from $SANDBOX_ID as $(id -un)"; uname -sr; python3 --version; node --version; pwd'
matrx --socket "$SOCK" ls
echo "up: matrxd is serving on $SOCK (logs: $LOGDIR or journalctl -u matrxd)."
echo "up: try: matrx exec $id -- ls -la; matrx rm $id"
