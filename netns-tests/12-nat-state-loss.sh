#!/usr/bin/env bash
# 12-nat-state-loss: the router forgets the flow (`conntrack -F`, as a home
# router rebooting or a carrier NAT expiring the mapping) while the
# application sends 2 datagrams/s through the echo. Strict tracking drops
# every later segment of the old connection both ways; keepalive (5 s, 3
# probes: the server answered a probe, so its silence is a verdict) declares
# it dead 20 s after the last segment, and the client's next datagram opens a
# new connection from a new port. Bound: interval * (probes + 1) + 2 s = 22 s.
# The server frees its own side the same way (peer_dead, 21.25 s), unless the
# client's best-effort RST reaches it first.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
topo_up
PACE="$PY $NT_DIR/pacetool.py"
BOUND=22

step "start the UDP echo, the server and the client (keepalive defaults)"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1
grep -q "keepalive" <("$FAKETCP" client --help) || fail "--help does not mention --keepalive"

step "2 datagrams/s for 40 s; the router's conntrack table is flushed at +8 s"
bg PACER "$NS_C" pace $PACE run --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --rate 2 --seconds 40 \
    --log "$WORK/pace.log"
sleep 8
[ "$(wc -l <"$WORK/pace.log")" -ge 10 ] || fail "the echo did not work before the flush"
T_LOSS=$(date +%s.%N)
ip netns exec "$NS_R" conntrack -F >/dev/null 2>&1 || fail "conntrack -F in the router"
wait_for 45 sh -c "! kill -0 $PACER 2>/dev/null" || fail "the paced sender did not finish"

step "the echo resumed within $BOUND s on a new connection"
rec=$($PACE recovery --log "$WORK/pace.log" --after "$T_LOSS") || fail "no echo after the flush: $rec"
secs=$(json recovery_s <<<"$rec")
echo "      recovery after NAT state loss (2 datagrams/s): ${secs} s (bound $BOUND s)" >&2
awk -v s="$secs" -v b=$BOUND 'BEGIN { exit !(s <= b) }' || fail "recovery took $secs s, bound $BOUND s"
fresh_stats "$WORK/client.log"
fresh_stats "$WORK/server.log"
[ "$(stat_value "$WORK/client.log" peer_dead_closes)" = 1 ] || fail "client peer-dead closes: $(stat_value "$WORK/client.log" peer_dead_closes), want 1"
[ "$(stat_value "$WORK/client.log" mode_connections_reconnects)" = 1 ] || fail "client reconnects: $(stat_value "$WORK/client.log" mode_connections_reconnects), want 1"
grep -q "lost: the peer went silent (keepalive); it is opened again from a new port" "$WORK/client.log" \
    || fail "the client logged no peer_dead warning"
[ "$(grep -c "went silent" "$WORK/client.log")" = 1 ] || fail "more than one peer_dead warning"
[ "$(stat_value "$WORK/client.log" keepalive_probes_answered)" -ge 1 ] || fail "the server never answered a probe"
# The server's old connection goes by its own keepalive (peer_dead) or by the
# client's best-effort RST, whichever reaches it (a strict router may let the
# RST of an untracked flow pass).
freed=$(( $(stat_value "$WORK/server.log" peer_dead_closes) + $(stat_value "$WORK/server.log" mode_connections_closed_by_peer) ))
[ "$freed" = 1 ] || fail "the server freed $freed old connections (peer-dead or reset), want 1"
[ "$(stat_value "$WORK/server.log" open_connections)" = 1 ] || fail "server open connections: $(stat_value "$WORK/server.log" open_connections), want 1"
ports=$(grep -o "connection [0-9.]*:[0-9]* -> " "$WORK/client.log" | sort -u | wc -l)
[ "$ports" = 2 ] || fail "want 2 client source ports in the log, got $ports"
note "router INVALID drops: $(router_invalid_drops)"
ok
