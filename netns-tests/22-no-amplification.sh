#!/usr/bin/env bash
# 22-no-amplification: segments for tuples nobody has (ACKs, not SYNs, from
# random sources in 198.18.0.0/15 to random ports of the stack) written into a
# stack's TUN. Each is an unknown segment (drop no_listener) that earns one
# RST|ACK, but the stack's unsolicited replies share one token bucket (rate R
# per second, burst R): the RSTs that come out of the TUN, counted by the
# kernel (an nft counter in that namespace) and by the CLI (rst_sent), must
# stay within R x duration + R, the rest be counted reply_rate_limited.
#  A) 100 000 into the server, default rate (StackConfig: 1000/s);
#  B) 20 000 into the client started with --reply-rate 300: the knob is honoured, and the client side is bounded too.
# A paced echo flow over a real connection meanwhile loses nothing.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up
N=${AMP_COUNT:-100000}
NB=${AMP_COUNT_B:-20000}
PPS=${AMP_PPS:-20000}
RATE_A=1000  # StackConfig::reply_rate_per_sec default (also the burst)
RATE_B=300

step "start the UDP echo, the server and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1 --reply-rate $RATE_B
# Room for the flood in the TUNs' queues (see 20-rst-flood): measure the stack, not the host.
ip -n "$NS_S" link set "$TUN_S" txqueuelen 10000 || fail "txqueuelen on $TUN_S"
ip -n "$NS_C" link set "$TUN_C" txqueuelen 10000 || fail "txqueuelen on $TUN_C"
# The RSTs to 198.18.0.0/15 go nowhere: a blackhole in the router.
ip -n "$NS_R" route add blackhole 198.18.0.0/15 || fail "blackhole route in the router"

step "count the stacks' RSTs as they leave their TUNs (nft, server and client namespaces)"
for side in "$NS_S:$TUN_S" "$NS_C:$TUN_C"; do
    ip netns exec "${side%%:*}" nft -f - <<EOF || fail "nft counter in ${side%%:*}"
table inet ftamp {
    counter rst_out { }
    chain pre { type filter hook prerouting priority raw - 10; policy accept;
        iifname "${side#*:}" tcp flags & rst == rst counter name "rst_out"
    }
}
EOF
done
rst_out() { ip netns exec "$1" nft list counter inet ftamp rst_out | awk '/packets/ {print $2}'; }

step "start a paced echo flow (50 datagrams/s)"
paced_flows_start 1 127.0.0.1:6000
sleep 1.2  # the idle ACKs of the warm-up are out

# flood WHO NS TUN DST LOG COUNT RATE: inject COUNT unknown segments into TUN towards
# DST, follow the kernel's RST count until it stops, check the accounting of LOG.
flood() {
    local who=$1 ns=$2 tun=$3 dst=$4 log=$5 n=$6 rate=$7
    local r0 t0 last t_last t_quiet v now inj d written kern sent lim nol dur bound
    step "$who: inject $n unknown ACK segments at $PPS/s (reply rate $rate/s)"
    fresh_stats "$log"
    stat_value "$log" --all >"$WORK/$who-0.json"
    r0=$(rst_out "$ns")
    t0=$(date +%s.%N)
    bg INJ "$ns" "inject-$who" $PY "$NT_DIR/flood_inject.py" ack --iface "$tun" --dst "$dst" --count "$n" \
        --pps "$PPS" --seed 22
    # Follow the kernel's count until it stops moving: the last increase ends the duration.
    last=$r0 t_last=$t0 t_quiet=$t0
    while :; do
        sleep 0.1
        v=$(rst_out "$ns") now=$(date +%s.%N)  # the time after the read: every RST counted in v left before it
        if [ "$v" != "$last" ]; then last=$v t_last=$now t_quiet=$now; fi
        if ! alive "$INJ" && awk -v a="$now" -v b="$t_quiet" 'BEGIN { exit !(a - b > 1.0) }'; then break; fi
        awk -v a="$now" -v b="$t0" 'BEGIN { exit !(a - b > 40) }' && fail "the flood did not finish within 40 s"
    done
    wait "$INJ" || fail "injector failed: $(cat "$WORK/inject-$who.log")"
    inj=$(tail -n1 "$WORK/inject-$who.out")
    note "injector: $inj"
    fresh_stats "$log"
    stat_value "$log" --all >"$WORK/$who-1.json"
    d=$(stats_delta "$WORK/$who-0.json" "$WORK/$who-1.json")
    note "deltas: $d"

    step "$who: the accounting"
    written=$(json written <<<"$inj")
    kern=$((last - r0))
    sent=$(delta_of rst_sent "$d") lim=$(delta_of reply_rate_limited "$d") nol=$(delta_of no_listener "$d")
    # From the injector's first packet (after it built them all) to the kernel's last count
    # increase (polled every 0.1 s: an over-estimate by at most one poll).
    dur=$(awk -v a="$t_last" -v b="$(json t_start <<<"$inj")" 'BEGIN { printf "%.2f", a - b }')
    bound=$(awk -v r="$rate" -v t="$dur" 'BEGIN { printf "%d", r * t + r }')
    [ "$written" -ge "$n" ] || fail "only $written segments reached the TUN"
    [ "$nol" = "$written" ] || fail "no_listener = $nol, want $written (every segment reached the stack; $d)"
    [ "$((sent + lim))" = "$written" ] || fail "rst_sent $sent + reply_rate_limited $lim != $written ($d)"
    [ "$kern" = "$sent" ] || fail "the kernel saw $kern RSTs leave the TUN, the CLI counted rst_sent $sent"
    [ "$sent" -le "$bound" ] || fail "$sent RSTs in $dur s: more than $rate/s x $dur s + $rate = $bound"
    [ "$sent" -ge "$rate" ] || fail "only $sent RSTs for $written unknown segments: fewer than the burst $rate"
    [ "$(delta_of handshakes_completed "$d")" = 0 ] || fail "a handshake completed during the flood ($d)"
    local amp_p amp_b
    amp_p=$(awk -v o="$(delta_of packets_out "$d")" -v i="$(delta_of packets_in "$d")" 'BEGIN { printf "%.4f", o / i }')
    amp_b=$(awk -v o="$(delta_of bytes_out "$d")" -v i="$(delta_of bytes_in "$d")" 'BEGIN { printf "%.4f", o / i }')
    report "$who: $written unknown segments in $(json seconds <<<"$inj") s ($(json pps <<<"$inj")/s, TUN drops" \
        "$(json dropped_by_device <<<"$inj")): RSTs out $sent (kernel count $kern) over $dur s, bound" \
        "$rate x $dur + $rate = $bound; rate-limited $lim; stack packets out/in $amp_p, bytes out/in $amp_b"
}

flood server "$NS_S" "$TUN_S" "$SRV_TUN4" "$WORK/server.log" "$N" $RATE_A
alive "$SRV" || fail "the server died"
flood client "$NS_C" "$TUN_C" "$CLI_TUN4" "$WORK/client.log" "$NB" $RATE_B
alive "$CLI" || fail "the client died"

step "the paced flow lost nothing"
paced_flows_stop
paced_flows_zero lost dup corrupt foreign
[ "$(stat_value "$WORK/server.log" open_connections)" = 1 ] || fail "server: the connection is gone"
report "paced flow: sent $(json sent <<<"$PACED") received $(json received <<<"$PACED") lost 0, rtt p99 $(json rtt_ms_p99 <<<"$PACED") ms"
ok
