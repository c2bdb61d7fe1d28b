#!/usr/bin/env bash
# netns-tests/demo.sh BINARY — `make demo`: the tunnel end to end, in throw-away
# namespaces (the suite's topology, lib.sh), with a short readable transcript:
# the handshake as tcpdump sees it, datagrams echoed over IPv4 and IPv6 with
# RTT and throughput, the CLI's own counters, the router's view. Removes
# everything it created, also on failure or Ctrl-C. Builds nothing.
source "$(dirname "$0")/lib.sh" "$@"
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces, TUN devices)" >&2; exit 1; }
need_binary
say() { printf '%s\n' "$*"; }
# counters LOG: the stack's exit stats of a CLI log, in one readable line.
counters() {
    stat_value "$1" --all | $PY -c 'import json, sys
d = json.load(sys.stdin)
drops = {k: v for k, v in d.items() if v and k in """truncated bad_ip_version ipv4_options ipv4_bad_checksum
    ipv4_fragment ipv6_extension_headers length_mismatch not_tcp bad_data_offset bad_tcp_checksum bad_address
    bad_port bad_flags syn_with_payload no_listener unknown_rst rst_not_exact bad_ack unexpected_syn
    half_open_limit table_full reply_rate_limited tx_queue_full event_queue_full""".split()}
print("datagrams in %(datagrams_in)d out %(datagrams_out)d, packets in %(packets_in)d out %(packets_out)d, "
      "handshakes %(handshakes_completed)d, RST sent %(rst_sent)d received %(rst_received)d, "
      "idle ACKs %(idle_acks_sent)d" % d
      + ", drops %d" % d["drops_total"]
      + (" (%s)" % ", ".join("%s=%d" % kv for kv in drops.items()) if drops else "")
      + (": the kernel'"'"'s own IPv6 chatter on a new TUN" if set(drops) == {"ipv6_extension_headers"} else ""))'
}

say "faketcp demo: UDP over fake TCP, through a NAT router with strict conntrack"
topo_up
step "start the server"
say "  client ns $NS_C ($C_IP4, $C_IP6)"
say "    -> router ns $NS_R (masquerade; conntrack be_liberal=0, loose=0; 'ct state invalid drop')"
say "    -> server ns $NS_S ($S_IP4, $S_IP6; DNAT tcp/$PUB_PORT -> the server's TUN)"

start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000
say "  server: $(grep -m1 -o 'server ready.*' "$WORK/server.log")"

# one leg: FAMILY REMOTE LOCAL APP MAX (APP: the UDP application's own address)
leg() {
    local fam=$1 remote=$2 local=$3 app=$4 max=$5 out tput
    step "IPv$fam leg"
    say ""
    say "IPv$fam: faketcp client --local $local --remote $remote"
    start_client CLI "client$fam" --local "$local" --remote "$remote"
    capture CAP "$NS_S" "$TUN_S" "$WORK/hs$fam.pcap"
    out=$(udp "$NS_C" load --target "$local" --bind "$app" --count 1000 --min 1 --max "$max" --seed "$fam") \
        || fail "IPv$fam echo: $out"
    stop_pid "$CAP" TERM 5
    say "  handshake, as the server's TUN saw it:"
    tcpdump -nn -r "$WORK/hs$fam.pcap" -c 3 2>/dev/null | cut -d' ' -f2- | sed 's/^/    /'
    say "  1000 datagrams of 1..$max bytes echoed byte-exact: lost $(json lost <<<"$out"), corrupt $(json corrupt <<<"$out");" \
        "RTT avg $(json rtt_ms_avg <<<"$out") ms, p50 $(json rtt_ms_p50 <<<"$out") ms, max $(json rtt_ms_max <<<"$out") ms"
    tput=$(udp "$NS_C" load --target "$local" --bind "$app" --count 20000 --min "$max" --max "$max" \
           --window 64 --warmup 0 --seed 9) \
        || fail "IPv$fam throughput run: $tput"
    say "  throughput: 20000 x $max B echoed in $(json elapsed_s <<<"$tput") s = $(json mbit_s <<<"$tput") Mbit/s each way" \
        "(lost $(json lost <<<"$tput"); limited by the Python load generator)"
    stop_pid "$CLI" TERM 5 || fail "the IPv$fam client did not exit cleanly"
    say "  client counters at exit: $(counters "$WORK/client$fam.log")"
}
leg 4 "$S_IP4:$PUB_PORT" 127.0.0.1:5000 127.0.0.1:6000 1460
leg 6 "[$S_IP6]:$PUB_PORT" "[::1]:5001" "[::1]:6000" 1440
step "wrap up"

say ""
say "router: $(router_invalid_drops) packets dropped as conntrack INVALID;" \
    "$(ip netns exec "$NS_R" conntrack -L -p tcp --dport "$PUB_PORT" 2>/dev/null | grep -c .) TCP flows tracked"
stop_pid "$SRV" TERM 5 || fail "the server did not exit cleanly"
say "server counters at exit: $(counters "$WORK/server.log")"
_run_cleanup
say "removed the namespaces, TUNs and processes; done in $(elapsed) s"
