#!/usr/bin/env bash
# geops-bench-geo in the WAN lab, inside the SoftRoCE VM (its kernel has
# netem): a 3-party lab (central, A, B) whose links are shaped and measured
# first (every measured RTT within 20 % of the configured one), then the
# geo bench checks of tests/geo_bench_test.sh over those links: hier and
# flat runs, every round bit-exact, and WAN bytes per round as the
# transports counted them against 2 x parties x model (hier) and
# 2 x parties x workers x model (flat). Counts, not times: the summary's
# round times and lower bounds are printed for the log only.
# Exit 77 (CTest: skipped) when the VM tool is not beside this checkout.
set -euo pipefail
build_dir=$(cd "$1" && pwd)
source_dir=$(cd "$2" && pwd)

. "$source_dir/tests/vm_reexec.sh"
in_vm_or_reexec 600 tests/geo_lab_in_vm.sh "$build_dir" "$source_dir"

# --- inside the VM ---------------------------------------------------------
cd "$source_dir"
cat > /tmp/geo-in-lab.sh <<'INNER'
set -uo pipefail
fail=0
grep '^lab-link ' "$LAB_STATE_DIR/links.txt" > "$LAB_STATE_DIR/links.txt.shaped"
# Every shaped link: measured RTT within 20 % of configured.
while read -r line; do
  conf=$(sed -n 's/.* configured_rtt_ms=\([^ ]*\).*/\1/p' <<<"$line")
  meas=$(sed -n 's/.* measured_rtt_ms=\([^ ]*\).*/\1/p' <<<"$line")
  if awk -v c="$conf" -v m="$meas" 'BEGIN { exit !(m >= 0.8 * c && m <= 1.2 * c) }'; then
    echo "ok: ${line%% configured_rate*}: RTT $meas ms, configured $conf ms"
  else
    echo "FAILED: ${line%% configured_rate*}: RTT $meas ms, configured $conf ms"; fail=1
  fi
done < "$LAB_STATE_DIR/links.txt.shaped"
bash tests/geo_bench_test.sh "$BUILD" || fail=1
exit $fail
INNER
BUILD=$build_dir bash deploy/lab/lab.sh --parties 3 --addrs-per-party 4 --wan-rate 50mbit \
  --wan-delay 10ms --no-measure-rate -- bash /tmp/geo-in-lab.sh
