#!/usr/bin/env bash
# 20-rst-flood: 10 000 RSTs with random sequence numbers against each end of a
# live connection kill nothing. They are written into the TUN of the side under
# test with the connection's exact 4-tuple (the server's TUN: from the client's
# NATed tuple; the client's TUN: from the server's public address), while a
# paced echo flow runs over that connection. Per the README's wire table every one
# is dropped as rst_not_exact; those within rst_window get a challenge ACK,
# rate-limited (reply_rate_per_sec 1000, burst 1000): sent + suppressed equals
# the in-window count and sent stays within rate x duration + burst. The flow
# loses nothing and is never replaced.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up
N=${RST_FLOOD_COUNT:-10000}
RATE=1000   # StackConfig::reply_rate_per_sec, the CLI's --reply-rate default
BURST=1000  # the same burst
APP=127.0.0.1:6000

step "start the UDP echo, the server and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
# One queue each: the flood hits one connection, so one worker's stack, and with
# N workers that stack has 1/N of the reply rate (the CLI splits it). The rate and
# burst above are one stack's; 24-multiqueue covers the threads.
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1 --queues 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1 --queues 1

# A TUN queues txqueuelen (500) packets for its reader; a flood written faster than
# a descheduled reader drains them overflows it, and the kernel then drops the
# flow's own segments too. That is host capacity, not the stack: give the flood
# room (10 000) so that what is measured is what the stack does with it.
ip -n "$NS_S" link set "$TUN_S" txqueuelen 10000 || fail "txqueuelen on $TUN_S"
ip -n "$NS_C" link set "$TUN_C" txqueuelen 10000 || fail "txqueuelen on $TUN_C"

step "start a paced echo flow (50 datagrams/s) over one connection"
paced_flows_start 1 "$APP"

# --- server side
step "learn the connection on the server's TUN"
learn_flow FLOW_S "$NS_S" "$TUN_S" "sleep 0.3"
note "flow at the server: $FLOW_S"
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s0.json"
stat_value "$WORK/client.log" --all >"$WORK/c0.json"

step "inject $N random-seq RSTs into the server"
rs=$(ip netns exec "$NS_S" $PY "$NT_DIR/flood_inject.py" rst --iface "$TUN_S" --flow "$FLOW_S" --count "$N" \
    --towards s --seed 20 --pps 10000) || fail "injector: $rs"
echo "$rs" >"$WORK/inject-server.json"; note "server side: $rs"
alive "$SRV" || fail "the server died"
sleep 0.5
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s1.json"

# --- client side
step "learn the connection on the client's TUN"
learn_flow FLOW_C "$NS_C" "$TUN_C" "sleep 0.3"
note "flow at the client: $FLOW_C"
fresh_stats "$WORK/client.log"
stat_value "$WORK/client.log" --all >"$WORK/c1.json"

step "inject $N random-seq RSTs into the client"
rc_=$(ip netns exec "$NS_C" $PY "$NT_DIR/flood_inject.py" rst --iface "$TUN_C" --flow "$FLOW_C" --count "$N" \
    --towards c --seed 21 --pps 10000) || fail "injector: $rc_"
echo "$rc_" >"$WORK/inject-client.json"; note "client side: $rc_"
alive "$CLI" || fail "the client died"
sleep 0.5
fresh_stats "$WORK/client.log"
stat_value "$WORK/client.log" --all >"$WORK/c2.json"

step "the paced flow lost nothing"
sleep 1
paced_flows_stop
paced_flows_zero lost dup corrupt foreign
[ "$(json received <<<"$PACED")" -gt 0 ] || fail "paced flow received nothing ($PACED)"
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s2.json"
fresh_stats "$WORK/client.log"
stat_value "$WORK/client.log" --all >"$WORK/c3.json"

# check_side WHO BEFORE AFTER INJECTOR-JSON: the accounting of one flood; the
# figures go to SUMMARY. Called directly, not in $(...): fail must end the scenario.
check_side() {
    local who=$1 d inw secs sent_ch lim bound
    d=$(stats_delta "$2" "$3")
    note "$who deltas: $d"
    inw=$(json in_window <<<"$4") secs=$(json seconds <<<"$4")
    [ "$(json written <<<"$4")" -ge "$N" ] || fail "$who: only $(json written <<<"$4") RSTs reached the TUN"
    [ "$(delta_of rst_not_exact "$d")" = "$(json written <<<"$4")" ] \
        || fail "$who: rst_not_exact = $(delta_of rst_not_exact "$d"), want $(json written <<<"$4") ($d)"
    [ "$(delta_of rst_received "$d")" = 0 ] || fail "$who accepted $(delta_of rst_received "$d") RSTs"
    sent_ch=$(delta_of challenge_acks_sent "$d") lim=$(delta_of reply_rate_limited "$d")
    # Every in-window RST that reached the stack is answered or suppressed. Packets the
    # TUN dropped (none, normally) were re-sent, so then only a range is known.
    local dev_drops lo
    dev_drops=$(json dropped_by_device <<<"$4")
    lo=$((inw - dev_drops))
    [ $((sent_ch + lim)) -ge "$lo" ] && [ $((sent_ch + lim)) -le "$inw" ] \
        || fail "$who: challenge ACKs $sent_ch + rate-limited $lim, want $inw in-window RSTs ($dev_drops dropped by the TUN; $d)"
    # Rate x duration + burst, the duration rounded up to the next 0.1 s plus 0.1 s of processing lag.
    bound=$(awk -v r=$RATE -v t="$secs" -v b=$BURST 'BEGIN { printf "%d", r * (int(t * 10 + 0.999) / 10 + 0.1) + b }')
    [ "$sent_ch" -le "$bound" ] || fail "$who: $sent_ch challenge ACKs in $secs s, more than $RATE/s x t + $BURST = $bound"
    local want_min=$((lo < BURST ? lo : BURST))
    [ "$sent_ch" -ge "$want_min" ] || fail "$who: only $sent_ch challenge ACKs for $inw in-window RSTs (burst $BURST)"
    [ "$(delta_of handshakes_completed "$d")" = 0 ] || fail "$who: a new handshake: the connection was replaced ($d)"
    [ "$(delta_of rst_sent "$d")" = 0 ] || fail "$who sent $(delta_of rst_sent "$d") RSTs ($d)"
    SUMMARY="$who: $(json written <<<"$4") RSTs in $secs s: $inw in window -> $sent_ch challenge ACKs sent,"
    SUMMARY+=" $lim rate-limited (bound $bound); outside window $(json outside_window <<<"$4") dropped silently"
}

step "server-side accounting"
check_side server "$WORK/s0.json" "$WORK/s1.json" "$rs"
summary_s=$SUMMARY
step "client-side accounting"
check_side client "$WORK/c1.json" "$WORK/c2.json" "$rc_"
summary_c=$SUMMARY
s() { stat_value "$WORK/server.log" "$1"; }
c() { stat_value "$WORK/client.log" "$1"; }
[ "$(s open_connections)" = 1 ] || fail "server: $(s open_connections) open connections, want 1"
[ "$(s handshakes_completed)" = 1 ] || fail "server: $(s handshakes_completed) handshakes, want 1"
[ "$(c handshakes_completed)" = 1 ] || fail "client: $(c handshakes_completed) handshakes, want 1"
[ "$(c mode_connections_failed_reset)" = 0 ] || fail "client: a connection failed or was reset"
# The challenge ACKs reached the other end as pure ACKs (informational: the router may drop some).
d=$(stats_delta "$WORK/c0.json" "$WORK/c1.json")
note "client pure ACKs in during the server flood: $(delta_of pure_acks_in "$d")"
report "$summary_s"
report "$summary_c"
report "paced flow: sent $(json sent <<<"$PACED") received $(json received <<<"$PACED") lost 0," \
    "rtt p99 $(json rtt_ms_p99 <<<"$PACED") ms; router INVALID drops $(router_invalid_drops)"
ok
