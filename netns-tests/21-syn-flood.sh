#!/usr/bin/env bash
# 21-syn-flood: 50 000 spoofed SYNs (random sources in 198.18.0.0/15, random
# source ports and ISNs) leave the router namespace towards the server's public
# port, as Ethernet frames prebuilt in memory and written with a raw socket out
# of the router's server-side veth; the server namespace DNATs them to the
# stack like any client's SYN. Meanwhile 4 established flows echo at a steady
# pace. Requirements:
#  - the half-open count never exceeds StackConfig::max_half_open (1024, the
#    CLI has no flag for it) in any stats dump, and the bound is reached;
#  - every SYN beyond it is refused and counted (half_open_limit / table_full);
#  - the server's RSS (VmRSS) grows by less than 1 MiB;
#  - the established flows lose less than 1% of their datagrams;
#  - afterwards the half-open connections time out (6 SYN-ACKs 1 s apart, gone
#    at 6 s) and a new flow connects and echoes.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up
N=${SYN_FLOOD_COUNT:-50000}
PPS=${SYN_FLOOD_PPS:-20000}
MAX_HALF_OPEN=1024  # StackConfig::max_half_open default

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }  # utime + stime
# The largest half-open count in any stats dump of LOG.
max_half_open() { grep -o 'half-open [0-9]*' "$1" | awk '$2 > m { m = $2 } END { print m + 0 }'; }
_half_open_zero() { [ "$(stat_value "$WORK/server.log" half_open_connections)" = 0 ]; }

step "start the UDP echo, the server and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1
# The TUN keeps its default queue (500): the realistic path; SYN_FLOOD_TXQ=N changes it.
[ -z "${SYN_FLOOD_TXQ:-}" ] || ip -n "$NS_S" link set "$TUN_S" txqueuelen "$SYN_FLOOD_TXQ" || fail "txqueuelen on $TUN_S"
# The SYN-ACKs to the spoofed sources go nowhere: a blackhole in the router.
ip -n "$NS_R" route add blackhole 198.18.0.0/15 || fail "blackhole route in the router"
DST_MAC=$(ip netns exec "$NS_S" cat "/sys/class/net/$V_S/address") || fail "MAC of $V_S"

step "start 4 paced echo flows (50 datagrams/s each)"
paced_flows_start 4 127.0.0.1:6000
sleep 1
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s0.json"
rss0=$(rss_kb "$SRV")
cpu0=$(cpu_ticks "$SRV")

step "flood: $N spoofed SYNs at $PPS/s from the router namespace"
t_flood=$(date +%s.%N)
inj=$(ip netns exec "$NS_R" $PY "$NT_DIR/flood_inject.py" syn --iface "$V_RS" --dst-mac "$DST_MAC" --dst "$S_IP4" \
    --port "$PUB_PORT" --count "$N" --pps "$PPS" --seed 21) || fail "injector: $inj"
note "injector: $inj"
alive "$SRV" || fail "the server died during the flood"
sleep 1.5  # the flood drains; one more stats dump
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/s1.json"
rss1=$(rss_kb "$SRV")
cpu1=$(cpu_ticks "$SRV")
d=$(stats_delta "$WORK/s0.json" "$WORK/s1.json")
note "during the flood: $d"
t_flood_end=$(date +%s.%N)

step "half-open bound and refusals"
mho=$(max_half_open "$WORK/server.log")
[ "$mho" -le "$MAX_HALF_OPEN" ] || fail "half-open connections reached $mho, above the bound $MAX_HALF_OPEN"
[ "$mho" -ge "$((MAX_HALF_OPEN - 50))" ] || fail "half-open connections peaked at $mho: the flood never reached the bound"
refused=$(($(delta_of half_open_limit "$d") + $(delta_of table_full "$d")))
[ "$refused" -gt 0 ] || fail "no SYN was refused ($d)"
[ "$(delta_of open_connections "$d")" = 0 ] || fail "established connections changed during the flood ($d)"
rss_growth=$((rss1 - rss0))
[ "$rss_growth" -lt 1024 ] || fail "server RSS grew by $rss_growth KiB during the flood ($rss0 -> $rss1 KiB)"

step "the established flows lost less than 1% during the flood"
# Stop them now: their run covers the flood and nothing else of note.
paced_flows_stop
fsent=$(json sent <<<"$PACED") flost=$(json lost <<<"$PACED")
loss_pct=$(awk -v l="$flost" -v s="$fsent" 'BEGIN { printf "%.3f", 100 * l / s }')
awk -v p="$loss_pct" 'BEGIN { exit !(p < 1.0) }' || fail "the established flows lost $flost of $fsent datagrams ($loss_pct%)"
paced_flows_zero dup corrupt foreign
[ -z "$(json flows_never_echoed <<<"$PACED" | tr -d '[]')" ] || fail "a flow never echoed ($PACED)"

step "the half-open connections time out (6 s after the last one was accepted)"
wait_for 15 _half_open_zero || fail "half-open connections still $(stat_value "$WORK/server.log" half_open_connections) after 15 s"
t_recovered=$(date +%s.%N)
stat_value "$WORK/server.log" --all >"$WORK/s2.json"
d2=$(stats_delta "$WORK/s0.json" "$WORK/s2.json")
note "flood + timeouts: $d2"
# Every SYN that reached the stack was either refused or became a half-open that failed.
reached=$(($(delta_of half_open_limit "$d2") + $(delta_of table_full "$d2") + $(delta_of handshakes_failed "$d2")))
written=$(json written <<<"$inj")
[ "$reached" -ge $((written * 99 / 100)) ] || fail "only $reached of $written SYNs reached the stack ($d2)"
# Each half-open got its SYN-ACK and 5 retransmissions, no more (handshake_attempts 6).
[ "$(delta_of syn_retransmits "$d2")" = $((5 * $(delta_of handshakes_failed "$d2"))) ] \
    || fail "SYN-ACK retransmissions $(delta_of syn_retransmits "$d2") != 5 x $(delta_of handshakes_failed "$d2") half-opens"
rss2=$(rss_kb "$SRV")

step "a new flow connects and echoes after the recovery"
out=$(udp "$NS_C" probe --target 127.0.0.1:5000 --bind 127.0.0.1:6100 --tries 12 --interval 0.25) \
    || fail "a new flow did not connect after the flood: $out"
fresh_stats "$WORK/server.log"
[ "$(stat_value "$WORK/server.log" handshakes_completed)" = 5 ] \
    || fail "server handshakes = $(stat_value "$WORK/server.log" handshakes_completed), want 5 (4 flows + the new one)"
alive "$SRV" || fail "the server died"
report "$written SYNs in $(json seconds <<<"$inj") s ($(json pps <<<"$inj")/s); reached the stack $reached;" \
    "half-open peak $mho (bound $MAX_HALF_OPEN); refused half_open_limit $(delta_of half_open_limit "$d2")" \
    "table_full $(delta_of table_full "$d2"); half-opens timed out $(delta_of handshakes_failed "$d2");" \
    "control packets out (SYN-ACKs, ACKs) $(( $(delta_of packets_out "$d2") - $(delta_of datagrams_out "$d2") ))"
report "server CPU during the flood: $(awk -v t=$((cpu1 - cpu0)) -v h="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / h }') s"
report "server VmRSS: before $rss0 KiB, after the flood $rss1 KiB (+$rss_growth), after the timeouts $rss2 KiB"
report "established flows: $flost of $fsent datagrams lost ($loss_pct%), rtt p99 $(json rtt_ms_p99 <<<"$PACED") ms," \
    "max $(json rtt_ms_max <<<"$PACED") ms; recovered $(awk -v a="$t_recovered" -v b="$t_flood" 'BEGIN { printf "%.1f", a - b }') s" \
    "after the flood began; new flow: $out"
ok
