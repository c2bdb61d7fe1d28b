#!/usr/bin/env bash
# 22-no-amplification: 100 000 segments for tuples nobody has (ACKs, not SYNs,
# from random sources in 198.18.0.0/15 to random ports of the server stack) are
# written into the server's TUN. Each is an unknown segment (drop no_listener)
# that earns one RST|ACK, but the stack's unsolicited replies share one token
# bucket (reply_rate_per_sec 1000, burst 1000): the RSTs that come out of the
# TUN, counted by the kernel (an nft counter in the server namespace) and by
# the CLI (rst_sent), must stay within rate x duration + burst, the rest be
# counted reply_rate_limited. A paced echo flow on a real connection meanwhile
# loses nothing.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up
N=${AMP_COUNT:-100000}
PPS=${AMP_PPS:-20000}
RATE=1000   # StackConfig::reply_rate_per_sec (the CLI has no flag for it)
BURST=1000
report() { echo "    $NAME: $*" >&2; }

step "start the UDP echo, the server and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1
# Room for the flood in the TUN's queue (see 20-rst-flood): measure the stack, not the host.
ip -n "$NS_S" link set "$TUN_S" txqueuelen 10000 || fail "txqueuelen on $TUN_S"
# The RSTs to 198.18.0.0/15 go nowhere: a blackhole in the router.
ip -n "$NS_R" route add blackhole 198.18.0.0/15 || fail "blackhole route in the router"

step "count the stack's RSTs as they leave its TUN (nft, server namespace)"
ip netns exec "$NS_S" nft -f - <<EOF || fail "nft counter in the server ns"
table inet ftamp {
    counter rst_out { }
    chain pre { type filter hook prerouting priority raw - 10; policy accept;
        iifname "$TUN_S" tcp flags & rst == rst counter name "rst_out"
    }
}
EOF
rst_out() { ip netns exec "$NS_S" nft list counter inet ftamp rst_out | awk '/packets/ {print $2}'; }

step "start a paced echo flow (50 datagrams/s)"
bg FLOWS "$NS_C" flows $PY "$NT_DIR/soak_flows.py" run --target 127.0.0.1:5000 --bind-base 127.0.0.1:6000 \
    --flows 1 --rate 50 --stop-file "$WORK/stop-flows" --status "$WORK/flows.status"
ip netns exec "$NS_C" $PY "$NT_DIR/soak_flows.py" waitall --status "$WORK/flows.status" --since "$(date +%s.%N)" \
    --timeout 10 >/dev/null || fail "the paced flow did not echo within 10 s"
sleep 1.2  # the idle ACKs of the warm-up are out
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s0.json"
r0=$(rst_out)

step "inject $N unknown ACK segments at $PPS/s"
t0=$(date +%s.%N)
bg INJ "$NS_S" inject $PY "$NT_DIR/flood_inject.py" ack --iface "$TUN_S" --dst "$SRV_TUN4" --count "$N" --pps "$PPS" --seed 22
# Follow the kernel's count until it stops moving: the last increase ends the duration.
last=$r0 t_last=$t0 t_quiet=$t0
while :; do
    sleep 0.1
    v=$(rst_out) now=$(date +%s.%N)  # the time after the read: every RST counted in v left before it
    if [ "$v" != "$last" ]; then last=$v t_last=$now t_quiet=$now; fi
    if ! alive "$INJ" && awk -v a="$now" -v b="$t_quiet" 'BEGIN { exit !(a - b > 1.0) }'; then break; fi
    awk -v a="$now" -v b="$t0" 'BEGIN { exit !(a - b > 40) }' && fail "the flood did not finish within 40 s"
done
wait "$INJ" || fail "injector failed: $(cat "$WORK/inject.log")"
inj=$(tail -n1 "$WORK/inject.out")
note "injector: $inj"
alive "$SRV" || fail "the server died"
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s1.json"
d=$(stats_delta "$WORK/s0.json" "$WORK/s1.json")
note "deltas: $d"

step "the accounting"
written=$(json written <<<"$inj")
kern=$((last - r0))
sent=$(delta_of rst_sent "$d") lim=$(delta_of reply_rate_limited "$d") nol=$(delta_of no_listener "$d")
# From the injector's first packet (after it built them all) to the kernel's last count
# increase (polled every 0.1 s: an over-estimate by at most one poll).
dur=$(awk -v a="$t_last" -v b="$(json t_start <<<"$inj")" 'BEGIN { printf "%.2f", a - b }')
bound=$(awk -v r=$RATE -v t="$dur" -v b=$BURST 'BEGIN { printf "%d", r * t + b }')
[ "$written" -ge "$N" ] || fail "only $written segments reached the TUN"
[ "$nol" = "$written" ] || fail "no_listener = $nol, want $written (every segment reached the stack; $d)"
[ "$((sent + lim))" = "$written" ] || fail "rst_sent $sent + reply_rate_limited $lim != $written ($d)"
[ "$kern" = "$sent" ] || fail "the kernel saw $kern RSTs leave the TUN, the CLI counted rst_sent $sent"
[ "$sent" -le "$bound" ] || fail "$sent RSTs in $dur s: more than $RATE/s x $dur s + $BURST = $bound"
[ "$sent" -ge "$BURST" ] || fail "only $sent RSTs for $written unknown segments: fewer than the burst $BURST"
[ "$(delta_of handshakes_completed "$d")" = 0 ] || fail "a handshake completed during the flood ($d)"
# The stack's output, all in all: packets and bytes out against packets and bytes in.
amp_p=$(awk -v o="$(delta_of packets_out "$d")" -v i="$(delta_of packets_in "$d")" 'BEGIN { printf "%.4f", o / i }')
amp_b=$(awk -v o="$(delta_of bytes_out "$d")" -v i="$(delta_of bytes_in "$d")" 'BEGIN { printf "%.4f", o / i }')

step "the paced flow lost nothing"
touch "$WORK/stop-flows"
wait "$FLOWS"
fl=$(tail -n1 "$WORK/flows.out")
note "flow: $fl"
for k in lost dup corrupt foreign; do
    [ "$(json $k <<<"$fl")" = 0 ] || fail "paced flow: $k = $(json $k <<<"$fl") ($fl)"
done
[ "$(stat_value "$WORK/server.log" open_connections)" = 1 ] || fail "server: the connection is gone"
report "$written unknown segments in $(json seconds <<<"$inj") s ($(json pps <<<"$inj")/s, TUN drops" \
    "$(json dropped_by_device <<<"$inj")): RSTs out $sent (kernel count $kern) over $dur s, bound" \
    "$RATE x $dur + $BURST = $bound; rate-limited $lim; stack packets out/in $amp_p, bytes out/in $amp_b"
report "paced flow: sent $(json sent <<<"$fl") received $(json received <<<"$fl") lost 0, rtt p99 $(json rtt_ms_p99 <<<"$fl") ms"
ok
