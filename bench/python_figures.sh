#!/usr/bin/env bash
# The Fashion-MNIST figures of examples/fashion_mnist_cnn.py (README,
# "Python"): the same script in one process and as the 4 workers of the
# GeoMX topology (2 parties x 2 workers) with the same global batch.
#   bench/python_figures.sh BUILD OUT [EPOCHS] [TRAIN_EXAMPLES]   host: one process, tcp,
#                                                                  tcp + WAN fp16/top-k 1 %
#   PF_RDMA=1 ... (inside the SoftRoCE VM): one process, tcp, rdma
# Each run's output is OUT/<name>.txt; the last lines are one
# `python-figure name=... test_accuracy=... images_per_s=...` per run.
set -euo pipefail
build=$(cd "$1" && pwd); out=$2; epochs=${3:-10}; n=${4:-60000}
mkdir -p "$out"
cd "$(dirname "$0")/.."
py=${PYTHON:-/usr/bin/python3}
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"
script="$py examples/fashion_mnist_cnn.py --epochs $epochs --train-examples $n"
run() {  # name, command...
  local name=$1; shift
  "$@" > "$out/$name.txt" 2>&1 || { echo "$name failed: $out/$name.txt"; tail -5 "$out/$name.txt"; exit 1; }
  local line; line=$(grep "geops-train-worker shard=0/" "$out/$name.txt")
  echo "python-figure name=$name $(echo "$line" | grep -o 'test_accuracy=[^ ]*') $(echo "$line" | grep -o 'images_per_s=[^ ]*')"
}
launch="$build/geops-launch --timeout 1000"
run single-process $script --local
if [ "${PF_RDMA:-0}" = 1 ]; then
  # rxe0 (10.9.0.1): the central party and party A; rxe1 (10.9.0.2): party B.
  hosts=${PF_HOSTS:-10.9.0.1,10.9.0.1,10.9.0.2}
  run geops-2x2-tcp $launch --party-hosts "$hosts" --worker-cmd "$script"
  run geops-2x2-rdma $launch --party-hosts "$hosts" --env DMLC_ENABLE_RDMA=1 --worker-cmd "$script"
else
  run geops-2x2-tcp $launch --worker-cmd "$script"
  run geops-2x2-tcp-wan-fp16-topk1 $launch --env GEOPS_WAN_DTYPE=fp16 --env GEOPS_WAN_TOPK=1% \
    --env MXNET_KVSTORE_SIZE_LOWER_BOUND=1000 --worker-cmd "$script"
fi
