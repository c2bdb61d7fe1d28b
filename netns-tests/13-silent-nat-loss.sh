#!/usr/bin/env bash
# 13-silent-nat-loss: the router forgets the flow while the application is
# silent for 30 s, then sends. The server has answered a probe, so the
# client's unanswered probes are a verdict: peer_dead 20 s after the last
# segment (default keepalive 5 s x (3 probes + 1)), inside the 30 s of
# silence, and the first datagram after it opens a new connection at once:
# echoed within 2 s. (The defaults fit: 20 s < 30 s. A silence shorter than
# interval x (probes + 1) would still meet the stale connection.)
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
topo_up
pace() { ip netns exec "$NS_C" $PY "$NT_DIR/pacetool.py" "$@"; }
SILENCE=30
IDLE=20
BOUND=2

step "start the UDP echo, the server and the client (keepalive defaults)"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1

step "echo for 8 s (each end learns that the other answers probes)"
pace run --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --rate 2 --seconds 8 --log "$WORK/warm.log" >/dev/null \
    || fail "paced echo"
[ "$(wc -l <"$WORK/warm.log")" -ge 12 ] || fail "the echo did not work before the flush ($(wc -l <"$WORK/warm.log") of 16)"

step "an idle, healthy connection: probe traffic over ${IDLE} s"
fresh_stats "$WORK/client.log"
fresh_stats "$WORK/server.log"
c0=$(stat_value "$WORK/client.log" packets_out); s0=$(stat_value "$WORK/server.log" packets_out)
sleep $IDLE
fresh_stats "$WORK/client.log"
fresh_stats "$WORK/server.log"
c1=$(stat_value "$WORK/client.log" packets_out); s1=$(stat_value "$WORK/server.log" packets_out)
echo "      idle connection, keepalive 5 s: client sent $((c1 - c0)) packets, server $((s1 - s0)) in ${IDLE} s (about $(( (c1 - c0 + s1 - s0) * 60 / IDLE )) packets/minute both ways)" >&2
[ "$((c1 - c0 + s1 - s0))" -le $((IDLE * 2 / 5 + 4)) ] || fail "more probe traffic than one probe and one answer per interval"
[ "$(stat_value "$WORK/client.log" peer_dead_closes)" = 0 ] || fail "peer_dead on a healthy idle connection"

step "flush the router's conntrack table, then $SILENCE s of silence"
ip netns exec "$NS_R" conntrack -F >/dev/null 2>&1 || fail "conntrack -F in the router"
sleep $SILENCE
fresh_stats "$WORK/client.log"
[ "$(stat_value "$WORK/client.log" peer_dead_closes)" = 1 ] || fail "no peer_dead on the client during the silence"

step "the first datagram after the silence is echoed within $BOUND s"
T0=$(date +%s.%N)
pace run --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --rate 0 --seconds 3 --log "$WORK/after.log" >/dev/null \
    || fail "paced echo"
rec=$(pace recovery --log "$WORK/after.log" --after "$T0") || fail "the first datagram after the silence was not echoed in 3 s"
secs=$(json rtt_s <<<"$rec")
echo "      first datagram after ${SILENCE} s of silence and NAT state loss: echoed in ${secs} s (bound $BOUND s)" >&2
awk -v s="$secs" -v b=$BOUND 'BEGIN { exit !(s <= b) }' || fail "echo took $secs s, bound $BOUND s"
fresh_stats "$WORK/client.log"
fresh_stats "$WORK/server.log"
[ "$(stat_value "$WORK/client.log" mode_connections_reconnects)" = 1 ] || fail "client reconnects: $(stat_value "$WORK/client.log" mode_connections_reconnects), want 1"
freed=$(( $(stat_value "$WORK/server.log" peer_dead_closes) + $(stat_value "$WORK/server.log" mode_connections_closed_by_peer) ))
[ "$freed" = 1 ] || fail "the server freed $freed old connections (peer-dead or reset), want 1"
[ "$(stat_value "$WORK/server.log" open_connections)" = 1 ] || fail "server open connections: $(stat_value "$WORK/server.log" open_connections), want 1"
ok
