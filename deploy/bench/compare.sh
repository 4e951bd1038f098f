#!/bin/bash
# compare.sh - geops benchmarks next to their ceilings, on the same devices
# and addresses in the same run, ending with one parsable line of ratios.
#
#   deploy/bench/compare.sh                 # inside the SoftRoCE VM, or on
#                                           # any host (tcp only without RDMA)
#   /work/shared/tools/softroce-vm/run-in-softroce-vm.sh deploy/bench/compare.sh
#
# Ceilings: ib_write_bw -R / ib_send_lat -R (perftest over rdma_cm) for rdma,
# iperf3 for tcp; for traffic that flows both ways (pushpull), what the
# same pair moves per direction under ib_write_bw -R --bidirectional
# (perftest reports the sum of both directions: half of it). Measured:
# geops-bench-transport (tcp, rdma) and geops-bench-kv --local push and
# pushpull, 1 worker x 1 server. Every ratio is geops / ceiling: higher is
# better for bandwidth, lower for latency (both latencies are one way, half
# a round trip, at the median / perftest's "typical"). kv runs also report
# the memory registrations of the worker per timed round (0 in steady
# state). The last line is `geops-compare key=value ...`.
#
# Environment (defaults in brackets):
#   SERVER_IP, CLIENT_IP   addresses of the two ends [SoftRoCE: 10.9.0.1 and
#                          10.9.0.2 from SOFTROCE_IPS; else 127.0.0.1 both]
#   SERVER_DEV, CLIENT_DEV rdma devices [rxe0 rxe1 from SOFTROCE_DEVS]
#   GID_INDEX              [SOFTROCE_GID_INDEX or 1]
#   BUILD                  directory with geops and the benches [../../build]
#   SIZE [1048576]  LAT_SIZE [64]  BW_ITERS [100]  LAT_ITERS [1000]
#   SECONDS_PER [3]  KV_KEYS [4]  KV_ITERS [10]  VANS ["tcp rdma"]
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-$HERE/../../build}
read -r -a IPS <<< "${SOFTROCE_IPS:-127.0.0.1 127.0.0.1}"
read -r -a DEVS <<< "${SOFTROCE_DEVS:-}"
SERVER_IP=${SERVER_IP:-${IPS[0]}}
CLIENT_IP=${CLIENT_IP:-${IPS[1]:-${IPS[0]}}}
SERVER_DEV=${SERVER_DEV:-${DEVS[0]:-}}
CLIENT_DEV=${CLIENT_DEV:-${DEVS[1]:-${DEVS[0]:-}}}
G=${GID_INDEX:-${SOFTROCE_GID_INDEX:-1}}
SIZE=${SIZE:-1048576}; LAT_SIZE=${LAT_SIZE:-64}
BW_ITERS=${BW_ITERS:-100}; LAT_ITERS=${LAT_ITERS:-1000}; SECONDS_PER=${SECONDS_PER:-3}
KV_KEYS=${KV_KEYS:-4}; KV_ITERS=${KV_ITERS:-10}; VANS=${VANS:-tcp rdma}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
declare -A R   # results by name
NOTES=()

note() { NOTES+=("$1"); echo "compare: $1"; }
# val FILE LINE_PREFIX KEY: KEY=value from the last line starting with LINE_PREFIX
val() { grep "^$2 " "$1" | tail -1 | tr ' ' '\n' | sed -n "s/^$3=//p"; }
ratio() { # ratio NAME A B: A/B or na
  if [[ -n "${2:-}" && -n "${3:-}" && "$3" != 0 ]]; then
    R[$1]=$(awk -v a="$2" -v b="$3" 'BEGIN{ if (b+0 == 0) print "na"; else printf "%.3f", a/b }')
  else R[$1]=na; fi
}
# wait_for HOW ARG PID: until the server is ready (max 30 s) instead of sleeping
wait_for() {
  local n=0
  until case $1 in
          cm)   rdma res show cm_id 2>/dev/null | grep -q LISTEN ;;
          tcp)  ss -Hltn 2>/dev/null | grep -q ":$2 " ;;
          line) grep -q "$2" "$T/server.out" 2>/dev/null ;;
        esac; do
    kill -0 "$3" 2>/dev/null || return 1
    n=$((n+1)); [ $n -ge 150 ] && return 1
    sleep 0.2
  done
}
# pair HOW ARG "server cmd" "client cmd": output in $T/server.out, $T/client.out
pair() {
  timeout 300 bash -c "$3" > "$T/server.out" 2>&1 & local sp=$!
  if ! wait_for "$1" "$2" $sp; then
    kill $sp 2>/dev/null; wait $sp 2>/dev/null
    return 1
  fi
  [ "$1" = cm ] && sleep 0.2   # the LISTEN cm_id appears a moment before accept
  local cmd=${4//@PORT@/$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$T/server.out")}
  timeout 300 bash -c "$cmd" > "$T/client.out" 2>&1; local crc=$?
  wait $sp; local src=$?
  [ $crc = 0 ] && [ $src = 0 ]
}
show() { grep -E "$1" "$T/client.out" | tail -1 | sed 's/^/    /'; }

echo "compare: server $SERVER_IP${SERVER_DEV:+ ($SERVER_DEV)}, client $CLIENT_IP${CLIENT_DEV:+ ($CLIENT_DEV)}, size $SIZE, latency size $LAT_SIZE"
for b in geops geops-bench-transport geops-bench-kv; do
  [ -x "$BUILD/$b" ] || { echo "compare: no $BUILD/$b; build first (cmake --build build)" >&2; exit 2; }
done

# ---------------------------------------------------------------- ceilings
HAVE_RDMA=0
if [ -n "$SERVER_DEV" ] && command -v ib_write_bw >/dev/null && ibv_devinfo -d "$SERVER_DEV" >/dev/null 2>&1; then
  HAVE_RDMA=1
  echo "ib_write_bw -R, $SIZE B x $BW_ITERS:"
  if pair cm "" "ib_write_bw -R -d $SERVER_DEV -x $G -s $SIZE -n $BW_ITERS --report_gbits" \
               "ib_write_bw -R -d $CLIENT_DEV -x $G -s $SIZE -n $BW_ITERS --report_gbits $SERVER_IP"; then
    R[ib_write_bw_gbps]=$(awk -v s="$SIZE" '$1==s {print $4}' "$T/client.out" | tail -1)
    show "^ *$SIZE "
  else note "ib_write_bw failed: $(tail -1 "$T/client.out" 2>/dev/null)"; fi
  echo "ib_write_bw -R --bidirectional, $SIZE B x $BW_ITERS:"
  if pair cm "" "ib_write_bw -R -b -d $SERVER_DEV -x $G -s $SIZE -n $BW_ITERS --report_gbits" \
               "ib_write_bw -R -b -d $CLIENT_DEV -x $G -s $SIZE -n $BW_ITERS --report_gbits $SERVER_IP"; then
    R[ib_write_bw_bidir_gbps]=$(awk -v s="$SIZE" '$1==s {print $4}' "$T/client.out" | tail -1)
    [ -n "${R[ib_write_bw_bidir_gbps]}" ] &&
      R[ib_write_bw_bidir_per_dir_gbps]=$(awk -v a="${R[ib_write_bw_bidir_gbps]}" 'BEGIN{printf "%.4f", a/2}')
    show "^ *$SIZE "
  else note "ib_write_bw --bidirectional failed: $(tail -1 "$T/client.out" 2>/dev/null)"; fi
  echo "ib_send_lat -R, $LAT_SIZE B x $LAT_ITERS:"
  if pair cm "" "ib_send_lat -R -d $SERVER_DEV -x $G -s $LAT_SIZE -n $LAT_ITERS" \
               "ib_send_lat -R -d $CLIENT_DEV -x $G -s $LAT_SIZE -n $LAT_ITERS $SERVER_IP"; then
    # columns: bytes iters min max typical avg stdev p99 p99.9 (one way, usec)
    R[ib_send_lat_us]=$(awk -v s="$LAT_SIZE" '$1==s {print $5}' "$T/client.out" | tail -1)
    R[ib_send_lat_p99_us]=$(awk -v s="$LAT_SIZE" '$1==s {print $8}' "$T/client.out" | tail -1)
    show "^ *$LAT_SIZE "
  else note "ib_send_lat failed: $(tail -1 "$T/client.out" 2>/dev/null)"; fi
else
  note "no rdma device${SERVER_DEV:+ $SERVER_DEV} (or no perftest): rdma ceilings skipped"
fi

if command -v iperf3 >/dev/null; then
  echo "iperf3 $CLIENT_IP -> $SERVER_IP, ${SECONDS_PER}s:"
  if pair tcp 5201 "iperf3 -s -1 -B $SERVER_IP" "iperf3 -c $SERVER_IP -B $CLIENT_IP -t $SECONDS_PER -f g"; then
    R[iperf3_gbps]=$(awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i-1)}' "$T/client.out" | tail -1)
    show receiver
  else note "iperf3 failed: $(tail -1 "$T/client.out" 2>/dev/null)"; fi
else
  note "no iperf3: tcp ceiling skipped"
fi

# ---------------------------------------------------------------- geops
for van in $VANS; do
  if [ "$van" = rdma ] && [ $HAVE_RDMA = 0 ]; then note "rdma geops benches skipped: no rdma device"; continue; fi
  echo "geops-bench-transport --van $van:"
  if pair line listening "$BUILD/geops-bench-transport --role server --van $van --host $SERVER_IP --wait 60" \
       "$BUILD/geops-bench-transport --role client --van $van --connect $SERVER_IP:@PORT@ --host $CLIENT_IP --sizes $LAT_SIZE,$SIZE --report-size $SIZE --iters $BW_ITERS --lat-iters $LAT_ITERS --seconds $SECONDS_PER"; then
    grep '^size=' "$T/client.out" | sed 's/^/    /'
    R[transport_${van}_gbps]=$(val "$T/client.out" geops-bench-transport goodput_gbps)
    R[transport_${van}_lat_us]=$(val "$T/client.out" geops-bench-transport lat_p50_us)
    R[transport_${van}_lat_p99_us]=$(val "$T/client.out" geops-bench-transport lat_p99_us)
  elif grep -qh "rdma transport unavailable" "$T/server.out" "$T/client.out" 2>/dev/null; then
    note "rdma transport unavailable: $(grep -h 'unavailable' "$T/server.out" "$T/client.out" | head -1 | sed 's/.*unavailable: //')"
    continue
  else note "geops-bench-transport $van failed: $(tail -1 "$T/client.out" "$T/server.out" 2>/dev/null | grep -v '^==>' | tr '\n' ' ')"; fi

  for mode in push pushpull; do
    echo "geops-bench-kv --local --van $van $mode 1x1:"
    timeout 300 "$BUILD/geops-bench-kv" --local --van $van --mode $mode --workers 1 --servers 1 \
        --host "$SERVER_IP" --worker-host "$CLIENT_IP" --value-bytes "$SIZE" --report-size "$SIZE" \
        --keys-per-server "$KV_KEYS" --iters "$KV_ITERS" --max-bytes 16GiB > "$T/kv.out" 2>&1
    if [ $? = 0 ]; then
      grep '^value_bytes=' "$T/kv.out" | sed 's/^/    /'
      # pushpull keeps its old names (kv_VAN_gbps); push gets _push.
      k=kv_${van}; [ $mode = push ] && k=kv_${van}_push
      R[${k}_gbps]=$(val "$T/kv.out" geops-bench-kv goodput_gbps)
      R[${k}_registrations_per_round]=$(val "$T/kv.out" geops-bench-kv rdma_registrations_per_round)
      echo "    registrations: worker $(val "$T/kv.out" geops-bench-kv rdma_registrations) in all, $(val "$T/kv.out" geops-bench-kv rdma_registrations_per_round) per timed round; server $(val "$T/kv.out" geops-bench-kv rdma_registrations_servers) in all"
    elif grep -q "rdma transport unavailable\|no RDMA transport\|has no RDMA" "$T/kv.out" /tmp/geops-bench-kv.*/*.log 2>/dev/null; then
      note "rdma transport unavailable for geops-bench-kv"
      break
    else note "geops-bench-kv $van $mode failed: $(grep -v '^\[' "$T/kv.out" | tail -2 | tr '\n' ' ')"; fi
  done
done

# ---------------------------------------------------------------- ratios
ratio tcp_transport_vs_iperf3 "${R[transport_tcp_gbps]:-}" "${R[iperf3_gbps]:-}"
ratio tcp_kv_vs_iperf3 "${R[kv_tcp_gbps]:-}" "${R[iperf3_gbps]:-}"
ratio rdma_transport_vs_ib_write_bw "${R[transport_rdma_gbps]:-}" "${R[ib_write_bw_gbps]:-}"
ratio rdma_lat_vs_ib_send_lat "${R[transport_rdma_lat_us]:-}" "${R[ib_send_lat_us]:-}"
ratio rdma_kv_vs_ib_write_bw "${R[kv_rdma_gbps]:-}" "${R[ib_write_bw_gbps]:-}"
ratio rdma_kv_push_vs_ib_write_bw "${R[kv_rdma_push_gbps]:-}" "${R[ib_write_bw_gbps]:-}"
ratio rdma_kv_pushpull_vs_bidir "${R[kv_rdma_gbps]:-}" "${R[ib_write_bw_bidir_per_dir_gbps]:-}"

line="geops-compare size=$SIZE lat_size=$LAT_SIZE"
for k in ib_write_bw_gbps ib_write_bw_bidir_gbps ib_write_bw_bidir_per_dir_gbps ib_send_lat_us \
         iperf3_gbps transport_tcp_gbps transport_tcp_lat_us \
         kv_tcp_gbps kv_tcp_push_gbps transport_rdma_gbps transport_rdma_lat_us kv_rdma_gbps \
         kv_rdma_push_gbps kv_rdma_registrations_per_round kv_rdma_push_registrations_per_round \
         tcp_transport_vs_iperf3 tcp_kv_vs_iperf3 rdma_transport_vs_ib_write_bw \
         rdma_lat_vs_ib_send_lat rdma_kv_vs_ib_write_bw rdma_kv_push_vs_ib_write_bw \
         rdma_kv_pushpull_vs_bidir; do
  line+=" $k=${R[$k]:-na}"
done
notes=$(IFS=';'; echo "${NOTES[*]:-}" | tr ' ' '_')
echo "$line notes=${notes:-none}"
