#!/usr/bin/env bash
# 09-wireguard: WireGuard (wireguard-go + wg) between the end namespaces over the
# tunnel: the client's wg peer endpoint is the faketcp client's UDP address, the
# faketcp server forwards to the server's wg port. wg MTU 1420 over the 1500
# TUN: a full-size wg packet is 1420 + 32 = 1452 bytes of UDP payload, within
# the 1460 one segment carries. Full-size pings and a 4 MiB TCP transfer
# (sha256-checked) must succeed.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_tool wireguard-go wg socat ss
topo_up
WG_C=ftwc$SUF WG_S=ftws$SUF
WG_IP_C=10.99.0.1 WG_IP_S=10.99.0.2

step "start the faketcp server (-> wg port 51820) and client (UDP 127.0.0.1:5000)"
start_server SRV server --remote 127.0.0.1:51820 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT"

# --- wireguard-go in each end namespace
step "start wireguard-go in both end namespaces"
for side in c s; do
    if [ $side = c ]; then ns=$NS_C ifc=$WG_C; else ns=$NS_S ifc=$WG_S; fi
    defer "rm -f /var/run/wireguard/$ifc.sock"
    _track sock "/var/run/wireguard/$ifc.sock"
    bg WGPID "$ns" "wg-$side" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go -f "$ifc"
    if ! wait_for 5 ip -n "$ns" link show "$ifc" >/dev/null 2>&1; then
        alive "$WGPID" || skip "wireguard-go cannot run here: $(tail -n 2 "$WORK/wg-$side.log" | tr '\n' ' ')"
        fail "wireguard-go did not create $ifc within 5 s"
    fi
    wait_for 5 test -S "/var/run/wireguard/$ifc.sock" || fail "no UAPI socket for $ifc"
    (umask 077 && wg genkey >"$WORK/key-$side")
    wg pubkey <"$WORK/key-$side" >"$WORK/pub-$side"
done
ip netns exec "$NS_S" wg set "$WG_S" private-key "$WORK/key-s" listen-port 51820 \
    peer "$(cat "$WORK/pub-c")" allowed-ips "$WG_IP_C/32" || fail "wg set (server)"
ip netns exec "$NS_C" wg set "$WG_C" private-key "$WORK/key-c" listen-port 51821 \
    peer "$(cat "$WORK/pub-s")" allowed-ips "$WG_IP_S/32" endpoint 127.0.0.1:5000 || fail "wg set (client)"
ip -n "$NS_S" addr add "$WG_IP_S/24" dev "$WG_S"
ip -n "$NS_C" addr add "$WG_IP_C/24" dev "$WG_C"
ip -n "$NS_S" link set "$WG_S" mtu 1420 up
ip -n "$NS_C" link set "$WG_C" mtu 1420 up

# --- ping over wg: small and full-size (1420 - 20 - 8 = 1392 bytes of ICMP data)
step "ping over WireGuard"
out=$(udp "$NS_C" ping --host "$WG_IP_S" --count 5 --wait 3 --min-ok 4) || fail "ping: $out"
note "ping: $out"
out=$(udp "$NS_C" ping --host "$WG_IP_S" --count 5 --size 1392 --min-ok 5) || fail "full-size ping: $out"
note "ping 1392: $out"
ip netns exec "$NS_C" wg show "$WG_C" latest-handshakes | grep -qv '\s0$' || fail "no WireGuard handshake"

# --- a TCP transfer over wg (TCP over WireGuard over fake TCP)
step "4 MiB TCP transfer over WireGuard"
head -c $((4 << 20)) /dev/urandom >"$WORK/blob"
bg RX "$NS_S" tcp-rx socat -u "TCP-LISTEN:9000,bind=$WG_IP_S,reuseaddr" "OPEN:$WORK/blob.rx,creat,trunc"
wait_for 5 sh -c "ip netns exec $NS_S ss -ltn | grep -q '$WG_IP_S:9000'" || fail "socat did not listen"
t0=$(date +%s.%N)
timeout 60 ip netns exec "$NS_C" socat -u "OPEN:$WORK/blob" "TCP:$WG_IP_S:9000,connect-timeout=5" \
    || fail "the sending socat failed"
# The receiver exits by itself at the sender's EOF, once everything has arrived.
_rx_done() { ! alive "$RX"; }
wait_for 30 _rx_done || fail "the receiver still has not seen EOF after 30 s ($(stat -c %s "$WORK/blob.rx") bytes)"
secs=$(echo "$(date +%s.%N) $t0" | awk '{printf "%.2f", $1 - $2}')
[ "$(sha256sum <"$WORK/blob" | cut -c1-64)" = "$(sha256sum <"$WORK/blob.rx" | cut -c1-64)" ] \
    || fail "the received file differs ($(stat -c %s "$WORK/blob.rx") of $((4 << 20)) bytes)"
note "4 MiB in $secs s"
fresh_stats "$WORK/server.log"
[ "$(stat_value "$WORK/server.log" handshakes_completed)" = 1 ] || fail "more than one fake-TCP connection for one wg peer"
ok
