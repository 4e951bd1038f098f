#!/usr/bin/env bash
# Runs the RDMA suite on real rxe (SoftRoCE) devices inside a throw-away
# QEMU VM, because this kernel has no RDMA. Exit 77 (CTest: skipped) when
# the VM tool is not beside this checkout, or the host has RDMA devices of
# its own (then rdma_suite runs on them directly).
set -euo pipefail
build_dir=$1
source_dir=$2
vm=${GEOPS_SOFTROCE_VM:-$source_dir/../shared/tools/softroce-vm/run-in-softroce-vm.sh}
if [ ! -x "$vm" ]; then
  echo "skipped: no SoftRoCE VM tool at $vm (set GEOPS_SOFTROCE_VM)"
  exit 77
fi
if command -v ibv_devices >/dev/null && [ "$(ibv_devices 2>/dev/null | tail -n +3 | wc -l)" -gt 0 ]; then
  echo "skipped: this host has RDMA devices; rdma_suite ran on them"
  exit 77
fi
cd "$build_dir"
# -d yes: each case's time as it ends; a hang shows its stacks (stacks_on_hang.sh).
exec "$vm" -t 900 "bash $source_dir/tests/stacks_on_hang.sh 600 ./tests/geops_rdma_tests '[rdma]' -d yes"
