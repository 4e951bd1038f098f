#!/usr/bin/env bash
# The README's accuracy table: the example trainer (an MLP, 128 hidden
# units) on Fashion-MNIST, 2 parties x 2 workers on this host, 10 epochs,
# learning rate 0.3 falling linearly to 0.03, once per WAN policy:
#   bench/policy_accuracy.sh BUILD_DIR OUT_DIR
# Needs the Debian package dataset-fashion-mnist. About 2 minutes per
# policy on 2 cores. Prints one row per policy: final test accuracy (all
# 10,000 test images) and the global tier's bytes.
set -euo pipefail
build=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
run() {
  local name=$1
  shift
  "$build/geops-launch" --train mlp --epochs 10 --env GEOPS_LR=0.3 \
    --env MXNET_KVSTORE_SIZE_LOWER_BOUND=1000 "$@" > "$out/$name.txt" 2>&1 || true
  local line
  line=$(grep '^summary: model=' "$out/$name.txt" | tail -1 || true)
  if [ -z "$line" ] || [ "$(field processes_failed "$line")" != 0 ]; then
    echo "| $name | FAILED (see $out/$name.txt) | |"
    return
  fi
  echo "| $name | $(field test_accuracy "$line") | $(field global_tier_bytes "$line") |"
}
echo "| policy | test accuracy | global tier bytes |"
echo "|---|---|---|"
run "dense float32"
run "fp16" --env GEOPS_WAN_DTYPE=fp16
run "top-k 1% + fp16" --env GEOPS_WAN_TOPK=1% --env GEOPS_WAN_DTYPE=fp16
run "HFA K1=4 K2=2" --env MXNET_KVSTORE_USE_HFA=1 --env MXNET_KVSTORE_HFA_K1=4 \
  --env MXNET_KVSTORE_HFA_K2=2
run "MixedSync" --env GEOPS_WAN_SYNC=mixed
