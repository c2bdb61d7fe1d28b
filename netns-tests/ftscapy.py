#!/usr/bin/python3
"""scapy tooling for the netns suite: sniff a fake-TCP flow on a TUN, inject
segments into it, check captures against the README's wire table.

Injection writes IP packets with an AF_PACKET socket on the TUN device of the
side under test: the kernel hands them straight to the faketcp process reading
that TUN, byte for byte (no routing, no netfilter, no checksum fix-ups), which
is what malformed input needs. Sniffing on the same TUN sees both what the
kernel sends into the stack and what the stack writes back.

A "flow" (JSON, printed by `learn`) names one connection as seen on that TUN:
  {"fam": 4, "c": "10.77.2.1", "cport": 40000, "s": "192.168.201.2", "sport": 4567,
   "c_nxt": 1234, "s_nxt": 99}
"c" is the connecting side, "s" the listening side; c_nxt / s_nxt are the next
sequence numbers each side will send (seq + len of its last segment).

Subcommands (all print one JSON object on stdout):
  learn     --iface IF --port P [--trigger CMD]  sniff, run CMD, report the flow
  rst       --iface IF --flow J --delta D        RST c->s with seq c_nxt+D
  ooo       --iface IF --flow J --count N --len L --tag T   reversed-seq data
  malformed --iface IF --flow J                  the catalogue of bad packets
  fuzz      --iface IF --flow J --count N          every truncation + mutated segments
  unknown   --iface IF --dst A --port P --src A --count N   unknown tuples, count RSTs
  watch     --iface IF --port P --seconds S [--trigger CMD]  flags seen per direction
  wirecheck --pcap F --stack A --role client|server  fields and checksums
"""
import argparse
import json
import socket
import struct
import subprocess
import sys
import threading
import time

import logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import AsyncSniffer, IP, IPv6, TCP, UDP, Raw, raw, rdpcap, conf  # noqa: E402
from scapy.layers.inet6 import IPv6ExtHdrHopByHop  # noqa: E402

from udptool import checksum as _csum  # noqa: E402

conf.verb = 0
M32 = 0xFFFFFFFF
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD


# --- helpers -----------------------------------------------------------------
def decode(b):
    """Raw IP bytes -> scapy packet (IPv4 or IPv6) or None."""
    if not b:
        return None
    v = b[0] >> 4
    try:
        return IP(b) if v == 4 else IPv6(b) if v == 6 else None
    except Exception:
        return None


def read_pcap(path):
    """IP packets of a capture (raw-IP from a TUN, or Ethernet from a veth)."""
    pk = []
    for p in rdpcap(path):
        b = bytes(p)
        if p.__class__.__name__ == "Ether":
            b = b[14:]
        pk.append(decode(b))
    return pk


def tcp_of(p):
    return p[TCP] if p is not None and TCP in p else None


def seg_len(t):
    n = len(bytes(t.payload))
    f = int(t.flags)
    return n + (1 if f & 0x02 else 0) + (1 if f & 0x01 else 0)


def payload_of(t):
    return bytes(t.payload)


def flags_str(f):
    f = int(f)
    s = ""
    for bit, ch in ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "A"), (0x20, "U")):
        if f & bit:
            s += ch
    return s or "none"


class Injector:
    """Writes raw IP packets into a TUN device (they reach its reader as is)."""

    def __init__(self, iface):
        self.iface = iface
        self.s4 = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.s6 = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
        self.sent = 0

    def send(self, b):
        if not isinstance(b, (bytes, bytearray)):
            b = raw(b)
        six = len(b) > 0 and (b[0] >> 4) == 6
        (self.s6 if six else self.s4).sendto(bytes(b), (self.iface, ETH_P_IPV6 if six else ETH_P_IP))
        self.sent += 1
        time.sleep(0.002)  # keep the order and let the reader keep up


class Sniffer:
    """Background capture of raw IP packets on an interface."""

    def __init__(self, iface, bpf=None):
        self.ev = threading.Event()
        self.sn = AsyncSniffer(iface=iface, filter=bpf, store=True, started_callback=self.ev.set)
        self.sn.start()
        if not self.ev.wait(5):
            raise SystemExit("sniffer on %s did not start" % iface)
        time.sleep(0.05)

    def stop(self):
        pk = self.sn.stop() or []
        return [decode(bytes(p)) for p in pk]


def run_trigger(cmd, timeout):
    if not cmd:
        return None
    r = subprocess.run(cmd, shell=True, timeout=timeout, capture_output=True, text=True)
    return dict(rc=r.returncode, out=r.stdout.strip()[-400:], err=r.stderr.strip()[-400:])


def l3(fam, src, dst, **kw):
    if fam == 6:
        return IPv6(src=src, dst=dst, hlim=64, **kw)
    return IP(src=src, dst=dst, flags="DF", ttl=64, id=0, **kw)


def c2s(flow, **tcp):
    """A TCP segment from the flow's connecting side to its listening side."""
    return l3(flow["fam"], flow["c"], flow["s"]) / TCP(sport=flow["cport"], dport=flow["sport"],
                                                       window=65535, **tcp)


def out(obj):
    print(json.dumps(obj))


# --- learn -------------------------------------------------------------------
def cmd_learn(a):
    sn = Sniffer(a.iface, "tcp port %d" % a.port)
    trig = run_trigger(a.trigger, a.timeout)
    time.sleep(a.settle)
    pk = [p for p in sn.stop() if tcp_of(p)]
    last_c = last_s = None
    for p in pk:
        t = p[TCP]
        if t.dport == a.port and (a.cport is None or t.sport == a.cport) and \
                (a.fam is None or a.fam == (6 if IPv6 in p else 4)):
            last_c = p
    if last_c is None:
        out(dict(ok=False, why="no segment towards port %d seen" % a.port, trigger=trig))
        return 1
    ct = last_c[TCP]
    fam = 6 if IPv6 in last_c else 4
    L = IPv6 if fam == 6 else IP
    c, s = last_c[L].src, last_c[L].dst
    for p in pk:
        t = p[TCP]
        if t.sport == a.port and t.dport == ct.sport and p[L].src == s:
            last_s = p
    if last_s is None:
        out(dict(ok=False, why="no segment from port %d seen" % a.port, trigger=trig))
        return 1
    st = last_s[TCP]
    res = dict(ok=True, fam=fam, c=c, cport=ct.sport, s=s, sport=a.port,
               c_nxt=(ct.seq + seg_len(ct)) & M32, s_nxt=(st.seq + seg_len(st)) & M32,
               segments=len(pk))
    out(res)
    return 0


# --- rst ---------------------------------------------------------------------
def cmd_rst(a):
    """Replies are the stack's segments on the tuple up to the peer's next
    segment: anything later may answer the peer (e.g. its idle ACK), not us."""
    flow = json.loads(a.flow)
    inj = Injector(a.iface)
    sn = Sniffer(a.iface, "tcp port %d" % flow["sport"]) if a.listen else None
    seq = (flow["c_nxt"] + a.delta) & M32
    sport = (flow["cport"] + a.port_delta) & 0xFFFF
    pkt = raw(l3(flow["fam"], flow["c"], flow["s"]) / TCP(sport=sport, dport=flow["sport"], flags=a.flags,
                                                          seq=seq, ack=a.ack, window=0))
    inj.send(pkt)
    replies = []
    peer = 0
    if sn:
        time.sleep(a.listen)
        for p in sn.stop():
            t = tcp_of(p)
            if t is None or raw(p) == pkt:
                continue
            if t.dport == flow["sport"] and t.sport == sport:
                peer += 1  # the real peer spoke: later replies may be for it
            elif t.sport == flow["sport"] and t.dport == sport and not peer:
                replies.append(dict(flags=flags_str(t.flags), seq=t.seq, ack=t.ack, len=len(payload_of(t))))
    out(dict(sent=dict(seq=seq, sport=sport, flags=a.flags), replies=replies, peer_segments_after=peer))
    return 0


# --- ooo ---------------------------------------------------------------------
def cmd_ooo(a):
    """N data segments whose seqs lie just below c_nxt (old data: no middlebox
    sees acks run ahead), injected highest seq first."""
    flow = json.loads(a.flow)
    inj = Injector(a.iface)
    base = (flow["c_nxt"] - a.count * a.len) & M32
    order = []
    for i in reversed(range(a.count)):
        body = ("ooo-%s-%03d-" % (a.tag, i)).encode().ljust(a.len, b".")
        seq = (base + i * a.len) & M32
        inj.send(c2s(flow, flags="A", seq=seq, ack=flow["s_nxt"]) / Raw(body))
        order.append(dict(seq=seq, hex=body.hex()))
    out(dict(injected=len(order), order=order))
    return 0


# --- malformed ---------------------------------------------------------------
def _fix_ip4_csum(b):
    b = bytearray(b)
    ihl = (b[0] & 15) * 4
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", _csum(bytes(b[:ihl])))
    return bytes(b)


def malformed_catalogue(flow):
    """(name, expected drop reason, packet bytes). Where a packet would harm the
    connection if accepted (exact RST, data), that is deliberate: a drop is then
    visible twice, in the counter and in the connection surviving."""
    fam, c, s, cp, sp = flow["fam"], flow["c"], flow["s"], flow["cport"], flow["sport"]
    cn, sn = flow["c_nxt"], flow["s_nxt"]
    cat = []

    def seg(**kw):
        return raw(c2s(flow, **kw))

    toff = 40 if fam == 6 else 20  # TCP header offset
    # TCP checksum wrong on an RST that would otherwise close the connection.
    b = bytearray(seg(flags="R", seq=cn, ack=0))
    b[toff + 16] ^= 0xFF
    cat.append(("rst_exact_bad_tcp_checksum", "bad_tcp_checksum", bytes(b)))
    # TCP checksum wrong on a data segment (must not reach the application).
    b = bytearray(raw(c2s(flow, flags="A", seq=cn, ack=sn) / Raw(b"MALFORMED-bad-csum")))
    b[toff + 17] ^= 0x01
    cat.append(("data_bad_tcp_checksum", "bad_tcp_checksum", bytes(b)))
    # Data offset past the end of the segment (15 words in a 28-byte segment).
    t = TCP(sport=cp, dport=sp, flags="A", seq=cn, ack=sn, window=65535, dataofs=15) / Raw(b"MALFORMD")
    cat.append(("data_offset_past_end", "bad_data_offset", raw(l3(fam, c, s) / t)))
    # Data offset below 5.
    t = TCP(sport=cp, dport=sp, flags="A", seq=cn, ack=sn, window=65535, dataofs=3) / Raw(b"MALFORMD")
    cat.append(("data_offset_below_5", "bad_data_offset", raw(l3(fam, c, s) / t)))
    # TCP header cut short: the IP length says so consistently (12 bytes of TCP).
    full = raw(c2s(flow, flags="A", seq=cn, ack=sn))
    if fam == 4:
        b = bytearray(full[:32])
        b[2:4] = struct.pack("!H", 32)
        cat.append(("tcp_header_12_bytes", "truncated", _fix_ip4_csum(b)))
        # IP total length larger than what was read.
        b = bytearray(raw(c2s(flow, flags="A", seq=cn, ack=sn) / Raw(b"x" * 20)))
        cat.append(("ip_total_length_past_end", "truncated", bytes(b[:len(b) - 10])))
        # IP total length shorter than what was read (trailing bytes).
        cat.append(("ip_total_length_short", "length_mismatch",
                    raw(c2s(flow, flags="A", seq=cn, ack=sn) / Raw(b"lm")) + b"\0\0\0\0"))
        # IPv4 header checksum wrong.
        b = bytearray(raw(c2s(flow, flags="R", seq=cn, ack=0)))
        b[10] ^= 0xFF
        cat.append(("rst_exact_bad_ip_checksum", "ipv4_bad_checksum", bytes(b)))
        # IPv4 options (IHL 6).
        p = IP(src=c, dst=s, flags="DF", ttl=64, id=0, options=[b"\x01\x01\x01\x00"]) / \
            TCP(sport=cp, dport=sp, flags="R", seq=cn, ack=0, window=0)
        cat.append(("rst_exact_ip_options", "ipv4_options", raw(p)))
        # Fragment (MF set).
        p = IP(src=c, dst=s, flags="MF", ttl=64, id=7) / TCP(sport=cp, dport=sp, flags="R", seq=cn, ack=0)
        cat.append(("rst_exact_fragment", "ipv4_fragment", raw(p)))
        # Not TCP.
        cat.append(("udp_to_stack", "not_tcp", raw(IP(src=c, dst=s) / UDP(sport=cp, dport=sp) / Raw(b"udp"))))
        # IP version 5.
        b = bytearray(raw(c2s(flow, flags="R", seq=cn, ack=0)))
        b[0] = 0x55
        cat.append(("ip_version_5", "bad_ip_version", bytes(b)))
        # Broadcast source.
        cat.append(("broadcast_source", "bad_address",
                    raw(IP(src="255.255.255.255", dst=s, flags="DF") / TCP(sport=cp, dport=sp, flags="S"))))
    else:
        b = bytearray(full[:52])
        b[4:6] = struct.pack("!H", 12)
        cat.append(("tcp_header_12_bytes", "truncated", bytes(b)))
        b = bytearray(raw(c2s(flow, flags="A", seq=cn, ack=sn) / Raw(b"x" * 20)))
        cat.append(("ip_payload_length_past_end", "truncated", bytes(b[:len(b) - 10])))
        cat.append(("ip_payload_length_short", "length_mismatch",
                    raw(c2s(flow, flags="A", seq=cn, ack=sn) / Raw(b"lm")) + b"\0\0\0\0"))
        p = IPv6(src=c, dst=s, hlim=64) / IPv6ExtHdrHopByHop() / \
            TCP(sport=cp, dport=sp, flags="R", seq=cn, ack=0, window=0)
        cat.append(("rst_exact_hop_by_hop", "ipv6_extension_headers", raw(p)))
        cat.append(("udp_to_stack", "not_tcp", raw(IPv6(src=c, dst=s) / UDP(sport=cp, dport=sp) / Raw(b"udp"))))
        b = bytearray(raw(c2s(flow, flags="R", seq=cn, ack=0)))
        b[0] = 0x55
        cat.append(("ip_version_5", "bad_ip_version", bytes(b)))
        cat.append(("multicast_source", "bad_address",
                    raw(IPv6(src="ff02::1", dst=s) / TCP(sport=cp, dport=sp, flags="S"))))
    # Port 0 (from a new tuple: it would otherwise be an unknown segment).
    cat.append(("source_port_0", "bad_port",
                raw(l3(fam, c, s) / TCP(sport=0, dport=sp, flags="S", seq=5, window=65535))))
    # Flag rules. SYN+FIN and SYN with payload from new tuples: no reply at all.
    cat.append(("syn_fin_new_tuple", "bad_flags",
                raw(l3(fam, c, s) / TCP(sport=(cp + 7) & 0xFFFF or 1, dport=sp, flags="SF", seq=5, window=65535))))
    cat.append(("syn_with_payload_new_tuple", "syn_with_payload",
                raw(l3(fam, c, s) / TCP(sport=(cp + 9) & 0xFFFF or 1, dport=sp, flags="S", seq=5, window=65535)
                    / Raw(b"payload on a SYN"))))
    # On the established connection: no flags at all, FIN, SYN+RST.
    cat.append(("no_flags_established", "bad_flags", seg(flags=0, seq=cn, ack=sn)))
    cat.append(("fin_established", "bad_flags", seg(flags="FA", seq=cn, ack=sn)))
    cat.append(("syn_rst_established", "bad_flags", seg(flags="SR", seq=cn, ack=sn)))
    return cat


def cmd_malformed(a):
    flow = json.loads(a.flow)
    inj = Injector(a.iface)
    sn = Sniffer(a.iface, None)
    expected = {}
    kinds = []
    for name, reason, b in malformed_catalogue(flow):
        if a.only and name not in a.only.split(","):
            continue
        for _ in range(a.repeat):
            inj.send(b)
        expected[reason] = expected.get(reason, 0) + a.repeat
        kinds.append(name)
    time.sleep(a.listen)
    replies = []
    for p in sn.stop():
        t = tcp_of(p)
        if t is None:
            continue
        L = IPv6 if IPv6 in p else IP
        if p[L].src == flow["s"] and int(t.flags) & 0x06:  # an RST, or a SYN-ACK: an answer
            replies.append(dict(dport=t.dport, flags=flags_str(t.flags), seq=t.seq, ack=t.ack))
    out(dict(sent=inj.sent, kinds=kinds, expected=expected, rst_replies=replies))
    return 0


def still_valid(b):
    """True when b is a well-formed IPv4/IPv6 TCP packet with good checksums."""
    p = decode(b)
    if tcp_of(p) is None:
        return False
    if IP in p:
        if (b[0] & 15) != 5 or p[IP].len != len(b) or p[IP].frag or int(p[IP].flags) & 1:
            return False
    elif 40 + p[IPv6].plen != len(b) or p[IPv6].nh != 6:
        return False
    t = p[TCP]
    if t.dataofs < 5 or t.dataofs * 4 > len(raw(t)):
        return False
    return not verify_checksums(p)


def cmd_fuzz(a):
    """Every truncation (1..len-1 bytes) of a valid data segment on the flow,
    then COUNT copies of valid segments with 1-4 random bytes flipped. None may
    reach the application; the stack must drop each and stay up."""
    import random
    flow = json.loads(a.flow)
    rnd = random.Random(a.seed)
    inj = Injector(a.iface)
    full = raw(c2s(flow, flags="A", seq=flow["c_nxt"], ack=flow["s_nxt"]) / Raw(b"TRUNCATED-SEGMENT"))
    for k in range(1, len(full) if a.truncations else 0):
        inj.send(full[:k])
    trunc = inj.sent
    templates = [full,
                 raw(c2s(flow, flags="R", seq=flow["c_nxt"], ack=0)),
                 raw(c2s(flow, flags="S", seq=flow["c_nxt"], ack=0)),
                 raw(c2s(flow, flags="A", seq=flow["c_nxt"], ack=flow["s_nxt"]) / Raw(b"MUTATED-" * 20))]
    for _ in range(a.count):
        while True:
            b = bytearray(rnd.choice(templates))
            for i in rnd.sample(range(len(b)), rnd.randint(1, 4)):
                b[i] ^= rnd.randint(1, 255)
            if b[0] >> 4 not in (4, 6):
                b[0] = (b[0] & 0x0F) | (full[0] & 0xF0)
            # Flips whose checksum effects cancel would make a valid packet
            # (e.g. an exact RST): draw again.
            if not still_valid(bytes(b)):
                break
        inj.send(bytes(b))
    out(dict(sent=inj.sent, truncations=trunc, mutated=inj.sent - trunc))
    return 0


# --- unknown -----------------------------------------------------------------
def cmd_unknown(a):
    """Segments for tuples the stack has no connection for. Each non-RST one must
    get exactly one RST|ACK with seq = its ack (0 without ACK) and
    ack = its seq + len (+1 for SYN and FIN); an RST must get nothing."""
    fam = 6 if ":" in a.dst else 4
    inj = Injector(a.iface)
    sn = Sniffer(a.iface, "tcp")
    cases = []
    for i in range(a.count):
        sport = a.first_sport + i
        kind = i % 5
        seq = (0x10000000 * (i + 1) + 12345) & M32
        ack = (0x01000000 * (i + 3) + 777) & M32
        if kind == 0:
            t, dport, n, exp = TCP(flags="A", seq=seq, ack=ack) / Raw(b"u" * (10 + i)), a.port, 10 + i, True
        elif kind == 1:
            t, dport, n, exp = TCP(flags="S", seq=seq), a.closed_port, 1, True
        elif kind == 2:
            t, dport, n, exp = TCP(flags="A", seq=seq, ack=ack), a.port, 0, True
        elif kind == 3:
            t, dport, n, exp = TCP(flags="FA", seq=seq, ack=ack) / Raw(b"fin"), a.port, 4, True
        else:
            t, dport, n, exp = TCP(flags="R", seq=seq), a.port, 0, False
        t.sport, t.dport, t.window = sport, dport, 65535
        inj.send(l3(fam, a.src, a.dst) / t)
        has_ack = int(t.flags) & 0x10
        cases.append(dict(sport=sport, dport=dport, kind=flags_str(t.flags), expect_rst=exp,
                          want_seq=ack if has_ack else 0, want_ack=(seq + n) & M32))
    time.sleep(a.listen)
    got = {}
    for p in sn.stop():
        t = tcp_of(p)
        L = IPv6 if p is not None and IPv6 in p else IP
        if t is None or p[L].src != a.dst or p[L].dst != a.src:
            continue
        got.setdefault(t.dport, []).append(dict(flags=flags_str(t.flags), seq=t.seq, ack=t.ack))
    errors = []
    for cse in cases:
        r = got.get(cse["sport"], [])
        cse["replies"] = r
        if not cse["expect_rst"]:
            if r:
                errors.append("port %d (%s): expected no reply, got %s" % (cse["sport"], cse["kind"], r))
            continue
        if len(r) != 1:
            errors.append("port %d (%s): %d replies, want exactly 1" % (cse["sport"], cse["kind"], len(r)))
            continue
        r = r[0]
        if r["flags"] != "RA" or r["seq"] != cse["want_seq"] or r["ack"] != cse["want_ack"]:
            errors.append("port %d (%s): got %s seq %d ack %d, want RA seq %d ack %d" % (
                cse["sport"], cse["kind"], r["flags"], r["seq"], r["ack"], cse["want_seq"], cse["want_ack"]))
    out(dict(ok=not errors, tuples=len(cases), expected_rsts=sum(c["expect_rst"] for c in cases),
             rsts=sum(len(v) for v in got.values()), errors=errors[:10]))
    return 0 if not errors else 1


# --- watch -------------------------------------------------------------------
def cmd_watch(a):
    """Counts segments per direction and flag set while a trigger runs (or for
    --seconds). c2s = towards --port, s2c = from it."""
    sn = Sniffer(a.iface, "tcp port %d" % a.port)
    trig = run_trigger(a.trigger, a.timeout)
    time.sleep(a.seconds)
    counts = {"c2s": {}, "s2c": {}}
    ports = {"c2s": set(), "s2c": set()}
    for p in sn.stop():
        t = tcp_of(p)
        if t is None:
            continue
        d = "c2s" if t.dport == a.port else "s2c"
        k = flags_str(t.flags) + ("+data" if payload_of(t) else "")
        counts[d][k] = counts[d].get(k, 0) + 1
        ports[d].add(t.sport if d == "c2s" else t.dport)
    out(dict(counts=counts, client_ports=sorted(ports["c2s"] | ports["s2c"]), trigger=trig))
    return 0


# --- wirecheck ---------------------------------------------------------------
def verify_checksums(p):
    """Errors for wrong IPv4 header / TCP checksums (recomputed by scapy)."""
    errs = []
    b = raw(p)
    if IP in p:
        ihl = (b[0] & 15) * 4
        if _csum(b[:ihl]) != 0:
            errs.append("IPv4 header checksum")
        tb = b[ihl:p[IP].len]
        ph = struct.pack("!4s4sBBH", socket.inet_aton(p[IP].src), socket.inet_aton(p[IP].dst), 0, 6, len(tb))
    else:
        tb = b[40:40 + p[IPv6].plen]
        ph = struct.pack("!16s16sIxxxB", socket.inet_pton(socket.AF_INET6, p[IPv6].src),
                         socket.inet_pton(socket.AF_INET6, p[IPv6].dst), len(tb), 6)
    if _csum(ph + tb) != 0:
        errs.append("TCP checksum")
    return errs


def partial_sums(p):
    """The TCP checksum values CHECKSUM_PARTIAL leaves in place: the folded
    pseudo-header sum (with the TCP length, or 0 as some paths use)."""
    b = raw(p)
    if IP in p:
        ihl = (b[0] & 15) * 4
        n = p[IP].len - ihl
        addrs = socket.inet_aton(p[IP].src) + socket.inet_aton(p[IP].dst)
        vals = [addrs + struct.pack("!BBH", 0, 6, x) for x in (n, 0)]
    else:
        n = p[IPv6].plen
        addrs = socket.inet_pton(socket.AF_INET6, p[IPv6].src) + socket.inet_pton(socket.AF_INET6, p[IPv6].dst)
        vals = [addrs + struct.pack("!IxxxB", x, 6) for x in (n, 0)]
    return {(~_csum(v)) & 0xFFFF for v in vals}


def cmd_wirecheck(a):
    """Fields of every segment the stack under test (--stack) emitted, per
    the README's wire table, and every checksum in the flow.

    --offload: the capture is of a TUN with vnet-header offloads: an ACK-only
    data segment may be a GSO super-packet (several datagrams the kernel cuts
    at gso_size) whose TCP checksum is the partial pseudo-header sum; these
    are accepted and counted as "offloaded". Without it every checksum must
    verify in full and no payload may exceed --max-payload (a wire capture).
    --ttl: the TTL / hop limit expected (64, less one per router passed)."""
    fam6 = ":" in a.stack
    pk = [p for p in read_pcap(a.pcap)
          if tcp_of(p) and a.port in (p[TCP].sport, p[TCP].dport) and (IPv6 in p) == fam6
          and a.stack in (p[IPv6 if fam6 else IP].src, p[IPv6 if fam6 else IP].dst)]
    errors = []
    peer_nxt = set()  # every "next seq" the peer reached, as the stack could have seen it
    seen = dict(syn=0, synack=0, ack=0, data=0, offloaded=0, data_bytes=0)
    last_seq = None
    last_len = 0
    last_ack = None
    last_ip_id = None

    nerr = [0]

    def err(i, msg):
        nerr[0] += 1
        if len(errors) < 20:
            errors.append("#%d: %s" % (i, msg))

    for i, p in enumerate(pk):
        L = IPv6 if IPv6 in p else IP
        t = p[TCP]
        f = int(t.flags)
        n = len(payload_of(t))
        mine = p[L].src == a.stack
        bad_csum = verify_checksums(p)
        if bad_csum:
            if a.offload and mine and f == 0x10 and n > 0 and t.chksum in partial_sums(p) \
                    and "IPv4 header checksum" not in bad_csum:
                seen["offloaded"] += 1
            else:
                err(i, " and ".join(bad_csum) + " wrong" + (" (from the stack)" if mine else " (from the peer)"))
        if not mine:
            peer_nxt.add((t.seq + seg_len(t)) & M32)
            continue
        if not a.offload and n > a.max_payload:
            err(i, "payload %d bytes > %d: not one datagram per segment" % (n, a.max_payload))
        # --- IP fields of what the stack emitted
        if L is IP:
            ip = p[IP]
            # IPv4 ID is 0, except in segments the kernel cut from one GSO
            # batch: it numbers them 0, 1, 2... (RFC 6864: with DF the ID
            # carries nothing). So an ID is 0 or one more than the previous one.
            id_ok = ip.id == 0 or (last_ip_id is not None and ip.id == (last_ip_id + 1) & 0xffff)
            last_ip_id = ip.id
            if ip.ihl != 5 or ip.tos != 0 or not id_ok or int(ip.flags) != 2 or ip.frag != 0 or ip.ttl != a.ttl:
                err(i, "IPv4 fields ihl=%d tos=%d id=%d flags=%s frag=%d ttl=%d (want 5/0/0 or previous+1/DF/0/%d)" % (
                    ip.ihl, ip.tos, ip.id, ip.flags, ip.frag, ip.ttl, a.ttl))
        else:
            ip = p[IPv6]
            if ip.tc != 0 or ip.fl != 0 or ip.hlim != a.ttl or ip.nh != 6:
                err(i, "IPv6 fields tc=%d fl=%d hlim=%d nh=%d (want 0/0/%d/6)" % (ip.tc, ip.fl, ip.hlim, ip.nh, a.ttl))
        # --- TCP fields
        opts = raw(t)[20:t.dataofs * 4]
        if t.window != 65535 or t.urgptr != 0:
            err(i, "window %d urg %d (want 65535, 0)" % (t.window, t.urgptr))
        if f & 0x02:
            if t.dataofs != 6 or opts != b"\x01\x03\x03\x0e":
                err(i, "SYN options %s data offset %d (want 0103030e, 6)" % (opts.hex(), t.dataofs))
        elif t.dataofs != 5:
            err(i, "data offset %d on a non-SYN segment (want 5)" % t.dataofs)
        if f == 0x02:
            seen["syn"] += 1
            if a.role != "client" or t.seq != 0 or t.ack != 0:
                err(i, "SYN seq %d ack %d from the %s (want a client SYN seq 0 ack 0)" % (t.seq, t.ack, a.role))
            continue
        if f == 0x12:
            seen["synack"] += 1
            if a.role != "server" or t.seq != 0 or t.ack not in peer_nxt:
                err(i, "SYN-ACK seq %d ack %d (want seq 0, ack = SYN seq + 1)" % (t.seq, t.ack))
            continue
        if f != 0x10:
            if not (f & 0x04 and a.allow_rst):
                err(i, "flags %s (want ACK only)" % flags_str(f))
            continue
        # ACK-only segments: seq advances by the payload length from 1; ack is
        # always a point the peer's data reached, and never goes backwards.
        if last_seq is None:
            if t.seq != 1:
                err(i, "first segment after the handshake has seq %d (want 1)" % t.seq)
        elif t.seq != (last_seq + last_len) & M32:
            err(i, "seq %d, want %d (previous seq %d + len %d)" % (t.seq, (last_seq + last_len) & M32,
                                                                   last_seq, last_len))
        last_seq, last_len = t.seq, n
        if t.ack not in peer_nxt:
            err(i, "ack %d is no point the peer's sequence reached" % t.ack)
        if last_ack is not None and ((t.ack - last_ack) & M32) > (1 << 31):
            err(i, "ack went backwards %d -> %d" % (last_ack, t.ack))
        last_ack = t.ack
        seen["data" if n else "ack"] += 1
        seen["data_bytes"] += n
    if a.role == "client" and seen["syn"] < 1:
        errors.append("no SYN from the stack in the capture")
    if a.role == "server" and seen["synack"] < 1:
        errors.append("no SYN-ACK from the stack in the capture")
    if seen["data"] < a.min_data:
        errors.append("only %d data segments from the stack (want >= %d)" % (seen["data"], a.min_data))
    if seen["data_bytes"] < a.min_bytes:
        errors.append("only %d payload bytes from the stack (want >= %d)" % (seen["data_bytes"], a.min_bytes))
    out(dict(ok=not errors, packets=len(pk), stack=a.stack, role=a.role, seen=seen,
             error_count=nerr[0] + len(errors) - min(nerr[0], 20), errors=errors))
    return 0 if not errors else 1


def cmd_checksums(a):
    """Every IP/TCP checksum in a capture verifies (any address)."""
    pk = read_pcap(a.pcap)
    bad = []
    n = 0
    for i, p in enumerate(pk):
        if not tcp_of(p):
            continue
        n += 1
        for e in verify_checksums(p):
            bad.append("#%d %s" % (i, e))
    out(dict(ok=not bad and n >= a.min, packets=n, bad=bad[:10]))
    return 0 if not bad and n >= a.min else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("learn")
    p.add_argument("--iface", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cport", type=int)
    p.add_argument("--fam", type=int, choices=[4, 6], help="only flows of this IP version")
    p.add_argument("--trigger")
    p.add_argument("--timeout", type=float, default=20)
    p.add_argument("--settle", type=float, default=0.3)
    p = sub.add_parser("rst")
    p.add_argument("--iface", required=True)
    p.add_argument("--flow", required=True)
    p.add_argument("--delta", type=int, default=0)
    p.add_argument("--port-delta", type=int, default=0)
    p.add_argument("--flags", default="R")
    p.add_argument("--ack", type=int, default=0)
    p.add_argument("--listen", type=float, default=0.0, help="seconds to collect replies")
    p = sub.add_parser("ooo")
    p.add_argument("--iface", required=True)
    p.add_argument("--flow", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--len", type=int, default=64)
    p.add_argument("--tag", default="x")
    p = sub.add_parser("malformed")
    p.add_argument("--iface", required=True)
    p.add_argument("--flow", required=True)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--only")
    p.add_argument("--listen", type=float, default=0.5)
    p = sub.add_parser("fuzz")
    p.add_argument("--iface", required=True)
    p.add_argument("--flow", required=True)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--truncations", type=int, default=1, help="0: mutations only")
    p = sub.add_parser("unknown")
    p.add_argument("--iface", required=True)
    p.add_argument("--dst", required=True, help="the stack's address")
    p.add_argument("--port", type=int, required=True, help="a port the stack listens on")
    p.add_argument("--closed-port", type=int, default=4999, help="a port it does not listen on")
    p.add_argument("--src", required=True)
    p.add_argument("--first-sport", type=int, default=1100)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--listen", type=float, default=1.0)
    p = sub.add_parser("watch")
    p.add_argument("--iface", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--trigger")
    p.add_argument("--timeout", type=float, default=30)
    p = sub.add_parser("wirecheck")
    p.add_argument("--pcap", required=True)
    p.add_argument("--stack", required=True, help="the address of the stack under test")
    p.add_argument("--role", choices=["client", "server"], required=True)
    p.add_argument("--port", type=int, required=True, help="the server's port")
    p.add_argument("--min-data", type=int, default=1, help="data segments the stack must have sent")
    p.add_argument("--min-bytes", type=int, default=0, help="payload bytes the stack must have sent")
    p.add_argument("--max-payload", type=int, default=1460, help="largest payload of one segment")
    p.add_argument("--ttl", type=int, default=64)
    p.add_argument("--offload", action="store_true", help="a TUN capture with GSO super-packets")
    p.add_argument("--allow-rst", action="store_true")
    p = sub.add_parser("checksums")
    p.add_argument("--pcap", required=True)
    p.add_argument("--min", type=int, default=1)
    a = ap.parse_args()
    return globals()["cmd_" + a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
