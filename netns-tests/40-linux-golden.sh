#!/usr/bin/env bash
# 40-linux-golden: --profile linux looks like this host's own kernel TCP.
#  A) the kernel makes a real TCP connection client ns -> server ns (a Python
#     socket), captured where the client emits it; a faketcp --profile linux
#     client does the same through its tunnel. SYN, SYN-ACK, handshake ACK,
#     first data and the server's first ACK match field by field (wirecmp.py).
#  B) p0f reading both captures gives the linux profile's SYN the kernel SYN's
#     classification and raw signature; the default (phantun) profile's SYN
#     gets neither (printed as the contrast).
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
command -v tcpdump >/dev/null || skip "no tcpdump (apt-get install tcpdump)"
command -v p0f >/dev/null || skip "no p0f (apt-get install p0f)"
topo_up
KPORT=5601

step "the kernel: a TCP sink in the server ns, a client sending 3 x 1000 bytes"
bg KSINK "$NS_S" ksink $PY -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); open(sys.argv[2], "w").close()
c, _ = s.accept()
while c.recv(65536): pass' "$KPORT" "$WORK/ksink.ready"
wait_for 5 test -e "$WORK/ksink.ready" || fail "kernel sink did not start"
bg KCAP "$NS_C" tcpdump-kernel tcpdump -Z root -U --immediate-mode -n -s 200 -i "$V_C" -w "$WORK/kernel.pcap" "tcp port $KPORT"
wait_for 5 grep -q "listening on" "$WORK/tcpdump-kernel.log" || fail "tcpdump on $V_C did not start"
ip netns exec "$NS_C" $PY -c '
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
for i in range(3):
    s.send(b"k" * 1000); time.sleep(0.1)
time.sleep(0.3); s.close()' "$S_IP4" "$KPORT" || fail "kernel client could not connect"

step "faketcp: default-profile server, --profile linux client, the same 3 x 1000 bytes"
start_echo SINK "$NS_S" 127.0.0.1:7000 --sink
start_server SRV server --remote 127.0.0.1:7000 --no-offload
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --profile linux --no-offload
# The client connects on its first datagram: capture its TUN from now on.
bg FCAP "$NS_C" tcpdump-faketcp tcpdump -Z root -U --immediate-mode -n -s 200 -i "$TUN_C" -w "$WORK/faketcp.pcap" "tcp port $PUB_PORT"
wait_for 5 grep -q "listening on" "$WORK/tcpdump-faketcp.log" || fail "tcpdump on $TUN_C did not start"
out=$(udp "$NS_C" send --target 127.0.0.1:5000 --count 3 --size 1000 --interval 0.1) || fail "udp send: $out"
sleep 0.5

step "a default-profile client's SYN, for the p0f contrast"
start_faketcp CLI2 "$NS_C" client2 client --local 127.0.0.1:5001 --remote "$S_IP4:$PUB_PORT" --tun "fttd$SUF" \
    --tun-local 192.168.202.1 --tun-peer 192.168.202.2 -4 --no-offload
ip -n "$NS_C" addr show "fttd$SUF" >/dev/null 2>&1 || fail "second client TUN missing"
bg DCAP "$NS_C" tcpdump-default tcpdump -Z root -U --immediate-mode -n -s 200 -i "fttd$SUF" -w "$WORK/default.pcap" "tcp port $PUB_PORT"
wait_for 5 grep -q "listening on" "$WORK/tcpdump-default.log" || fail "tcpdump on the default client's TUN did not start"
out=$(udp "$NS_C" send --target 127.0.0.1:5001 --count 1 --size 100) || fail "udp send (default): $out"
sleep 0.5
stop_pid "$KCAP" INT 3; stop_pid "$FCAP" INT 3; stop_pid "$DCAP" INT 3

step "A: field-by-field comparison with the kernel's connection"
cmp=$($PY "$NT_DIR/wirecmp.py" "$WORK/kernel.pcap" "$WORK/faketcp.pcap" --port-a "$KPORT" --port-b "$PUB_PORT" 2>&1)
rc=$?
echo "$cmp" >"$WORK/wirecmp.txt"
note "$cmp"
[ $rc = 0 ] || fail "the linux profile differs from the kernel: $(grep -E 'DIFF|kernel:|faketcp:|differ' <<<"$cmp" | tr '\n' ';')"

step "B: p0f classifies the linux profile's SYN as it does the kernel's"
p0f_syn() {  # p0f_syn PCAP: "os=...|raw_sig=..." of the first client SYN
    rm -f "$WORK/p0f.out"
    p0f -r "$1" -o "$WORK/p0f.out" >/dev/null 2>&1 || return 1
    grep -m1 "mod=syn|" "$WORK/p0f.out" | sed 's/.*|\(os=[^|]*\)|.*|\(raw_sig=.*\)/\1|\2/'
}
k=$(p0f_syn "$WORK/kernel.pcap") || fail "p0f failed on the kernel capture"
l=$(p0f_syn "$WORK/faketcp.pcap") || fail "p0f failed on the linux-profile capture"
d=$(p0f_syn "$WORK/default.pcap") || fail "p0f failed on the default-profile capture"
echo "    p0f kernel SYN:          $k" >&2
echo "    p0f --profile linux SYN: $l" >&2
echo "    p0f --profile phantun:   $d" >&2
[ -n "$k" ] || fail "p0f saw no SYN in the kernel capture"
[ "$k" = "$l" ] || fail "p0f: linux profile '$l' != kernel '$k'"
[ "$d" != "$k" ] || fail "p0f: the default profile looks like the kernel too ('$d'): the contrast is gone"
ok
