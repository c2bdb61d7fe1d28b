#!/usr/bin/env bash
# 42-linux-interop: the compatibility matrix of the wire profiles.
#   client \ server        faketcp phantun-profile   faketcp linux-profile   phantun 0.8.1
#   faketcp --profile linux     works (linux wire)    works (linux wire)      refused: clear error
#   faketcp --profile phantun   works (phantun wire)  works (phantun wire)    (01-echo and peers)
#   phantun 0.8.1 client        works                 works                   -
# A server answers each SYN in its sender's style: the SYN-ACK (captured at
# the router) carries the kernel's options for a linux client and phantun's
# NOP + window scale 14 with ISN 0 for the others. Echoes are byte-exact.
# The phantun rows need ../shared/peers (skipped loudly without them).
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up
PEERS=$(cd "$NT_DIR/../.." 2>/dev/null && pwd)/shared/peers
PH_CLIENT=$PEERS/phantun/client
PH_SERVER=$PEERS/phantun/server

start_echo ECHO "$NS_S" 127.0.0.1:7000
_has_link() { ip -n "$1" link show "$2" >/dev/null 2>&1; }

# synack_style PCAP: "linux" (MSS option, ISN != 0) or "phantun" (NOP + WS 14 only, ISN 0) or "none".
synack_style() {
    $PY - "$1" "$PUB_PORT" <<'EOF'
import sys
from scapy.all import TCP, rdpcap
port = int(sys.argv[2])
for p in rdpcap(sys.argv[1]):
    if TCP in p and p[TCP].sport == port and p[TCP].flags == "SA":
        kinds = [k for k, _ in p[TCP].options]
        if kinds[:1] == ["MSS"] and "Timestamp" in kinds and p[TCP].seq != 0:
            print("linux")
        elif kinds == ["NOP", "WScale"] and p[TCP].seq == 0:
            print("phantun")
        else:
            print("other:%s" % kinds)
        break
else:
    print("none")
EOF
}

# case NAME WANT_STYLE SERVER_PROFILE CLIENT_KIND: one cell of the matrix.
# CLIENT_KIND: linux | phantun-profile | phantun-binary
matrix_case() {
    local name=$1 want=$2 sprof=$3 ckind=$4 cli srv cap
    step "$name"
    start_server srv "server-$name" --remote 127.0.0.1:7000 --profile "$sprof"
    capture cap "$NS_R" "$V_RS" "$WORK/$name.pcap"
    case $ckind in
        linux) start_client cli "client-$name" --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --profile linux ;;
        phantun-profile) start_client cli "client-$name" --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" ;;
        phantun-binary)
            bg cli "$NS_C" "client-$name" env RUST_LOG=info "$PH_CLIENT" --local 127.0.0.1:5000 \
                --remote "$S_IP4:$PUB_PORT" --tun "$TUN_C" -4
            wait_for 10 _has_link "$NS_C" "$TUN_C" || fail "phantun client made no TUN"
            sleep 0.5 ;;
    esac
    out=$(udp "$NS_C" load --target 127.0.0.1:5000 --flows 2 --count 50 --window 4 --max 1300 --seed 7) \
        || fail "$name: echo failed: $out"
    sleep 1.2  # tcpdump (not in immediate mode) hands packets over about once a second
    stop_pid "$cap" INT 3
    local style
    style=$(synack_style "$WORK/$name.pcap")
    [ "$style" = "$want" ] || fail "$name: the server answered in style '$style', want '$want'"
    [ "$(router_invalid_drops)" = 0 ] || fail "$name: router dropped $(router_invalid_drops) INVALID packets"
    echo "    $name: echo ok, SYN-ACK style $style" >&2
    stop_pid "$cli" TERM 5
    stop_pid "$srv" TERM 5
}

matrix_case linux-to-linux linux linux linux
matrix_case linux-to-default linux phantun linux
matrix_case default-to-linux phantun linux phantun-profile
if [ -x "$PH_CLIENT" ] && [ -x "$PH_SERVER" ]; then
    matrix_case phantun-to-default phantun phantun phantun-binary
    matrix_case phantun-to-linux phantun linux phantun-binary

    step "a --profile linux client towards a phantun server fails with a clear error"
    bg PHS "$NS_S" phantun-server env RUST_LOG=info "$PH_SERVER" --local "$PUB_PORT" --remote 127.0.0.1:7000 \
        --tun "$TUN_S" -4
    wait_for 10 _has_link "$NS_S" "$TUN_S" || fail "phantun server made no TUN"
    sleep 0.5
    start_client CLI client-to-phantun --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --profile linux
    udp "$NS_C" send --target 127.0.0.1:5000 --count 1 --size 100 >/dev/null
    wait_for 5 grep -q "refused the handshake" "$WORK/client-to-phantun.log" \
        || fail "no 'refused the handshake' error within 5 s of the first datagram"
    line=$(grep -m1 "refused the handshake" "$WORK/client-to-phantun.log")
    grep -q -- "--profile phantun" <<<"$line" || fail "the error does not name the fix: $line"
    echo "    linux client -> phantun server: $(sed 's/.*ERROR //' <<<"$line")" >&2
else
    echo "[SKIP] $NAME: phantun rows: no phantun binaries in $PEERS (the linux/default rows passed)" >&2
    skip "phantun rows need $PEERS/phantun (the faketcp rows passed)"
fi
ok
