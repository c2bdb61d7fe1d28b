#!/usr/bin/env bash
# 01-echo: UDP through the tunnel, byte-exact, over IPv4 and over IPv6.
# 1000 datagrams of random sizes 1..max each way (client app -> server echo ->
# client app); max is what one segment carries with MTU 1500:
# IPv4 1500-20-20 = 1460, IPv6 1500-40-20 = 1440.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
topo_up

# --- the server: fake TCP on $PUB_PORT, UDP echo behind it
step "start the UDP echo and the server"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1

# --- IPv4: the client's fake TCP goes to the server's IPv4 address
step "IPv4 client"
start_client CLI4 client4 --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT"
step "1000 datagrams of 1..1460 bytes over IPv4"
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --count 1000 --min 1 --max 1460 --seed 4) \
    || fail "IPv4: $out"
note "IPv4: $out"
stop_pid "$CLI4" TERM 5 || fail "IPv4 client exited with status $? on SIGTERM"

# --- IPv6: the client's fake TCP goes to the server's IPv6 address; its UDP side too
step "IPv6 client"
start_client CLI6 client6 --local "[::1]:5001" --remote "[$S_IP6]:$PUB_PORT"
step "1000 datagrams of 1..1440 bytes over IPv6"
out=$(udp "$NS_C" load --target "[::1]:5001" --count 1000 --min 1 --max 1440 --seed 6) \
    || fail "IPv6: $out"
note "IPv6: $out"
stop_pid "$CLI6" TERM 5 || fail "IPv6 client exited with status $? on SIGTERM"

# --- the server saw two connections and no drops, and exits cleanly
step "server stats and exit"
stop_pid "$SRV" TERM 5 || fail "server exited with status $? on SIGTERM"
log="$WORK/server.log"
[ "$(stat_value "$log" handshakes_completed)" = 2 ] || fail "server handshakes: $(stat_value "$log" handshakes_completed), want 2"
[ "$(stat_value "$log" tcp_drops)" = 0 ] || fail "server dropped packets: $(stat_value "$log" --all)"
[ "$(stat_value "$log" datagrams_in)" = 2002 ] || fail "server datagrams in: $(stat_value "$log" datagrams_in), want 2002 (2 warm-up + 2000)"
[ "$(router_invalid_drops)" = 0 ] || fail "router dropped $(router_invalid_drops) INVALID packets"
ok
