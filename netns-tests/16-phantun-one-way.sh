#!/usr/bin/env bash
# 16-phantun-one-way: a 60 s one-way stream (2 datagrams/s) from a faketcp
# client (keepalive on) toward the real phantun server, whose UDP application
# never replies. phantun sends nothing back at all (it acknowledges only
# after 128 MiB and ignores probes): there is no signal about the path, so
# the connection must stay: one connection, no peer_dead, every datagram
# delivered.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
PHANTUN=$(cd "$NT_DIR/../.." 2>/dev/null && pwd)/shared/peers/phantun/server
[ -x "$PHANTUN" ] || skip "phantun server not found at ../shared/peers/phantun/server (see the README's interoperability section)"
topo_up
COUNT=120

step "start a UDP sink (never answers), the phantun server and the faketcp client"
start_echo SINK "$NS_S" 127.0.0.1:7000 --sink --log "$WORK/sink.hex"
bg PH "$NS_S" phantun env RUST_LOG=info "$PHANTUN" --local "$PUB_PORT" --remote 127.0.0.1:7000 --tun "$TUN_S"
wait_for 5 ip -n "$NS_S" link show "$TUN_S" || fail "phantun did not create $TUN_S"
sleep 0.5
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1

step "$COUNT datagrams one way, 0.5 s apart"
out=$(udp "$NS_C" send --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --count $COUNT --interval 0.5 --size 100) \
    || fail "send: $out"
sleep 1
fresh_stats "$WORK/client.log"
got=$(grep -c . "$WORK/sink.hex")
probes=$(stat_value "$WORK/client.log" keepalive_probes_sent)
echo "      one-way toward phantun, $((COUNT / 2)) s: $got of $COUNT delivered, $probes probes sent, peer-dead $(stat_value "$WORK/client.log" peer_dead_closes)" >&2
[ "$got" = $COUNT ] || fail "the sink got $got of $COUNT datagrams"
[ "$(stat_value "$WORK/client.log" peer_dead_closes)" = 0 ] || fail "the one-way connection was declared dead"
[ "$(stat_value "$WORK/client.log" mode_connections_opened)" = 1 ] || fail "the client opened $(stat_value "$WORK/client.log" mode_connections_opened) connections"
[ "$(stat_value "$WORK/client.log" handshakes_completed)" = 1 ] || fail "more than one handshake"
alive "$PH" || fail "phantun died"
ok
