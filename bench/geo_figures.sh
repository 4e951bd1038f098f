#!/usr/bin/env bash
# The figures of the README's "Cross-DC experiments", as root on a host
# whose kernel has netem (or inside the SoftRoCE VM):
#   bench/geo_figures.sh BUILD_DIR OUT_DIR [REPEATS]
# brings the WAN lab up three times (deploy/lab/lab.sh: central + 2 parties,
# 2 workers each):
#   1. 10 Mbit/s, 20 ms RTT: hier, flat and hier with ENABLE_P3, a scaled
#      ResNet-50 (resnet50 --scale 64, 1.6 MB), REPEATS runs each,
#      alternating (the rate a TCG-emulated VM's CPUs keep saturated);
#   2. and 3. 1000 keys of 1 KiB, hier, at 1 Gbit/s with a 200 ms and a
#      0.2 ms RTT (100us one way): the difference is what the RTT costs a round.
# Per-round CSV in OUT_DIR/rounds.csv, summary lines in OUT_DIR/summary.txt,
# medians in OUT_DIR/figures.txt, the plot in OUT_DIR/geo.png (matplotlib).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" != --inside ]; then
  build=$(cd "$1" && pwd)
  mkdir -p "$2"
  out=$(cd "$2" && pwd)
  repeats=${3:-3}
  lab=$here/../deploy/lab/lab.sh
  : > "$out/summary.txt"
  rm -f "$out/rounds.csv"
  bash "$lab" --parties 3 --addrs-per-party 4 --wan-rate 10mbit --wan-delay 10ms \
    --measure-seconds 3 -- bash "$0" --inside models "$build" "$out" "$repeats"
  bash "$lab" --parties 3 --addrs-per-party 4 --wan-rate 1gbit --wan-delay 100ms \
    --no-measure-rate -- bash "$0" --inside tiny "$build" "$out" "$repeats"
  bash "$lab" --parties 3 --addrs-per-party 4 --wan-rate 1gbit --wan-delay 100us \
    --no-measure-rate -- bash "$0" --inside tiny "$build" "$out" "$repeats"
  # Medians over the repeats, per setting.
  python3 - "$out/summary.txt" > "$out/figures.txt" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    tag, _, rest = line.partition(": ")
    kv = dict(f.split("=", 1) for f in rest.split() if "=" in f)
    if "round_p50_s" not in kv:
        continue
    runs.setdefault(tag.rsplit(".", 1)[0], []).append(kv)
for tag, rs in runs.items():
    med = lambda k: statistics.median(float(r[k]) for r in rs)
    print(f"{tag}: runs={len(rs)} round_p50_s={med('round_p50_s'):.3f} "
          f"lower_bound_s={med('lower_bound_s'):.3f} ratio_to_bound={med('ratio_to_bound'):.3f} "
          f"first_key_s={med('first_key_p50_s'):.3f} wan_bytes={med('wan_bytes_per_round'):.0f} "
          f"wan_ratio={med('wan_ratio'):.4f} wan_msgs={med('wan_msgs_per_round'):.0f}")
PY
  cat "$out/figures.txt"
  if python3 -c 'import matplotlib' 2>/dev/null; then
    python3 "$here/plot_geo.py" "$out/geo.png" "$out/rounds.csv"
  fi
  exit 0
fi

what=$2 build=$3 out=$4 repeats=$5
rtt=$(awk '/^lab-link A->central/ { for (i = 1; i <= NF; i++) if ($i ~ /^configured_rtt_ms=/) print substr($i, 19); exit }' \
  "$LAB_STATE_DIR/links.txt")
rate=$(awk '/^lab-link A->central/ { for (i = 1; i <= NF; i++) if ($i ~ /^configured_rate=/) print substr($i, 17); exit }' \
  "$LAB_STATE_DIR/links.txt")
label="$rate-${rtt}ms"
run() {
  local tag=$1; shift
  "$build/geops-bench-geo" --parties 2 --workers 2 --rounds 5 --warmup 1 --label "$label" \
    --log-dir "$out/logs/$tag" "$@" > "$out/$tag.log" 2>&1 || true
  local line
  line=$(grep '^geops-bench-geo mode=' "$out/$tag.log" | tail -1 || true)
  echo "$tag: ${line:-FAILED (see $out/$tag.log)}" | tee -a "$out/summary.txt"
}
for i in $(seq "$repeats"); do
  if [ "$what" = models ]; then
    run "hier.$label.$i" --mode hier --model resnet50 --scale 64 --csv "$out/rounds.csv"
    run "flat.$label.$i" --mode flat --model resnet50 --scale 64 --csv "$out/rounds.csv"
    ENABLE_P3=1 GEOPS_WAN_WINDOW_KB=256 run "hier-p3.$label.$i" --mode hier --model resnet50 --scale 64
  else
    run "tiny-1000x1K.$label.$i" --mode hier --model sizes:1000x1K
  fi
done
