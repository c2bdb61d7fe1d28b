#!/usr/bin/env bash
# 15-phantun-keepalive: a faketcp client (keepalive on, defaults) with the
# real phantun server, which ignores payload-less segments and never answers
# a probe.
#  A) 60 s of silence, then traffic: the connection is left alone and carries
#     it (no new handshake).
#  B) NAT state loss (router `conntrack -F`) with the echo application
#     sending 2 datagrams/s: rule (b) of the README's liveness section (the
#     peer used to send; our datagrams go unanswered for 20 s) still finds
#     the dead path. Bound: 20 s + one datagram interval + 2.5 s = 23 s.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
PHANTUN=$(cd "$NT_DIR/../.." 2>/dev/null && pwd)/shared/peers/phantun/server
[ -x "$PHANTUN" ] || skip "phantun server not found at ../shared/peers/phantun/server (see the README's interoperability section)"
topo_up
pace() { ip netns exec "$NS_C" $PY "$NT_DIR/pacetool.py" "$@"; }
SILENCE=60
BOUND=23

step "start the UDP echo, the phantun server and the faketcp client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
bg PH "$NS_S" phantun env RUST_LOG=info "$PHANTUN" --local "$PUB_PORT" --remote 127.0.0.1:7000 --tun "$TUN_S"
wait_for 5 ip -n "$NS_S" link show "$TUN_S" || fail "phantun did not create $TUN_S"
sleep 0.5
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1
pace run --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --rate 2 --seconds 6 --log "$WORK/warm.log" >/dev/null \
    || fail "paced echo"
[ "$(wc -l <"$WORK/warm.log")" -ge 9 ] || fail "no echo through phantun ($(wc -l <"$WORK/warm.log") of 12)"

# --- A
step "A: $SILENCE s of silence, then traffic on the same connection"
sleep $SILENCE
fresh_stats "$WORK/client.log"
probes=$(stat_value "$WORK/client.log" keepalive_probes_sent)
answered=$(stat_value "$WORK/client.log" keepalive_probes_answered)
echo "      phantun peer, ${SILENCE} s silent: $probes probes sent, $answered answered, peer-dead $(stat_value "$WORK/client.log" peer_dead_closes)" >&2
[ "$probes" -ge 10 ] || fail "only $probes probes in $SILENCE s of silence"
[ "$answered" = 0 ] || fail "phantun answered $answered probes?"
[ "$(stat_value "$WORK/client.log" peer_dead_closes)" = 0 ] || fail "the silent phantun peer was declared dead"
T_A=$(date +%s.%N)
pace run --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --rate 2 --seconds 4 --log "$WORK/after.log" >/dev/null \
    || fail "paced echo"
rec=$(pace recovery --log "$WORK/after.log" --after "$T_A") || fail "no echo after the silence"
echo "      first echo after the silence: $(json rtt_s <<<"$rec") s; $(wc -l <"$WORK/after.log") of 8 echoed" >&2
[ "$(wc -l <"$WORK/after.log")" -ge 6 ] || fail "only $(wc -l <"$WORK/after.log") of 8 echoed after the silence"
fresh_stats "$WORK/client.log"
[ "$(stat_value "$WORK/client.log" handshakes_completed)" = 1 ] || fail "a new handshake: $(stat_value "$WORK/client.log" handshakes_completed) completed"
[ "$(stat_value "$WORK/client.log" mode_connections_opened)" = 1 ] || fail "the client opened $(stat_value "$WORK/client.log" mode_connections_opened) connections"

# --- B
step "B: NAT state loss while the echo application sends 2 datagrams/s"
bg PACER "$NS_C" pace $PY "$NT_DIR/pacetool.py" run --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --rate 2 \
    --seconds 32 --log "$WORK/pace.log"
sleep 4
T_LOSS=$(date +%s.%N)
ip netns exec "$NS_R" conntrack -F >/dev/null 2>&1 || fail "conntrack -F in the router"
wait_for 35 sh -c "! kill -0 $PACER 2>/dev/null" || fail "the paced sender did not finish"
rec=$(pace recovery --log "$WORK/pace.log" --after "$T_LOSS") || fail "no echo after the NAT state loss"
secs=$(json recovery_s <<<"$rec")
echo "      phantun server, NAT state loss at 2 datagrams/s: echo resumed after ${secs} s (bound $BOUND s)" >&2
awk -v s="$secs" -v b=$BOUND 'BEGIN { exit !(s <= b) }' || fail "recovery took $secs s, bound $BOUND s"
fresh_stats "$WORK/client.log"
[ "$(stat_value "$WORK/client.log" peer_dead_closes)" = 1 ] || fail "client peer-dead closes: $(stat_value "$WORK/client.log" peer_dead_closes), want 1"
[ "$(stat_value "$WORK/client.log" mode_connections_reconnects)" = 1 ] || fail "client reconnects: $(stat_value "$WORK/client.log" mode_connections_reconnects), want 1"
alive "$PH" || fail "phantun died"
ok
