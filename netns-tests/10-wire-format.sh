#!/usr/bin/env bash
# 10-wire-format: what the stacks put on the wire, for IPv4 and IPv6, checked
# field by field against the README's wire table: SYN seq 0 / ack 0, SYN-ACK seq 0 /
# ack = SYN + 1, NOP + window scale 14 on both (data offset 6, none elsewhere),
# window 65535, IPv4 ID 0 + DF (ID numbered 0,1,2.. within a GSO batch on the wire), IPv6 tc 0 + flow 0, ACK-only data whose seq
# advances by the payload length from 1, acks that only point where the peer's
# data reached and never go back, and every checksum.
#
# Two layers, because the TUN uses vnet-header offloads (GSO on write):
#  - the stacks' own bytes, captured on each TUN (TTL 64): a run of equal-size
#    datagrams may be written as one GSO super-packet whose TCP checksum is the
#    partial pseudo-header sum the kernel completes per segment; accepted there
#    and counted as "offloaded", every other checksum must verify;
#  - the wire: the veths' transmit offloads are off, so the kernel segments and
#    checksums before them; captured on the client's and the server's veth
#    (one forwarding hop: TTL 63, after NAT) every datagram must be exactly one
#    segment (<= 1460 / 1440 bytes) and every checksum must verify.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
need_tool tcpdump
topo_up
TUN_C6=fttd$SUF
C6_STACK=fcca::2
N=200

step "transmit offloads off on every veth (software segmentation and checksums)"
for d in "$NS_C:$V_C" "$NS_R:$V_RC" "$NS_R:$V_RS" "$NS_S:$V_S"; do
    r=$(udp "${d%%:*}" nooffload --iface "${d#*:}") || fail "offloads off on ${d#*:}: $r"
done

step "start the UDP echo, the server and two clients (IPv4, IPv6)"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000
start_client CLI4 client4 --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT"
start_faketcp CLI6 "$NS_C" client6 client --tun "$TUN_C6" --tun-local 192.168.202.1 --tun-peer 192.168.202.2 \
    --tun-local6 fcca::1 --tun-peer6 "$C6_STACK" --local 127.0.0.1:5001 --remote "[$S_IP6]:$PUB_PORT"

step "capture on both TUNs and both end veths"
capture CAP1 "$NS_C" "$TUN_C" "$WORK/client4-tun.pcap"
capture CAP2 "$NS_C" "$TUN_C6" "$WORK/client6-tun.pcap"
capture CAP3 "$NS_S" "$TUN_S" "$WORK/server-tun.pcap"
capture CAP4 "$NS_C" "$V_C" "$WORK/client-veth.pcap"
capture CAP5 "$NS_S" "$V_S" "$WORK/server-veth.pcap"

step "handshake and $N datagrams each way, per family"
o4=$(udp "$NS_C" load --target 127.0.0.1:5000 --count $N --max 1460 --window 8) || fail "IPv4 load: $o4"
o6=$(udp "$NS_C" load --target 127.0.0.1:5001 --count $N --max 1440 --window 8) || fail "IPv6 load: $o6"
sleep 1.3  # the idle ACKs (1 s after the last data) belong in the capture too
for p in "$CAP1" "$CAP2" "$CAP3" "$CAP4" "$CAP5"; do stop_pid "$p" TERM 5; done
b4=$(json bytes <<<"$o4") b6=$(json bytes <<<"$o6")

# wire PCAP NS ARGS...: wirecheck; a failure is recorded (condensed: one line
# per kind of error, with a count and the first instance) and checking goes on.
PROBLEMS=()
wire() {
    local pcap=$1 ns=$2 r
    shift 2
    if r=$(scapy_tool "$ns" wirecheck --pcap "$WORK/$pcap" --port "$PUB_PORT" "$@"); then
        note "$pcap: $(json seen <<<"$r")"
        return
    fi
    PROBLEMS+=("$pcap ($*): $($PY -c 'import json, re, sys
r = json.loads(sys.argv[1]); kinds = {}
for e in r.get("errors", [r]):
    e = str(e); k = re.sub(r"\d+", "#", e.split(": ", 1)[-1])
    kinds.setdefault(k, [0, e])[0] += 1
print("%d error(s), first 20: " % r.get("error_count", 0)
      + "; ".join("%dx %s" % (n, first) for n, first in kinds.values()))' "$r")")
}
step "the stacks' own bytes (TUN captures)"
wire client4-tun.pcap "$NS_C" --stack "$CLI_TUN4" --role client --offload --min-bytes "$b4"
wire client6-tun.pcap "$NS_C" --stack "$C6_STACK" --role client --offload --min-bytes "$b6"
wire server-tun.pcap "$NS_S" --stack "$SRV_TUN4" --role server --offload --min-bytes "$b4"
wire server-tun.pcap "$NS_S" --stack "$SRV_TUN6" --role server --offload --min-bytes "$b6"

step "the wire (veth captures, after NAT): one datagram per segment, every checksum"
wire client-veth.pcap "$NS_C" --stack "$C_IP4" --role client --ttl 63 --min-data $((N + 1)) --max-payload 1460
wire client-veth.pcap "$NS_C" --stack "$C_IP6" --role client --ttl 63 --min-data $((N + 1)) --max-payload 1440
wire server-veth.pcap "$NS_S" --stack "$S_IP4" --role server --ttl 63 --min-data $((N + 1)) --max-payload 1460
wire server-veth.pcap "$NS_S" --stack "$S_IP6" --role server --ttl 63 --min-data $((N + 1)) --max-payload 1440
for pcap in client-veth.pcap server-veth.pcap; do
    r=$(scapy_tool "$NS_S" checksums --pcap "$WORK/$pcap" --min $((4 * N))) || PROBLEMS+=("$pcap checksums: $r")
done
if [ ${#PROBLEMS[@]} -gt 0 ]; then
    CUR_STEP="${#PROBLEMS[@]} capture(s) off the reference"
    fail "$(printf '%s | ' "${PROBLEMS[@]}")"
fi
ok
