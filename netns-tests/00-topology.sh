#!/usr/bin/env bash
# 00-topology: the namespaces themselves, before any faketcp: plain UDP crosses
# the NAT router both ways over IPv4 and IPv6, and the server sees the router's
# address (masquerade). If this fails, every other result is meaningless.
source "$(dirname "$0")/lib.sh" "$@"
need_root

topo_up

# --- UDP echo in the server ns on its public addresses
step "plain UDP echo across the router (IPv4)"
start_echo E4 "$NS_S" "0.0.0.0:7000" --log "$WORK/echo4.hex"
out=$(udp "$NS_C" load --target "$S_IP4:7000" --count 200 --max 1472 --warmup 0) || fail "IPv4 UDP: $out"

step "plain UDP echo across the router (IPv6)"
start_echo E6 "$NS_S" "[::]:7001"
out=$(udp "$NS_C" load --target "[$S_IP6]:7001" --count 200 --max 1452 --warmup 0) || fail "IPv6 UDP: $out"

# --- the router masquerades: conntrack shows the client behind the router address
step "the router NATs the client"
n=$(ip netns exec "$NS_R" conntrack -L -p udp --dport 7000 2>/dev/null | grep -c "src=$S_IP4 dst=$RS_IP4")
[ "$n" -ge 1 ] || fail "no masqueraded UDP entry in the router's conntrack"
[ "$(router_invalid_drops)" = 0 ] || fail "INVALID drops on plain UDP: $(router_invalid_drops)"
ok
