#!/bin/bash
# softroce.sh - SoftRoCE (rdma_rxe) on a real Linux host, for running geops
# over rdma without an RDMA NIC.
#
#   softroce.sh up NETDEV     load rdma_rxe, add rxe_NETDEV on NETDEV, check it
#   softroce.sh check [DEV]   ibv_devinfo of DEV (default: every rxe device)
#   softroce.sh down [NETDEV] delete rxe_NETDEV (default: every rxe device)
#
# Needs root, a kernel built with CONFIG_RDMA_RXE (Debian's stock kernels
# have it), iproute2's `rdma` and ibverbs-utils. The rxe device must sit on
# the netdev that carries the peers' addresses: rxe ignores traffic on lo.
set -euo pipefail

die() { echo "softroce: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (rdma link add/delete and modprobe need it)"; }
need_tools() {
  command -v rdma >/dev/null || die "no 'rdma' command: apt-get install iproute2"
  command -v ibv_devinfo >/dev/null || die "no 'ibv_devinfo': apt-get install ibverbs-utils ibverbs-providers"
}
rxe_devices() { rdma link show 2>/dev/null | awk '{print $2}' | cut -d/ -f1 | grep '^rxe' || true; }

up() {
  local netdev=${1:-}
  [ -n "$netdev" ] || die "usage: softroce.sh up NETDEV (one of: $(ls /sys/class/net | tr '\n' ' '))"
  need_root; need_tools
  [ -e "/sys/class/net/$netdev" ] || die "no network device '$netdev' (have: $(ls /sys/class/net | tr '\n' ' '))"
  [ "$netdev" != lo ] || die "rxe on lo does not carry traffic; use the interface with the peers' addresses"
  if [ ! -d /sys/module/rdma_rxe ]; then
    modprobe rdma_rxe 2>/dev/null || die "cannot load rdma_rxe: this kernel ($(uname -r)) lacks CONFIG_RDMA_RXE, or modules for it are not installed (linux-modules-extra on Ubuntu)"
  fi
  local dev=rxe_$netdev
  if rdma link show "$dev/1" >/dev/null 2>&1; then
    echo "softroce: $dev already exists"
  else
    rdma link add "$dev" type rxe netdev "$netdev" || die "rdma link add $dev failed"
  fi
  check "$dev"
}

check() {
  need_tools
  local devs=${1:-$(rxe_devices)}
  [ -n "$devs" ] || die "no rxe device; run: softroce.sh up NETDEV"
  local bad=0 d
  for d in $devs; do
    if ! ibv_devinfo -d "$d" > /tmp/softroce.$$ 2>&1; then
      echo "softroce: ibv_devinfo -d $d failed: $(tail -1 /tmp/softroce.$$)" >&2; bad=1
    elif grep -q PORT_ACTIVE /tmp/softroce.$$; then
      local gid ndev
      gid=$(cat /sys/class/infiniband/$d/ports/1/gids/1 2>/dev/null || echo '?')
      ndev=$(cat /sys/class/infiniband/$d/ports/1/gid_attrs/ndevs/1 2>/dev/null || echo '?')
      echo "softroce: $d on $ndev PORT_ACTIVE, gid[1]=$gid (RoCE v2 IPv4: use GID index 1)"
    else
      echo "softroce: $d is not PORT_ACTIVE (is its netdev up and addressed?)" >&2; bad=1
    fi
  done
  rm -f /tmp/softroce.$$
  [ "$(ulimit -l)" = unlimited ] || echo "softroce: note: memlock limit is $(ulimit -l) KiB; rdma programs need more (ulimit -l unlimited)"
  return $bad
}

down() {
  need_root; need_tools
  local devs
  if [ -n "${1:-}" ]; then devs=rxe_$1; else devs=$(rxe_devices); fi
  [ -n "$devs" ] || { echo "softroce: no rxe device"; return 0; }
  local d
  for d in $devs; do
    rdma link show "$d/1" >/dev/null 2>&1 || die "no rxe device $d (have: $(rxe_devices | tr '\n' ' '))"
    rdma link delete "$d" && echo "softroce: deleted $d" || die "rdma link delete $d failed"
  done
}

case ${1:-} in
  up) up "${2:-}" ;;
  check) check "${2:-}" ;;
  down) down "${2:-}" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
