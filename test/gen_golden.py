#!/usr/bin/python3
"""Generate test/golden.h: wire-exact packets built by scapy, independent of faketcp.

Regenerate (Debian's python3-scapy; run with the system interpreter):

    /usr/bin/python3 test/gen_golden.py            # rewrites test/golden.h next to this script

Every array is one complete IP packet. Names say who sends it:
  kStack*  -- what the Stack under test must emit (encode direction);
  kPeer*   -- what a peer sends to the Stack (decode direction);
  kBad*    -- malformed inputs for the drop table (valid except for one thing).

Addresses are fixed: the Stack is 10.0.0.1 / fd00::1, the peer 10.0.0.2 / fd00::2.
Server role: the Stack listens on 5555, the peer uses port 40000.
Client role: the peer listens on 5555 and the Stack's ephemeral port is written
as 40000 here (kClientPort); tests patch it to the port the Stack picked, fixing
the TCP checksum incrementally (RFC 1624) with their own helper.
"""

import os
import sys

from scapy.all import IP, IPv6, TCP, UDP, ICMP, Raw, IPOption_NOP, IPOption_EOL
from scapy.all import ICMPv6EchoRequest, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.all import IPv6ExtHdrFragment, IPv6ExtHdrDestOpt
import scapy

STACK4, PEER4 = "10.0.0.1", "10.0.0.2"
STACK6, PEER6 = "fd00::1", "fd00::2"
SERVER_PORT = 5555    # the listening port (Stack in server role, peer in client role)
PEER_PORT = 40000     # the peer's port when the Stack is the server
CLIENT_PORT = 40000   # placeholder for the Stack's ephemeral port in client role
UNKNOWN_PORT = 40001  # a peer port with no connection
CLOSED_PORT = 7777    # a Stack port nobody listens on

PHANTUN_SYN_OPTS = [("NOP", None), ("WScale", 14)]
LINUX_SYN_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)),
                  ("NOP", None), ("WScale", 7)]

ODD = b"hello\xff\xfe"         # 7 bytes: the last byte is padded with zero for the checksum
EVEN = b"\xff\xff\x00\x01\xfe\xfd"  # 6 bytes: high bytes force end-around carries


def ip4(src, dst, **kw):
    return IP(src=src, dst=dst, id=0, flags="DF", ttl=64, tos=0, **kw)


def ip6(src, dst, **kw):
    return IPv6(src=src, dst=dst, tc=0, fl=0, hlim=64, **kw)


def tcp(sport, dport, flags, seq=0, ack=0, options=None):
    return TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65535,
               urgptr=0, options=options or [])



PACKETS = []


def add(name, pkt, what):
    PACKETS.append((name, bytes(pkt), what))


def both(name, build, what):
    """build(ipfactory, stack_addr, peer_addr) for v4 and v6."""
    add(name + "V4", build(ip4, STACK4, PEER4), what + " (IPv4)")
    add(name + "V6", build(ip6, STACK6, PEER6), what + " (IPv6)")


# --- encode direction: the Stack emits these -----------------------------------
both("kStackClientSyn",
     lambda ip, s, p: ip(s, p) / tcp(CLIENT_PORT, SERVER_PORT, "S", 0, 0, PHANTUN_SYN_OPTS),
     "client SYN: stack:40000 > peer:5555 S seq 0 ack 0 win 65535 <nop,wscale 14>")
both("kStackServerSynAck",
     lambda ip, s, p: ip(s, p) / tcp(SERVER_PORT, PEER_PORT, "SA", 0, 1001, PHANTUN_SYN_OPTS),
     "server SYN-ACK to kPeerSyn: stack:5555 > peer:40000 S. seq 0 ack 1001 <nop,wscale 14>")
both("kStackClientAck",
     lambda ip, s, p: ip(s, p) / tcp(CLIENT_PORT, SERVER_PORT, "A", 1, 3001),
     "handshake ACK to kPeerSynAck: stack:40000 > peer:5555 . seq 1 ack 3001")
both("kStackClientDataOdd",
     lambda ip, s, p: ip(s, p) / tcp(CLIENT_PORT, SERVER_PORT, "A", 1, 3001) / Raw(ODD),
     "first datagram, 7 bytes: stack:40000 > peer:5555 . seq 1 ack 3001 len 7")
both("kStackClientDataEven",
     lambda ip, s, p: ip(s, p) / tcp(CLIENT_PORT, SERVER_PORT, "A", 1, 3001) / Raw(EVEN),
     "first datagram, 6 bytes: stack:40000 > peer:5555 . seq 1 ack 3001 len 6")
both("kStackClientCloseRst",
     lambda ip, s, p: ip(s, p) / tcp(CLIENT_PORT, SERVER_PORT, "R", 1, 0),
     "close() right after the handshake: stack:40000 > peer:5555 R seq 1 ack 0")
both("kStackRstForUnknownData",
     lambda ip, s, p: ip(s, p) / tcp(SERVER_PORT, UNKNOWN_PORT, "RA", 888, 780),
     "reply to kPeerUnknownData: stack:5555 > peer:40001 R. seq 888 ack 780")
both("kStackRstForClosedPortSyn",
     lambda ip, s, p: ip(s, p) / tcp(CLOSED_PORT, PEER_PORT, "RA", 0, 1001),
     "reply to kPeerSynClosedPort: stack:7777 > peer:40000 R. seq 0 ack 1001")

# --- decode direction: a peer sends these -------------------------------------
both("kPeerSyn",
     lambda ip, s, p: ip(p, s) / tcp(PEER_PORT, SERVER_PORT, "S", 1000, 0, PHANTUN_SYN_OPTS),
     "phantun client SYN: peer:40000 > stack:5555 S seq 1000 <nop,wscale 14>")
both("kPeerSynLinux",
     lambda ip, s, p: ip(p, s) / tcp(PEER_PORT, SERVER_PORT, "S", 1000, 0, LINUX_SYN_OPTS),
     "Linux-style SYN: peer:40000 > stack:5555 S seq 1000 <mss,sackOK,TS,nop,wscale 7>")
both("kPeerAck",
     lambda ip, s, p: ip(p, s) / tcp(PEER_PORT, SERVER_PORT, "A", 1001, 1),
     "handshake ACK to kStackServerSynAck: peer:40000 > stack:5555 . seq 1001 ack 1")
both("kPeerSynAck",
     lambda ip, s, p: ip(p, s) / tcp(SERVER_PORT, CLIENT_PORT, "SA", 3000, 1, PHANTUN_SYN_OPTS),
     "server SYN-ACK to kStackClientSyn: peer:5555 > stack:40000 S. seq 3000 ack 1")
both("kPeerDataOdd",
     lambda ip, s, p: ip(p, s) / tcp(PEER_PORT, SERVER_PORT, "A", 1001, 1) / Raw(ODD),
     "first datagram after kPeerAck, 7 bytes: peer:40000 > stack:5555 . seq 1001 ack 1 len 7")
both("kPeerDataEven",
     lambda ip, s, p: ip(p, s) / tcp(PEER_PORT, SERVER_PORT, "A", 1001, 1) / Raw(EVEN),
     "first datagram after kPeerAck, 6 bytes: peer:40000 > stack:5555 . seq 1001 ack 1 len 6")
both("kPeerRstExact",
     lambda ip, s, p: ip(p, s) / tcp(PEER_PORT, SERVER_PORT, "R", 1001, 0),
     "RST after kPeerAck: peer:40000 > stack:5555 R seq 1001")
both("kPeerUnknownData",
     lambda ip, s, p: ip(p, s) / tcp(UNKNOWN_PORT, SERVER_PORT, "A", 777, 888) / Raw(b"abc"),
     "segment of no connection: peer:40001 > stack:5555 . seq 777 ack 888 len 3")
both("kPeerSynClosedPort",
     lambda ip, s, p: ip(p, s) / tcp(PEER_PORT, CLOSED_PORT, "S", 1000, 0, PHANTUN_SYN_OPTS),
     "SYN to a port nobody listens on: peer:40000 > stack:7777 S seq 1000")

# --- malformed: a SYN to the listening port, wrong in exactly one way ---------
syn = lambda: tcp(PEER_PORT, SERVER_PORT, "S", 1000, 0, PHANTUN_SYN_OPTS)
add("kBadIpv4Options",
    ip4(PEER4, STACK4, options=[IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()]) / syn(),
    "kPeerSynV4 with 4 bytes of IPv4 options (IHL 6), checksums correct")
add("kBadIpv6HopByHop", ip6(PEER6, STACK6) / IPv6ExtHdrHopByHop() / syn(),
    "kPeerSynV6 behind a hop-by-hop options header (next header 0)")
add("kBadIpv6Routing", ip6(PEER6, STACK6) / IPv6ExtHdrRouting() / syn(),
    "kPeerSynV6 behind a routing header (next header 43)")
add("kBadIpv6Fragment", ip6(PEER6, STACK6) / IPv6ExtHdrFragment() / syn(),
    "kPeerSynV6 behind a fragment header (next header 44)")
add("kBadIpv6DestOpts", ip6(PEER6, STACK6) / IPv6ExtHdrDestOpt() / syn(),
    "kPeerSynV6 behind a destination options header (next header 60)")
add("kBadUdpV4", ip4(PEER4, STACK4) / UDP(sport=PEER_PORT, dport=SERVER_PORT) / Raw(b"udp!"),
    "UDP datagram to port 5555 (protocol 17)")
add("kBadIcmpV4", ip4(PEER4, STACK4) / ICMP(type=8, id=1, seq=1) / Raw(b"ping"),
    "ICMP echo request (protocol 1)")
add("kBadUdpV6", ip6(PEER6, STACK6) / UDP(sport=PEER_PORT, dport=SERVER_PORT) / Raw(b"udp!"),
    "UDP datagram to port 5555 (next header 17)")
add("kBadIcmpV6", ip6(PEER6, STACK6) / ICMPv6EchoRequest(id=1, seq=1, data=b"ping"),
    "ICMPv6 echo request (next header 58)")
add("kBadFragmentMfV4",
    IP(src=PEER4, dst=STACK4, id=7, flags="MF", frag=0, ttl=64) / syn(),
    "kPeerSynV4 as a first fragment (MF set, offset 0)")
add("kBadFragmentOffsetV4",
    IP(src=PEER4, dst=STACK4, id=7, flags=0, frag=3, ttl=64) / syn(),
    "kPeerSynV4 as a last fragment (MF clear, offset 3 = 24 bytes)")


def c_array(name, data, what):
    lines = ["// " + what, "inline constexpr uint8_t %s[%d] = {" % (name, len(data))]
    for i in range(0, len(data), 12):
        lines.append("    " + " ".join("0x%02x," % b for b in data[i:i + 12]))
    lines.append("};")
    return "\n".join(lines)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "golden.h")
    body = [
        "// GENERATED by test/gen_golden.py with scapy %s -- do not edit by hand." % scapy.VERSION,
        "// Regenerate: /usr/bin/python3 test/gen_golden.py   (rewrites this file)",
        "//",
        "// Expected wire bytes built by scapy, never by the emitter under test.",
        "// Stack = 10.0.0.1 / fd00::1, peer = 10.0.0.2 / fd00::2. kStackClient* and",
        "// kPeerSynAck use 40000 as the Stack's ephemeral port (kClientPort): patch it.",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "namespace golden {",
        "",
        "inline constexpr uint16_t kServerPort = %d;" % SERVER_PORT,
        "inline constexpr uint16_t kPeerPort = %d;" % PEER_PORT,
        "inline constexpr uint16_t kClientPort = %d;" % CLIENT_PORT,
        "inline constexpr uint16_t kUnknownPort = %d;" % UNKNOWN_PORT,
        "inline constexpr uint16_t kClosedPort = %d;" % CLOSED_PORT,
        "inline constexpr uint8_t kOddPayload[%d] = {%s};" % (len(ODD), ", ".join("0x%02x" % b for b in ODD)),
        "inline constexpr uint8_t kEvenPayload[%d] = {%s};" % (len(EVEN), ", ".join("0x%02x" % b for b in EVEN)),
        "",
    ]
    for name, data, what in PACKETS:
        body.append(c_array(name, data, what))
        body.append("")
    body.append("}  // namespace golden")
    with open(out, "w") as f:
        f.write("\n".join(body) + "\n")
    print("wrote %s (%d packets)" % (out, len(PACKETS)), file=sys.stderr)


if __name__ == "__main__":
    main()
