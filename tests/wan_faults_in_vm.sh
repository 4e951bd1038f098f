#!/usr/bin/env bash
# WAN faults in the cross-DC lab, inside the SoftRoCE VM (its kernel has
# netem): a 2-party geops cluster trains over shaped links while the link
# between party A and the central party is cut (netem loss 100%).
#   1. A cut shorter than the global tier's heartbeat timeout: TCP carries
#      the round over the gap and every worker still sees the exact result.
#   2. A cut longer than it: the job ends by itself within a bounded time,
#      and the logs name the party whose link failed.
# Exit 77 (CTest: skipped) when the VM tool is not beside this checkout.
set -euo pipefail
build_dir=$(cd "$1" && pwd)
source_dir=$(cd "$2" && pwd)

. "$source_dir/tests/vm_reexec.sh"
in_vm_or_reexec 600 tests/wan_faults_in_vm.sh "$build_dir" "$source_dir"

# --- inside the VM ---------------------------------------------------------
cd "$source_dir"
launch=$build_dir/geops-launch
work=$(mktemp -d /tmp/geops-wan-faults.XXXXXX)

# Runs inside the lab: one cluster, one cut of A<->central lasting $1 s,
# with the global heartbeat timeout $2 s. Prints the launcher's summary.
cat > "$work/run.sh" <<'EOF'
set -uo pipefail
cut_s=$1 hb=$2 out=$3
"$LAUNCH" --rounds 400 --key-sizes 20000,3 \
  --party-hosts "${LAB_PARTY_0_ADDRS%% *},${LAB_PARTY_1_ADDRS%% *},${LAB_PARTY_2_ADDRS%% *}" \
  --env PS_HEARTBEAT_TIMEOUT=5 --env GEOPS_GLOBAL_HEARTBEAT_TIMEOUT="$hb" \
  --log-dir "$out/logs" --timeout 300 --keep-going > "$out/launch.txt" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q "round 5/" "$out/launch.txt" && break; sleep 0.1; done
# Both directions of the A <-> central link: geolab1 -> party 0, geolab0 -> party 1.
cut() {
  local dev=$1 handle=$2 extra=$3
  local now
  now=$(tc qdisc show dev "$dev" | awk -v h="$handle:" '$2 == "netem" && $3 == h' \
        | sed -e 's/.*netem [0-9a-f]*: parent [0-9a-f:]* //' -e 's/ loss [0-9.]*%//' \
              -e 's/ seed [0-9]*//')
  tc qdisc change dev "$dev" parent "1:$handle" handle "$handle:" netem $now $extra
}
date +%s.%N > "$out/cut_at"
cut geolab1 100 "loss 100%"
cut geolab0 101 "loss 100%"
# Keep the link down for cut_s seconds, noting when the cluster ends.
for _ in $(seq $((cut_s * 10))); do
  [ -e "$out/ended_at" ] || kill -0 $pid 2>/dev/null || date +%s.%N > "$out/ended_at"
  sleep 0.1
done
cut geolab1 100 ""
cut geolab0 101 ""
wait $pid
echo "launch_exit=$?" >> "$out/launch.txt"
[ -e "$out/ended_at" ] || date +%s.%N > "$out/ended_at"
EOF

lab() {
  LAUNCH=$launch bash deploy/lab/lab.sh --parties 3 --addrs-per-party 4 --wan-rate 100mbit \
    --wan-delay 5ms --no-measure-rate -- bash "$work/run.sh" "$@"
}

fail=0
check() {
  if eval "$2"; then echo "ok: $1"; else echo "FAILED: $1"; fail=1; fi
}

# 1. A 3 s cut, global heartbeat timeout 20 s: survived, exact.
mkdir -p "$work/short"
lab 3 20 "$work/short" > "$work/short/lab.txt" 2>&1 || true
tail -3 "$work/short/launch.txt"
check "short cut: the cluster finished" "grep -q 'launch_exit=0' $work/short/launch.txt"
check "short cut: every worker saw the exact result" \
  "grep -q 'mismatches=0 .*processes_failed=0' $work/short/launch.txt"

# 2. A 40 s cut, global heartbeat timeout 6 s: the job ends by itself, soon,
#    naming the link.
mkdir -p "$work/long"
lab 40 6 "$work/long" > "$work/long/lab.txt" 2>&1 || true
tail -3 "$work/long/launch.txt"
took=$(awk -v a="$(cat "$work/long/cut_at")" -v b="$(cat "$work/long/ended_at")" \
  'BEGIN { printf "%.1f", b - a }')
echo "long cut: the job ended ${took}s after the cut; party A's server said:"
grep -E '^E ' "$work/long/logs/A.server0.log" | head -3 | cut -c1-300
check "long cut: the job failed, not hung" "! grep -q 'launch_exit=0' $work/long/launch.txt"
check "long cut: every process ended within 30 s of the cut (timeout 6 s)" "awk -v t=$took 'BEGIN { exit !(t < 30) }'"
check "long cut: the global scheduler names party A's link" \
  "grep -q 'the server of party A.*link between party A and the central party' $work/long/logs/global_scheduler.log"
check "long cut: party A's server names its link" \
  "grep -q 'the link from party A' $work/long/logs/A.server0.log"
check "long cut: party B was not blamed" \
  "! grep -q 'the server of party B' $work/long/logs/global_scheduler.log"
exit $fail
