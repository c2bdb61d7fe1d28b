#!/usr/bin/env bash
# 23-table-full: resource exhaustion with a small table. The server runs with
# --max-connections 8 --max-half-open 4 while 2 established flows echo at a
# steady pace.
#  A) 20 spoofed SYNs (from the router, as in 21-syn-flood): 4 become half-open,
#     16 are refused as half_open_limit; the half-open count never exceeds 4;
#     they time out after 6 s.
#  B) 10 new UDP peers at once: 6 fit the table (2 + 6 = 8 connections) and
#     echo; the SYNs of the other 4 are refused (table_full / half_open_limit),
#     silently (no SYN-ACK, no RST), so those 4 never connect.
# Throughout, the 2 established flows lose nothing and are never replaced.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up
MAXC=8 MAXH=4

max_half_open() { grep -o 'half-open [0-9]*' "$1" | awk '$2 > m { m = $2 } END { print m + 0 }'; }
_half_open_zero() { [ "$(stat_value "$WORK/server.log" half_open_connections)" = 0 ]; }

step "start the UDP echo, the server (table $MAXC, half-open $MAXH) and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
# One queue each: with N workers the CLI gives each stack 1/N of the table, and
# which stack a new flow lands on follows its ports, so "exactly MAXC - 2 new
# peers connect" holds only for one stack. 24-multiqueue covers the threads.
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1 --max-connections $MAXC --max-half-open $MAXH \
    --queues 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1 --queues 1
ip -n "$NS_R" route add blackhole 198.18.0.0/15 || fail "blackhole route in the router"
DST_MAC=$(ip netns exec "$NS_S" cat "/sys/class/net/$V_S/address") || fail "MAC of $V_S"

step "2 established flows, paced (50 datagrams/s each)"
paced_flows_start 2 127.0.0.1:6000
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s0.json"

# --- A: the half-open bound
step "A: 20 spoofed SYNs"
inj=$(ip netns exec "$NS_R" $PY "$NT_DIR/flood_inject.py" syn --iface "$V_RS" --dst-mac "$DST_MAC" --dst "$S_IP4" \
    --port "$PUB_PORT" --count 20 --pps 1000 --seed 23) || fail "injector: $inj"
sleep 0.5
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s1.json"
d=$(stats_delta "$WORK/s0.json" "$WORK/s1.json")
note "A: $d"
[ "$(delta_of half_open_limit "$d")" = 16 ] || fail "half_open_limit counted $(delta_of half_open_limit "$d"), want 16 ($d)"
[ "$(stat_value "$WORK/server.log" half_open_connections)" = $MAXH ] \
    || fail "half-open connections $(stat_value "$WORK/server.log" half_open_connections), want $MAXH"
step "A: the half-opens time out"
wait_for 10 _half_open_zero || fail "half-opens still there after 10 s"
stat_value "$WORK/server.log" --all >"$WORK/s2.json"
dA=$(stats_delta "$WORK/s0.json" "$WORK/s2.json")
[ "$(delta_of handshakes_failed "$dA")" = $MAXH ] || fail "handshakes_failed $(delta_of handshakes_failed "$dA"), want $MAXH"

# --- B: the table
step "B: 10 new UDP peers at once"
for i in $(seq 0 9); do
    ip netns exec "$NS_C" $PY "$NT_DIR/udptool.py" probe --target 127.0.0.1:5000 --bind 127.0.0.1:$((6100 + i)) \
        --tries 28 --interval 0.25 >"$WORK/probe$i.out" 2>&1 &
    eval "P$i=\$!"
done
okc=0
for i in $(seq 0 9); do
    eval "p=\$P$i"
    if wait "$p"; then okc=$((okc + 1)); fi
done
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s3.json"
dB=$(stats_delta "$WORK/s2.json" "$WORK/s3.json")
note "B: $dB"
[ "$okc" = $((MAXC - 2)) ] || fail "$okc of 10 new peers connected, want $((MAXC - 2)) ($dB)"
[ "$(stat_value "$WORK/server.log" open_connections)" = $MAXC ] \
    || fail "server open connections $(stat_value "$WORK/server.log" open_connections), want $MAXC"
refusedB=$(($(delta_of table_full "$dB") + $(delta_of half_open_limit "$dB")))
[ "$(delta_of table_full "$dB")" -gt 0 ] || fail "no SYN counted table_full ($dB)"
[ "$(delta_of rst_sent "$dB")" = 0 ] || fail "refused SYNs were answered with RSTs ($dB)"
mho=$(max_half_open "$WORK/server.log")
[ "$mho" -le $MAXH ] || fail "half-open connections reached $mho, above $MAXH"

step "the established flows lost nothing and were never replaced"
paced_flows_stop
paced_flows_zero lost dup corrupt foreign
alive "$SRV" || fail "the server died"
fresh_stats "$WORK/client.log"
report "A: 20 spoofed SYNs -> $MAXH half-open, half_open_limit $(delta_of half_open_limit "$d"), timed out $MAXH"
report "B: 10 new peers -> $okc connected, SYNs refused $refusedB (table_full $(delta_of table_full "$dB")," \
    "half_open_limit $(delta_of half_open_limit "$dB")); open connections $MAXC; half-open peak $mho;" \
    "client connect failures $(stat_value "$WORK/client.log" mode_connections_failed_reset)"
report "established flows: sent $(json sent <<<"$PACED") received $(json received <<<"$PACED") lost 0"
ok
