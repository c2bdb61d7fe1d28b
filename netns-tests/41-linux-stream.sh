#!/usr/bin/env bash
# 41-linux-stream: a --profile linux stream is an unremarkable TCP stream.
#  A) tshark's expert analysis of a loss-free capture (the router's server
#     side) of a stream in both directions reports no TCP anomaly (errors,
#     warnings, notes: ACKed unseen segment, previous segment not captured,
#     zero or full window, retransmission, dup ACK...). The same stream in the
#     default profile is printed as the contrast.
#  B) strict conntrack (be_liberal=0, INVALID dropped by the router) passes a
#     one-way 100 MB stream with zero INVALID drops, and the receiver's ACK
#     cadence (a pure ACK at most every second full-sized segment or after
#     40 ms) is counted: the cost of the ACK stream.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
command -v tcpdump >/dev/null || skip "no tcpdump (apt-get install tcpdump)"
command -v tshark >/dev/null || skip "no tshark (apt-get install --no-install-recommends tshark)"
topo_up

# anomalies PCAP: "errors warnings notes" of tshark's TCP expert infos.
anomalies() {
    tshark -r "$1" -q -z expert 2>/dev/null | $PY -c '
import re, sys
sev, n = None, {"Errors": 0, "Warns": 0, "Notes": 0}
for line in sys.stdin:
    m = re.match(r"^(Errors|Warns|Notes|Chats) \(\d+\)", line)
    if m: sev = m.group(1); continue
    f = line.split()
    # the RST a client sends its connections on exit is the close, not an anomaly
    if "Connection reset (RST)" in line: continue
    if sev in n and len(f) >= 4 and f[0].isdigit() and f[2] == "TCP": n[sev] += int(f[0])
print(n["Errors"], n["Warns"], n["Notes"])'
}
# tshark's expert lines (Errors/Warns/Notes) for the log.
expert_lines() { tshark -r "$1" -q -z expert 2>/dev/null | grep -E "^ +[0-9]+ " | grep -v "Connection establish" | head -8; }

start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1

run_stream() {  # run_stream NAME CLIENT_ARGS...: echo stream of 1 flow, 3000 datagrams each way
    local name=$1
    shift
    capture CAP "$NS_R" "$V_RS" "$WORK/$name.pcap"
    start_client CLI "client-$name" --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1 "$@"
    out=$(udp "$NS_C" load --target 127.0.0.1:5000 --flows 1 --count 3000 --window 8 --min 1000 --max 1400 --seed 4) \
        || fail "$name: load: $out"
    sleep 0.3  # the last delayed ACKs
    stop_pid "$CLI" TERM 5
    sleep 1.2  # tcpdump (not in immediate mode) hands packets over about once a second
    stop_pid "$CAP" INT 3
}

step "A: a two-way linux-profile stream, captured loss-free by the router"
run_stream linux --profile linux
read -r le lw ln < <(anomalies "$WORK/linux.pcap")
step "A: the same stream in the default profile (contrast)"
run_stream default
read -r de dw dn < <(anomalies "$WORK/default.pcap")
echo "    tshark TCP expert infos (errors/warnings/notes): --profile linux $le/$lw/$ln, --profile phantun $de/$dw/$dn" >&2
[ -n "$dn" ] && [ -n "$ln" ] || fail "tshark gave no expert summary"
if [ $((le + lw + ln)) != 0 ]; then
    fail "tshark finds TCP anomalies in the linux-profile stream: $(expert_lines "$WORK/linux.pcap" | tr -s ' ' | tr '\n' ';')"
fi
expert_lines "$WORK/default.pcap" | sed 's/^/      default: /' >&2

step "B: a one-way 100 MB linux-profile stream through strict conntrack"
stop_pid "$ECHO" TERM 3
start_echo SINK "$NS_S" 127.0.0.1:7001 --sink
stop_pid "$SRV" TERM 5
start_server SRV2 server2 --remote 127.0.0.1:7001 --stats-interval 1
start_client CLI3 client-oneway --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 1 --profile linux
inv0=$(router_invalid_drops)
# 75000 x 1400 B = 105 MB, in bursts of 50 with a 1 ms pause (no pacing beyond that).
out=$(udp "$NS_C" send --target 127.0.0.1:5000 --count 1500 --burst 50 --size 1400 --interval 0.001) || fail "send: $out"
sleep 1.5
fresh_stats "$WORK/server2.log"
fresh_stats "$WORK/client-oneway.log"
inv=$(( $(router_invalid_drops) - inv0 ))
got=$(stat_value "$WORK/server2.log" datagrams_in)
acks=$(stat_value "$WORK/server2.log" idle_acks_sent)
wfull=$(stat_value "$WORK/client-oneway.log" mode_dropped_window_full)
sent=$(stat_value "$WORK/client-oneway.log" datagrams_out)
echo "    one-way 105 MB: client sent $sent datagrams, server received $got, server ACKs $acks" \
     "($(awk -v a="$acks" -v g="$got" 'BEGIN{printf "%.3f", g ? a / g : 0}') per datagram), window-full drops $wfull," \
     "router INVALID drops $inv" >&2
[ "$inv" = 0 ] || fail "strict conntrack dropped $inv INVALID packets of the linux-profile stream"
[ "${got:-0}" -ge 52500 ] || fail "only ${got:-0} of 75000 datagrams arrived (want at least 70%)"
[ "${acks:-0}" -gt 0 ] || fail "the receiver sent no ACK stream"
ok
