#!/usr/bin/env bash
# MixedSync against fully synchronous (dense) training when one party's WAN
# link is 10x slower than the other's, as root on a host whose kernel has
# netem (or inside the SoftRoCE VM):
#   bench/mixed_sync_lab.sh BUILD_DIR OUT_DIR [REPEATS]
# e.g. from this machine, whose kernel lacks netem (OUT_DIR must be a
# directory the VM writes back: the current one or a -w DIR):
#   mkdir -p /tmp/msl && ../shared/tools/softroce-vm/run-in-softroce-vm.sh \
#     -t 2400 -m 4G -w /tmp/msl -- bash bench/mixed_sync_lab.sh build /tmp/msl
# brings the WAN lab up once (deploy/lab/lab.sh, parties "central fast slow":
# fast<->central at FAST_RATE, slow<->central at SLOW_RATE, both directions,
# the same one-way DELAY) and runs geops-launch --train softmax (central party
# + 2 training parties x 2 workers, 1 server each; party A = fast, so shard
# 0, which prints the accuracy, trains in the fast party) REPEATS times
# (default 3) per mode, alternating: sync, then mixed (GEOPS_WAN_SYNC=mixed)
# with each staleness bound of STALENESS.
# Target accuracy: the median over the sync runs of their final epoch's test
# accuracy. Time to accuracy of a run: `seconds=` of its first epoch line at
# or above the target. Ratio: median sync time / median mixed time.
# Output: OUT_DIR/runs/TAG.out (a run's whole output) and OUT_DIR/runs/TAG/
# (its processes' logs), OUT_DIR/epochs.csv (every epoch line),
# OUT_DIR/runs.txt (one line per run), OUT_DIR/console.log (the lab's link
# measurements and the progress), OUT_DIR/summary.txt (per-mode medians and the final
# `mixed-sync-lab ...` lines, one per staleness bound).
# Settings (environment, defaults in brackets): MSL_FAST_RATE [20mbit],
# MSL_SLOW_RATE [2mbit], MSL_DELAY [10ms], MSL_EPOCHS [6], MSL_MIXED_EPOCHS
# [MSL_EPOCHS], MSL_TRAIN_EXAMPLES [3200], MSL_TEST_EXAMPLES [2000], MSL_LR
# [0.2], MSL_STALENESS ["100000 50"], MSL_RUN_TIMEOUT [600 s per run],
# MSL_MEASURE_SECONDS [3; 0: RTTs only], MSL_LR_DECAY [0: the same constant
# rate for every step of both modes, whatever their epoch counts].
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "mixed-sync-lab: error: $*" >&2; exit 1; }

if [ "${1:-}" != --inside ]; then
  case ${1:-} in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;; esac
  [ $# -ge 2 ] && [ $# -le 3 ] ||
    { echo "usage: $0 BUILD_DIR OUT_DIR [REPEATS]   (--help for more)" >&2; exit 2; }
  [ -d "$1" ] || die "BUILD_DIR $1 is not a directory"
  build=$(cd "$1" && pwd)
  mkdir -p "$2"
  out=$(cd "$2" && pwd)
  repeats=${3:-3}
  [[ $repeats =~ ^[1-9][0-9]*$ ]] || die "REPEATS must be a positive integer, not '$repeats'"
  for b in geops geops-launch; do
    [ -x "$build/$b" ] || die "$build/$b is missing or not executable (build it first)"
  done
  lab=$here/../deploy/lab/lab.sh
  [ -f "$lab" ] || die "the WAN lab $lab is missing"
  [ "$(id -u)" = 0 ] || die "the WAN lab needs root"
  command -v python3 > /dev/null || die "python3 is needed for the medians"
  data=${GEOPS_DATA_DIR:-/usr/share/datasets/fashion-mnist}
  [ -f "$data/train-images-idx3-ubyte.gz" ] || die "no Fashion-MNIST in $data (package dataset-fashion-mnist)"

  # Each of the 4 workers loads the whole training set as floats (~250 MB at
  # its peak): the SoftRoCE VM's default 1 GB ends in the OOM killer.
  avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
  if [ "${avail:-0}" -lt 2000 ]; then
    echo "mixed-sync-lab: warning: only ${avail} MB of memory available; the workers need about" \
      "1.5 GB (in the SoftRoCE VM give it more: run-in-softroce-vm.sh -m 4G)" >&2
  fi

  export MSL_FAST_RATE=${MSL_FAST_RATE:-20mbit} MSL_SLOW_RATE=${MSL_SLOW_RATE:-2mbit}
  export MSL_DELAY=${MSL_DELAY:-10ms} MSL_EPOCHS=${MSL_EPOCHS:-6}
  export MSL_MIXED_EPOCHS=${MSL_MIXED_EPOCHS:-$MSL_EPOCHS}
  export MSL_TRAIN_EXAMPLES=${MSL_TRAIN_EXAMPLES:-3200} MSL_TEST_EXAMPLES=${MSL_TEST_EXAMPLES:-2000}
  export MSL_LR=${MSL_LR:-0.2} MSL_STALENESS=${MSL_STALENESS:-100000 50}
  export MSL_RUN_TIMEOUT=${MSL_RUN_TIMEOUT:-600} MSL_LR_DECAY=${MSL_LR_DECAY:-0}
  measure=${MSL_MEASURE_SECONDS:-3}

  # The binaries of this experiment, copied: every run uses the same ones even
  # if BUILD_DIR is rebuilt meanwhile.
  bin=$(mktemp -d /tmp/mixed-sync-lab.XXXXXX)
  trap 'rm -rf "$bin"' EXIT
  cp "$build/geops" "$build/geops-launch" "$bin/"
  sha256sum "$bin/geops" "$bin/geops-launch" > "$out/binaries.sha256"

  cat > "$out/scenario.txt" <<EOF
# Written by bench/mixed_sync_lab.sh: party "fast" (geops party A) and party
# "slow" (geops party B) reach the central party over links 10x apart.
parties central fast slow
default rate=$MSL_FAST_RATE delay=$MSL_DELAY
central fast rate=$MSL_FAST_RATE delay=$MSL_DELAY
central slow rate=$MSL_SLOW_RATE delay=$MSL_DELAY
EOF
  rm -rf "$out/runs"
  mkdir -p "$out/runs"
  echo "tag,mode,staleness,repeat,epoch,epochs,seconds,test_accuracy,train_loss,rounds" > "$out/epochs.csv"
  : > "$out/runs.txt"
  lab_opts=(--parties 3 --addrs-per-party 2 --scenario "$out/scenario.txt")
  if [ "$measure" = 0 ]; then lab_opts+=(--no-measure-rate); else lab_opts+=(--measure-seconds "$measure"); fi
  echo "mixed-sync-lab: fast=$MSL_FAST_RATE slow=$MSL_SLOW_RATE delay=$MSL_DELAY epochs=$MSL_EPOCHS" \
    "mixed_epochs=$MSL_MIXED_EPOCHS train_examples=$MSL_TRAIN_EXAMPLES test_examples=$MSL_TEST_EXAMPLES" \
    "lr=$MSL_LR staleness='$MSL_STALENESS' repeats=$repeats out=$out"
  t0=$SECONDS
  # The lab's messages (stderr) and the runs' progress (stdout), both kept.
  set +e
  bash "$lab" "${lab_opts[@]}" -- bash "$0" --inside "$bin" "$out" "$repeats" 2>&1 |
    tee "$out/console.log"
  rc=${PIPESTATUS[0]}
  set -e
  echo "mixed-sync-lab: lab and runs took $((SECONDS - t0)) s (lab exit $rc)"
  if [ $rc = 125 ]; then
    die "the WAN lab could not be set up (see $out/console.log). It needs netem: on a host" \
      "whose kernel lacks it, run this inside the SoftRoCE VM" \
      "(../shared/tools/softroce-vm/run-in-softroce-vm.sh, see its README)"
  fi
  [ $rc = 0 ] || die "the runs inside the lab failed (exit $rc); see $out/runs.txt and $out/runs/"

  python3 - "$out" "$repeats" <<'PY' | tee "$out/summary.txt"
import csv, math, os, statistics, sys
out, repeats = sys.argv[1], int(sys.argv[2])
env = os.environ
runs = {}  # tag -> dict
for line in open(os.path.join(out, "runs.txt")):
    kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
    runs[kv["tag"]] = kv
epochs = {}
for r in csv.DictReader(open(os.path.join(out, "epochs.csv"))):
    epochs.setdefault(r["tag"], []).append((float(r["seconds"]), float(r["test_accuracy"]),
                                            int(r["epoch"]), int(r["epochs"])))
def ok(tag):
    e = epochs.get(tag, [])
    return runs[tag].get("rc") == "0" and e and e[-1][2] == e[-1][3]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(x, nd=3):
    if x is None: return "none"
    if math.isinf(x): return "not_reached"
    return f"{x:.{nd}f}"
modes = {}
for tag, kv in runs.items():
    modes.setdefault(kv["mode"], []).append(tag)
sync_ok = [t for t in modes.get("sync", []) if ok(t)]
if not sync_ok:
    print("mixed-sync-lab: FAILED: no sync run finished; nothing to compare (see runs.txt)")
    sys.exit(1)
target = statistics.median(epochs[t][-1][1] for t in sync_ok)
def tta(tag):
    for s, a, _, _ in epochs.get(tag, []):
        if a >= target: return s
    return math.inf
stats = {}
for mode, tags in modes.items():
    good = [t for t in tags if ok(t)]
    times = [tta(t) for t in good]
    reached = sum(1 for x in times if not math.isinf(x))
    st = dict(runs=len(tags), ok=len(good), reached=reached,
              time=med(times), acc=med([epochs[t][-1][1] for t in good]),
              best=med([max(a for _, a, _, _ in epochs[t]) for t in good]),
              shard0_end=med([epochs[t][-1][0] for t in good]),
              wall=med([float(runs[t]["wall_s"]) for t in good]),
              slow_end=med([float(runs[t]["slow_party_s"]) for t in good
                             if runs[t].get("slow_party_s", "-") != "-"]))
    stats[mode] = st
    print(f"mode {mode}: runs={st['runs']} finished={st['ok']} reached_target={reached}/{len(good)} "
          f"time_to_target_s={fmt(st['time'])} final_acc={fmt(st['acc'], 4)} "
          f"best_acc={fmt(st['best'], 4)} shard0_done_s={fmt(st['shard0_end'])} "
          f"slow_party_done_s={fmt(st['slow_end'])} run_wall_s={fmt(st['wall'], 1)} "
          "(medians)")
    for t in sorted(tags, key=lambda t: int(runs[t]["repeat"])):
        e = epochs.get(t, [])
        pts = " ".join(f"({s:.2f}s,{a:.4f})" for s, a, _, _ in e)
        print(f"  {t}: rc={runs[t]['rc']} time_to_target_s={fmt(tta(t)) if ok(t) else 'failed'} "
              f"epochs(seconds,acc)= {pts or 'none'}")
s = stats["sync"]
for mode in sorted(m for m in stats if m != "sync"):
    m = stats[mode]
    if m["time"] is None or math.isinf(m["time"]) or s["time"] is None or math.isinf(s["time"]):
        ratio = "none"
    else:
        ratio = f"{s['time'] / m['time']:.2f}"
    print(f"mixed-sync-lab {mode} target_accuracy={target:.4f} sync_time_s={fmt(s['time'])} "
          f"mixed_time_s={fmt(m['time'])} ratio={ratio} sync_acc={fmt(s['acc'], 4)} "
          f"mixed_acc={fmt(m['acc'], 4)} mixed_best_acc={fmt(m['best'], 4)} "
          f"mixed_reached={m['reached']}/{m['ok']} fast_rate={env['MSL_FAST_RATE']} "
          f"slow_rate={env['MSL_SLOW_RATE']} delay={env['MSL_DELAY']} epochs={env['MSL_EPOCHS']} "
          f"mixed_epochs={env['MSL_MIXED_EPOCHS']} train_examples={env['MSL_TRAIN_EXAMPLES']} "
          f"lr={env['MSL_LR']} repeats={repeats}")
PY
  exit 0
fi

# ---------------------------------------------------------------- in the lab
bin=$2 out=$3 repeats=$4
# shellcheck disable=SC1091
. "$LAB_STATE_DIR/lab.env"
[ "${LAB_PARTY_1_NAME:-}" = fast ] && [ "${LAB_PARTY_2_NAME:-}" = slow ] ||
  die "unexpected lab parties '${LAB_PARTY_NAMES:-}' (expected central fast slow)"
first() { echo "${1%% *}"; }
hosts="$(first "$LAB_PARTY_0_ADDRS"),$(first "$LAB_PARTY_1_ADDRS"),$(first "$LAB_PARTY_2_ADDRS")"

run() {  # TAG MODE STALENESS REPEAT EPOCHS [--env NAME=VALUE ...]
  local tag=$1 mode=$2 stale=$3 rep=$4 ep=$5; shift 5
  local log=$out/runs/$tag.out rc=0 t0=$SECONDS
  "$bin/geops-launch" --train softmax --epochs "$ep" --lr "$MSL_LR" --party-hosts "$hosts" \
    --env GEOPS_TRAIN_EXAMPLES="$MSL_TRAIN_EXAMPLES" --env GEOPS_TEST_EXAMPLES="$MSL_TEST_EXAMPLES" \
    --env GEOPS_LR_DECAY="$MSL_LR_DECAY" \
    --heartbeat-timeout 60 --env GEOPS_GLOBAL_HEARTBEAT_TIMEOUT=120 \
    --timeout "$MSL_RUN_TIMEOUT" --log-dir "$out/runs/$tag" "$@" > "$log" 2>&1 || rc=$?
  local wall=$((SECONDS - t0))
  # shard 0 (A.worker0, the fast party) prints the accuracy after each epoch.
  sed -n 's/^\[A\.worker0 *\] geops-train epoch=\([0-9]*\)\/\([0-9]*\) .*test_accuracy=\([0-9.]*\) train_loss=\([0-9.a-z-]*\) rounds=\([0-9]*\) seconds=\([0-9.]*\).*/\1 \2 \6 \3 \4 \5/p' "$log" |
    while read -r e n s a l r; do
      echo "$tag,$mode,$stale,$rep,$e,$n,$s,$a,$l,$r" >> "$out/epochs.csv"
    done
  # When the slow party's last worker finished (seconds since its training began).
  local slow
  slow=$(sed -n 's/^\[B\.worker[0-9]* *\] geops-train-worker .* seconds=\([0-9.]*\).*/\1/p' "$log" |
    sort -n | tail -1)
  local summary
  summary=$(grep '^summary:' "$log" | tail -1 || true)
  local line="tag=$tag mode=$mode staleness=$stale repeat=$rep epochs=$ep rc=$rc wall_s=$wall slow_party_s=${slow:--} ${summary#summary: }"
  echo "$line" >> "$out/runs.txt"
  echo "run $line"
  grep '^\[A\.worker0 *\] geops-train epoch=' "$log" | sed 's/^/  /' || true
  if [ $rc != 0 ]; then
    echo "  FAILED (exit $rc); last lines of $log:"
    tail -n 15 "$log" | sed 's/^/    /'
  fi
}

for i in $(seq "$repeats"); do
  run "sync.$i" sync - "$i" "$MSL_EPOCHS"
  for s in $MSL_STALENESS; do
    run "mixed-s$s.$i" "mixed-s$s" "$s" "$i" "$MSL_MIXED_EPOCHS" \
      --env GEOPS_WAN_SYNC=mixed --env GEOPS_WAN_STALENESS="$s"
  done
done
