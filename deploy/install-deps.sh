#!/usr/bin/env bash
# Installs what geops needs to build and test, from Debian bookworm only.
set -euo pipefail
# clang and libclang-rt-14-dev (libFuzzer, the clang sanitizer runtimes) build
# the codec fuzzer of deploy/checks.sh; gcc brings ASan, UBSan and TSan.
# dataset-fashion-mnist (read with zlib) is what the example trainer learns.
# pybind11-dev and python3-dev build the Python module (import geops) for
# Debian's python3; python3-numpy, python3-torch and python3-pytest run it,
# its tests and examples/fashion_mnist_cnn.py; python3-yaml and docker-compose
# (its offline `config` check) validate the container recipes. gdb prints the
# stacks of a test that hangs (tests/stacks_on_hang.sh).
packages=(build-essential cmake pkg-config libzmq3-dev libabsl-dev catch2 libibverbs-dev librdmacm-dev
  clang libclang-rt-14-dev tcpdump iproute2 iputils-ping iperf3
  zlib1g-dev dataset-fashion-mnist
  pybind11-dev python3-dev python3-numpy python3-pytest python3-torch python3-yaml docker-compose gdb)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
