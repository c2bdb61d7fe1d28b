#!/usr/bin/env bash
# 24-multiqueue: one worker thread per TUN queue on each side (different counts:
# the client 3, the server 4). Every connection must live on one worker from its
# SYN on: the eBPF steering sends its packets to queue (sport + dport) % queues and
# each worker's stack picks ports in its own class. 48 flows echo byte-exact, every
# queue on both sides carries some of them, nothing is dropped as unknown, and the
# same flows still echo after 4 s idle (the kernel's own queue choice forgets a
# flow after 3 s; steering must not).
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
topo_up
FLOWS=48

step "start the UDP echo, the server (4 queues) and the client (3 queues)"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --queues 4 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --queues 3 --stats-interval 1
for side in server client; do
    if grep -q "cannot steer connections to queues" "$WORK/$side.log"; then
        skip "the kernel refused the TUN steering program ($(grep -m1 'cannot steer' "$WORK/$side.log")): the CLI runs one thread, which the other scenarios cover"
    fi
done
grep -q "with 4 queues, one thread each" "$WORK/server.log" || fail "server: no 'with 4 queues, one thread each' in its ready line"
grep -q "with 3 queues, one thread each" "$WORK/client.log" || fail "client: no 'with 3 queues, one thread each' in its ready line"

step "$FLOWS flows from fixed ports, 10 datagrams each"
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --bind 127.0.0.1:31000 --flows $FLOWS --count 10 --window 4 --seed 24) \
    || fail "load: $out"
note "$out"

# per_queue LOG FIELD: the per-queue values of FIELD ("datagrams in") in the last
# "stats: queues:" line, space-separated.
per_queue() {
    grep "stats: queues:" "$1" | tail -1 | sed -n "s/.*$2 \([0-9 \/]*\).*/\1/p" | tr -d '/' | xargs
}
step "every queue carried traffic, and the connections add up on both sides"
fresh_stats "$WORK/server.log"
fresh_stats "$WORK/client.log"
for side in server client; do
    want_q=4
    [ $side = client ] && want_q=3
    ins=$(per_queue "$WORK/$side.log" "datagrams in")
    opens=$(per_queue "$WORK/$side.log" "connections open")
    note "$side: datagrams in per queue: $ins; open per queue: $opens"
    [ "$(wc -w <<<"$ins")" = $want_q ] || fail "$side: want $want_q per-queue counts, got '$ins'"
    for v in $ins; do [ "$v" -gt 0 ] || fail "$side: a queue carried no datagrams: $ins"; done
    total=0
    for v in $opens; do total=$((total + v)); done
    [ "$total" = $FLOWS ] || fail "$side: per-queue open connections add up to $total, want $FLOWS ($opens)"
    [ "$(stat_value "$WORK/$side.log" open_connections)" = $FLOWS ] || fail "$side: summed open connections $(stat_value "$WORK/$side.log" open_connections), want $FLOWS"
    [ "$(stat_value "$WORK/$side.log" tcp_drops)" = 0 ] || fail "$side drops: $(stat_value "$WORK/$side.log" --all)"
    [ "$(stat_value "$WORK/$side.log" rst_sent)" = 0 ] || fail "$side sent RSTs: a packet reached a worker that does not know its connection"
done
[ "$(router_invalid_drops)" = 0 ] || fail "router dropped $(router_invalid_drops) INVALID packets"

step "the same $FLOWS flows after 4 s idle"
sleep 4
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --bind 127.0.0.1:31000 --flows $FLOWS --count 10 --window 4 --seed 25 --warmup 0) \
    || fail "load after idle: $out"
note "$out"
fresh_stats "$WORK/server.log"
[ "$(stat_value "$WORK/server.log" mode_connections_accepted)" = $FLOWS ] \
    || fail "server accepted $(stat_value "$WORK/server.log" mode_connections_accepted) connections, want $FLOWS: flows were re-opened"
for side in server client; do
    [ "$(stat_value "$WORK/$side.log" rst_sent)" = 0 ] || fail "$side sent RSTs after the idle period"
    [ "$(stat_value "$WORK/$side.log" tcp_drops)" = 0 ] || fail "$side drops after idle: $(stat_value "$WORK/$side.log" --all)"
done

step "SIGTERM: every worker resets its connections"
stop_pid "$CLI" TERM 5 || fail "client exit status $?"
grep -q "reset $FLOWS connections" "$WORK/client.log" || fail "client did not report resetting $FLOWS connections"
wait_for 3 _server_open_zero || fail "server still has connections after the client's RSTs: $(stat_value "$WORK/server.log" open_connections)"
ok
