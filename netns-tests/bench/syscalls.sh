#!/usr/bin/env bash
# netns-tests/bench/syscalls.sh — system calls (and optionally a CPU profile) per
# datagram of the faketcp client and server at one fixed rate, in the bench topology.
#
#   bash netns-tests/bench/syscalls.sh build/faketcp [build/udpgen]
#
# udpgen sends SC_SIZE-byte datagrams at SC_RATE pps through the tunnel for
# SC_SECONDS (echoed back by the sink with SC_ECHO=1, so both directions cross
# it); meanwhile `perf stat -e 'syscalls:sys_enter_*'` counts each process's
# system calls. Prints one line per process and system call, per datagram sent
# by udpgen, then one JSON line. A measuring tool, not a test: it asserts nothing.
#
# Knobs (environment):
#   SC_RATE (20000)  SC_SIZE (1400)  SC_SECONDS (3)  SC_FLOWS (1)  SC_ECHO (0)
#   SC_ARGS          extra flags for both CLI processes, e.g. "--no-udp-offload --no-offload"
#   SC_PERF=1        also `perf record -g` both processes and print the top of
#                    `perf report --no-children` (kernel and user symbols) for each
#   SC_PERF_TOP (40) lines of each report
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$BENCH_DIR/../lib.sh" "${1:-}"
UDPGEN=$(readlink -f "${2:-$BENCH_DIR/../../build/udpgen}")
need_root
need_binary
[ -x "$UDPGEN" ] || fail "$UDPGEN is not an executable (make build/udpgen)"
command -v perf >/dev/null || skip "needs perf (apt-get install -y --no-install-recommends linux-perf)"

RATE=${SC_RATE:-20000}
SIZE=${SC_SIZE:-1400}
SECS=${SC_SECONDS:-3}
FLOWS=${SC_FLOWS:-1}
read -r -a XARGS <<<"${SC_ARGS:-}"
CTL="$WORK/sink.ctl"
TARGET=127.0.0.1:5000

say() { echo "[syscalls $(elapsed)s] $*" >&2; }
gen() {
    local t=$1
    shift
    timeout -k 2 "$t" ip netns exec "$NS_C" "$UDPGEN" "$@" 2>>"$WORK/gen.log"
}
log_file "$WORK/gen.log"

topo_up
bg SINK "$NS_S" sink "$UDPGEN" sink --bind 0.0.0.0:7000 --ctl "$CTL" --ready "$WORK/sink.ready" --quiet
wait_for 5 test -e "$WORK/sink.ready" || fail "the sink did not start"
start_server SRV server --remote 127.0.0.1:7000 "${XARGS[@]}"
start_client CLI client --local "$TARGET" --remote "$S_IP4:$PUB_PORT" "${XARGS[@]}"
# Open and prime the measured flows (see bench.sh, prime_tunnel: strict conntrack
# holds a new flow to 64 KiB until the server's first ACK).
gen 15 send --target "$TARGET" --size 64 --rate $((100 * FLOWS)) --duration 1.3 --flows "$FLOWS" \
    --sport-base 22000 --echo --quiet >/dev/null || fail "priming the flows"

echo_flag=()
[ "${SC_ECHO:-0}" = 1 ] && echo_flag=(--echo)
# perf follows each process for the send's duration plus a margin for the echoes.
span=$(awk -v s="$SECS" 'BEGIN{print s + 0.3}')
perf stat -x, -e 'syscalls:sys_enter_*' -p "$CLI" -o "$WORK/stat.client" -- sleep "$span" &
p1=$!
perf stat -x, -e 'syscalls:sys_enter_*' -p "$SRV" -o "$WORK/stat.server" -- sleep "$span" &
p2=$!
# Calls that found nothing to do: reads and receives that returned EAGAIN.
eagain=()
for sc in read recvmmsg recvmsg recvfrom; do eagain+=(-e "syscalls:sys_exit_$sc" --filter 'ret == -11'); done
perf stat -x, "${eagain[@]}" -p "$CLI" -o "$WORK/eagain.client" -- sleep "$span" &
p5=$!
perf stat -x, "${eagain[@]}" -p "$SRV" -o "$WORK/eagain.server" -- sleep "$span" &
p6=$!
if [ "${SC_PERF:-0}" = 1 ]; then
    perf record -q -g -o "$WORK/perf.client" -p "$CLI" -- sleep "$span" 2>/dev/null &
    p3=$!
    perf record -q -g -o "$WORK/perf.server" -p "$SRV" -- sleep "$span" 2>/dev/null &
    p4=$!
fi
sleep 0.2  # perf attached
out=$(gen $((SECS + 20)) send --target "$TARGET" --size "$SIZE" --rate "$RATE" --duration "$SECS" \
    --flows "$FLOWS" --sport-base 22000 "${echo_flag[@]}" --sink-ctl "$CTL" --cpu-pids "$CLI,$SRV" --quiet) \
    || fail "send: $out"
wait "$p1" "$p2" "$p5" "$p6" ${p3:+"$p3"} ${p4:+"$p4"}
sent=$(sed -n 's/.*"sent":\([0-9]*\).*/\1/p' <<<"$out")
say "sent $sent, $(grep -o '"loss_pct":[0-9.]*' <<<"$out"), client $(grep -o "\"cpu_us_per_dgram_$CLI\":[0-9.]*" <<<"$out" | cut -d: -f2) us," \
    "server $(grep -o "\"cpu_us_per_dgram_$SRV\":[0-9.]*" <<<"$out" | cut -d: -f2) us of CPU per datagram"

# perf stat -x, lines: count,,event,... ("<not counted>" when idle).
per_dgram() {  # per_dgram ROLE FILE
    awk -F, -v role="$1" -v n="$sent" '
        $3 ~ /^syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ && $1 > 0 {
            name = substr($3, 20); total += $1
            printf "%-7s %-16s %10d  %7.3f per datagram\n", role, name, $1, $1 / n
        }
        END { printf "%-7s %-16s %10d  %7.3f per datagram\n", role, "TOTAL", total, total / n }' "$2" | sort -k1,1 -k3,3nr
}
per_dgram client "$WORK/stat.client"
per_dgram server "$WORK/stat.server"
eagain_lines() {  # eagain_lines ROLE FILE
    awk -F, -v role="$1" -v n="$sent" '$3 ~ /^syscalls:sys_exit_/ && $1 ~ /^[0-9]+$/ && $1 > 0 {
        printf "%-7s %-16s %10d  %7.3f per datagram returned EAGAIN\n", role, substr($3, 19), $1, $1 / n }' "$2"
}
eagain_lines client "$WORK/eagain.client"
eagain_lines server "$WORK/eagain.server"
tot() { awk -F, '$3 ~ /^syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ {t += $1} END {print t + 0}' "$1"; }
# What the offloads did: the exit stats of both (TUN offload line, UDP GSO/GRO counters).
stop_pid "$CLI" TERM 5
stop_pid "$SRV" TERM 5
for role in client server; do
    grep -o 'TUN offload: .*' "$WORK/$role.log" | tail -n 1 | sed "s/^/$role  /"
    grep -o 'UDP GSO: .*' "$WORK/$role.log" | tail -n 1 | sed "s/^/$role  /"
done
if [ "${SC_PERF:-0}" = 1 ]; then
    for role in client server; do
        echo "--- perf report: $role (self time, top ${SC_PERF_TOP:-40})"
        perf report -i "$WORK/perf.$role" --no-children --percent-limit 0.7 --stdio -g none 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -n "${SC_PERF_TOP:-40}"
    done
fi
echo "{\"rate\":$RATE,\"size\":$SIZE,\"flows\":$FLOWS,\"echo\":${SC_ECHO:-0},\"sent\":$sent,\"syscalls_per_dgram_client\":$(awk -v a="$(tot "$WORK/stat.client")" -v n="$sent" 'BEGIN{printf "%.3f", a/n}'),\"syscalls_per_dgram_server\":$(awk -v a="$(tot "$WORK/stat.server")" -v n="$sent" 'BEGIN{printf "%.3f", a/n}'),\"send\":$out}"
ok
