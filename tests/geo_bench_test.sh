#!/usr/bin/env bash
# geops-bench-geo end to end: hier and flat runs whose every round is
# bit-exact and whose WAN bytes per round, as the transports counted them,
# match the formula (hier: 2 x parties x model bytes; flat: 2 x parties x
# workers x model bytes) within 2 % for framing. A test of counts, never of
# time.
#
#   geo_bench_test.sh BUILD_DIR [geops-bench-geo options for every run]
#
# On 127.0.0.1 as a plain test; tests/geo_lab_in_vm.sh runs it inside the
# WAN lab (where LAB_* is set, so parties get their lab addresses).
set -uo pipefail
build_dir=$(cd "$1" && pwd)
shift
bench=$build_dir/geops-bench-geo
work=$(mktemp -d /tmp/geops-geo-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail=0

# field NAME LINE
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# run NAME EXPECTED_MULTIPLE ARGS...: EXPECTED_MULTIPLE is the WAN bytes per
# round in model sizes.
run() {
  local name=$1 multiple=$2
  shift 2
  local out=$work/$name.txt rc=0
  "$bench" "$@" --csv "$work/rounds.csv" --label "$name" --log-dir "$work/$name" > "$out" 2>&1 || rc=$?
  local line
  line=$(grep '^geops-bench-geo mode=' "$out" | tail -1)
  echo "$name: $line"
  if [ $rc != 0 ] || [ -z "$line" ]; then
    echo "FAILED: $name exited $rc"; tail -15 "$out"; fail=1; return
  fi
  local wan model mism failed
  wan=$(field wan_bytes_per_round "$line"); model=$(field model_bytes "$line")
  mism=$(field mismatches "$line"); failed=$(field processes_failed "$line")
  [ "$mism" = 0 ] && [ "$failed" = 0 ] || { echo "FAILED: $name: not exact"; fail=1; }
  if awk -v w="$wan" -v m="$model" -v k="$multiple" 'BEGIN { r = w / (k * m); exit !(r >= 1 && r <= 1.02) }'; then
    echo "ok: $name: WAN bytes per round = $wan = $(awk -v w="$wan" -v m="$model" 'BEGIN { printf "%.4f", w / m }') x model bytes (formula: $multiple x)"
  else
    echo "FAILED: $name: WAN bytes per round $wan, formula $multiple x $model (2 % allowed for framing)"
    fail=1
  fi
  if ! grep -q "^$name,$(field mode "$line")," "$work/rounds.csv"; then
    echo "FAILED: $name: no CSV rows"; fail=1
  fi
}

# 2 parties x 2 workers: hier moves the model up and down once per party,
# flat once per worker.
run hier 4 --mode hier --parties 2 --workers 2 --model resnet50 --scale 64 --rounds 4 "$@"
run flat 8 --mode flat --parties 2 --workers 2 --model resnet50 --scale 64 --rounds 4 "$@"
# The central party training too adds LAN traffic only.
run hier-central 4 --mode hier --parties 2 --workers 2 --central-workers --model resnet50 --scale 64 --rounds 3 "$@"
# 16-bit values on the WAN: half the bytes (the sums of small integers stay exact).
GEOPS_WAN_DTYPE=fp16 run hier-fp16 2 --mode hier --parties 2 --workers 2 --model resnet50 --scale 64 --rounds 3 "$@"
# Many tiny keys and three global servers.
run hier-tiny 4 --mode hier --parties 2 --workers 2 --global-servers 3 --model sizes:600x1K,3x256K --rounds 3 "$@"
# run_policy NAME MAX_RATIO ARGS...: a WAN policy's run, its bytes per round
# against the summary's own formula for that policy (wan_ratio), which
# allows MAX_RATIO - 1 for message headers: top-k's containers are small.
run_policy() {
  local name=$1 max=$2
  shift 2
  local out=$work/$name.txt rc=0
  "$bench" "$@" --log-dir "$work/$name" > "$out" 2>&1 || rc=$?
  local line
  line=$(grep '^geops-bench-geo mode=' "$out" | tail -1)
  echo "$name: $line"
  if [ $rc != 0 ] || [ -z "$line" ]; then
    echo "FAILED: $name exited $rc"; tail -15 "$out"; fail=1; return
  fi
  local ratio
  ratio=$(field wan_ratio "$line")
  if [ "$(field processes_failed "$line")" = 0 ] && [ "$(field mismatches "$line")" = 0 ] &&
     awk -v r="$ratio" -v m="$max" 'BEGIN { exit !(r >= 1 && r <= m) }'; then
    echo "ok: $name: WAN bytes per round $(field wan_bytes_per_round "$line") = $ratio x the formula ($(field policy "$line"))"
  else
    echo "FAILED: $name: wan_ratio $ratio (1..$max allowed)"; fail=1
  fi
}
policy_args=(--mode hier --parties 2 --workers 2 --model resnet50 --scale 64 --rounds 4)
# Top-k 1% with fp16 values, both ways: about 40x fewer bytes than dense here
# (a third of resnet50's tensors are below the 1000-element bound and go dense).
run_policy hier-topk 1.15 "${policy_args[@]}" --topk 1% --topk-min 1000 --wan-dtype fp16 "$@"
# Top-k at 100% is exact: every result still checked bit for bit.
run_policy hier-topk100 1.02 "${policy_args[@]}" --topk 100% --topk-min 1000 "$@"
# HFA with K2 = 2: every other round crosses the WAN.
run_policy hier-hfa 1.02 "${policy_args[@]}" --hfa 2 "$@"
run_policy hier-mixed 1.02 "${policy_args[@]}" --sync mixed "$@"
rows=$(grep -c ',1,[0-9]*$' "$work/rounds.csv" || true)
echo "CSV: $(($(wc -l < "$work/rounds.csv") - 1)) rows"
exit $fail
