#!/usr/bin/env bash
# geops cross-DC lab: P parties (data centres) on one Linux host, joined by
# emulated WAN links, for running geops (or anything else) across them.
#
#   lab.sh [run] [options] -- command args...   set up, measure, run, tear down
#   lab.sh up [options]                          set up, measure, leave it up
#   lab.sh down [--force]                        remove a lab (also a crashed one)
#   lab.sh status                                show the lab that is up
#
# Options (up/run):
#   --parties P           parties, party 0 is the central one (default 3)
#   --addrs-per-party N   IPv4 addresses per party (default 8)
#   --wan-rate R          rate of every WAN link, tc units: 100mbit, 1gbit (default 100mbit)
#   --wan-delay D         ONE-WAY delay of every WAN link: 20ms (default 20ms; RTT = 2 D)
#   --wan-jitter J        one-way jitter, uniform +-J (default 0)
#   --wan-loss L          packet loss per direction: 0.1% (default 0)
#   --scenario FILE       per-pair settings and party names (see README.md)
#   --no-measure-rate     measure only RTTs, not rates (iperf3 is then not needed)
#   --measure-seconds S   iperf3 seconds per link (default 3, plus 1 s of slow start)
#   --mtu M               MTU of the WAN links (default 1500)
#   --net A.B             first two octets of the lab's addresses (default 10.77)
#   --rdma                also create one rxe (SoftRoCE) device per party
#   --keep                (run) leave the lab up after the command exits
#   --state-dir DIR       state, lock and lab.env (default /run/geops-lab)
#
# Exit status: the command's; 2 bad usage; 125 the lab could not be set up
# (missing package or kernel module, address clash, a link that passes no
# traffic); 130/143 interrupted.
set -euo pipefail

readonly PFX=geolab            # devices: geolab<i>, geolab<i>b, geolab-br, geolabrxe<i>
readonly BR=${PFX}-br
readonly RULE_PREF=90          # our policy rules; must sort before the 'local' table rule
readonly LOCAL_PREF=1000       # where the 'local' rule goes when it sits at pref 0
readonly TABLE_BASE=7700       # routing table of party i: TABLE_BASE + i
readonly MAX_PARTIES=27        # central + A..Z

STATE_DIR=${GEOPS_LAB_STATE_DIR:-/run/geops-lab}
P=""; N=8; MTU=1500; NET=10.77; SCEN=""; RDMA=0; KEEP=0; FORCE=0
MEASURE_RATE=1; MSECS=3
CLI_RATE=""; CLI_DELAY=""; CLI_JITTER=""; CLI_LOSS=""

log() { echo "lab: $*" >&2; }
usage_err() { echo "lab: $*" >&2; echo "lab: see $0 --help" >&2; exit 2; }
# Lab failures exit 125 so they never look like the command's own status.
die() { echo "lab: error: $*" >&2; exit 125; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# ------------------------------------------------------------------ arguments
action=run
case ${1:-} in up|down|status|run) action=$1; shift;; esac
while [ $# -gt 0 ]; do
  case $1 in
    --parties) P=${2:?}; shift 2;;
    --addrs-per-party) N=${2:?}; shift 2;;
    --wan-rate) CLI_RATE=${2:?}; shift 2;;
    --wan-delay) CLI_DELAY=${2:?}; shift 2;;
    --wan-jitter) CLI_JITTER=${2:?}; shift 2;;
    --wan-loss) CLI_LOSS=${2:?}; shift 2;;
    --scenario) SCEN=${2:?}; shift 2;;
    --no-measure-rate) MEASURE_RATE=0; shift;;
    --measure-seconds) MSECS=${2:?}; shift 2;;
    --mtu) MTU=${2:?}; shift 2;;
    --net) NET=${2:?}; shift 2;;
    --rdma) RDMA=1; shift;;
    --keep) KEEP=1; shift;;
    --force) FORCE=1; shift;;
    --state-dir) STATE_DIR=${2:?}; shift 2;;
    -h|--help) usage; exit 0;;
    --) shift; break;;
    *) usage_err "unknown option: $1";;
  esac
done
CMD=("$@")
case $action in
  run) [ ${#CMD[@]} -gt 0 ] || usage_err "run needs a command after --";;
  *) [ ${#CMD[@]} -eq 0 ] || usage_err "$action takes no command";;
esac

STATE=$STATE_DIR/state         # what this lab changed; written before each change
ENVF=$STATE_DIR/lab.env
LINKS=$STATE_DIR/links.txt
PIDS=$STATE_DIR/pids           # "pid starttime" of processes we started

# ------------------------------------------------------------------ value parsing
re_num='[0-9]+(\.[0-9]+)?'
is_rate() { [[ $1 =~ ^${re_num}(bit|kbit|mbit|gbit|tbit)$ ]]; }
is_time() { [[ $1 == 0 || $1 =~ ^${re_num}(us|ms|s)$ ]]; }
is_loss() { [[ $1 =~ ^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)%?$ ]]; }

# ------------------------------------------------------------------ process helpers
starttime() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "${20}"; }
record_pid() { echo "$1 $(starttime "$1" || echo 0)" >> "$PIDS"; }
# Kill what an earlier (maybe crashed) run started, but only if the pid
# still names the same process (same start time): pids get reused.
kill_recorded() {
  [ -f "$PIDS" ] || return 0
  local pid st
  while read -r pid st; do
    [ "$(starttime "$pid" 2>/dev/null)" = "$st" ] || continue
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done < "$PIDS"
  sleep 0.2
  while read -r pid st; do
    [ "$(starttime "$pid" 2>/dev/null)" = "$st" ] || continue
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done < "$PIDS"
  rm -f "$PIDS"
}

# ------------------------------------------------------------------ host queries
# (awk filters rather than grep: no status 1 on "nothing found", and no
# early exit that would SIGPIPE the writer, both fatal under pipefail)
lab_devices() {  # party ends and the bridge; a veth's peer goes with it
  ip -o link show | awk -F': ' -v re="^${PFX}([0-9]+|-br)$" '{sub(/@.*/, "", $2); if ($2 ~ re) print $2}'
}
lab_rxe_devices() {
  command -v rdma >/dev/null || return 0
  rdma link show 2>/dev/null | awk -v re="^${PFX}rxe[0-9]+$" '{sub(/\/.*/, "", $2); if ($2 ~ re) print $2}'
}
lab_rule_tables() {  # tables of our policy rules
  ip -4 rule show pref $RULE_PREF | awk -v lo=$TABLE_BASE -v hi=$((TABLE_BASE + 100)) \
    '$(NF-1) == "lookup" && $NF >= lo && $NF < hi {print $NF}'
}
local_rule_pref() {  # pref of the first 'lookup local' rule, empty if none
  ip -4 rule show | awk -F: '/lookup local$/ && p == "" {p = $1} END {print p}'
}

# ------------------------------------------------------------------ teardown
# Idempotent, and works from the state file alone, so it serves the EXIT
# trap, 'lab.sh down' and the clean-up of a crashed run. Devices and our
# rules are also found by name/table, so a lab whose state file was lost
# (or only half written) is removed too.
teardown() {
  local moved_local="" t dev
  kill_recorded
  [ -f "$STATE" ] && moved_local=$(sed -n 's/^MOVED_LOCAL_RULE=//p' "$STATE")
  if [ -n "$moved_local" ]; then
    [ "$(local_rule_pref)" = 0 ] || ip -4 rule add pref 0 lookup local
    ip -4 rule del pref "$moved_local" lookup local 2>/dev/null || true
  fi
  for t in $(lab_rule_tables); do ip -4 rule del pref $RULE_PREF lookup "$t" 2>/dev/null || true; done
  for dev in $(lab_rxe_devices); do rdma link delete "$dev" 2>/dev/null || true; done
  # Deleting one end of a veth deletes its peer; routes, neighbours and
  # qdiscs go with the devices.
  for dev in $(lab_devices); do ip link del "$dev" 2>/dev/null || true; done
  rm -f "$STATE" "$ENVF" "$LINKS"
  rm -rf "$STATE_DIR/measure"
}

leftovers() {
  [ -f "$STATE" ] || [ -f "$PIDS" ] || [ -n "$(lab_devices)$(lab_rxe_devices)$(lab_rule_tables)" ]
}

# ------------------------------------------------------------------ lock
# One lab per host (device names and tables are fixed). The lock is held
# for as long as this script runs; children never inherit it (9>&-), so a
# crashed lab.sh frees it even if its command lives on.
take_lock() {
  mkdir -p "$STATE_DIR"
  exec 9>>"$STATE_DIR/lock"
  if ! flock -n 9; then
    [ "$action" = down ] && [ "$FORCE" = 1 ] && return 0
    die "another lab.sh is running (state in $STATE_DIR); stop it first${1:+, or use 'down --force'}"
  fi
}

# ------------------------------------------------------------------ status / down
if [ "$action" = status ]; then
  if [ -f "$STATE" ]; then
    echo "lab is up (state in $STATE_DIR)"
    [ -f "$ENVF" ] && cat "$ENVF"
    [ -f "$LINKS" ] && cat "$LINKS"
    for d in $(lab_devices); do [ "$d" = "$BR" ] || tc -s qdisc show dev "$d"; done
  elif leftovers; then
    echo "no lab state, but leftovers of a lab exist: run '$0 down'"; exit 1
  else
    echo "no lab is up"; exit 1
  fi
  exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root: it adds interfaces, addresses, routing rules and qdiscs"
if [ "$action" = down ]; then
  take_lock force
  if leftovers; then teardown; log "lab removed"; else log "no lab to remove"; fi
  [ -z "$(lab_devices)$(lab_rxe_devices)$(lab_rule_tables)" ] || die "could not remove everything; see 'ip link', 'ip rule'"
  exit 0
fi

# ------------------------------------------------------------------ checks (change nothing)
need_cmds() {
  local missing=() c pkg
  for c in ip:iproute2 tc:iproute2 ss:iproute2 ping:iputils-ping unshare:util-linux flock:util-linux awk:mawk; do
    command -v "${c%%:*}" >/dev/null || missing+=("${c#*:}")
  done
  # busybox or inetutils ping lack -I ADDR / -i 0.1 semantics we rely on
  command -v ping >/dev/null && [[ $(ping -V 2>&1) != *iputils* ]] && missing+=(iputils-ping)
  [ "$MEASURE_RATE" = 1 ] && ! command -v iperf3 >/dev/null && missing+=(iperf3)
  [ "$RDMA" = 1 ] && ! command -v rdma >/dev/null && missing+=(iproute2)
  if [ ${#missing[@]} -gt 0 ]; then
    pkg=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    die "missing Debian package(s): ${pkg% } (apt-get install ${pkg% })"
  fi
}

# Everything the lab needs from the kernel, tried in a throw-away network
# namespace: a missing module then fails here, before the host is touched,
# and the namespace disappears with the probe.
probe_kernel() {
  local out
  out=$(unshare --net bash -c '
    step() { local m=$1; shift; e=$("$@" 2>&1) || { echo "$m: $e"; exit 1; }; }
    step veth ip link add p0 gso_max_segs 1 type veth peer name p1
    step bridge ip link add pb type bridge
    step bridge ip link set p1 master pb
    step sch_htb tc qdisc add dev p0 root handle 1: htb
    step sch_htb tc class add dev p0 parent 1: classid 1:100 htb rate 1gbit
    step sch_netem tc qdisc add dev p0 parent 1:100 handle 100: netem delay 1ms 1ms loss 1% rate 1mbit
    step cls_u32 tc filter add dev p0 parent 1: protocol ip prio 1 u32 match ip dst 10.0.0.0/24 flowid 1:100
    step "policy routing (CONFIG_IP_MULTIPLE_TABLES)" ip rule add pref 90 from 10.0.0.0/24 iif lo lookup 7700
  ' 2>&1) || {
    [ -n "$out" ] || out="unshare --net failed (no CAP_SYS_ADMIN?)"
    case $out in
      unshare*) die "cannot create a throw-away network namespace to probe the kernel: $out";;
      *) local what=${out%%:*} hint=""
         [[ $what == *' '* ]] || hint="; load it (modprobe $what) or use a kernel that has it"
         die "the kernel lacks $what (tried in a throw-away network namespace: ${out#*: })$hint; nothing was changed";;
    esac
  }
  if [ "$RDMA" = 1 ] && ! [ -d /sys/module/rdma_rxe ] && ! modprobe -n -q rdma_rxe 2>/dev/null; then
    die "the kernel lacks rdma_rxe (SoftRoCE), needed by --rdma; nothing was changed"
  fi
}

# ------------------------------------------------------------------ configuration
declare -A RATE DELAY JITTER LOSS
NAMES=()
D_RATE=100mbit; D_DELAY=20ms; D_JITTER=0; D_LOSS=0

party_index() { local i; for i in "${!NAMES[@]}"; do [ "${NAMES[$i]}" = "$1" ] && { echo "$i"; return 0; }; done; return 1; }

# set_link I J key=value...: one direction of one link
set_link() {
  local i=$1 j=$2 kv k v; shift 2
  for kv in "$@"; do
    k=${kv%%=*}; v=${kv#*=}
    case $k in
      rate) is_rate "$v" || return 1; RATE[$i,$j]=$v;;
      delay) is_time "$v" || return 1; DELAY[$i,$j]=$v;;
      jitter) is_time "$v" || return 1; JITTER[$i,$j]=$v;;
      loss) is_loss "$v" || return 1; LOSS[$i,$j]=${v%\%}%;;
      *) return 1;;
    esac
  done
}

configure() {
  local lineno=0 line words a b i j names_line=() defaults=()
  if [ -n "$SCEN" ]; then
    [ -r "$SCEN" ] || usage_err "cannot read scenario file $SCEN"
    while IFS= read -r line || [ -n "$line" ]; do
      lineno=$((lineno + 1)); line=${line%%#*}; read -ra words <<< "$line"
      [ ${#words[@]} -eq 0 ] && continue
      case ${words[0]} in
        parties) names_line=("${words[@]:1}");;
        default) defaults=("${words[@]:1}");;
      esac
    done < "$SCEN"
  fi
  if [ ${#names_line[@]} -gt 0 ]; then
    NAMES=("${names_line[@]}")
    [ -z "$P" ] || [ "$P" = ${#NAMES[@]} ] || usage_err "--parties $P but $SCEN names ${#NAMES[@]} parties"
    P=${#NAMES[@]}
  fi
  P=${P:-3}
  [[ $P =~ ^[0-9]+$ ]] && [ "$P" -ge 2 ] && [ "$P" -le $MAX_PARTIES ] || usage_err "--parties must be 2..$MAX_PARTIES"
  [[ $N =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 250 ] || usage_err "--addrs-per-party must be 1..250"
  [[ $MTU =~ ^[0-9]+$ ]] && [ "$MTU" -ge 576 ] && [ "$MTU" -le 9000 ] || usage_err "--mtu must be 576..9000"
  [[ $MSECS =~ ^[0-9]+$ ]] && [ "$MSECS" -ge 1 ] || usage_err "--measure-seconds must be a positive integer"
  [[ $NET =~ ^([0-9]+)\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -le 255 ] && [ "${BASH_REMATCH[2]}" -le 255 ] ||
    usage_err "--net must be two octets, e.g. 10.77"
  if [ ${#NAMES[@]} -eq 0 ]; then
    local letters=ABCDEFGHIJKLMNOPQRSTUVWXYZ
    NAMES=(central); for ((i = 1; i < P; i++)); do NAMES+=("${letters:i-1:1}"); done
  fi
  for a in "${NAMES[@]}"; do [[ $a =~ ^[A-Za-z0-9_]+$ ]] || usage_err "bad party name '$a' (letters, digits, _)"; done
  [ "$(printf '%s\n' "${NAMES[@]}" | sort -u | wc -l)" = "$P" ] || usage_err "party names must be unique"

  # Precedence: built-in < scenario 'default' < --wan-* < scenario pair lines.
  for a in "${defaults[@]}"; do
    case $a in
      rate=*) D_RATE=${a#*=};; delay=*) D_DELAY=${a#*=};; jitter=*) D_JITTER=${a#*=};; loss=*) D_LOSS=${a#*=};;
      *) usage_err "$SCEN: bad default setting '$a'";;
    esac
  done
  D_RATE=${CLI_RATE:-$D_RATE}; D_DELAY=${CLI_DELAY:-$D_DELAY}
  D_JITTER=${CLI_JITTER:-$D_JITTER}; D_LOSS=${CLI_LOSS:-$D_LOSS}
  is_rate "$D_RATE" || usage_err "bad rate '$D_RATE' (e.g. 100mbit, 1gbit)"
  is_time "$D_DELAY" || usage_err "bad delay '$D_DELAY' (e.g. 20ms)"
  is_time "$D_JITTER" || usage_err "bad jitter '$D_JITTER' (e.g. 1ms)"
  is_loss "$D_LOSS" || usage_err "bad loss '$D_LOSS' (e.g. 0.1%)"
  for ((i = 0; i < P; i++)); do for ((j = 0; j < P; j++)); do
    [ $i = $j ] && continue
    set_link $i $j rate="$D_RATE" delay="$D_DELAY" jitter="$D_JITTER" loss="$D_LOSS"
  done; done

  [ -n "$SCEN" ] || return 0
  lineno=0
  while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1)); line=${line%%#*}; read -ra words <<< "$line"
    [ ${#words[@]} -eq 0 ] && continue
    case ${words[0]} in parties|default) continue;; esac
    # "A B k=v..." sets both directions, "A->B k=v..." only A to B.
    if [[ ${words[0]} == *'->'* ]]; then
      a=${words[0]%%->*}; b=${words[0]#*->}; words=("${words[@]:1}")
    else
      a=${words[0]}; b=${words[1]:-}; words=("${words[@]:2}")
    fi
    i=$(party_index "$a") || usage_err "$SCEN:$lineno: unknown party '$a' (parties: ${NAMES[*]})"
    j=$(party_index "$b") || usage_err "$SCEN:$lineno: unknown party '$b' (parties: ${NAMES[*]})"
    [ "$i" != "$j" ] || usage_err "$SCEN:$lineno: a link joins two different parties"
    set_link "$i" "$j" "${words[@]}" || usage_err "$SCEN:$lineno: bad setting in '${line}'"
    [[ $line == *'->'* ]] || set_link "$j" "$i" "${words[@]}"
  done < "$SCEN"
}

addr() { echo "$NET.$1.$2"; }
party_addrs() { local k s=""; for ((k = 1; k <= N; k++)); do s+="$(addr "$1" "$k") "; done; echo "${s% }"; }

check_clash() {
  local a
  a=$(ip -4 -o addr show to "$NET.0.0/16" | awk 'NR <= 3 {print $2, $4}')
  [ -z "$a" ] || die "addresses in $NET.0.0/16 already exist (${a//$'\n'/, }); pick another --net"
  a=$(ip -4 route show table all root "$NET.0.0/16" | awk 'NR <= 3')
  [ -z "$a" ] || die "routes into $NET.0.0/16 already exist (${a//$'\n'/; }); pick another --net"
  [ -n "$(local_rule_pref)" ] || die "no 'lookup local' routing rule: unusual policy routing, refusing to touch it"
}

# The numbers behind each link, in one awk run (a process per value costs
# seconds in a TCG VM): RTT_MS[i,j] (configured round trip, the sum of
# both one-way delays), MBIT[i,j], and LIMIT[i,j], netem's queue in
# packets. That queue must hold what is in flight on the emulated wire plus
# a router-like buffer of about one bandwidth-delay product (at least 64
# packets): smaller drops at full rate, larger bloats RTTs under load.
declare -A RTT_MS MBIT LIMIT
derive() {
  local i j rtt mbit lim
  # (a here-string, not < <(...): a chroot may lack /dev/fd)
  while read -r i j rtt mbit lim; do RTT_MS[$i,$j]=$rtt; MBIT[$i,$j]=$mbit; LIMIT[$i,$j]=$lim; done <<< "$(
    for ((i = 0; i < P; i++)); do for ((j = 0; j < P; j++)); do
      [ $i = $j ] || echo "$i $j ${RATE[$i,$j]} ${DELAY[$i,$j]} ${DELAY[$j,$i]} ${JITTER[$i,$j]}"
    done; done |
    awk -v mtu="$MTU" '
      function num(v) { return substr(v, 1, match(v, /[a-z]*$/) - 1) + 0 }
      function unit(v) { return substr(v, match(v, /[a-z]*$/)) }
      function ms(v,  u) { u = unit(v); return num(v) * (u == "us" ? 1e-3 : u == "s" ? 1e3 : u == "ms" ? 1 : 0) }
      function mbit(v,  u) { u = unit(v)
        return num(v) * (u == "bit" ? 1e-6 : u == "kbit" ? 1e-3 : u == "mbit" ? 1 : u == "gbit" ? 1e3 : 1e6) }
      { r = mbit($3); rtt = ms($4) + ms($5); pps = r * 1e6 / 8 / (mtu + 14)
        bdp = pps * rtt / 1000; inflight = pps * (ms($4) + ms($6)) / 1000
        printf "%s %s %g %g %d\n", $1, $2, rtt, r, inflight + (bdp > 64 ? bdp : 64) + 16 }')"
}

setup() {
  local i j k dev lp
  # Intent first: a crash from here on leaves enough for teardown.
  printf 'NET=%s\nPARTIES=%s\n' "$NET" "$P" > "$STATE"
  {
    echo "link add $BR type bridge"
    for ((i = 0; i < P; i++)); do
      dev=$PFX$i
      # gso_max_segs 1: TCP then hands the qdisc MTU-sized packets, so netem
      # drops, delays and paces wire-sized packets, not 64 KB GSO bursts.
      echo "link add $dev mtu $MTU gso_max_segs 1 type veth peer name ${dev}b mtu $MTU"
      echo "link set ${dev}b master $BR"
      for ((k = 1; k <= N; k++)); do echo "addr add $(addr $i $k)/32 dev $dev"; done
    done
  } | ip -batch - || die "could not create the lab devices"
  for ((i = 0; i < P; i++)); do
    # A packet to another party leaves geolab<i>, crosses the bridge and
    # arrives on geolab<j> with a local source address, which only
    # accept_local lets in. (Reverse-path filtering passes in any mode: the
    # reverse path, through party j's table, is geolab<j> itself.)
    # arp_ignore 1 and arp_announce 2 make only geolab<j> answer ARP for
    # party j's addresses, so packets (RoCE too) land on party j's device.
    # Per-device settings: they go with the devices.
    for k in accept_local:1 arp_ignore:1 arp_announce:2; do
      echo "${k#*:}" > "/proc/sys/net/ipv4/conf/$PFX$i/${k%%:*}"
    done
  done
  {
    for ((i = 0; i < P; i++)); do
      dev=$PFX$i
      # htb only classifies by destination party; netem does the WAN part
      # (delay, jitter, loss and rate: netem's own rate keeps packets in
      # order under jitter, and paces better than htb in front of netem).
      echo "qdisc add dev $dev root handle 1: htb"
      for ((j = 0; j < P; j++)); do
        [ $i = $j ] && continue
        local cls=$((100 + j)) netem
        netem="delay ${DELAY[$i,$j]}"
        [ "${JITTER[$i,$j]}" = 0 ] || netem+=" ${JITTER[$i,$j]}"
        [ "${LOSS[$i,$j]}" = 0% ] || netem+=" loss ${LOSS[$i,$j]}"
        netem+=" rate ${RATE[$i,$j]} limit ${LIMIT[$i,$j]}"
        echo "class add dev $dev parent 1: classid 1:$cls htb rate 100gbit quantum 60000"
        echo "qdisc add dev $dev parent 1:$cls handle $cls: netem $netem"
        echo "filter add dev $dev parent 1: protocol ip prio 1 u32 match ip dst $NET.$j.0/24 flowid 1:$cls"
      done
    done
  } | tc -batch - || die "could not configure the WAN qdiscs"
  {
    echo "link set $BR up"
    for ((i = 0; i < P; i++)); do
      echo "link set $PFX${i}b up"; echo "link set $PFX$i up"
      for ((j = 0; j < P; j++)); do
        [ $i = $j ] && continue
        echo "route add $NET.$j.0/24 dev $PFX$i table $((TABLE_BASE + i))"
        # rdma_cm checks an incoming connection by looking up the way back
        # to the client with no input interface, which our 'iif lo' rules
        # do not match: without these main-table routes (one per device,
        # told apart by metric) it rejects every inter-party connection.
        # Normal traffic never uses them: the 'local' table answers first.
        echo "route add $NET.$j.0/24 dev $PFX$i metric $((TABLE_BASE + i))"
      done
    done
  } | ip -batch - || die "could not bring up the lab devices"
  if [ "$RDMA" = 1 ]; then
    for ((i = 0; i < P; i++)); do
      rdma link add "${PFX}rxe$i" type rxe netdev "$PFX$i" || die "could not create rxe device on $PFX$i"
    done
  fi
  # Locally generated packets from party i to another party must leave
  # through geolab<i>; by default the 'local' table (rule pref 0) would
  # send them through lo, unshaped. So our rules go before it, and the
  # 'local' rule moves to pref 1000 if it sits at 0 (restored by teardown).
  lp=$(local_rule_pref)
  if [ "$lp" = 0 ]; then
    echo "MOVED_LOCAL_RULE=$LOCAL_PREF" >> "$STATE"
    ip -4 rule add pref $LOCAL_PREF lookup local
    ip -4 rule del pref 0 lookup local
  elif [ "$lp" -le $RULE_PREF ]; then
    die "the 'lookup local' rule is at pref $lp; the lab needs it after pref $RULE_PREF"
  fi
  for ((i = 0; i < P; i++)); do
    echo "rule add pref $RULE_PREF from $NET.$i.0/24 iif lo lookup $((TABLE_BASE + i))"
  done | ip -4 -batch - || die "could not add the policy routing rules"
}

write_env() {
  local i tmp=$ENVF.tmp
  {
    echo "# geops lab layout: party 0 is the central party. Source it: . $ENVF"
    echo "export LAB_PARTIES=$P"
    echo "export LAB_PARTY_NAMES=\"${NAMES[*]}\""
    echo "export LAB_STATE_DIR=\"$STATE_DIR\""
    for ((i = 0; i < P; i++)); do
      echo "export LAB_PARTY_${i}_NAME=${NAMES[$i]}"
      echo "export LAB_PARTY_${i}_ADDRS=\"$(party_addrs $i)\""
      echo "export LAB_PARTY_${i}_DEV=$PFX$i"
      [ "$RDMA" = 1 ] && echo "export LAB_PARTY_${i}_RDMA_DEV=${PFX}rxe$i"
    done
  } > "$tmp"
  mv "$tmp" "$ENVF"
}

# ------------------------------------------------------------------ measurement
wait_listen() {  # addr port: wait until something listens there (iperf3 start-up)
  local t
  for t in $(seq 100); do
    [ -n "$(ss -Htln "src $1:$2" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  return 1
}

free_port() {
  local p
  for p in $(seq 47701 47799); do [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ] && { echo $p; return; }; done
  die "no free TCP port in 47701..47799 for iperf3"
}

# src dst -> "median_ms loss_pct" of 20 pings (median "nan" if none came
# back). The first reply is left out: it waited for ARP. The median, not
# the mean: a busy host (or a TCG VM) delays the odd reply by
# milliseconds, which would drag the mean off the link's RTT.
ping_rtt() {
  local out
  out=$(ping -n -I "$1" -c 21 -i 0.05 -W 2 "$2" 2>&1 9>&- || true)
  awk '/ time=/ && first++ {sub(/.* time=/, ""); t[n++] = $1 + 0}
       /packet loss/{for (i = 1; i <= NF; i++) if ($i ~ /%$/) loss = $i}
       END{for (i = 1; i < n; i++) for (j = i; j > 0 && t[j-1] > t[j]; j--) { x = t[j]; t[j] = t[j-1]; t[j-1] = x }
           m = n == 0 ? "nan" : sprintf("%.2f", n % 2 ? t[(n-1)/2] : (t[n/2-1] + t[n/2]) / 2)
           printf "%s %s\n", m, (loss == "" ? "100%" : loss)}' <<< "$out"
}

measure() {
  local i j dir=$STATE_DIR/measure rtt_c rtt_m loss_m line pid port rate_m ok=1 pids=()
  mkdir -p "$dir"; : > "$LINKS"
  # RTT pings of all links at once: each link has its own netem queue and
  # pings are tiny, so they do not disturb each other.
  for ((i = 0; i < P; i++)); do
    for ((j = 0; j < P; j++)); do
      [ $i = $j ] && continue
      ping_rtt "$(addr $i 1)" "$(addr $j 1)" > "$dir/rtt.$i.$j" &
      pids+=($!)
    done
    if [ "$N" -ge 2 ]; then ping_rtt "$(addr $i 1)" "$(addr $i 2)" > "$dir/rtt.$i.$i" & pids+=($!); fi
  done
  wait "${pids[@]}"
  for ((i = 0; i < P; i++)); do for ((j = 0; j < P; j++)); do
    [ $i = $j ] && continue
    read -r rtt_m loss_m < "$dir/rtt.$i.$j"
    rtt_c=${RTT_MS[$i,$j]}
    rate_m=skipped
    if [ "$rtt_m" = nan ]; then
      ok=0; log "link ${NAMES[$i]}->${NAMES[$j]} passes no traffic (all pings lost)"
    elif [ "$MEASURE_RATE" = 1 ]; then
      # Sequential: links share the host's CPU, and iperf3 fills a link.
      port=$(free_port)
      iperf3 -s -1 -B "$(addr $j 1)" -p "$port" >/dev/null 2>&1 9>&- & pid=$!
      record_pid $pid
      if wait_listen "$(addr $j 1)" "$port"; then
        # -O 1: leave slow start out; 'receiver' is what crossed the link.
        rate_m=$(timeout $((MSECS + 30)) iperf3 -c "$(addr $j 1)" -B "$(addr $i 1)" -p "$port" \
                   -t "$MSECS" -O 1 -f m 9>&- 2>&1 |
                 awk '/receiver/{for (k = 2; k <= NF; k++) if ($k == "Mbits/sec") print $(k-1)}') || true
      fi
      kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
      [ -n "$rate_m" ] || { rate_m=failed; ok=0; log "iperf3 ${NAMES[$i]}->${NAMES[$j]} failed"; }
    fi
    line="lab-link ${NAMES[$i]}->${NAMES[$j]} configured_rate=${RATE[$i,$j]} measured_rate_mbit=$rate_m"
    line+=" configured_rtt_ms=$rtt_c measured_rtt_ms=$rtt_m configured_delay=${DELAY[$i,$j]}"
    line+=" configured_jitter=${JITTER[$i,$j]} configured_loss=${LOSS[$i,$j]} ping_loss=$loss_m"
    echo "$line" | tee -a "$LINKS"
    warn_off "$line" "$rtt_c" "$rtt_m" "${MBIT[$i,$j]}" "$rate_m"
  done; done
  for ((i = 0; i < P; i++)); do
    if [ "$N" -ge 2 ]; then read -r rtt_m loss_m < "$dir/rtt.$i.$i"; else rtt_m=skipped; fi
    echo "lab-party ${NAMES[$i]} addrs=$(addr $i 1)-$(addr $i "$N") measured_rtt_ms=$rtt_m" | tee -a "$LINKS"
  done
  rm -rf "$dir"
  [ $ok = 1 ] || die "the lab does not pass traffic as configured (see above)"
}

# A lab that is not what was asked for should be noticed, not silently
# used: flag RTTs more than 20% off and rates outside 70..110% (TCP
# goodput at MTU 1500 is about 95.6% of the wire rate).
warn_off() {
  awk -v rc="$2" -v rm="$3" -v r="$4" -v m="$5" 'BEGIN{
    bad = (rm != "nan" && (rm > rc * 1.2 + 0.5 || rm < rc * 0.8 - 0.5))
    if (m ~ /^[0-9.]+$/ && (m < 0.7 * r || m > 1.1 * r)) bad = 1
    exit !bad }' && log "warning: measured values differ from configured: ${1#lab-link }" || true
}

# ------------------------------------------------------------------ main (up / run)
configure
need_cmds
probe_kernel
take_lock

CMD_PID=""; SIG_RC=""; CONFIGURED=0; READY=0
on_exit() {
  local rc=$?
  trap - EXIT INT TERM HUP
  [ -n "$SIG_RC" ] && rc=$SIG_RC
  # The whole process group: whatever the command left running goes too.
  if [ -n "$CMD_PID" ] && kill -0 -- "-$CMD_PID" 2>/dev/null; then
    kill -TERM -- "-$CMD_PID" 2>/dev/null || true
    local t; for t in $(seq 50); do kill -0 -- "-$CMD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$CMD_PID" 2>/dev/null || true
  fi
  if [ "$READY" = 1 ] && [ "$KEEP" = 1 ] && [ -z "$SIG_RC" ]; then
    log "lab kept up: . $ENVF to use it, '$0 down' to remove it"
  elif [ "$CONFIGURED" = 1 ]; then
    teardown
    log "lab removed"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'SIG_RC=130; exit 130' INT
trap 'SIG_RC=143; exit 143' TERM
trap 'SIG_RC=129; exit 129' HUP

if leftovers; then log "removing the leftovers of an earlier lab"; teardown; fi
check_clash
CONFIGURED=1
[ "$action" = up ] && KEEP=1
derive
setup
write_env
log "up: $P parties (${NAMES[*]}), $N addresses each in $NET.<party>.0/24, state in $STATE_DIR"
measure
READY=1
[ "$action" = up ] && { cat "$ENVF"; exit 0; }

# shellcheck disable=SC1090
. "$ENVF"
log "running: ${CMD[*]}"
# Own process group (set -m), so teardown can stop the command and all its
# children; the lock fd stays with lab.sh.
set -m
"${CMD[@]}" 9>&- &
CMD_PID=$!
set +m
echo "$CMD_PID $(starttime "$CMD_PID" || echo 0)" >> "$PIDS"
rc=0; wait "$CMD_PID" || rc=$?
log "command exited with status $rc"
exit "$rc"
