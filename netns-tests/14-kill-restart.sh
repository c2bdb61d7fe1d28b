#!/usr/bin/env bash
# 14-kill-restart: SIGKILL (no RST leaves) and restart of either end while the
# application sends 2 datagrams/s; the echo resumes within 3 s each time, and
# the server frees the stale connection of the killed client without waiting
# for --idle-timeout (180 s).
#  A) server: the new server answers the client's stale segments with an RST;
#     the client drops that connection and reconnects on the next datagram.
#  B) client: the new client opens a new connection at once; the server's old
#     one is freed by keepalive (its probes draw an RST from the new client's
#     stack, which owns the old address, or go unanswered: peer_dead).
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
topo_up
pace() { ip netns exec "$NS_C" $PY "$NT_DIR/pacetool.py" "$@"; }
BOUND=3
FREE_BOUND=25  # peer_dead on the accepting side: 5 s x (3 + 1) + 1.25 s, plus margin

step "start the UDP echo, the server and the client; 2 datagrams/s"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server-a --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI client-a --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1
bg PACER "$NS_C" pace $PY "$NT_DIR/pacetool.py" run --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --rate 2 \
    --seconds 75 --log "$WORK/pace.log"
sleep 8
[ "$(wc -l <"$WORK/pace.log")" -ge 12 ] || fail "no echo before the kills"

# --- A: the server
step "SIGKILL the server and restart it"
stop_pid "$SRV" KILL 5
wait_for 3 sh -c "! ip -n $NS_S link show $TUN_S >/dev/null 2>&1" || fail "TUN $TUN_S outlived the killed server"
start_server SRV server-b --remote 127.0.0.1:7000 --stats-interval 1
T_A=$(date +%s.%N)
wait_for 6 sh -c "$PY $NT_DIR/pacetool.py recovery --log $WORK/pace.log --after $T_A >/dev/null" \
    || fail "no echo within 6 s of the server's restart"
rec=$(pace recovery --log "$WORK/pace.log" --after "$T_A")
secs=$(json recovery_s <<<"$rec")
echo "      server SIGKILL + restart: echo resumed ${secs} s after the new server was ready (bound $BOUND s)" >&2
awk -v s="$secs" -v b=$BOUND 'BEGIN { exit !(s <= b) }' || fail "recovery took $secs s, bound $BOUND s"
sleep 8  # the new connection's discovery probes: each end learns the other answers

# --- B: the client
step "SIGKILL the client and restart it"
stop_pid "$CLI" KILL 5
T_KILL=$(date +%s.%N)
wait_for 3 sh -c "! ip -n $NS_C link show $TUN_C >/dev/null 2>&1" || fail "TUN $TUN_C outlived the killed client"
start_client CLI client-b --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1
T_B=$(date +%s.%N)
wait_for 6 sh -c "$PY $NT_DIR/pacetool.py recovery --log $WORK/pace.log --after $T_B >/dev/null" \
    || fail "no echo within 6 s of the client's restart"
rec=$(pace recovery --log "$WORK/pace.log" --after "$T_B")
secs=$(json recovery_s <<<"$rec")
echo "      client SIGKILL + restart: echo resumed ${secs} s after the new client was ready (bound $BOUND s)" >&2
awk -v s="$secs" -v b=$BOUND 'BEGIN { exit !(s <= b) }' || fail "recovery took $secs s, bound $BOUND s"

step "the server frees the killed client's connection within $FREE_BOUND s"
_stale_freed() {
    local d r
    d=$(stat_value "$WORK/server-b.log" peer_dead_closes)
    r=$(stat_value "$WORK/server-b.log" mode_connections_closed_by_peer)
    [ "$((d + r))" -ge 1 ] && [ "$(stat_value "$WORK/server-b.log" open_connections)" = 1 ]
}
wait_for $FREE_BOUND _stale_freed || fail "server-b still holds the stale connection: open $(stat_value "$WORK/server-b.log" open_connections), peer-dead $(stat_value "$WORK/server-b.log" peer_dead_closes)"
freed_s=$(echo "$(date +%s.%N) $T_KILL" | awk '{printf "%.1f", $1 - $2}')
how=$(grep -o "connection [0-9.:]* -> port $PUB_PORT [a-z ()]*: closing its UDP socket" "$WORK/server-b.log" | head -1)
echo "      stale server-side connection freed ${freed_s} s after the client's SIGKILL ($how; stats at 1 s granularity)" >&2
[ "$(stat_value "$WORK/server-b.log" handshakes_completed)" = 2 ] || fail "server-b completed $(stat_value "$WORK/server-b.log" handshakes_completed) handshakes, want 2"
alive "$SRV" || fail "the server died"
stop_pid "$PACER" TERM 3 >/dev/null 2>&1 || true
ok
