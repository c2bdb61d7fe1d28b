#!/bin/bash
# offload_verify.sh PROBE — what the kernel does with TUN vnet-header offloads
# (a verification script, not part of `make test`; root; needs ip, ethtool,
# tcpdump and /usr/bin/python3 with scapy).
#
# Two throw-away namespaces joined by a veth pair; all traffic stays inside:
#
#   oA: tunA 10.77.0.1 <-> 10.77.0.2 (the "stack"), vA 192.168.77.1, forwarding
#   oB: vB 192.168.77.2, tunB 10.88.0.1 <-> 10.88.0.2, forwarding
#
# TX:  offload_probe writes one super-packet of 40 x 1000-byte fake-TCP
#      segments into tunA; tcpdump on vB (in oB) shows what left oA.
# RX:  40 x 1000-byte segments head for 10.77.0.2 from oB (a super-packet
#      written into tunB, or scapy); offload_probe reads tunA and reports
#      whether they arrive as GSO super-packets and split cleanly.
set -u
PATH="$PATH:/usr/sbin:/sbin" command -v ethtool >/dev/null \
    || { echo "$0: needs ethtool (Debian package ethtool: sudo make deps DEPS=profile, netns-tests/deps.list)" >&2; exit 1; }
PROBE=${1:?usage: offload_verify.sh path/to/offload_probe}
PY=/usr/bin/python3
SFX=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
A=oA-$SFX
B=oB-$SFX
TMP=$(mktemp -d)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    ip netns del "$A" 2>/dev/null
    ip netns del "$B" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

# ---- topology
source "$(dirname "${BASH_SOURCE[0]}")/veth_pair.sh"
veth_pair "$A" "$B" 192.168.77 || exit 1
ip -n "$B" route add 10.77.0.0/24 via 192.168.77.1
ip -n "$A" route add 10.88.0.0/24 via 192.168.77.2

analyze() {  # pcap -> segments, lengths, seqs, IDs, checksums
    $PY - "$1" <<'EOF'
import sys
from scapy.all import rdpcap, IP, TCP
pk = [p for p in rdpcap(sys.argv[1]) if IP in p and TCP in p and p[TCP].dport == 7777]
bad = 0
for p in pk:
    ip = p[IP]
    raw = bytes(ip)
    re = IP(raw)
    c_ip, c_tcp = re.chksum, re[TCP].chksum
    del re.chksum
    del re[TCP].chksum
    re2 = IP(bytes(re))
    bad += (c_ip != re2.chksum) or (c_tcp != re2[TCP].chksum)
seqs = [p[TCP].seq for p in pk]
steps = sorted(set(b - a for a, b in zip(seqs, seqs[1:])))
print(f"  captured {len(pk)} TCP packet(s) to :7777; IP lengths {sorted(set(p[IP].len for p in pk))}")
if pk:
    print(f"  seq {seqs[0]}..{seqs[-1]}, steps {steps}; IP IDs {[p[IP].id for p in pk][:6]}{'...' if len(pk) > 6 else ''}"
          f"; DF {all(p[IP].flags.DF for p in pk)}; flags {sorted(set(str(p[TCP].flags) for p in pk))}")
print(f"  checksums (IP and TCP, recomputed by scapy): {len(pk) - bad} valid, {bad} not" + (" (CHECKSUM_PARTIAL: veth offloads them)" if bad and len(pk) == 1 else ""))
EOF
}

tx_case() {  # title, then ethtool settings for vA
    local title=$1; shift
    echo "== TX: $title"
    [ $# -gt 0 ] && ip netns exec "$A" ethtool -K vA "$@" >/dev/null
    ip netns exec "$B" tcpdump -i vB -n -s 0 -w "$TMP/tx.pcap" tcp port 7777 2>/dev/null &
    local cap=$!
    PIDS+=("$cap")
    sleep 1
    ip netns exec "$A" "$PROBE" tx tunA 10.77.0.1 10.77.0.2 192.168.77.2 7777 40 1000 | sed 's/^/  /'
    sleep 0.5
    kill "$cap"; wait "$cap" 2>/dev/null
    analyze "$TMP/tx.pcap"
}

rx_case() {  # title, sender: probe (tunB super-packet), burst-fixed / burst-inc (sendmmsg), scapy
    local title=$1 sender=$2
    echo "== RX: $title"
    ip netns exec "$A" "$PROBE" rx tunA 10.77.0.1 10.77.0.2 3 > "$TMP/rx.txt" &
    local rxp=$!
    PIDS+=("$rxp")
    sleep 1
    local mac
    mac=$(ip -n "$A" -o link show vA | sed 's/.*link\/ether \([0-9a-f:]*\).*/\1/')
    case $sender in
    probe) ip netns exec "$B" "$PROBE" tx tunB 10.88.0.1 10.88.0.2 10.77.0.2 5555 40 1000 >/dev/null ;;
    burst-*) ip netns exec "$B" taskset -c 0 "$PROBE" burst vB "$mac" 10.88.0.2 10.77.0.2 40 1000 "${sender#burst-}" >/dev/null ;;
    scapy) ip netns exec "$B" $PY - "$mac" <<'EOF'
import sys, socket
from scapy.all import IP, TCP, Raw, Ether, get_if_hwaddr
eth = Ether(src=get_if_hwaddr("vB"), dst=sys.argv[1])
frames = [bytes(eth / IP(src="10.88.0.2", dst="10.77.0.2", flags="DF", id=0) /
                TCP(sport=5555, dport=5555, flags="A", seq=1000 + i * 1000, ack=1) / Raw(bytes([i]) * 1000))
          for i in range(40)]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("vB", 0))
for f in frames:
    s.send(f)
EOF
    ;;
    esac
    wait "$rxp"
    grep -v '^tun ' "$TMP/rx.txt" | sed 's/^/  /' | awk '{ if (NR <= 3 || /summary/) print; else if (NR == 4) print "  ..." }'
}

echo "kernel $(uname -r)"
tx_case "veth vA with its default offloads (TSO, checksum offload on)"
tx_case "TSO, GSO and tx checksumming off on vA: segments and checksums made in software, as on a plain NIC" \
    tso off gso off tx off
ip netns exec "$A" ethtool -K vA tso on gso on tx on >/dev/null

rx_case "super-packet written to tunB, default veth offloads (the GSO skb passes through whole)" probe
ip netns exec "$B" ethtool -K vB tso off gso off >/dev/null  # segments on vB, as on a wire
ip netns exec "$A" ethtool -K vA gro off >/dev/null
rx_case "tunB super-packet segmented on vB, GRO off on vA" probe
# GRO on vA: veth then receives through NAPI; run it as a thread on another
# CPU, so a burst queues up before the poll, as on a NIC.
ip netns exec "$A" ethtool -K vA gro on >/dev/null
ip netns exec "$A" sh -c 'echo 1 > /sys/class/net/vA/threaded'
if [ "$(nproc)" -ge 2 ]; then
    for k in $(ps -eo pid,comm | awk '/napi\/vA/ {print $1}'); do taskset -p -c 1 "$k" >/dev/null; done
fi
rx_case "tunB super-packet segmented on vB (IDs 0, 1, 2, ...), GRO on vA" probe
rx_case "sendmmsg burst of 40 segments, all IPv4 ID 0 (fake TCP's wire format), GRO on vA" burst-fixed
rx_case "sendmmsg burst of 40 segments, incrementing IPv4 IDs, GRO on vA" burst-inc
rx_case "scapy: 40 segments sent one by one from Python, GRO on vA" scapy
echo "== tunA features while open"
ip netns exec "$A" "$PROBE" rx tunA 10.77.0.1 10.77.0.2 1 >/dev/null &
PIDS+=("$!")
sleep 0.5
ip netns exec "$A" ethtool -k tunA | grep -E '^(tx-checksumming|tcp-segmentation-offload):|tx-tcp(6)?-segmentation|mangleid' | sed 's/^/  /'
wait
