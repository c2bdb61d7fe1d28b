#!/usr/bin/env bash
# netns-tests/bench/bench.sh — the faketcp tunnel against plain UDP over the same
# namespaces, in one run (`sudo make bench`; about 4 minutes on 2 cores).
#
#   bash netns-tests/bench/bench.sh build/faketcp build/udpgen build/alloccount.so
#
# Topology: netns-tests/lib.sh's (client ns -- router ns with NAT and strict
# conntrack -- server ns). Two paths through it, measured alternately:
#   direct  udpgen (client ns) -> router -> udpgen sink on 10.77.2.2:7000 (server ns)
#   tunnel  udpgen -> faketcp client 127.0.0.1:5000 -> TUN -> router -> DNAT ->
#           TUN -> faketcp server -> the same sink on 127.0.0.1:7000
# What it measures (progress on stderr; stdout gets the table, then ONE JSON line):
#   1. knee: the highest offered rate with < 1 % loss, 64/512/1400-byte datagrams,
#      1 and 16 flows; BENCH_REPS repetitions (paths alternating: direct first, the
#      next repetition tunnel first), medians. udpgen knee (2 sender threads): each
#      probe is a 0.1 s warm-up plus BENCH_PROBE_S measured at a fixed rate, counted
#      by the sink after the path drained; a flat-out probe, then x1.3 up / halving
#      down to bracket, then bisection to 8 %; later repetitions start from the
#      previous knee. When the sender cannot offer more and nothing is lost (the
#      direct path: its whole kernel path runs in the sender's syscalls), the
#      "knee" is that rate, marked * in the table: a floor, so ratios are upper bounds.
#   2. RTT: 2000 sequential 64-byte ping-pongs, direct and tunnelled, 3 times each.
#   3. CPU us per datagram at half the lower 1-flow knee (64 and 1400 B): the
#      faketcp client and server (user+sys, all threads, /proc/PID/stat), the whole
#      path (generator + sink [+ client + server]) and the machine (/proc/stat).
#   4. allocations per datagram: the CLI restarted under build/alloccount.so
#      (LD_PRELOAD), counts dumped (SIGUSR2) after a warm-up and after a fixed count.
#   5. scale: 10 000 flows (distinct source ports) through a fresh client/server
#      pair: flows per second (handshake + first echo), RSS of each side.
# A benchmark, not a test: nothing here asserts on a number; it fails only when
# it cannot measure (a process died, the topology did not come up).
#
# Knobs (environment): BENCH_REPS (5; knees move a lot between runs on a shared VM),
# BENCH_PROBE_S (1.0 s per knee probe),
# BENCH_SCALE_FLOWS (10000), BENCH_KNEE_BUDGET_S (200: later repetitions are
# skipped once the knee phase has run this long), BENCH_SIZES ("64 512 1400"),
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

REPS=${BENCH_REPS:-5}
PROBE_S=${BENCH_PROBE_S:-1.0}
SCALE_FLOWS=${BENCH_SCALE_FLOWS:-10000}
KNEE_BUDGET_S=${BENCH_KNEE_BUDGET_S:-200}
SIZES=${BENCH_SIZES:-"64 512 1400"}
read -r -a CLI_ARGS <<<"${BENCH_CLI_ARGS:-}"
read -r -a GEN_ARGS <<<"${BENCH_GEN_ARGS:-}"
FLOW_COUNTS="1 16"
RES="$WORK/results.jsonl"
: >"$RES"
CTL="$WORK/sink.ctl"
DIRECT_TARGET="$S_IP4:7000"
TUNNEL_TARGET="127.0.0.1:5000"
FAKETCP_REAL=$FAKETCP

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
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
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

topo_up
say "topology up (suffix $SUF); $(nproc) CPUs, probes ${PROBE_S}s, $REPS repetitions" \
    "${BENCH_CLI_ARGS:+, CLI flags: $BENCH_CLI_ARGS}${BENCH_GEN_ARGS:+, generator flags: $BENCH_GEN_ARGS}"

step "start the sink and the tunnel"
bg SINK "$NS_S" sink "$UDPGEN" sink --bind 0.0.0.0:7000 --ctl "$CTL" --ready "$WORK/sink.ready"
wait_for 5 test -e "$WORK/sink.ready" || fail "the sink did not start"
start_server SRV server --remote 127.0.0.1:7000 "${CLI_ARGS[@]}"
start_client CLI client --local "$TUNNEL_TARGET" --remote "$S_IP4:$PUB_PORT" "${CLI_ARGS[@]}"
busy0=$(host_busy_pct)
say "host CPU busy before any traffic: $busy0 % (of $(nproc) CPUs)"
# One echo each way proves both paths before any timing.
out=$(gen 10 ping --target "$DIRECT_TARGET" --count 5 --warmup 1 --sport-base 20999) || fail "direct ping: $out"
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
prime_tunnel() {  # prime_tunnel SPORT_BASE FLOWS
    gen 15 send --target "$TUNNEL_TARGET" --size 64 --rate $((100 * $2)) --duration 1.3 --flows "$2" \
        --sport-base "$1" --quiet >/dev/null || fail "priming tunnel flows $1+$2"
}
step "prime the tunnel flows"
prime_tunnel 22000 16 &
p1=$!
prime_tunnel 23000 1 &
p2=$!
wait "$p1" || fail "priming the knee flows"
wait "$p2" || fail "priming the RTT flow"
inv0=$(router_invalid_drops)

# --- 1. knees -----------------------------------------------------------------------
step "knee search"
declare -A HINT
knee_start=$(date +%s)
for ((rep = 1; rep <= REPS; rep++)); do
    if ((rep > 1 && $(date +%s) - knee_start > KNEE_BUDGET_S)); then
        say "knee phase over its ${KNEE_BUDGET_S}s budget: skipping repetitions $rep..$REPS"
        break
    fi
    if ((rep % 2)); then order="direct tunnel"; else order="tunnel direct"; fi
    for flows in $FLOW_COUNTS; do
        for size in $SIZES; do
            for path in $order; do
                if [ "$path" = direct ]; then target=$DIRECT_TARGET sport=21000; else target=$TUNNEL_TARGET sport=22000; fi
                key="$path-$size-$flows"
                hint=${HINT[$key]:-}
                out=$(gen 60 knee --target "$target" --size "$size" --flows "$flows" --sport-base "$sport" \
                    --threads 2 --sink-ctl "$CTL" --probe-s "$PROBE_S" ${hint:+--hint "$hint"} --label "$path/$size/$flows/rep$rep" \
                    "${GEN_ARGS[@]}") \
                    || fail "knee $key rep $rep: $(tail -n 3 "$WORK/gen.log")"
                result knee "\"path\":\"$path\",\"rep\":$rep" "$out"
                k=$(jnum knee_pps "$out")
                say "knee $path ${size}B ${flows}fl rep$rep: $(awk -v k="$k" 'BEGIN{printf "%.1f kpps", k/1000}')" \
                    "($(grep -o '"probes":.*' <<<"$out" | grep -o '\[[0-9]' | wc -l) probes)"
                # The next repetition starts from this knee (or from the ceiling if none passed).
                if awk -v k="$k" 'BEGIN{exit !(k > 0)}'; then HINT[$key]=$k; fi
                check_alive "$SINK" "$SRV" "$CLI"
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

# --- 2. RTT -------------------------------------------------------------------------
step "RTT"
for ((rep = 1; rep <= 3; rep++)); do
    for path in direct tunnel; do
        if [ "$path" = direct ]; then target=$DIRECT_TARGET; else target=$TUNNEL_TARGET; fi
        out=$(gen 30 ping --target "$target" --count 2000 --size 64 --sport-base 23000) || fail "ping $path: $out"
        result rtt "\"path\":\"$path\",\"rep\":$rep" "$out"
        say "rtt $path rep$rep: p50 $(jnum p50_us "$out") us, p99 $(jnum p99_us "$out") us, lost $(jnum lost "$out")"
    done
done

# --- 3. CPU per datagram at a fixed rate below both knees ----------------------------
step "CPU per datagram"
for size in 64 1400; do
    kd=$(median_knee direct "$size" 1)
    kt=$(median_knee tunnel "$size" 1)
    rate=$(awk -v a="$kd" -v b="$kt" 'BEGIN{m = a < b ? a : b; r = int(m / 2); if (r < 1000) r = 1000; print r}')
    for ((rep = 1; rep <= 3; rep++)); do
        for path in direct tunnel; do
            if [ "$path" = direct ]; then target=$DIRECT_TARGET sport=21000; else target=$TUNNEL_TARGET sport=22000; fi
            out=$(gen 30 send --target "$target" --size "$size" --rate "$rate" --duration 1.5 --warm-s 0.2 \
                --sport-base "$sport" --sink-ctl "$CTL" --cpu-pids "$CLI,$SRV,$SINK" --quiet "${GEN_ARGS[@]}") \
                || fail "cpu $path: $out"
            result cpu "\"path\":\"$path\",\"rep\":$rep,\"client_pid\":$CLI,\"server_pid\":$SRV,\"sink_pid\":$SINK" "$out"
            say "cpu $path ${size}B at $rate pps rep$rep: client $(jnum "cpu_us_per_dgram_$CLI" "$out") us," \
                "server $(jnum "cpu_us_per_dgram_$SRV" "$out") us, generator $(jnum self_cpu_us_per_dgram "$out") us," \
                "sink $(jnum "cpu_us_per_dgram_$SINK" "$out") us, machine $(jnum machine_cpu_us_per_dgram "$out") us," \
                "loss $(jnum loss_pct "$out") %"
        done
    done
done

# --- 4. allocations per datagram -------------------------------------------------------
step "allocations per datagram (LD_PRELOAD counting shim)"
restart_tunnel() {  # restart_tunnel SUFFIX: a fresh client/server pair, named SUFFIX in the logs
    stop_pid "$CLI" TERM 5
    stop_pid "$SRV" TERM 5
    start_server SRV "server-$1" --remote 127.0.0.1:7000 "${CLI_ARGS[@]}" "${@:2}"
    start_client CLI "client-$1" --local "$TUNNEL_TARGET" --remote "$S_IP4:$PUB_PORT" "${CLI_ARGS[@]}" "${@:2}"
}
cat >"$WORK/faketcp-alloc" <<EOF
#!/bin/sh
ALLOCCOUNT_FILE="$WORK/alloc" LD_PRELOAD="$SHIM" exec "$FAKETCP_REAL" "\$@"
EOF
chmod +x "$WORK/faketcp-alloc"
FAKETCP="$WORK/faketcp-alloc"
restart_tunnel alloc
FAKETCP=$FAKETCP_REAL
prime_tunnel 24000 16
kt=$(median_knee tunnel 512 16)
arate=$(awk -v k="$kt" 'BEGIN{r = int(k / 2); if (r > 40000) r = 40000; if (r < 2000) r = 2000; print r}')
acount=$((arate * 2))
# Warm-up: the 16 flows' handshakes and every buffer's first use (echoed, so both directions).
out=$(gen 30 send --target "$TUNNEL_TARGET" --size 512 --flows 16 --sport-base 24000 --rate "$arate" \
    --count "$((acount / 4))" --echo --sink-ctl "$CTL" --quiet) || fail "alloc warm-up: $out"
sleep 0.3
snap() {  # snap N: wait for dump number N of both processes
    kill -USR2 "$CLI" "$SRV"
    wait_for 3 _dumps "$1" || fail "no allocation counts from the shim (alloc.$CLI / alloc.$SRV)"
}
_dumps() {
    [ -f "$WORK/alloc.$CLI" ] && [ -f "$WORK/alloc.$SRV" ] &&
        [ "$(wc -l <"$WORK/alloc.$CLI")" -ge "$1" ] && [ "$(wc -l <"$WORK/alloc.$SRV")" -ge "$1" ]
}
snap 1
out=$(gen 30 send --target "$TUNNEL_TARGET" --size 512 --flows 16 --sport-base 24000 --rate "$arate" \
    --count "$acount" --echo --sink-ctl "$CTL" --quiet) || fail "alloc run: $out"
sleep 0.3  # the echoes' way back
snap 2
alloc_fields() {  # alloc_fields FILE: the two dumps' total allocation calls, "a b"
    awk '{ n = 0; for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] != "free" && kv[1] != "bytes") n += kv[2] } printf "%s ", n }' "$1"
}
read -r c0 c1 <<<"$(alloc_fields "$WORK/alloc.$CLI")"
read -r s0 s1 <<<"$(alloc_fields "$WORK/alloc.$SRV")"
result alloc "\"client_allocs\":$((c1 - c0)),\"server_allocs\":$((s1 - s0)),\"client_allocs_before\":$c0,\"server_allocs_before\":$s0,\"rate\":$arate" "$out"
say "allocs over $(jnum received "$out") datagrams (512 B, 16 flows, echoed): client $((c1 - c0)), server $((s1 - s0))"

# --- 5. scale: 10 000 flows ------------------------------------------------------------
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

busy1=$(host_busy_pct)
result host "\"busy_before_pct\":$busy0,\"busy_after_pct\":$busy1,\"cpus\":$(nproc),\"cli_args\":\"${BENCH_CLI_ARGS:-}\",\"gen_args\":\"${BENCH_GEN_ARGS:-}\"" '{}'

step "summary"
$PY "$BENCH_DIR/summarize.py" "$RES" "$(elapsed)" || fail "summarize.py failed"
exit 0
