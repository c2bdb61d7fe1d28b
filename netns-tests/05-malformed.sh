#!/usr/bin/env bash
# 05-malformed: hostile input into the server stack, on a live IPv4 and a live
# IPv6 connection. The process stays up, each bad packet is dropped and counted
# under its reason (README, "Hostile input"), nothing
# reaches the UDP service, nothing is answered, both connections keep echoing;
# segments for unknown tuples get exactly one RST|ACK each (an RST gets none).
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up

step "start the logging UDP echo, the server and two clients (IPv4, IPv6)"
start_echo ECHO "$NS_S" 127.0.0.1:7000 --log "$WORK/server-app.hex"
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI4 client4 --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT"
# A second client in the same namespace needs its own TUN and addresses.
start_faketcp CLI6 "$NS_C" client6 client --tun "fttd$SUF" --tun-local 192.168.202.1 --tun-peer 192.168.202.2 \
    --tun-local6 fcca::1 --tun-peer6 fcca::2 --local 127.0.0.1:5001 --remote "[$S_IP6]:$PUB_PORT"

step "learn both flows"
learn_flow FLOW4 "$NS_S" "$TUN_S" "$(probe_cmd 127.0.0.1:6000) && sleep 0.2"
FLOW6=$(scapy_tool "$NS_S" learn --iface "$TUN_S" --port "$PUB_PORT" --fam 6 --trigger \
    "ip netns exec $NS_C $PY $NT_DIR/udptool.py probe --target 127.0.0.1:5001 --bind 127.0.0.1:6001") \
    || fail "learning the IPv6 flow: $FLOW6"
note "v4: $FLOW4"; note "v6: $FLOW6"
sleep 1.2  # both clients' idle ACKs for the echoes go out 1 s after them: quiet flows from here
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/stats0.json"
_alive_srv() { alive "$SRV" || fail "the server process died"; }

# --- the catalogue: every drop reason the wire can trigger, twice each
step "inject the malformed catalogue on both flows"
m4=$(scapy_tool "$NS_S" malformed --iface "$TUN_S" --flow "$FLOW4" --repeat 2) || fail "inject: $m4"
m6=$(scapy_tool "$NS_S" malformed --iface "$TUN_S" --flow "$FLOW6" --repeat 2) || fail "inject: $m6"
_alive_srv
for m in "$m4" "$m6"; do
    [[ "$m" == *'"rst_replies": []'* ]] || fail "malformed packets were answered: $m"
done
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/stats1.json"
d=$(stats_delta "$WORK/stats0.json" "$WORK/stats1.json")
note "deltas: $d"
# Exact per-reason accounting: the expected counts of both runs, summed.
exp=$($PY -c 'import json,sys
e = {}
for m in sys.argv[1:]:
    for k, v in json.loads(m)["expected"].items():
        e[k] = e.get(k, 0) + v
print(" ".join("%s=%d" % kv for kv in sorted(e.items())))' "$m4" "$m6")
note "expected: $exp"
for kv in $exp; do
    r=${kv%%=*} want=${kv#*=} got=$(delta_of "${kv%%=*}" "$d")
    case $r in
        # the kernel's own IPv6 chatter out of the TUN may add to these two
        ipv6_extension_headers | not_tcp) [ "$got" -ge "$want" ] ;;
        *) [ "$got" = "$want" ] ;;
    esac || fail "drop $r: counted $got, want $want (all deltas: $d)"
done
for r in rst_received rst_sent challenge_acks_sent no_listener datagrams_in handshakes_completed; do
    [ "$(delta_of $r "$d")" = 0 ] || fail "$r changed by $(delta_of $r "$d") (all deltas: $d)"
done

# --- every truncation of a valid data segment, then byte-flipped segments
step "inject every truncation and 300 mutated segments per flow"
f4=$(scapy_tool "$NS_S" fuzz --iface "$TUN_S" --flow "$FLOW4" --count 0) || fail "fuzz: $f4"
f6=$(scapy_tool "$NS_S" fuzz --iface "$TUN_S" --flow "$FLOW6" --count 0) || fail "fuzz: $f6"
ntr=$(($(json truncations <<<"$f4") + $(json truncations <<<"$f6")))
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/stats2.json"
d=$(stats_delta "$WORK/stats1.json" "$WORK/stats2.json")
[ "$(delta_of truncated "$d")" = "$ntr" ] || fail "$ntr truncations sent, truncated counted $(delta_of truncated "$d") ($d)"
g4=$(scapy_tool "$NS_S" fuzz --iface "$TUN_S" --flow "$FLOW4" --truncations 0 --count 300 --seed 41) || fail "fuzz: $g4"
g6=$(scapy_tool "$NS_S" fuzz --iface "$TUN_S" --flow "$FLOW6" --truncations 0 --count 300 --seed 61) || fail "fuzz: $g6"
_alive_srv
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/stats3.json"
d=$(stats_delta "$WORK/stats2.json" "$WORK/stats3.json")
note "mutations: $d"
[ "$(delta_of drops_total "$d")" -ge 600 ] || fail "600 mutated packets, only $(delta_of drops_total "$d") drops ($d)"
for r in rst_received rst_sent no_listener datagrams_in handshakes_completed; do
    [ "$(delta_of $r "$d")" = 0 ] || fail "after mutated packets $r changed by $(delta_of $r "$d") ($d)"
done

# --- nothing reached the UDP service, both connections still echo
step "nothing was delivered; both connections keep echoing"
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
[ "$(hex MUTATED)" = 4d555441544544 ] || fail "od cannot hex-encode (got '$(hex MUTATED)'): the check below would match anything"
if grep -qiE "$(hex MALFORMED)|$(hex TRUNCATED)|$(hex MUTATED)" "$WORK/server-app.hex"; then
    fail "a malformed segment reached the UDP service"
fi
out=$(udp "$NS_C" probe --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --tries 3) || fail "IPv4 flow: $out"
[ "$(json tries <<<"$out")" = 1 ] || fail "IPv4 flow lost a datagram: $out"
out=$(udp "$NS_C" probe --target 127.0.0.1:5001 --bind 127.0.0.1:6001 --tries 3) || fail "IPv6 flow: $out"
[ "$(json tries <<<"$out")" = 1 ] || fail "IPv6 flow lost a datagram: $out"
[ "$(stat_value "$WORK/server.log" open_connections)" = 2 ] || fail "server: $(stat_value "$WORK/server.log" open_connections) open connections, want 2"

# --- unknown tuples: exactly one RST|ACK each, with RFC 793 seq/ack; none for an RST
step "unknown tuples get exactly one RST each"
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/stats4.json"
u4=$(scapy_tool "$NS_S" unknown --iface "$TUN_S" --dst "$SRV_TUN4" --port "$PUB_PORT" --src "$RS_IP4" --count 20) \
    || fail "IPv4 unknown tuples: $u4"
u6=$(scapy_tool "$NS_S" unknown --iface "$TUN_S" --dst "$SRV_TUN6" --port "$PUB_PORT" --src "$RS_IP6" --count 20 \
    --first-sport 1300) || fail "IPv6 unknown tuples: $u6"
note "v4: $u4"; note "v6: $u6"
fresh_stats "$WORK/server.log"
stat_value "$WORK/server.log" --all >"$WORK/stats5.json"
d=$(stats_delta "$WORK/stats4.json" "$WORK/stats5.json")
[ "$(delta_of no_listener "$d")" = 32 ] || fail "no_listener counted $(delta_of no_listener "$d"), want 32 ($d)"
[ "$(delta_of unknown_rst "$d")" = 8 ] || fail "unknown_rst counted $(delta_of unknown_rst "$d"), want 8 ($d)"
_alive_srv
ok
