#!/usr/bin/env bash
# 25-flow-balance: the client's two workers share 16 UDP peers evenly. The
# kernel's SO_REUSEPORT hash alone spreads 16 peers unevenly (11 / 5 measured);
# the client places each new flow on the least-loaded worker once the receiving
# one is 2 flows ahead (demo/balance.h), handing it over with a socket
# connect()ed to the peer. Placements are serialized, so the two workers can
# never differ by more than 2 flows: 7..9 each. Every datagram is echoed once
# (udptool fails on loss, corruption or duplicates), each worker's datagram share
# follows its flows, nothing is lost in a hand-over, and the idle sweep closes
# handed-over flows (their sockets too: the same peers come back through the
# group and are placed again).
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
topo_up
FLOWS=16
COUNT=200

step "start the UDP echo, the server and the client (2 queues each, idle timeout 3 s)"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --queues 2 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --queues 2 --stats-interval 1 --idle-timeout 3
for side in server client; do
    if grep -q "cannot steer connections to queues" "$WORK/$side.log"; then
        skip "the kernel refused the TUN steering program ($(grep -m1 'cannot steer' "$WORK/$side.log")): the CLI runs one worker, nothing to balance"
    fi
done
grep -q "with 2 queues, one thread each" "$WORK/client.log" || fail "client: no 'with 2 queues, one thread each' in its ready line"

# per_queue LOG FIELD: the per-queue values of FIELD in the last "stats: queues:" line.
per_queue() {
    grep "stats: queues:" "$1" | tail -1 | sed -n "s/.*$2 \([0-9 \/]*\).*/\1/p" | tr -d '/' | xargs
}

# check_balance ROUND: each worker carries 7..9 flows and 6/16..10/16 of the datagrams.
check_balance() {
    fresh_stats "$WORK/client.log"
    local peers ins total=0 v
    peers=$(per_queue "$WORK/client.log" "UDP peers")
    ins=$(per_queue "$WORK/client.log" "datagrams in")
    note "$1: UDP peers per worker: $peers; datagrams in per worker: $ins; rebalanced so far: $(stat_value "$WORK/client.log" mode_flows_rebalanced)"
    [ "$(wc -w <<<"$peers")" = 2 ] || fail "$1: want 2 per-worker peer counts, got '$peers'"
    for v in $peers; do
        [ "$v" -ge 7 ] && [ "$v" -le 9 ] || fail "$1: a worker carries $v of $FLOWS flows (want 7..9): $peers"
    done
    for v in $ins; do total=$((total + v)); done
    for v in $ins; do
        [ $((v * 16)) -ge $((total * 6)) ] && [ $((v * 16)) -le $((total * 10)) ] \
            || fail "$1: a worker carried $v of $total datagrams, outside 6/16..10/16: $ins"
    done
    [ "$(stat_value "$WORK/client.log" mode_dropped_handoff_lost)" = 0 ] \
        || fail "$1: datagrams lost in a hand-over: $(stat_value "$WORK/client.log" mode_dropped_handoff_lost)"
    [ "$(stat_value "$WORK/client.log" tcp_drops)" = 0 ] || fail "$1: client drops: $(stat_value "$WORK/client.log" --all)"
    [ "$(stat_value "$WORK/server.log" rst_sent)" = 0 ] || fail "$1: the server sent RSTs"
}

step "$FLOWS flows from fixed ports, $COUNT datagrams each, echoed once each"
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --bind 127.0.0.1:32000 --flows $FLOWS --count $COUNT --window 8 --seed 25) \
    || fail "load: $out"
note "$out"
check_balance "first round"
[ "$(stat_value "$WORK/client.log" mode_connections_opened)" = $FLOWS ] \
    || fail "client opened $(stat_value "$WORK/client.log" mode_connections_opened) connections, want $FLOWS (one per flow)"
rebalanced=$(stat_value "$WORK/client.log" mode_flows_rebalanced)
[ "$(grep -c 'handed from worker' "$WORK/client.log")" = "$rebalanced" ] \
    || fail "flows_rebalanced $rebalanced disagrees with the log's hand-over lines"

step "the same flows again: handed-over flows keep their worker and socket"
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --bind 127.0.0.1:32000 --flows $FLOWS --count $COUNT --window 8 --seed 26 --warmup 0) \
    || fail "load again: $out"
check_balance "second round"
[ "$(stat_value "$WORK/client.log" mode_connections_opened)" = $FLOWS ] || fail "flows were re-opened in the second round"
[ "$(stat_value "$WORK/client.log" mode_flows_rebalanced)" = "$rebalanced" ] || fail "known flows were placed again"

step "idle sweep: every flow closes, handed-over sockets included; the peers come back"
_client_peers_zero() { [ "$(stat_value "$WORK/client.log" mode_udp_peers)" = 0 ]; }
wait_for 10 _client_peers_zero || fail "client still has $(stat_value "$WORK/client.log" mode_udp_peers) UDP peers after the idle timeout"
[ "$(stat_value "$WORK/client.log" mode_idle_closed)" = $FLOWS ] || fail "idle-closed $(stat_value "$WORK/client.log" mode_idle_closed), want $FLOWS"
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --bind 127.0.0.1:32000 --flows $FLOWS --count $COUNT --window 8 --seed 27) \
    || fail "load after the idle sweep: $out"
check_balance "after the idle sweep"

step "SIGTERM: both workers reset their connections"
stop_pid "$CLI" TERM 5 || fail "client exit status $?"
grep -q "reset $FLOWS connections" "$WORK/client.log" || fail "client did not report resetting $FLOWS connections"
ok
