#!/usr/bin/env bash
# Builds the geops image without a container runtime (where `docker build`
# cannot run containers, e.g. a CI host whose runtime cannot start any):
# a Debian 12 root filesystem from the package mirror (mmdebstrap) with the
# run-time packages of deploy/containers/Dockerfile, geops installed into
# it from BUILD (built on Debian 12: the same libraries), then
#   - podman import (when podman is installed): image geops:latest,
#     entrypoint geops;
#   - a check without any runtime: the demo cluster (geops-launch) and
#     `import geops` run chrooted in that filesystem.
#   deploy/containers/rootfs-image.sh BUILD OUT      (as root; OUT/geops-rootfs.tar)
# WITH_TORCH=1 adds python3-torch and dataset-fashion-mnist, as the Dockerfile does.
set -euo pipefail
build=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd)
cd "$(dirname "$0")/../.."
stage=$out/stage
rm -rf "$stage" && DESTDIR=$stage cmake --install "$build" --prefix /usr >/dev/null
pkgs=libzmq5,libabsl20220623,libibverbs1,librdmacm1,ibverbs-providers,zlib1g,python3,python3-numpy,iproute2
[ "${WITH_TORCH:-0}" = 1 ] && pkgs=$pkgs,python3-torch,dataset-fashion-mnist
mmdebstrap --quiet --variant=apt --include="$pkgs" \
  --customize-hook="sync-in $stage /" \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$out/geops-rootfs.tar"
echo "rootfs-image: $(du -h "$out/geops-rootfs.tar" | cut -f1) in $out/geops-rootfs.tar"
if command -v podman >/dev/null; then
  podman import --change 'ENTRYPOINT ["geops"]' "$out/geops-rootfs.tar" geops:latest >/dev/null
  echo "rootfs-image: podman image geops:latest ($(podman image inspect geops:latest --format '{{.Size}}') bytes)"
fi
# The image's files, run without a container runtime.
root=$out/root
rm -rf "$root" && mkdir -p "$root" && tar -C "$root" -xf "$out/geops-rootfs.tar"
unshare --mount --pid --fork sh -c "
  mount -t proc proc '$root/proc' && mount -t tmpfs tmpfs '$root/tmp' &&
  chroot '$root' python3 -c 'import geops, sys; print(\"rootfs-image: import geops ok\")' &&
  chroot '$root' geops --help >/dev/null &&
  chroot '$root' geops-launch --rounds 3 --quiet"
rm -rf "$root" "$stage"
