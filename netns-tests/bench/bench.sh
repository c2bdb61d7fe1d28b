#!/usr/bin/env bash
# netns-tests/bench/bench.sh — the faketcp tunnel against plain UDP and against the
# real peers (phantun, udp2raw) over the same namespaces, in one run (`sudo make bench`;
# under 8 minutes on 2 cores).
#
#   bash netns-tests/bench/bench.sh build/faketcp build/udpgen build/alloccount.so
#
# Topology: netns-tests/lib.sh's (client ns -- router ns with NAT and strict
# conntrack -- server ns). Paths through it, all up at once and measured in turn:
#   direct   udpgen (client ns) -> router -> udpgen sink on 10.77.2.2:7000 (server ns)
#   tunnel   udpgen -> faketcp client 127.0.0.1:5000 -> TUN -> router -> DNAT ->
#            TUN -> faketcp server -> the same sink on 127.0.0.1:7000
#   phantun  the same through phantun (client 127.0.0.1:5001, server port 4568, its
#            own TUN addresses 192.168.210/211.x)
#   udp2raw  the same through udp2raw --raw-mode faketcp (client 127.0.0.1:5002,
#            server port 4569, raw sockets, -a for its iptables rule; no cipher/auth)
# Peers come from PEERS (default "phantun,udp2raw"; "" for none): each NAME is looked
# for in ../shared/peers (relative to the repository) or given as NAME=PATH (phantun:
# the directory with client and server; udp2raw: the binary). One that is absent is
# skipped loudly. Each peer first gets a bed check: 1 s at 2 kpps over the strict
# router; a peer that loses it there is measured with the router's conntrack made
# liberal (nf_conntrack_tcp_be_liberal=1) for its own measurements only, and the
# strict figures (loss, INVALID drops) are reported as well.
# What it measures (progress on stderr; stdout gets the table, then ONE JSON line):
#   1. knee: the highest offered rate with < 1 % loss, 64/512/1400-byte datagrams,
#      1 and 16 flows (peers: 1400 B, 1 and 16 flows); BENCH_REPS repetitions (the
#      paths' order rotates each repetition), medians. udpgen knee (BENCH_GEN_THREADS senders):
#      each probe is a 0.1 s warm-up plus BENCH_PROBE_S measured at a fixed rate,
#      counted by the sink after the path drained; a flat-out probe, then x1.3 up /
#      halving down to bracket, then bisection to 8 %; later repetitions start from
#      the previous knee. When the sender cannot offer more and nothing is lost (the
#      direct path: its whole kernel path runs in the sender's syscalls), the
#      "knee" is that rate, marked * in the table: a floor, so ratios are upper bounds.
#      A peer whose knee is 0, or whose process died, is reported with what the bench
#      saw (INVALID drops during its search, the process's state, a slow probe after
#      it) and left out of the later phases; the run goes on.
#   1b. scale: the 1400 B x 16-flow knee with --queues 1 .. CPU count (the last is the
#      main knee's configuration, measured again here).
#   2. RTT: 2000 sequential 64-byte ping-pongs on every path, 3 times each.
#   3. CPU us per datagram at half the lower 1-flow knee (64 and 1400 B): the
#      tunnel client and server (user+sys, all threads, /proc/PID/stat), the whole
#      path (generator + sink [+ client + server]) and the machine (/proc/stat).
#      Peers at 1400 B, at the same rate or half their own knee if that is lower.
#   4. WireGuard: TCP (iperf3, BENCH_WG_SECS each) over wireguard-go over every path,
#      BENCH_WG_REPS interleaved repetitions; the client's wg endpoint is switched
#      between the paths, the tunnel servers forward to the server's wg port.
#   5. idle: 100 connected, silent flows through every tunnel for BENCH_IDLE_S
#      (30 s): the CPU each tunnel's processes used, in % of one core.
#   6. allocations per datagram: the CLI (and each peer) restarted under
#      build/alloccount.so (LD_PRELOAD), counts dumped (SIGUSR2) after a warm-up and
#      after a fixed count.
#   7. scale: 10 000 flows (distinct source ports) through a fresh client/server
#      pair: flows per second (handshake + first echo), RSS of each side.
# A benchmark, not a test: nothing here asserts on a number; it fails only when
# it cannot measure faketcp (a process died, the topology did not come up).
#
# Knobs (environment): BENCH_REPS (3; knees move a lot between runs on a shared VM),
# BENCH_PROBE_S (0.5 s per knee probe), BENCH_SCALE_FLOWS (10000), BENCH_KNEE_BUDGET_S
# (200: later repetitions are skipped once the knee phase has run this long),
# BENCH_GEN_THREADS / BENCH_SINK_THREADS (sender threads of each knee probe, receiver
# threads of the sink: a quarter of the CPUs each, at least 2 / 1), BENCH_SIZES ("64 512 1400"), PEERS ("phantun,udp2raw"), BENCH_WG_REPS (3),
# BENCH_WG_SECS (3), BENCH_IDLE_S (30), BENCH_SKIP (phases to leave out, any of
# "scale-queues rtt cpu wg idle alloc scale"),
# BENCH_CLI_ARGS (extra flags for both faketcp processes, e.g. "--no-udp-offload"),
# BENCH_GEN_ARGS (extra flags for udpgen's knee and CPU sends on both paths, e.g.
# "--gso": the application sends UDP_SEGMENT runs, as QUIC stacks and wireguard-go do).
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$BENCH_DIR/../lib.sh" "${1:-}"
UDPGEN=${2:-$BENCH_DIR/../../build/udpgen}
SHIM=${3:-$BENCH_DIR/../../build/alloccount.so}
UDPGEN=$(readlink -f "$UDPGEN")
SHIM=$(readlink -f "$SHIM")
need_root
need_binary
[ -x "$UDPGEN" ] || fail "$UDPGEN is not an executable (make build/udpgen)"
[ -f "$SHIM" ] || fail "$SHIM is missing (make build/alloccount.so)"

REPS=${BENCH_REPS:-3}
# The generator and the sink must not be what limits a many-core host: a quarter of
# the CPUs each (the tunnel's two ends take one queue per CPU), at least 2 senders.
NCPU=$(nproc)
GEN_THREADS=${BENCH_GEN_THREADS:-$((NCPU / 4 > 2 ? NCPU / 4 : 2))}
SINK_THREADS=${BENCH_SINK_THREADS:-$((NCPU / 4 > 1 ? NCPU / 4 : 1))}
PROBE_S=${BENCH_PROBE_S:-0.5}
SCALE_FLOWS=${BENCH_SCALE_FLOWS:-10000}
KNEE_BUDGET_S=${BENCH_KNEE_BUDGET_S:-200}
SIZES=${BENCH_SIZES:-"64 512 1400"}
WG_REPS=${BENCH_WG_REPS:-3}
WG_SECS=${BENCH_WG_SECS:-3}
IDLE_S=${BENCH_IDLE_S:-30}
SKIP=" ${BENCH_SKIP:-} "
read -r -a CLI_ARGS <<<"${BENCH_CLI_ARGS:-}"
read -r -a GEN_ARGS <<<"${BENCH_GEN_ARGS:-}"
FLOW_COUNTS="1 16"
RES="$WORK/results.jsonl"
: >"$RES"
CTL="$WORK/sink.ctl"
FAKETCP_REAL=$FAKETCP
REPO=$(cd "$BENCH_DIR/../.." && pwd)
skipped() { [[ "$SKIP" == *" $1 "* ]]; }

# Each path: where udpgen sends, the source ports its flows use, its processes.
declare -A TARGET SPORT CPID SPID BED DEAD
TARGET[direct]="$S_IP4:7000" SPORT[direct]=21000
TARGET[tunnel]="127.0.0.1:5000" SPORT[tunnel]=22000
TUNNEL_TARGET=${TARGET[tunnel]}
BED[direct]=strict BED[tunnel]=strict

say() { echo "[bench $(elapsed)s] $*" >&2; }
# gen TIMEOUT_S ARGS...: udpgen in the client ns, bounded; its stderr to gen.log.
gen() {
    local t=$1
    shift
    timeout -k 2 "$t" ip netns exec "$NS_C" "$UDPGEN" "$@" 2>>"$WORK/gen.log"
}
# result KIND EXTRA_JSON_FIELDS UDPGEN_JSON: one line of the results file.
result() { echo "{\"kind\":\"$1\",$2,\"data\":$3}" >>"$RES"; }
jnum() { sed -n "s/.*\"$1\":\([-0-9.e]*\).*/\1/p" <<<"$2"; }
jstr() { [ -z "$1" ] || printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n' ' '; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'; }
check_alive() {
    local pid name
    for pid in "$@"; do
        alive "$pid" || fail "process $pid died ($(ps -o comm= -p "$pid" 2>/dev/null))"
    done
}
log_file "$WORK/gen.log"

# CPU busy share of the whole machine over 1 s, in percent of all CPUs: other
# work on the host makes every number here noisy, so the summary reports it.
host_busy_pct() {
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN{split(a, x, " "); split(b, y, " "); printf "%.1f", 100 * (y[1] - x[1]) / (y[2] - x[2])}'
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# --- peers -------------------------------------------------------------------------
# PEER_BIN[name]: the directory (phantun) or binary (udp2raw) found.
declare -A PEER_BIN PEER_PORT PEER_LOCAL
PEER_LIST=()
PEER_PORT[phantun]=4568 PEER_LOCAL[phantun]=127.0.0.1:5001
PEER_PORT[udp2raw]=4569 PEER_LOCAL[udp2raw]=127.0.0.1:5002
SPORT[phantun]=25000 SPORT[udp2raw]=26000
find_peers() {
    local spec name path
    IFS=, read -r -a specs <<<"${PEERS-phantun,udp2raw}"
    for spec in "${specs[@]}"; do
        [ -n "$spec" ] || continue
        name=${spec%%=*}
        path=""
        [[ "$spec" == *=* ]] && path=${spec#*=}
        case "$name" in
        phantun)
            [ -n "$path" ] || path="$REPO/../shared/peers/phantun"
            if [ -x "$path/client" ] && [ -x "$path/server" ]; then PEER_BIN[phantun]=$(readlink -f "$path"); else
                say "SKIP peer phantun: no executable client and server in $path (PEERS=phantun=DIR to name one)"
                result peer_skipped "\"peer\":\"phantun\",\"why\":\"not found in $path\"" '{}'
                continue
            fi ;;
        udp2raw)
            [ -n "$path" ] || path="$REPO/../shared/peers/udp2raw"
            [ -d "$path" ] && path="$path/udp2raw"
            if [ -x "$path" ] && command -v iptables >/dev/null; then PEER_BIN[udp2raw]=$(readlink -f "$path"); else
                say "SKIP peer udp2raw: $path is not an executable, or iptables is missing (PEERS=udp2raw=BINARY)"
                result peer_skipped "\"peer\":\"udp2raw\",\"why\":\"not found at $path (or no iptables)\"" '{}'
                continue
            fi ;;
        *)
            say "SKIP peer $name: unknown (this bench knows phantun and udp2raw)"
            result peer_skipped "\"peer\":\"$name\",\"why\":\"unknown peer\"" '{}'
            continue ;;
        esac
        PEER_LIST+=("$name")
        BED[$name]=strict
        TARGET[$name]=${PEER_LOCAL[$name]}
    done
}

# start_peer NAME REMOTE [LOGSUFFIX [ENV...]]: the peer's server (forwarding to
# REMOTE in the server ns) and client, PIDs in SPID/CPID. ENV (VAR=value) is put
# before each binary (the allocation shim).
start_peer() {
    local name=$1 remote=$2 sfx=${3:-} envs=("${@:4}") pid
    case "$name" in
    phantun)
        bg BGPID "$NS_S" "phantun-server$sfx" env RUST_LOG=warn "${envs[@]}" "${PEER_BIN[phantun]}/server" \
            --local "${PEER_PORT[phantun]}" --remote "$remote" --tun "ptts$SUF" \
            --tun-local 192.168.211.1 --tun-peer 192.168.211.2 -4
        SPID[phantun]=$BGPID
        bg BGPID "$NS_C" "phantun-client$sfx" env RUST_LOG=warn "${envs[@]}" "${PEER_BIN[phantun]}/client" \
            --local "${PEER_LOCAL[phantun]}" --remote "$S_IP4:${PEER_PORT[phantun]}" --tun "pttc$SUF" \
            --tun-local 192.168.210.1 --tun-peer 192.168.210.2 -4
        CPID[phantun]=$BGPID
        wait_for 5 ip -n "$NS_S" link show "ptts$SUF" >/dev/null 2>&1
        wait_for 5 ip -n "$NS_C" link show "pttc$SUF" >/dev/null 2>&1 ;;
    udp2raw)
        local common=(--raw-mode faketcp --cipher-mode none --auth-mode none -k bench -a --log-level 2 --disable-color)
        bg BGPID "$NS_S" "udp2raw-server$sfx" env "${envs[@]}" "${PEER_BIN[udp2raw]}" -s \
            -l "0.0.0.0:${PEER_PORT[udp2raw]}" -r "$remote" "${common[@]}"
        SPID[udp2raw]=$BGPID
        bg BGPID "$NS_C" "udp2raw-client$sfx" env "${envs[@]}" "${PEER_BIN[udp2raw]}" -c \
            -l "${PEER_LOCAL[udp2raw]}" -r "$S_IP4:${PEER_PORT[udp2raw]}" "${common[@]}"
        CPID[udp2raw]=$BGPID
        sleep 0.5 ;;
    esac
}
stop_peer() {
    stop_pid "${CPID[$1]}" TERM 3
    stop_pid "${SPID[$1]}" TERM 3
    return 0
}
# peer_state NAME: why a peer may have stopped carrying, as far as the bench can see.
peer_state() {
    local n=$1 st=""
    alive "${CPID[$n]}" || st+="client process died; "
    alive "${SPID[$n]}" || st+="server process died; "
    echo "${st:-both processes alive}"
}
peer_alive() { alive "${CPID[$1]}" && alive "${SPID[$1]}"; }
# The liberal bed: conntrack's TCP window tracking off in all three namespaces. The
# router alone is not enough: the client namespace's masquerade tracks the flow too,
# and a segment it finds out of window (phantun never ACKs, so after about two
# 64 KiB windows every segment is) is INVALID there, so it skips the masquerade and
# leaves with the TUN's private source address, which the router then drops as
# INVALID (no connection): the drops show up in the router either way.
set_liberal() {
    local ns
    for ns in "$NS_C" "$NS_R" "$NS_S"; do ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal="$1"; done
}
# on_bed PATH CMD...: CMD with the router's conntrack as the path's bed wants it.
on_bed() {
    local p=$1
    shift
    [ "${BED[$p]:-strict}" = liberal ] && set_liberal 1
    "$@"
    local rc=$?
    [ "${BED[$p]:-strict}" = liberal ] && set_liberal 0
    return $rc
}
# A peer is measured on while it carries traffic; once it collapsed, later phases skip it.
usable() { [ -z "${DEAD[$1]:-}" ]; }
mark_dead() {  # mark_dead PATH PHASE WHY
    if [ -z "${DEAD[$1]:-}" ]; then
        DEAD[$1]="$2: $3"
        say "PEER $1 COLLAPSED in $2: $3 (left out of the later phases)"
        result collapse "\"path\":\"$1\",\"phase\":\"$2\",\"why\":\"$(jstr "$3")\"" '{}'
    fi
}

topo_up
find_peers
say "topology up (suffix $SUF); $(nproc) CPUs, load $(loadavg), probes ${PROBE_S}s, $REPS repetitions, $GEN_THREADS sender and $SINK_THREADS sink threads," \
    "peers: ${PEER_LIST[*]:-none}${BENCH_CLI_ARGS:+, CLI flags: $BENCH_CLI_ARGS}${BENCH_GEN_ARGS:+, generator flags: $BENCH_GEN_ARGS}"

step "start the sink and the tunnels"
bg SINK "$NS_S" sink "$UDPGEN" sink --bind 0.0.0.0:7000 --ctl "$CTL" --ready "$WORK/sink.ready" --threads "$SINK_THREADS"
wait_for 5 test -e "$WORK/sink.ready" || fail "the sink did not start"
start_server SRV server --remote 127.0.0.1:7000 "${CLI_ARGS[@]}"
start_client CLI client --local "$TUNNEL_TARGET" --remote "$S_IP4:$PUB_PORT" "${CLI_ARGS[@]}"
CPID[tunnel]=$CLI SPID[tunnel]=$SRV
# The peers' public ports reach their servers: phantun's through DNAT to its TUN peer
# (as faketcp's), udp2raw's raw socket on the server's own address.
ip netns exec "$NS_S" nft add rule inet ftc pre iifname "$V_S" ip daddr "$S_IP4" tcp dport "${PEER_PORT[phantun]}" \
    dnat ip to 192.168.211.2 || fail "DNAT for phantun"
for n in "${PEER_LIST[@]}"; do start_peer "$n" 127.0.0.1:7000; done
busy0=$(host_busy_pct)
load0=$(loadavg)
say "host CPU busy before any traffic: $busy0 % (of $(nproc) CPUs), load $load0"
# One echo each way proves both paths before any timing.
out=$(gen 10 ping --target "${TARGET[direct]}" --count 5 --warmup 1 --sport-base 20999) || fail "direct ping: $out"
[ "$(jnum lost "$out")" = 0 ] || fail "the direct path loses pings: $out"
out=$(gen 15 ping --target "$TUNNEL_TARGET" --count 5 --warmup 3 --timeout-ms 3000 --sport-base 20998) \
    || fail "tunnel ping: $out"
[ "$(jnum lost "$out")" = 0 ] || fail "the tunnel loses pings: $out"

# Every tunnel flow the bench measures is opened first and given 1.3 s of light
# traffic, so the knee search measures steady state, not connection start-up.
# (Before the server sent a pure ACK on accept, the router's strict conntrack let a
# new flow send only 64 KiB past the unscaled SYN-ACK window for its first second;
# priming also keeps the bench honest on builds without that fix.) The total stays
# under 64 KiB per flow.
prime_path() {  # prime_path PATH SPORT_BASE FLOWS
    gen 15 send --target "${TARGET[$1]}" --size 64 --rate $((100 * $3)) --duration 1.3 --flows "$3" \
        --sport-base "$2" --quiet >/dev/null
}
prime_tunnel() { prime_path tunnel "$@" || fail "priming tunnel flows $1+$2"; }

# Bed check of each peer: 1 s at 2 kpps of 1400 B on one primed flow, strict router;
# a peer that loses it there gets the liberal router (and the same check again).
bed_probe() {  # bed_probe PATH: the send's JSON in BED_OUT, the INVALID drops meanwhile in BED_INV
    local p=$1 i0
    i0=$(router_invalid_drops)
    BED_OUT=$(gen 20 send --target "${TARGET[$p]}" --size 1400 --rate 2000 --duration 1 --warm-s 0.1 \
        --sport-base "$((SPORT[$p] + 900))" --sink-ctl "$CTL" --quiet) || BED_OUT='{"loss_pct":100}'
    BED_INV=$(($(router_invalid_drops) - i0))
}
for n in "${PEER_LIST[@]}"; do
    step "bed check: $n"
    prime_path "$n" "$((SPORT[$n] + 900))" 1 || true
    out=$(gen 15 ping --target "${TARGET[$n]}" --count 5 --warmup 3 --timeout-ms 3000 --sport-base "$((SPORT[$n] + 950))") \
        || out='{"lost":5}'
    if [ "$(jnum lost "$out")" = 5 ] || ! peer_alive "$n"; then
        mark_dead "$n" start "no echo through it at all ($(peer_state "$n")); log: $(tail -n 2 "$WORK/$n-client.log" "$WORK/$n-server.log" 2>/dev/null | tr '\n' ' ' | cut -c1-300)"
        continue
    fi
    bed_probe "$n"
    out=$BED_OUT
    sl=$(jnum loss_pct "$out")
    result bed "\"path\":\"$n\",\"bed\":\"strict\",\"invalid_drops\":$BED_INV" "$out"
    say "bed check $n, strict conntrack: loss $sl %, INVALID drops $BED_INV"
    if awk -v l="$sl" 'BEGIN{exit !(l >= 1)}'; then
        BED[$n]=liberal
        on_bed "$n" bed_probe "$n"
        out=$BED_OUT
        result bed "\"path\":\"$n\",\"bed\":\"liberal\",\"invalid_drops\":$BED_INV" "$out"
        say "bed check $n, liberal conntrack: loss $(jnum loss_pct "$out") %, INVALID drops $BED_INV"
    fi
done

step "prime the tunnel flows"
prime_tunnel 22000 16 &
p1=$!
prime_tunnel 23000 1 &
p2=$!
wait "$p1" || fail "priming the knee flows"
wait "$p2" || fail "priming the RTT flow"
for n in "${PEER_LIST[@]}"; do
    usable "$n" || continue
    on_bed "$n" prime_path "$n" "${SPORT[$n]}" 16 || true
    on_bed "$n" prime_path "$n" "$((SPORT[$n] + 100))" 1 || true
done
inv0=$(router_invalid_drops)

# --- 1. knees -----------------------------------------------------------------------
# knee_search PATH SIZE FLOWS LABEL [HINT] [EXTRA KIND FIELDS]: one knee search, its
# result recorded; the knee in pps goes to KNEE.
knee_search() {
    local path=$1 size=$2 flows=$3 label=$4 hint=${5:-} extra=${6:-} out i0
    i0=$(router_invalid_drops)
    if ! out=$(on_bed "$path" gen 60 knee --target "${TARGET[$path]}" --size "$size" --flows "$flows" --sport-base "${SPORT[$path]}" \
        --threads "$GEN_THREADS" --sink-ctl "$CTL" --probe-s "$PROBE_S" ${hint:+--hint "$hint"} --label "$label" \
        "${GEN_ARGS[@]}"); then
        case "$path" in direct | tunnel) fail "knee $label: $(tail -n 3 "$WORK/gen.log")" ;; esac
        out='{"knee_pps":0,"size":'$size',"flows":'$flows',"probes":[]}'
    fi
    result knee "\"path\":\"$path\",\"rep\":${rep:-0},\"bed\":\"${BED[$path]:-strict}\",\"invalid_drops\":$(($(router_invalid_drops) - i0))$extra" "$out"
    KNEE=$(jnum knee_pps "$out")
}
step "knee search"
declare -A HINT
knee_start=$(date +%s)
PATHS=(direct tunnel "${PEER_LIST[@]}")
for ((rep = 1; rep <= REPS; rep++)); do
    if ((rep > 1 && $(date +%s) - knee_start > KNEE_BUDGET_S)); then
        say "knee phase over its ${KNEE_BUDGET_S}s budget: skipping repetitions $rep..$REPS"
        break
    fi
    # The order of the paths rotates each repetition.
    order=()
    for ((i = 0; i < ${#PATHS[@]}; i++)); do order+=("${PATHS[(i + rep - 1) % ${#PATHS[@]}]}"); done
    for flows in $FLOW_COUNTS; do
        for size in $SIZES; do
            for path in "${order[@]}"; do
                case "$path" in direct | tunnel) ;; *) [ "$size" = 1400 ] && usable "$path" || continue ;; esac
                key="$path-$size-$flows"
                i0=$(router_invalid_drops)
                knee_search "$path" "$size" "$flows" "$path/$size/$flows/rep$rep" "${HINT[$key]:-}"
                k=$KNEE
                say "knee $path ${size}B ${flows}fl rep$rep: $(awk -v k="$k" 'BEGIN{printf "%.1f kpps", k/1000}')" \
                    "(load $(loadavg))"
                # The next repetition starts from this knee (or from the ceiling if none passed).
                if awk -v k="$k" 'BEGIN{exit !(k > 0)}'; then HINT[$key]=$k; fi
                case "$path" in
                direct | tunnel) check_alive "$SINK" "$SRV" "$CLI" ;;
                *)
                    if ! awk -v k="$k" 'BEGIN{exit !(k > 0)}' || ! peer_alive "$path"; then
                        # Does it still carry anything? A slow probe on the same flows says.
                        after=$(on_bed "$path" gen 20 send --target "${TARGET[$path]}" --size 1400 --rate 500 --duration 1 \
                            --sport-base "${SPORT[$path]}" --flows "$flows" --sink-ctl "$CTL" --quiet) || after='{"loss_pct":100}'
                        mark_dead "$path" "knee ${size}B ${flows}fl rep$rep" \
                            "knee 0 on the ${BED[$path]} router; INVALID drops during the search: $(($(router_invalid_drops) - i0)); $(peer_state "$path"); a 500 pps probe on the same flows afterwards lost $(jnum loss_pct "$after") %"
                    fi ;;
                esac
            done
        done
    done
done
result router "\"invalid_drops\":$(($(router_invalid_drops) - inv0))" '{}'

# Median knee (pps) of PATH SIZE FLOWS so far.
median_knee() {
    $PY - "$RES" "$1" "$2" "$3" <<'EOF'
import json, statistics, sys
res, path, size, flows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
v = []
for line in open(res):
    r = json.loads(line)
    if r["kind"] == "knee" and r["path"] == path and r["data"]["size"] == size and r["data"]["flows"] == flows:
        v.append(r["data"]["knee_pps"])
print(int(statistics.median(v)) if v else 0)
EOF
}

restart_tunnel() {  # restart_tunnel SUFFIX [FLAGS...]: a fresh client/server pair, named SUFFIX in the logs
    local remote=${TUNNEL_REMOTE:-127.0.0.1:7000}
    stop_pid "$CLI" TERM 5
    stop_pid "$SRV" TERM 5
    start_server SRV "server-$1" --remote "$remote" "${CLI_ARGS[@]}" "${@:2}"
    start_client CLI "client-$1" --local "$TUNNEL_TARGET" --remote "$S_IP4:$PUB_PORT" "${CLI_ARGS[@]}" "${@:2}"
    CPID[tunnel]=$CLI SPID[tunnel]=$SRV
}

# --- 1b. scaling with queues ---------------------------------------------------------
if ! skipped scale-queues; then
    step "knee with --queues 1..$(nproc)"
    hint=$(median_knee tunnel 1400 16)
    for ((q = 1; q <= $(nproc); q++)); do
        restart_tunnel "q$q" --queues "$q"
        prime_tunnel 22000 16
        knee_search tunnel 1400 16 "tunnel-q$q/1400/16" "$hint" ",\"queues\":$q,\"scale\":true"
        k=$KNEE
        say "knee --queues $q 1400B 16fl: $(awk -v k="$k" 'BEGIN{printf "%.1f kpps", k/1000}') (load $(loadavg))"
    done
    restart_tunnel main
    prime_tunnel 22000 16
    prime_tunnel 23000 1
fi

# --- 2. RTT -------------------------------------------------------------------------
if ! skipped rtt; then
    step "RTT"
    for ((rep = 1; rep <= 3; rep++)); do
        for path in direct tunnel "${PEER_LIST[@]}"; do
            usable "$path" || continue
            sp=23000
            [ "$path" = direct ] || [ "$path" = tunnel ] || sp=$((SPORT[$path] + 100))
            if ! out=$(on_bed "$path" gen 30 ping --target "${TARGET[$path]}" --count 2000 --size 64 --sport-base "$sp"); then
                case "$path" in direct | tunnel) fail "ping $path: $out" ;; esac
                mark_dead "$path" rtt "the ping run failed: $(peer_state "$path")"
                continue
            fi
            result rtt "\"path\":\"$path\",\"rep\":$rep" "$out"
            say "rtt $path rep$rep: p50 $(jnum p50_us "$out") us, p99 $(jnum p99_us "$out") us, lost $(jnum lost "$out")"
        done
    done
fi

# --- 3. CPU per datagram at a fixed rate below both knees ----------------------------
if ! skipped cpu; then
    step "CPU per datagram"
    for size in 64 1400; do
        kd=$(median_knee direct "$size" 1)
        kt=$(median_knee tunnel "$size" 1)
        rate=$(awk -v a="$kd" -v b="$kt" 'BEGIN{m = a < b ? a : b; r = int(m / 2); if (r < 1000) r = 1000; print r}')
        paths=(direct tunnel)
        [ "$size" = 1400 ] && paths+=("${PEER_LIST[@]}")
        for ((rep = 1; rep <= 3; rep++)); do
            for path in "${paths[@]}"; do
                usable "$path" || continue
                r=$rate
                case "$path" in direct | tunnel) pids="$CLI,$SRV,$SINK" ;; *)
                    pids="${CPID[$path]},${SPID[$path]},$SINK"
                    kp=$(median_knee "$path" 1400 1)
                    r=$(awk -v a="$rate" -v k="$kp" 'BEGIN{r = int(k / 2); if (r > a) r = a; if (r < 1000) r = 1000; print r}') ;;
                esac
                if ! out=$(on_bed "$path" gen 30 send --target "${TARGET[$path]}" --size "$size" --rate "$r" --duration 1.5 --warm-s 0.2 \
                    --sport-base "${SPORT[$path]}" --sink-ctl "$CTL" --cpu-pids "$pids" --quiet "${GEN_ARGS[@]}"); then
                    case "$path" in direct | tunnel) fail "cpu $path: $out" ;; esac
                    mark_dead "$path" cpu "the send failed ($(peer_state "$path"))"
                    continue
                fi
                cp=${CPID[$path]:-$CLI} spp=${SPID[$path]:-$SRV}
                result cpu "\"path\":\"$path\",\"rep\":$rep,\"client_pid\":$cp,\"server_pid\":$spp,\"sink_pid\":$SINK" "$out"
                say "cpu $path ${size}B at $r pps rep$rep: client $(jnum "cpu_us_per_dgram_$cp" "$out") us," \
                    "server $(jnum "cpu_us_per_dgram_$spp" "$out") us, generator $(jnum self_cpu_us_per_dgram "$out") us," \
                    "sink $(jnum "cpu_us_per_dgram_$SINK" "$out") us, machine $(jnum machine_cpu_us_per_dgram "$out") us," \
                    "loss $(jnum loss_pct "$out") %"
            done
        done
    done
fi

# --- 4. WireGuard: TCP over wireguard-go over each path --------------------------------
# largest_payload PATH: the largest UDP payload (bytes, 1200..1472) that crosses PATH
# and comes back from the sink (3 echoed datagrams per size, one lost is fine); 0 when
# not even 1200 B does. Needs the paths to forward to the sink.
largest_payload() {
    local path=$1 lo=1199 hi=1473 mid out
    while ((hi - lo > 1)); do
        mid=$(((lo + hi) / 2))
        out=$(on_bed "$path" gen 10 ping --target "${TARGET[$path]}" --size "$mid" --count 3 --warmup 0 \
            --timeout-ms 400) || out='{"lost":3}'
        if [ "$(jnum lost "$out")" -lt 3 ]; then lo=$mid; else hi=$mid; fi
    done
    echo $((lo < 1200 ? 0 : lo))
}
# Each path runs WireGuard at the MTU a user of that tool would set: WireGuard's default
# (1420) where it fits, else the largest whose packets (MTU + 32) the path carries
# (measured while the paths still forward to the sink).
declare -A WG_MTU
probe_wg_mtus() {
    local path payload
    for path in "${PATHS[@]}"; do
        usable "$path" || continue
        payload=$(largest_payload "$path")
        WG_MTU[$path]=$((payload - 32 < 1420 ? payload - 32 : 1420))
        ((payload > 0)) || WG_MTU[$path]=0
        result wg_mtu "\"path\":\"$path\",\"largest_payload\":$payload,\"mtu\":${WG_MTU[$path]}" '{}'
        say "largest datagram over $path: $payload B -> WireGuard MTU ${WG_MTU[$path]}"
    done
}
wg_phase() {
    command -v wireguard-go >/dev/null && command -v wg >/dev/null && command -v iperf3 >/dev/null || {
        say "SKIP WireGuard workload: needs wireguard-go, wg and iperf3 (make deps)"
        result wg_skipped "\"why\":\"wireguard-go, wg or iperf3 missing\"" '{}'
        return 0
    }
    local WG_C=ftwc$SUF WG_S=ftws$SUF side ns ifc pid
    for side in c s; do
        if [ $side = c ]; then ns=$NS_C ifc=$WG_C; else ns=$NS_S ifc=$WG_S; fi
        defer "rm -f /var/run/wireguard/$ifc.sock"
        _track sock "/var/run/wireguard/$ifc.sock"
        bg BGPID "$ns" "wg-$side" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go -f "$ifc"
        if ! wait_for 5 test -S "/var/run/wireguard/$ifc.sock"; then
            say "SKIP WireGuard workload: wireguard-go did not start ($(tail -n 2 "$WORK/wg-$side.log" | tr '\n' ' '))"
            result wg_skipped "\"why\":\"wireguard-go did not start\"" '{}'
            return 0
        fi
        (umask 077 && wg genkey >"$WORK/wgkey-$side")
        wg pubkey <"$WORK/wgkey-$side" >"$WORK/wgpub-$side"
    done
    ip netns exec "$NS_S" wg set "$WG_S" private-key "$WORK/wgkey-s" listen-port 51820 \
        peer "$(cat "$WORK/wgpub-c")" allowed-ips 10.99.0.1/32 || fail "wg set (server)"
    ip netns exec "$NS_C" wg set "$WG_C" private-key "$WORK/wgkey-c" listen-port 51821 \
        peer "$(cat "$WORK/wgpub-s")" allowed-ips 10.99.0.2/32 endpoint "${TARGET[direct]%:*}:51820" || fail "wg set (client)"
    ip -n "$NS_S" addr add 10.99.0.2/24 dev "$WG_S"
    ip -n "$NS_C" addr add 10.99.0.1/24 dev "$WG_C"
    ip -n "$NS_S" link set "$WG_S" mtu 1420 up
    ip -n "$NS_C" link set "$WG_C" mtu 1420 up
    bg BGPID "$NS_S" iperf3-server iperf3 -s -B 10.99.0.2 -p 5201
    sleep 0.3
    local path ep out mbit
    for ((rep = 1; rep <= WG_REPS; rep++)); do
        local order=()
        for ((i = 0; i < ${#PATHS[@]}; i++)); do order+=("${PATHS[(i + rep - 1) % ${#PATHS[@]}]}"); done
        for path in "${order[@]}"; do
            usable "$path" || continue
            case "$path" in direct) ep="$S_IP4:51820" ;; *) ep=${TARGET[$path]} ;; esac
            if [ "${WG_MTU[$path]:-0}" = 0 ]; then
                result wg "\"path\":\"$path\",\"rep\":$rep,\"bed\":\"${BED[$path]:-strict}\",\"mbit\":0,\"why\":\"no 1200 B datagram crossed the path\"" '{}'
                continue
            fi
            ip netns exec "$NS_C" wg set "$WG_C" peer "$(cat "$WORK/wgpub-s")" endpoint "$ep"
            ip -n "$NS_C" link set "$WG_C" mtu "${WG_MTU[$path]}"
            ip -n "$NS_S" link set "$WG_S" mtu "${WG_MTU[$path]}"
            # A handshake over the new path first (the server roams to it with the first packet).
            udp "$NS_C" ping --host 10.99.0.2 --count 3 --wait 2 --min-ok 1 >/dev/null 2>&1
            out=$(on_bed "$path" timeout 20 ip netns exec "$NS_C" iperf3 -c 10.99.0.2 -p 5201 -t "$WG_SECS" -O 0.5 -J 2>&1)
            mbit=$($PY -c 'import json,sys
try:
    d = json.loads(sys.stdin.read()); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"] / 1e6))
except Exception:
    print("0")' <<<"$out")
            why=""
            awk -v m="$mbit" 'BEGIN{exit !(m == 0)}' && why=$($PY -c 'import json,sys
try:
    d = json.loads(sys.stdin.read())
    print(d.get("error") or "iperf3 ran but no data arrived")
except Exception as e:
    print("iperf3 printed no JSON")' <<<"$out")
            result wg "\"path\":\"$path\",\"rep\":$rep,\"bed\":\"${BED[$path]:-strict}\",\"mbit\":$mbit,\"why\":\"$(jstr "$why")\"" '{}'
            say "wireguard over $path rep$rep: $mbit Mbit/s${why:+ ($why)} (load $(loadavg))"
        done
    done
}
if ! skipped wg; then
    step "WireGuard workload"
    probe_wg_mtus
    # The tunnels' servers forward to the wg port instead of the sink.
    TUNNEL_REMOTE=127.0.0.1:51820 restart_tunnel wg
    prime_tunnel 22000 1
    for n in "${PEER_LIST[@]}"; do
        usable "$n" || continue
        stop_peer "$n"
        start_peer "$n" 127.0.0.1:51820 -wg
    done
    wg_phase
    restart_tunnel after-wg
    for n in "${PEER_LIST[@]}"; do
        usable "$n" || continue
        stop_peer "$n"
        start_peer "$n" 127.0.0.1:7000 -after-wg
    done
fi

# --- 5. idle: 100 connected, silent flows ------------------------------------------------
if ! skipped idle; then
    step "idle CPU: 100 silent flows for ${IDLE_S}s"
    ipaths=(tunnel)
    for n in "${PEER_LIST[@]}"; do usable "$n" && ipaths+=("$n"); done
    hold_pids=()
    for path in "${ipaths[@]}"; do
        # 100 flows opened (each echoed once), then held open without traffic.
        gen $((IDLE_S + 60)) flows --target "${TARGET[$path]}" --flows 100 --size 64 --window 100 --timeout-s 20 \
            --hold-s "$((IDLE_S + 8))" >"$WORK/idle-flows.$path" &
        hold_pids+=($!)
    done
    sleep 5  # the flows are up (handshakes, first echoes) and the stacks settled
    declare -A T0
    for path in "${ipaths[@]}"; do T0[$path]="$(cpu_ticks "${CPID[$path]}") $(cpu_ticks "${SPID[$path]}")"; done
    sleep "$IDLE_S"
    hz=$(getconf CLK_TCK)
    for path in "${ipaths[@]}"; do
        read -r c0 s0 <<<"${T0[$path]}"
        c1=$(cpu_ticks "${CPID[$path]}") s1=$(cpu_ticks "${SPID[$path]}")
        if [ -z "$c1" ] || [ -z "$s1" ]; then mark_dead "$path" idle "$(peer_state "$path")"; continue; fi
        cpct=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v s="$IDLE_S" 'BEGIN{printf "%.3f", 100 * (b - a) / hz / s}')
        spct=$(awk -v a="$s0" -v b="$s1" -v hz="$hz" -v s="$IDLE_S" 'BEGIN{printf "%.3f", 100 * (b - a) / hz / s}')
        result idle "\"path\":\"$path\",\"secs\":$IDLE_S,\"client_pct\":$cpct,\"server_pct\":$spct" '{}'
        say "idle $path: client $cpct %, server $spct % of one core over ${IDLE_S}s"
    done
    for pid in "${hold_pids[@]}"; do wait "$pid"; done
    for path in "${ipaths[@]}"; do
        result idle_flows "\"path\":\"$path\"" "$(cat "$WORK/idle-flows.$path" 2>/dev/null || echo '{}')"
    done
fi

# --- 6. allocations per datagram -------------------------------------------------------
snap() {  # snap N PIDS...: wait for dump number N of each process
    local n=$1
    shift
    kill -USR2 "$@" 2>/dev/null
    wait_for 3 _dumps "$n" "$@"
}
_dumps() {
    local n=$1 pid
    shift
    for pid in "$@"; do
        [ -f "$WORK/alloc.$pid" ] && [ "$(wc -l <"$WORK/alloc.$pid")" -ge "$n" ] || return 1
    done
}
alloc_fields() {  # alloc_fields FILE: the two dumps' total allocation calls, "a b"
    awk '{ n = 0; for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] != "free" && kv[1] != "bytes") n += kv[2] } printf "%s ", n }' "$1"
}
# alloc_run PATH C S: the warm-up, the two dumps around a fixed echoed count. 1 when no dump came.
alloc_run() {
    local path=$1 c=$2 s=$3 out c0 c1 s0 s1 kt arate acount
    on_bed "$path" prime_path "$path" "$((SPORT[$path] + 2000))" 16 || true
    kt=$(median_knee tunnel 512 16)
    arate=$(awk -v k="$kt" 'BEGIN{r = int(k / 2); if (r > 40000) r = 40000; if (r < 2000) r = 2000; print r}')
    if [ "$path" != tunnel ]; then
        kp=$(median_knee "$path" 1400 16)
        arate=$(awk -v a="$arate" -v k="$kp" 'BEGIN{r = int(k / 2); if (r > a) r = a; if (r < 1000) r = 1000; print r}')
    fi
    acount=$((arate * 2))
    # Warm-up: the 16 flows' handshakes and every buffer's first use (echoed, so both directions).
    out=$(on_bed "$path" gen 30 send --target "${TARGET[$path]}" --size 512 --flows 16 --sport-base "$((SPORT[$path] + 2000))" \
        --rate "$arate" --count "$((acount / 4))" --echo --sink-ctl "$CTL" --quiet) || return 2
    sleep 0.3
    snap 1 "$c" "$s" || return 1
    out=$(on_bed "$path" gen 30 send --target "${TARGET[$path]}" --size 512 --flows 16 --sport-base "$((SPORT[$path] + 2000))" \
        --rate "$arate" --count "$acount" --echo --sink-ctl "$CTL" --quiet) || return 2
    sleep 0.3  # the echoes' way back
    snap 2 "$c" "$s" || return 1
    read -r c0 c1 <<<"$(alloc_fields "$WORK/alloc.$c")"
    read -r s0 s1 <<<"$(alloc_fields "$WORK/alloc.$s")"
    result alloc "\"path\":\"$path\",\"client_allocs\":$((c1 - c0)),\"server_allocs\":$((s1 - s0)),\"client_allocs_before\":$c0,\"server_allocs_before\":$s0,\"rate\":$arate" "$out"
    say "allocs $path over $(jnum received "$out") datagrams (512 B, 16 flows, echoed): client $((c1 - c0)), server $((s1 - s0))"
}
if ! skipped alloc; then
    step "allocations per datagram (LD_PRELOAD counting shim)"
    cat >"$WORK/faketcp-alloc" <<EOF
#!/bin/sh
ALLOCCOUNT_FILE="$WORK/alloc" LD_PRELOAD="$SHIM" exec "$FAKETCP_REAL" "\$@"
EOF
    chmod +x "$WORK/faketcp-alloc"
    FAKETCP="$WORK/faketcp-alloc"
    restart_tunnel alloc
    FAKETCP=$FAKETCP_REAL
    alloc_run tunnel "$CLI" "$SRV" || fail "no allocation counts from the shim (alloc.$CLI / alloc.$SRV)"
    for n in "${PEER_LIST[@]}"; do
        usable "$n" || continue
        stop_peer "$n"
        start_peer "$n" 127.0.0.1:7000 -alloc "ALLOCCOUNT_FILE=$WORK/alloc" "LD_PRELOAD=$SHIM"
        alloc_run "$n" "${CPID[$n]}" "${SPID[$n]}"
        case $? in
        0) ;;
        1) say "allocs $n: the shim gave no counts (it needs a dynamically linked glibc malloc and SIGUSR2 left alone)"
           result alloc_skipped "\"path\":\"$n\",\"why\":\"no counts from the LD_PRELOAD shim\"" '{}' ;;
        *) mark_dead "$n" alloc "the send failed ($(peer_state "$n"))" ;;
        esac
    done
fi

# --- 7. scale: 10 000 flows ------------------------------------------------------------
if ! skipped scale; then
    step "scale: $SCALE_FLOWS flows"
    restart_tunnel scale --stats-interval 1
    sleep 0.5
    rc0=$(rss_kib "$CLI") rs0=$(rss_kib "$SRV")
    out=$(gen 120 flows --target "$TUNNEL_TARGET" --flows "$SCALE_FLOWS" --size 64 --window 256 --timeout-s 90) \
        || fail "flows: $out"
    sleep 1.5  # one more stats dump
    rc1=$(rss_kib "$CLI") rs1=$(rss_kib "$SRV")
    hc=$(hwm_kib "$CLI") hs=$(hwm_kib "$SRV")
    open_s=$(stat_value "$WORK/server-scale.log" open_connections)
    open_c=$(stat_value "$WORK/client-scale.log" open_connections)
    result scale "\"rss_client_before_kib\":$rc0,\"rss_client_after_kib\":$rc1,\"rss_server_before_kib\":$rs0,\"rss_server_after_kib\":$rs1,\"hwm_client_kib\":$hc,\"hwm_server_kib\":$hs,\"open_server\":${open_s:-0},\"open_client\":${open_c:-0}" "$out"
    say "scale: $(jnum established "$out")/$SCALE_FLOWS flows in $(jnum secs "$out") s ($(jnum flows_per_s "$out")/s);" \
        "RSS client ${rc0}->${rc1} KiB, server ${rs0}->${rs1} KiB; open: client ${open_c:-?} server ${open_s:-?}"
fi

for n in "${PEER_LIST[@]}"; do
    result peer "\"path\":\"$n\",\"bin\":\"${PEER_BIN[$n]}\",\"bed\":\"${BED[$n]}\",\"collapsed\":\"$(jstr "${DEAD[$n]:-}")\"" '{}'
done
busy1=$(host_busy_pct)
result host "\"busy_before_pct\":$busy0,\"busy_after_pct\":$busy1,\"load_before\":\"$load0\",\"load_after\":\"$(loadavg)\",\"date\":\"$(date -u +%Y-%m-%dT%H:%MZ)\",\"cpus\":$(nproc),\"gen_threads\":$GEN_THREADS,\"sink_threads\":$SINK_THREADS,\"cli_args\":\"${BENCH_CLI_ARGS:-}\",\"gen_args\":\"${BENCH_GEN_ARGS:-}\"" '{}'

step "summary"
$PY "$BENCH_DIR/summarize.py" "$RES" "$(elapsed)" || fail "summarize.py failed"
cp "$RES" "${BENCH_KEEP_RESULTS:-/dev/null}" 2>/dev/null || true
exit 0
