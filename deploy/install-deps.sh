#!/usr/bin/env bash
# Installs what geops needs to build and test, from Debian bookworm only.
set -euo pipefail
packages=(build-essential cmake pkg-config libzmq3-dev libabsl-dev catch2 libibverbs-dev librdmacm-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
