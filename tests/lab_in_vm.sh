#!/usr/bin/env bash
# Tests deploy/lab/lab.sh, the cross-DC lab.
#
#   lab_in_vm.sh BUILD_DIR SOURCE_DIR
#
# Host part (no VM): usage errors exit 2, and on this host the lab either
# comes up and goes away cleanly, or (no netem, no namespaces) stops with a
# message naming what is missing and changes nothing.
# VM part: the same script runs again inside the SoftRoCE VM (a kernel with
# netem, htb and rdma_rxe) with --guest, and checks a 3-party lab end to
# end: measured RTTs and rates against the configured ones, per-pair
# scenario settings, RDMA inside and across parties, and teardown after a
# failing command, a signal, and a SIGKILLed lab.sh.
# Exit 77 (CTest: skipped) when the VM tool is not beside this checkout.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $* (${SECONDS}s)"; }

# Everything the lab may touch, so "changes nothing" / "removed everything"
# can be checked as equality (link state flags and counters left out).
snapshot() {
  ip -o link show | sed 's/ state [A-Z]*.*//; s/<[^>]*>//'
  ip -4 -o addr show | awk '{print $2, $4}'
  ip -4 rule show
  ip -4 route show table all | grep -v '^\(local\|broadcast\) ' || true
  tc qdisc show | sed 's/ refcnt [0-9]*//'
  if command -v rdma >/dev/null; then rdma link show 2>/dev/null || true; fi
}

# ---------------------------------------------------------------- guest part
guest() {
  local lab=deploy/lab/lab.sh out=/tmp/lab-test
  mkdir -p $out
  # A stricter host than the VM's defaults: strict reverse-path filtering,
  # ARP answered on any interface (Debian's defaults are loose and 0).
  echo 1 > /proc/sys/net/ipv4/conf/all/rp_filter
  echo 0 > /proc/sys/net/ipv4/conf/all/arp_ignore
  echo 0 > /proc/sys/net/ipv4/conf/all/accept_local
  snapshot > $out/before

  # 1. A 3-party lab with per-pair settings; the command checks what it is
  # given, then the lab must be gone.
  cat > $out/scenario.txt <<'EOF'
parties central A B
A B rate=20mbit delay=20ms   # both directions
B->central delay=15ms        # one direction: RTT central<->B = 10 + 15 ms
EOF
  local t0=$SECONDS rc=0
  $lab --scenario $out/scenario.txt --addrs-per-party 4 --wan-delay 10ms --wan-rate 50mbit \
       --measure-seconds 2 -- bash -c '
    set -e
    [ "$LAB_PARTIES" = 3 ] && [ "$LAB_PARTY_NAMES" = "central A B" ]
    [ "$LAB_PARTY_1_ADDRS" = "10.77.1.1 10.77.1.2 10.77.1.3 10.77.1.4" ]
    . "$LAB_STATE_DIR/lab.env"; [ "$LAB_PARTY_2_NAME" = B ]
    for a in $LAB_PARTY_0_ADDRS $LAB_PARTY_2_ADDRS; do ping -c1 -W2 -q -I 10.77.1.1 $a >/dev/null; done
    echo command-ran' > $out/run1.out 2> $out/run1.err || rc=$?
  cat $out/run1.out; echo "(lab with 6 measured links: $((SECONDS - t0)) s)"
  [ $rc = 0 ] || { cat $out/run1.err; fail "3-party lab run exited $rc"; }
  grep -q '^command-ran$' $out/run1.out || fail "the command did not see the lab layout"
  [ "$(grep -c '^lab-link ' $out/run1.out)" = 6 ] || fail "expected 6 lab-link lines"
  [ "$(grep -c '^lab-party ' $out/run1.out)" = 3 ] || fail "expected 3 lab-party lines"
  # Configured values must be the scenario's; measured ones within bounds:
  # RTT within 20 %, TCP goodput 70..110 % of the rate (MTU 1500 headers
  # cost about 4.4 %), unshaped intra-party RTT below 2 ms.
  awk '
    function kv(k,  i) { for (i = 3; i <= NF; i++) if (index($i, k "=") == 1) return substr($i, length(k) + 2) }
    /^lab-link / {
      want["central->A"] = "50mbit 20"; want["A->central"] = "50mbit 20"
      want["A->B"] = "20mbit 40";       want["B->A"] = "20mbit 40"
      want["central->B"] = "50mbit 25"; want["B->central"] = "50mbit 25"
      r = kv("configured_rate"); c = kv("configured_rtt_ms"); m = kv("measured_rtt_ms"); g = kv("measured_rate_mbit")
      if (want[$2] != r " " c) { print "FAIL: " $2 " configured " r " " c ", expected " want[$2]; bad = 1 }
      if (!(m >= 0.8 * c && m <= 1.2 * c)) { print "FAIL: " $2 " RTT " m " ms, configured " c; bad = 1 }
      rm = r + 0
      if (!(g >= 0.7 * rm && g <= 1.1 * rm)) { print "FAIL: " $2 " rate " g " mbit, configured " r; bad = 1 }
    }
    /^lab-party / { m = kv("measured_rtt_ms"); if (!(m < 2)) { print "FAIL: party " $2 " RTT " m " ms"; bad = 1 } }
    END { exit bad }' $out/run1.out || fail "measured values out of bounds (above)"
  snapshot > $out/after1
  diff $out/before $out/after1 || fail "the lab left something behind after a successful run"
  ok "3-party lab: layout, configured = scenario, RTTs and rates within bounds, clean teardown"

  # 2. RDMA inside and across parties (rping binds its source address so
  # the connection takes the party's device), then a failing command: its
  # status comes back and the lab goes away.
  rc=0
  $lab --parties 2 --addrs-per-party 2 --wan-delay 5ms --no-measure-rate --rdma -- bash -c '
    for pair in "10.77.0.2 10.77.0.1" "10.77.1.1 10.77.0.1"; do
      set -- $pair
      rping -s -a $1 -C 3 >/dev/null 2>&1 & s=$!
      for i in $(seq 50); do rdma res show cm_id 2>/dev/null | grep -q LISTEN && break; sleep 0.1; done
      timeout 20 rping -c -a $1 -I $2 -C 3 >/dev/null 2>&1 || { echo "rping $2 -> $1 failed"; exit 4; }
      wait $s || true
    done
    echo rdma-ok; exit 3' > $out/run2.out 2> $out/run2.err || rc=$?
  grep -q '^rdma-ok$' $out/run2.out || { cat $out/run2.out $out/run2.err; fail "RDMA over the lab failed (rc $rc)"; }
  [ $rc = 3 ] || { cat $out/run2.err; fail "lab.sh returned $rc, the command exited 3"; }
  snapshot > $out/after2
  diff $out/before $out/after2 || fail "the lab left something behind after a failing command"
  ok "rping inside a party and across parties over rxe; command status 3 returned; clean teardown"

  # 3. SIGTERM while the command runs: lab.sh stops the command's process
  # group, removes the lab and exits 143.
  $lab --parties 2 --addrs-per-party 1 --no-measure-rate -- sleep 300 > $out/run3.out 2> $out/run3.err &
  local lpid=$! cpid
  cpid=$(wait_running $out/run3.err)
  kill -TERM $lpid; rc=0; wait $lpid || rc=$?
  [ $rc = 143 ] || { cat $out/run3.err; fail "SIGTERMed lab.sh exited $rc, expected 143"; }
  alive "$cpid" && fail "the command survived the SIGTERMed lab"
  snapshot > $out/after3
  diff $out/before $out/after3 || fail "the lab left something behind after SIGTERM"
  ok "SIGTERM: command stopped, clean teardown, status 143"

  # 4. A crash (SIGKILL) leaves the lab up; the next run removes the
  # leftovers first and runs normally.
  $lab --parties 3 --addrs-per-party 1 --no-measure-rate -- sleep 300 > $out/run4.out 2> $out/run4.err &
  lpid=$!
  cpid=$(wait_running $out/run4.err)
  kill -KILL $lpid; wait $lpid 2>/dev/null || true
  ip link show geolab0 >/dev/null 2>&1 || fail "expected the killed lab to be left up"
  rc=0; $lab status > /dev/null || rc=$?
  [ $rc = 0 ] || fail "status after a crash exited $rc, expected 0 (lab up)"
  rc=0
  $lab --parties 2 --addrs-per-party 1 --no-measure-rate -- true > $out/run5.out 2> $out/run5.err || rc=$?
  [ $rc = 0 ] || { cat $out/run5.err; fail "the run after a crash exited $rc"; }
  grep -q 'removing the leftovers' $out/run5.err || fail "the run after a crash did not clean up first"
  alive "$cpid" && fail "the crashed lab's command survived the clean-up"
  snapshot > $out/after5
  diff $out/before $out/after5 || fail "a run after a crash left something behind"
  ok "SIGKILLed lab: the next run removed its leftovers (and its command) and ended clean"

  # 5. A crash, then 'lab.sh down'.
  $lab --parties 3 --addrs-per-party 1 --no-measure-rate -- sleep 300 > $out/run6.out 2> $out/run6.err &
  lpid=$!
  cpid=$(wait_running $out/run6.err)
  kill -KILL $lpid; wait $lpid 2>/dev/null || true
  $lab down 2> $out/down.err || { cat $out/down.err; fail "lab.sh down failed"; }
  alive "$cpid" && fail "the crashed lab's command survived 'down'"
  snapshot > $out/after6
  diff $out/before $out/after6 || fail "'down' after a crash left something behind"
  rc=0; $lab status > /dev/null || rc=$?
  [ $rc = 1 ] || fail "status after down exited $rc, expected 1 (no lab)"
  ok "SIGKILLed lab: 'down' removed everything, and its command"
}

# wait_running ERRFILE: wait until lab.sh has started its command (with
# --no-measure-rate the pids file then holds just the command); print its pid.
wait_running() {
  local _
  for _ in $(seq 300); do
    if grep -q '^lab: running:' "$1" 2>/dev/null && [ -s /run/geops-lab/pids ]; then
      cut -d' ' -f1 /run/geops-lab/pids; return 0
    fi
    sleep 0.1
  done
  cat "$1" >&2; fail "lab.sh did not start its command"
}

# An orphan killed in the VM may stay a zombie of the guest's init: gone
# means no /proc entry or state Z.
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; }

if [ "${1:-}" = --guest ]; then
  cd "$(dirname "$0")/.."
  guest
  exit 0
fi

# ---------------------------------------------------------------- host part
build_dir=$1
source_dir=$(cd "$2" && pwd)
lab=$source_dir/deploy/lab/lab.sh
[ "$(id -u)" = 0 ] || { echo "skipped: the lab needs root"; exit 77; }
missing=()
command -v ping >/dev/null || missing+=(iputils-ping)
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v tc >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

expect_usage() {  # expected message, lab arguments...
  local msg=$1 rc=0 err; shift
  err=$("$lab" "$@" 2>&1 >/dev/null) || rc=$?
  [ $rc = 2 ] && [[ $err == *"$msg"* ]] || fail "lab.sh $*: exit $rc, '$err' (expected 2, '$msg')"
}
expect_usage "--parties must be" --parties 1 -- true
expect_usage "unknown option" --bogus -- true
expect_usage "bad rate" --wan-rate 100 -- true
expect_usage "run needs a command" --parties 2
printf 'parties central A\nA C delay=1ms\n' > "$build_dir/lab-bad-scenario.txt"
expect_usage "unknown party 'C'" --scenario "$build_dir/lab-bad-scenario.txt" -- true
ok "usage errors exit 2 with a message"

# What this host can do decides what the lab must do here.
state=$build_dir/lab-state-host   # must not even be created when the lab refuses
rm -rf "$state"
before=$(snapshot)
rc=0
if ! unshare --net true 2>/dev/null; then
  err=$("$lab" --state-dir "$state" --no-measure-rate --parties 2 -- true 2>&1) || rc=$?
  [ $rc = 125 ] && [[ $err == *"throw-away network namespace"* ]] ||
    fail "no namespaces here: expected exit 125 and a message about them, got $rc: $err"
  why="no network namespaces"
elif ! unshare --net tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then
  err=$("$lab" --state-dir "$state" --no-measure-rate --parties 2 -- true 2>&1) || rc=$?
  [ $rc = 125 ] && [[ $err == *sch_netem* ]] || fail "no netem here: expected exit 125 naming sch_netem, got $rc: $err"
  why="no netem"
else
  err=$("$lab" --state-dir "$state" --no-measure-rate --parties 2 --addrs-per-party 2 -- true 2>&1) || rc=$?
  [ $rc = 0 ] || fail "a 2-party lab on this host exited $rc: $err"
  why="netem present"
fi
echo "$err" | grep -E '^lab(-link|-party|: error)' || true
[ "$before" = "$(snapshot)" ] || fail "the host changed: $(diff <(echo "$before") <(snapshot))"
[ "$why" = "netem present" ] || [ ! -e "$state" ] || fail "the refusing lab created $state"
rm -rf "$state"
ok "host ($why): lab.sh exited $rc and the host is as before"

vm=${GEOPS_SOFTROCE_VM:-$source_dir/../shared/tools/softroce-vm/run-in-softroce-vm.sh}
if [ ! -x "$vm" ]; then
  echo "skipped: no SoftRoCE VM tool at $vm (set GEOPS_SOFTROCE_VM); the host part passed"
  exit 77
fi
cd "$source_dir"
t0=$SECONDS
rc=0; "$vm" -t 540 -- bash tests/lab_in_vm.sh --guest || rc=$?
echo "VM part: $((SECONDS - t0)) s, exit $rc"
exit $rc
