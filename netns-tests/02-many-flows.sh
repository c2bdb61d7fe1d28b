#!/usr/bin/env bash
# 02-many-flows: 200 concurrent UDP peers -> 200 fake-TCP connections, every one
# echoing byte-exact; the server's stats and the router's conntrack both count 200.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
topo_up
FLOWS=200

step "start the UDP echo, the server and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1

# --- 200 sockets open at once (all handshakes run concurrently), then 10
#     datagrams per flow, 4 in flight per flow: bursts of up to 800 datagrams
#     into the client CLI's single UDP socket, which must not overflow (the CLI
#     sizes its buffer with SO_RCVBUFFORCE, demo/udp.h, because the default
#     overflowed here). Every echo checked byte-exact.
step "$FLOWS concurrent flows, 10 datagrams each"
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --flows $FLOWS --count 10 --window 4 --max 1460 --seed 2) || fail "load: $out; client ns RcvbufErrors $(udp_rcvbuf_errors "$NS_C")"
note "$out"
for ns in "$NS_C" "$NS_S"; do
    [ "$(udp_rcvbuf_errors "$ns")" = 0 ] || fail "UDP receive buffer overflows in $ns: $(udp_rcvbuf_errors "$ns")"
done

# --- counted on both sides and in the router
step "the server reports $FLOWS open connections"
fresh_stats "$WORK/server.log"
fresh_stats "$WORK/client.log"
srv_open=$(stat_value "$WORK/server.log" open_connections)
srv_acc=$(stat_value "$WORK/server.log" mode_connections_accepted)
[ "$srv_open" = $FLOWS ] || fail "server: $srv_open open connections, want $FLOWS (accepted $srv_acc)"
[ "$srv_acc" = $FLOWS ] || fail "server accepted $srv_acc connections, want $FLOWS"
cli_open=$(stat_value "$WORK/client.log" open_connections)
[ "$cli_open" = $FLOWS ] || fail "client: $cli_open open connections, want $FLOWS"
step "the router tracks $FLOWS established TCP connections"
ct=$(router_established)
[ "$ct" = $FLOWS ] || fail "router conntrack: $ct ESTABLISHED entries to port $PUB_PORT, want $FLOWS"
[ "$(router_invalid_drops)" = 0 ] || fail "router dropped $(router_invalid_drops) INVALID packets"
[ "$(stat_value "$WORK/server.log" tcp_drops)" = 0 ] || fail "server drops: $(stat_value "$WORK/server.log" --all)"

step "clean shutdown resets all $FLOWS"
stop_pid "$CLI" TERM 5 || fail "client exit status $?"
grep -q "reset $FLOWS connections" "$WORK/client.log" || fail "client did not report resetting $FLOWS connections"
wait_for 3 _server_open_zero || fail "server still has connections after the client's RSTs: $(stat_value "$WORK/server.log" open_connections)"
ok
