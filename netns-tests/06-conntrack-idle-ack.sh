#!/usr/bin/env bash
# 06-conntrack-idle-ack: a one-directional flow through a strict conntrack.
# The router forgets a TCP connection with unacknowledged data after
# nf_conntrack_tcp_timeout_unacknowledged (lowered to 2 s here); with
# tcp_loose=0 the next segment is then INVALID and dropped. The receiving stack
# sends a pure ACK 1 s after unacknowledged data (the idle-ACK rule), so a flow
# whose UDP service never answers keeps its conntrack entry: bursts 3 s apart
# for ~12 s, zero INVALID drops, every datagram delivered. The established
# timeout stays at its default.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
topo_up
UNACK=2
ROUNDS=5
BURST=3

step "lower the router's unacknowledged timeout to $UNACK s"
ip netns exec "$NS_R" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_unacknowledged=$UNACK || fail "sysctl"
est=$(ip netns exec "$NS_R" sysctl -n net.netfilter.nf_conntrack_tcp_timeout_established)
note "established timeout: $est s (unchanged)"

step "start a UDP sink (never answers), the server and the client"
start_echo SINK "$NS_S" 127.0.0.1:7000 --sink --log "$WORK/sink.hex"
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1

# --- one way only: client -> server, bursts further apart than the timeout
step "$ROUNDS bursts of $BURST datagrams, 3 s apart"
out=$(udp "$NS_C" send --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --count $ROUNDS --burst $BURST \
      --interval 3 --size 200) || fail "send: $out"
sleep 1.5  # the idle ACK for the last burst

step "no INVALID drops, everything delivered, one connection"
drops=$(router_invalid_drops)
got=$(grep -c . "$WORK/sink.hex")
[ "$drops" = 0 ] || fail "router dropped $drops INVALID packets (conntrack lost the connection); sink got $got of $((ROUNDS * BURST))"
[ "$got" = $((ROUNDS * BURST)) ] || fail "the sink got $got of $((ROUNDS * BURST)) datagrams"
fresh_stats "$WORK/server.log"
# An answer to the client's keepalive probe carries the same acknowledgement
# and stands in for that burst's idle ACK (the idle ACK is then not due).
acks=$(( $(stat_value "$WORK/server.log" idle_acks_sent) + $(stat_value "$WORK/server.log" keepalive_answers_sent) ))
[ "$acks" -ge $ROUNDS ] || fail "server sent $acks idle ACKs and probe answers, want >= $ROUNDS (one per burst)"
[ "$(stat_value "$WORK/server.log" handshakes_completed)" = 1 ] || fail "the connection was replaced"
[ "$(stat_value "$WORK/client.log" rst_received)" = 0 ] || fail "the client was reset"

# --- the conntrack entry runs on the established timeout, not the unacknowledged one
step "the router's entry is ESTABLISHED with the long timeout"
entry=$(ip netns exec "$NS_R" conntrack -L -p tcp --dport "$PUB_PORT" 2>/dev/null | grep ESTABLISHED)
[ -n "$entry" ] || fail "no ESTABLISHED conntrack entry left in the router"
left=$(awk '{print $3}' <<<"$entry")
note "conntrack: $entry"
[ "$left" -gt $((UNACK * 10)) ] || fail "the entry expires in $left s: its data is still unacknowledged ($entry)"

# --- control: the same on a second flow with the server's pure ACKs dropped in
#     the server ns must draw INVALID drops, or this scenario proves nothing.
step "control: without the idle ACKs the router drops the flow"
ip netns exec "$NS_S" nft add chain inet ftc ctl "{ type filter hook postrouting priority 0; }" \
    && ip netns exec "$NS_S" nft add rule inet ftc ctl oifname "$V_S" tcp sport "$PUB_PORT" ip length 40 drop \
    || fail "nft control rule"
out=$(udp "$NS_C" send --target 127.0.0.1:5000 --bind 127.0.0.1:6001 --count 2 --burst $BURST \
      --interval 3 --size 200) || fail "send: $out"
wait_for 2 test "$(router_invalid_drops)" -gt 0 \
    || fail "control: no INVALID drops although the ACKs were withheld: the scenario cannot tell"
note "control: $(router_invalid_drops) INVALID drops"
ok
