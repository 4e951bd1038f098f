#!/usr/bin/env bash
# The figures of the README's "Cross-DC experiments": run inside the lab,
#   deploy/lab/lab.sh --parties 3 --wan-rate 100mbit --wan-delay 10ms -- \
#     bench/geo_figures.sh BUILD_DIR OUT_DIR [REPEATS]
# Each setting runs REPEATS times (default 3), alternating, into
# OUT_DIR/rounds.csv; every summary line goes to OUT_DIR/summary.txt, and
# bench/plot_geo.py draws OUT_DIR/geo.png when matplotlib is there.
set -euo pipefail
build=$(cd "$1" && pwd)
out=$2
repeats=${3:-3}
mkdir -p "$out"
[ -n "${LAB_PARTIES:-}" ] || { echo "geo_figures: run me inside deploy/lab/lab.sh" >&2; exit 2; }
# The lab's link setting, for the labels: "100mbit-20ms" (rate, RTT).
label=$(awk '/^lab-link A->central/ { for (i = 1; i <= NF; i++) {
  if ($i ~ /^configured_rate=/) r = substr($i, 17); if ($i ~ /^configured_rtt_ms=/) t = substr($i, 19) }
  print r "-" t "ms"; exit }' "$LAB_STATE_DIR/links.txt")
model=(--model resnet50 --scale 16)
run() {
  local tag=$1; shift
  "$build/geops-bench-geo" --parties 2 --workers 2 --rounds 5 --warmup 1 --csv "$out/rounds.csv" \
    --label "$label" --log-dir "$out/logs/$tag" "$@" > "$out/$tag.log" 2>&1 || true
  local line
  line=$(grep '^geops-bench-geo mode=' "$out/$tag.log" | tail -1 || true)
  echo "$tag: ${line:-FAILED (see $out/$tag.log)}" | tee -a "$out/summary.txt"
}
for i in $(seq "$repeats"); do
  run "hier.$i" --mode hier "${model[@]}"
  run "flat.$i" --mode flat "${model[@]}"
  ENABLE_P3=1 GEOPS_WAN_WINDOW_MB=1 run "hier-p3.$i" --mode hier "${model[@]}"
  "$build/geops-bench-geo" --parties 2 --workers 2 --rounds 5 --warmup 1 --mode hier \
    --model sizes:1000x1K --label "$label-1000x1K" > "$out/tiny.$i.log" 2>&1 || true
  echo "tiny.$i: $(grep '^geops-bench-geo mode=' "$out/tiny.$i.log" | tail -1 || true)" |
    tee -a "$out/summary.txt"
done
if python3 -c 'import matplotlib' 2>/dev/null; then
  python3 "$(dirname "$0")/plot_geo.py" "$out/geo.png" "$out/rounds.csv"
fi
