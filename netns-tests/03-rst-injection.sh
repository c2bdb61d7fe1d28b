#!/usr/bin/env bash
# 03-rst-injection: RSTs injected into the server stack from the client's tuple.
# Only an RST with exactly the next expected sequence number closes the
# connection; in-window ones get a challenge ACK (RFC 5961), far ones and ones
# for an unknown tuple are dropped, and the connection keeps echoing. After an
# exact RST the client's flow recovers by itself on its next datagrams.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up
APP=127.0.0.1:6000  # the client application's fixed UDP address: one flow

step "start the UDP echo, the server and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
# Keepalive off: the injections below count every reply sniffed in a window,
# and a probe or its answer there would read as one (liveness: 12-16).
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1 --keepalive 0
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1 --keepalive 0

# --- learn the connection's sequence numbers on the server's TUN
step "learn the flow"
learn_flow FLOW "$NS_S" "$TUN_S" "$(probe_cmd $APP)"
note "flow: $FLOW"
# Wait out the client's idle ACK for the echo (1 s after it): the flow is then
# quiet and every reply seen belongs to an injected RST.
sleep 1.2

# --- RSTs that must not close it
step "inject non-matching RSTs"
r1=$(scapy_tool "$NS_S" rst --iface "$TUN_S" --flow "$FLOW" --delta 1000 --listen 0.5) || fail "inject: $r1"
r2=$(scapy_tool "$NS_S" rst --iface "$TUN_S" --flow "$FLOW" --delta -1 --listen 0.5) || fail "inject: $r2"
r3=$(scapy_tool "$NS_S" rst --iface "$TUN_S" --flow "$FLOW" --delta $((1 << 31)) --listen 0.5) || fail "inject: $r3"
r4=$(scapy_tool "$NS_S" rst --iface "$TUN_S" --flow "$FLOW" --port-delta 1 --listen 0.5) || fail "inject: $r4"
note "in window +1000: $r1"; note "in window -1: $r2"; note "2^31 away: $r3"; note "other port: $r4"
# In-window RSTs get one challenge ACK each: a pure ACK with seq = the server's
# next seq and ack = the exact sequence number an RST would need.
want="\"flags\": \"A\", \"seq\": $(json s_nxt <<<"$FLOW"), \"ack\": $(json c_nxt <<<"$FLOW"), \"len\": 0"
for r in "$r1" "$r2"; do
    [[ "$r" == *"\"replies\": [{$want}]"* ]] || fail "in-window RST: want exactly one challenge ACK {$want}, got $r"
done
[[ "$r3" == *'"replies": []'* ]] || fail "far RST must be dropped silently, got $r3"
[[ "$r4" == *'"replies": []'* ]] || fail "RST for an unknown tuple must get no reply, got $r4"

step "the connection survives and keeps echoing"
out=$(udp "$NS_C" probe --target 127.0.0.1:5000 --bind $APP --tries 3) || fail "no echo after non-matching RSTs: $out"
[ "$(json tries <<<"$out")" = 1 ] || fail "the first datagram after non-matching RSTs was lost: $out"
fresh_stats "$WORK/server.log"
s() { stat_value "$WORK/server.log" "$1"; }
[ "$(s rst_received)" = 0 ] || fail "server counted $(s rst_received) accepted RSTs, want 0"
[ "$(s rst_not_exact)" = 3 ] || fail "server rst_not_exact = $(s rst_not_exact), want 3"
[ "$(s unknown_rst)" = 1 ] || fail "server unknown_rst = $(s unknown_rst), want 1"
[ "$(s challenge_acks_sent)" = 2 ] || fail "server challenge ACKs = $(s challenge_acks_sent), want 2"
[ "$(s handshakes_completed)" = 1 ] || fail "server handshakes = $(s handshakes_completed): the connection was replaced"
[ "$(s open_connections)" = 1 ] || fail "server open connections = $(s open_connections), want 1"

# --- the exact RST closes it
step "inject the exact RST"
learn_flow FLOW "$NS_S" "$TUN_S" "$(probe_cmd $APP)"
sleep 1.2  # quiet flow, as above
r5=$(scapy_tool "$NS_S" rst --iface "$TUN_S" --flow "$FLOW" --delta 0 --listen 0.3) || fail "inject: $r5"
[[ "$r5" == *'"replies": []'* ]] || fail "an accepted RST must get no reply, got $r5"
wait_for 3 grep -q "reset by the peer: closing its UDP socket" "$WORK/server.log" \
    || fail "the server did not log the connection reset"
fresh_stats "$WORK/server.log"
[ "$(s rst_received)" = 1 ] || fail "server rst_received = $(s rst_received), want 1"
[ "$(s open_connections)" = 0 ] || fail "server open connections = $(s open_connections), want 0"

# --- recovery: the client's stale data draws an RST from the server; the client
#     drops the connection and opens a new one on the flow's next datagram.
step "the flow recovers on its next datagrams"
out=$(udp "$NS_C" probe --target 127.0.0.1:5000 --bind $APP --tries 12 --interval 0.25) \
    || fail "the flow did not recover within 3 s: $out"
note "recovered: $out"
grep -q "reset by the peer; it is opened again" "$WORK/client.log" || fail "the client did not log the reset"
fresh_stats "$WORK/server.log"
[ "$(s handshakes_completed)" = 2 ] || fail "server handshakes = $(s handshakes_completed), want 2 (a new connection)"
[ "$(s no_listener)" -ge 1 ] || fail "server answered no stale segment (no_listener = $(s no_listener))"
[ "$(router_invalid_drops)" = 0 ] || fail "router dropped $(router_invalid_drops) INVALID packets"
ok
