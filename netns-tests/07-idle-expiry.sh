#!/usr/bin/env bash
# 07-idle-expiry: with --idle-timeout 2 a silent flow's connection is reset by the
# side that times it out (one RST on the wire, a log line), and the flow's next
# datagram opens a new connection that echoes. Client side first, then server side.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up
APP=127.0.0.1:6000
# watch_probe SECONDS: sniff the server TUN while one probe runs, then SECONDS more.
watch_probe() {
    scapy_tool "$NS_S" watch --iface "$TUN_S" --port "$PUB_PORT" --seconds "$1" --trigger "$(probe_cmd $APP 8)"
}
# count DIR FLAGS JSON: how many segments with exactly FLAGS went in DIR (c2s/s2c).
count() { $PY -c 'import json,sys; print(json.loads(sys.argv[3])["counts"][sys.argv[1]].get(sys.argv[2], 0))' "$@"; }

start_echo ECHO "$NS_S" 127.0.0.1:7000

# --- A: the client times the flow out
step "client --idle-timeout 2: one datagram, then silence"
start_server SRV server --remote 127.0.0.1:7000
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --idle-timeout 2 --stats-interval 1
w=$(watch_probe 4.5) || fail "watch: $w"
note "$w"
[ "$(json trigger <<<"$w" | grep -c "'rc': 0")" = 1 ] || fail "the first probe got no echo: $w"
[ "$(count c2s R "$w")" = 1 ] || fail "want exactly one RST from the client after 2-3 s idle: $w"
[ "$(count s2c R "$w")$(count s2c RA "$w")" = 00 ] || fail "the server answered the client's RST: $w"
grep -q "idle for 2 s: closing connection" "$WORK/client.log" || fail "the client did not log the idle close"
wait_for 2 grep -q "reset by the peer: closing its UDP socket" "$WORK/server.log" || fail "the server did not log the reset"

step "the next datagram opens a new connection"
w=$(watch_probe 0.3) || fail "watch: $w"
note "$w"
[ "$(json trigger <<<"$w" | grep -c "'rc': 0")" = 1 ] || fail "no echo on the new connection: $w"
[ "$(count c2s S "$w")" = 1 ] || fail "want one new SYN: $w"
[ "$(count s2c SA "$w")" = 1 ] || fail "want one SYN-ACK: $w"
stop_pid "$CLI" TERM 5
stop_pid "$SRV" TERM 5

# --- B: the server times the flow out
step "server --idle-timeout 2: one datagram, then silence"
start_server SRV2 server2 --remote 127.0.0.1:7000 --idle-timeout 2
start_client CLI2 client2 --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT"
w=$(watch_probe 4.5) || fail "watch: $w"
note "$w"
[ "$(json trigger <<<"$w" | grep -c "'rc': 0")" = 1 ] || fail "the first probe got no echo: $w"
[ "$(count s2c R "$w")" = 1 ] || fail "want exactly one RST from the server after 2-3 s idle: $w"
grep -q "idle for 2 s: closing it and its UDP socket" "$WORK/server2.log" || fail "the server did not log the idle close"
wait_for 2 grep -q "reset by the peer; it is opened again" "$WORK/client2.log" || fail "the client did not log the reset"

step "the next datagram opens a new connection"
w=$(watch_probe 0.3) || fail "watch: $w"
note "$w"
[ "$(json trigger <<<"$w" | grep -c "'rc': 0")" = 1 ] || fail "no echo on the new connection: $w"
[ "$(count c2s S "$w")" = 1 ] || fail "want one new SYN: $w"
[ "$(router_invalid_drops)" = 0 ] || fail "router dropped $(router_invalid_drops) INVALID packets"
ok
