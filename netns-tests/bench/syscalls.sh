#!/usr/bin/env bash
# netns-tests/bench/syscalls.sh — system calls (and optionally a CPU profile) per
# datagram of the faketcp client and server at one fixed rate, in the bench topology.
#
#   bash netns-tests/bench/syscalls.sh build/faketcp [build/udpgen]
#
# udpgen sends SC_SIZE-byte datagrams at SC_RATE pps through the tunnel for
# SC_SECONDS (echoed back by the sink with SC_ECHO=1, so both directions cross
# it); meanwhile `perf stat -e 'syscalls:sys_enter_*'` counts each process's
# system calls, and a filtered sys_exit count those reads/receives that found
# nothing (EAGAIN). Prints one line per process and system call, per datagram
# udpgen sent, the offload counters of both processes, then one JSON line.
# A measuring tool, not a test: it asserts nothing.
#
# Knobs (environment):
#   SC_RATE (20000)  SC_SIZE (1400)  SC_SECONDS (3)  SC_FLOWS (1)  SC_ECHO (0)
#   SC_ARGS          extra flags for both CLI processes, e.g. "--no-udp-offload --no-offload"
#   SC_GEN_ARGS      extra flags for the udpgen send, e.g. "--gso" (UDP_SEGMENT runs)
#   SC_MODE          count (default): count system calls, whose tracepoints slow every
#                    call, so the CPU figures of that run are inflated;
#                    perf: `perf record -g` both processes instead and print the top of
#                    `perf report --no-children` (kernel and user symbols) for each;
#                    cpu: neither, for undisturbed CPU per datagram;
#                    rtt: no load at all: SC_RTT_REPS (5) x 2000 sequential 64-byte
#                    ping-pongs, direct and tunnelled alternately (as bench.sh's RTT
#                    phase, with more repetitions), and their medians
#   SC_PERF_TOP (40) lines of each report
#   SC_PERF_OUT=DIR  keep the perf data there (perf.client, perf.server) for perf report
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$BENCH_DIR/../lib.sh" "${1:-}"
UDPGEN=$(readlink -f "${2:-$BENCH_DIR/../../build/udpgen}")
need_root
need_binary
[ -x "$UDPGEN" ] || fail "$UDPGEN is not an executable (make build/udpgen)"
dep_present perf || skip "needs perf (Debian package linux-perf: sudo make deps DEPS=profile)"

RATE=${SC_RATE:-20000}
SIZE=${SC_SIZE:-1400}
SECS=${SC_SECONDS:-3}
FLOWS=${SC_FLOWS:-1}
read -r -a XARGS <<<"${SC_ARGS:-}"
read -r -a GARGS <<<"${SC_GEN_ARGS:-}"
MODE=${SC_MODE:-count}
case "$MODE" in count | perf | cpu | rtt) ;; *) fail "SC_MODE must be count, perf, cpu or rtt" ;; esac
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

if [ "$MODE" = rtt ]; then
    p50s=() p99s=()
    for ((rep = 1; rep <= ${SC_RTT_REPS:-5}; rep++)); do
        for path in direct tunnel; do
            target=$TARGET
            [ "$path" = direct ] && target="$S_IP4:7000"
            out=$(gen 30 ping --target "$target" --count 2000 --size 64 --sport-base 23000) || fail "ping $path: $out"
            p50=$(sed -n 's/.*"p50_us":\([0-9.]*\).*/\1/p' <<<"$out")
            p99=$(sed -n 's/.*"p99_us":\([0-9.]*\).*/\1/p' <<<"$out")
            echo "rtt $path rep$rep: p50 $p50 us, p99 $p99 us, lost $(sed -n 's/.*"lost":\([0-9]*\).*/\1/p' <<<"$out")"
            echo "$path $p50 $p99" >>"$WORK/rtt"
        done
    done
    awk '{ n[$1]++; p50[$1, n[$1]] = $2; p99[$1, n[$1]] = $3 }
        function med(arr, path, k,   v, i, j, t, m) {
            m = n[path]; for (i = 1; i <= m; i++) v[i] = arr[path, i]
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2 }
        END { d50 = med(p50, "direct"); t50 = med(p50, "tunnel"); d99 = med(p99, "direct"); t99 = med(p99, "tunnel")
              printf "rtt medians: direct p50 %.1f p99 %.1f us, tunnel p50 %.1f p99 %.1f us; added p50 %.1f p99 %.1f us\n",
                  d50, d99, t50, t99, t50 - d50, t99 - d99 }' "$WORK/rtt"
    ok
fi

echo_flag=()
[ "${SC_ECHO:-0}" = 1 ] && echo_flag=(--echo)
# perf follows each process for the send's duration plus a margin for the echoes.
# Counting system calls (tracepoints on every call) slows both processes down, so
# a profile (SC_MODE=perf) is taken in a run of its own without them.
span=$(awk -v s="$SECS" 'BEGIN{print s + 0.3}')
pids=()
if [ "$MODE" = perf ]; then
    for role in client server; do
        pid=$CLI
        [ "$role" = server ] && pid=$SRV
        perf record -q -g -o "$WORK/perf.$role" -p "$pid" -- sleep "$span" 2>/dev/null &
        pids+=($!)
    done
elif [ "$MODE" = count ]; then
    # Every call, and those that found nothing to do (EAGAIN reads and receives).
    eagain=()
    for sc in read recvmmsg recvmsg recvfrom; do eagain+=(-e "syscalls:sys_exit_$sc" --filter 'ret == -11'); done
    for role in client server; do
        pid=$CLI
        [ "$role" = server ] && pid=$SRV
        perf stat -x, -e 'syscalls:sys_enter_*' -p "$pid" -o "$WORK/stat.$role" -- sleep "$span" &
        pids+=($!)
        perf stat -x, "${eagain[@]}" -p "$pid" -o "$WORK/eagain.$role" -- sleep "$span" &
        pids+=($!)
    done
fi
sleep 0.2  # perf attached
out=$(gen $((SECS + 20)) send --target "$TARGET" --size "$SIZE" --rate "$RATE" --duration "$SECS" \
    --flows "$FLOWS" --sport-base 22000 "${echo_flag[@]}" "${GARGS[@]}" --sink-ctl "$CTL" --cpu-pids "$CLI,$SRV" --quiet) \
    || fail "send: $out"
[ ${#pids[@]} = 0 ] || wait "${pids[@]}"
sent=$(sed -n 's/.*"sent":\([0-9]*\).*/\1/p' <<<"$out")
say "sent $sent, $(grep -o '"loss_pct":[0-9.]*' <<<"$out"), CPU per datagram: client" \
    "$(grep -o "\"cpu_us_per_dgram_$CLI\":[0-9.]*" <<<"$out" | cut -d: -f2) us, server" \
    "$(grep -o "\"cpu_us_per_dgram_$SRV\":[0-9.]*" <<<"$out" | cut -d: -f2) us" \
    "$(case $MODE in perf) echo "(under perf record)" ;; count) echo "(inflated by syscall tracing)" ;; esac)"

# perf stat -x, lines: count,,event,... ("<not counted>" when idle).
per_dgram() {  # per_dgram ROLE FILE
    awk -F, -v role="$1" -v n="$sent" '
        $3 ~ /^syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ && $1 > 0 {
            name = substr($3, 20); total += $1
            printf "%-7s %-16s %10d  %7.3f per datagram\n", role, name, $1, $1 / n
        }
        END { printf "%-7s %-16s %10d  %7.3f per datagram\n", role, "TOTAL", total, total / n }' "$2" | sort -k1,1 -k3,3nr
}
eagain_lines() {  # eagain_lines ROLE FILE
    awk -F, -v role="$1" -v n="$sent" '$3 ~ /^syscalls:sys_exit_/ && $1 ~ /^[0-9]+$/ && $1 > 0 {
        printf "%-7s %-16s %10d  %7.3f per datagram returned EAGAIN\n", role, substr($3, 19), $1, $1 / n }' "$2"
}
tot() { awk -F, '$3 ~ /^syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ {t += $1} END {print t + 0}' "$1"; }
if [ "$MODE" = count ]; then
    for role in client server; do
        per_dgram "$role" "$WORK/stat.$role"
        eagain_lines "$role" "$WORK/eagain.$role"
    done
fi

# What the offloads did: the exit stats of both (TUN offload line, UDP GSO/GRO counters).
stop_pid "$CLI" TERM 5
stop_pid "$SRV" TERM 5
for role in client server; do
    grep -o 'TUN offload: .*' "$WORK/$role.log" | tail -n 1 | sed "s/^/$role  /"
    grep -o 'UDP GSO: .*' "$WORK/$role.log" | tail -n 1 | sed "s/^/$role  /"
    grep -o 'queues: .*' "$WORK/$role.log" | tail -n 1 | sed "s/^/$role  /"
    grep -o 'event loop: .*' "$WORK/$role.log" | tail -n 1 | sed "s/^/$role  /"
done
# Where each process's CPU goes, by kernel path: the inclusive share (perf's "children"
# column) of each path's entry symbol, and that share of the measured CPU per datagram.
# Paths nest (the TUN write and the UDP send carry the kernel's forwarding and delivery
# of the packet onward, in our process's context), so the shares do not add up to 100.
# Self time is not used: in a VM, samples taken with interrupts off land on the
# instruction that enables them (pvm_irq_enable / native_irq_enable).
perf_paths() {  # perf_paths ROLE PID
    local role=$1 pid=$2 us rep
    us=$(grep -o "\"cpu_us_per_dgram_$pid\":[0-9.]*" <<<"$out" | cut -d: -f2)
    rep=$(perf report -i "$WORK/perf.$role" --children --sort sym --stdio -g none 2>/dev/null | grep -v '^#')
    echo "--- $role: CPU by path, ${us:-?} us per datagram under perf (inclusive shares; paths nest)"
    while IFS='|' read -r label syms; do
        awk -v label="$label" -v syms="$syms" -v us="${us:-0}" '
            BEGIN { n = split(syms, want, " ") }
            { for (i = 1; i <= n; i++) if ($NF == want[i]) { pct = $1; sub("%", "", pct); t += pct } }
            END { printf "   %-58s %6.1f %%  %5.2f us\n", label, t, t * us / 100 }' <<<"$rep"
    done <<'PATHS'
TUN write, with the kernel forwarding it runs|tun_chr_write_iter
TUN read|tun_chr_read_iter
UDP send, with the local delivery or forwarding it runs|__x64_sys_sendmmsg __x64_sys_sendmsg
UDP receive|__x64_sys_recvmmsg __x64_sys_recvmsg
  of the above: the kernel's softirq network processing|net_rx_action
  of the above: kernel GSO segmentation|__skb_gso_segment
  of the above: copies between user and kernel|_copy_to_iter _copy_from_iter
epoll_wait, sleeping and waking|__x64_sys_epoll_wait
scheduler (switches in and out)|__schedule
PATHS
    rep=$(perf report -i "$WORK/perf.$role" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#')
    awk -v us="${us:-0}" -v bin="$(basename "$FAKETCP")" '
        $2 == bin { pct = $1; sub("%", "", pct)
            printf "   %-58s %6.1f %%  %5.2f us\n", "faketcp'"'"'s own code (self time in the binary)", pct, pct * us / 100 }' <<<"$rep"
}
if [ "$MODE" = perf ]; then
    perf_paths client "$CLI"
    perf_paths server "$SRV"
    for role in client server; do
        echo "--- perf report: $role (self time, top ${SC_PERF_TOP:-40})"
        perf report -i "$WORK/perf.$role" --no-children --percent-limit 0.7 --stdio -g none 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -n "${SC_PERF_TOP:-40}"
        if [ -n "${SC_PERF_OUT:-}" ]; then
            mkdir -p "$SC_PERF_OUT" && cp "$WORK/perf.$role" "$SC_PERF_OUT/perf.$role"
        fi
    done
fi
spd() { [ -f "$WORK/stat.$1" ] && awk -v a="$(tot "$WORK/stat.$1")" -v n="$sent" 'BEGIN{printf "%.3f", a/n}' || echo null; }
echo "{\"rate\":$RATE,\"size\":$SIZE,\"flows\":$FLOWS,\"echo\":${SC_ECHO:-0},\"sent\":$sent,\"syscalls_per_dgram_client\":$(spd client),\"syscalls_per_dgram_server\":$(spd server),\"send\":$out}"
ok
