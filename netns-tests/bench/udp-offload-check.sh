#!/usr/bin/env bash
# netns-tests/bench/udp-offload-check.sh — the tunnel's UDP offload paths and their
# fallbacks, end to end, byte-exact.
#
#   bash netns-tests/bench/udp-offload-check.sh build/faketcp
#
# In the suite's topology, gsotool.py sends bursts of equal-size datagrams (the
# last shorter) in single UDP_SEGMENT sends to the client, and the echo service
# behind the server answers each coalesced run it receives (UDP_GRO) with one
# UDP_SEGMENT send. So with offloads, both CLI processes receive runs (UDP_GRO)
# and send runs (UDP_SEGMENT) on their UDP side, and move super-packets on the
# TUN. The same load runs with each combination of --no-udp-offload and
# --no-offload; every echo must come back byte-exact each time, and the CLI's
# counters must show the offloads used exactly when they are on.
source "$(dirname "$0")/../lib.sh" "$@"
need_root
need_binary
GSOTOOL="$(dirname "$(readlink -f "$0")")/gsotool.py"
topo_up

step "start the GSO echo"
bg ECHO "$NS_S" gso-echo $PY "$GSOTOOL" echo --bind 127.0.0.1:7000 --ready "$WORK/echo.ready"
wait_for 5 test -e "$WORK/echo.ready" || fail "the GSO echo did not start"

# check NAME UDP TUN FLAGS...: a fresh server/client pair started with FLAGS, the
# load, then the counters: UDP offloads used (on) or not (off), TUN super-packets
# written (on) or not (off).
check() {
    local name=$1 want_udp=$2 want_tun=$3
    shift 3
    step "$name: start the tunnel (${*:-default flags})"
    start_server SRV "server-$name" --remote 127.0.0.1:7000 "$@"
    start_client CLI "client-$name" --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" "$@"
    step "$name: 150 bursts of 8 datagrams, one UDP_SEGMENT send each"
    local out
    out=$(ip netns exec "$NS_C" $PY "$GSOTOOL" load --target 127.0.0.1:5000 --bursts 150 --burst 8 --seed 5) \
        || fail "$name: $out"
    note "$name: $out"
    stop_pid "$CLI" TERM 5 || fail "$name: client exited with status $?"
    stop_pid "$SRV" TERM 5 || fail "$name: server exited with status $?"
    local role v got log
    for role in client server; do
        log="$WORK/$role-$name.log"
        for v in mode_udp_gro_receives mode_udp_gso_sends; do
            got=$(stat_value "$log" "$v") || fail "$name: no $v in the $role's stats"
            note "$name: $role $v = $got"
            if [ "$want_udp" = on ] && [ "$got" = 0 ]; then fail "$name: $role $v is 0 with UDP offloads on"; fi
            if [ "$want_udp" = off ] && [ "$got" != 0 ]; then fail "$name: $role $v is $got with --no-udp-offload"; fi
        done
        [ "$(stat_value "$log" mode_udp_gso_refused)" = 0 ] || fail "$name: the kernel refused UDP GSO"
        got=$(stat_value "$log" offload_gso_writes 2>/dev/null) || got=0
        if [ "$want_tun" = on ] && [ "$got" = 0 ]; then fail "$name: $role wrote no TUN super-packet"; fi
        if [ "$want_tun" = off ] && [ "$got" != 0 ]; then fail "$name: $role wrote TUN super-packets with --no-offload"; fi
        [ "$(stat_value "$log" tcp_drops)" = 0 ] || fail "$name: $role dropped packets: $(stat_value "$log" --all)"
    done
}

check offload on on
check no-udp-offload off on --no-udp-offload
check no-tun-offload on off --no-offload
check no-offloads off off --no-udp-offload --no-offload
[ "$(router_invalid_drops)" = 0 ] || fail "router dropped $(router_invalid_drops) INVALID packets"
ok
