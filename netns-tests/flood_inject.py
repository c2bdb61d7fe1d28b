#!/usr/bin/python3
"""Fast floods for the hardening scenarios (netns-tests/2N-*.sh).

Packets are built once from scapy templates and patched per packet (sequence
numbers, addresses, ports, checksums recomputed here), then written with an
AF_PACKET socket: into a TUN device (the faketcp process reading it gets them
byte for byte, no routing or netfilter), or as Ethernet frames out of a veth.

Writing into a TUN faster than its reader drains it makes the kernel drop
packets (the TUN's tx_dropped, its queue is txqueuelen long). The injector
paces itself, watches that counter and re-sends what was dropped, so the
count it reports is what reached the device's reader; it also reports the
drops so a caller can tell whether its own traffic was hit.

Subcommands (each prints one JSON object on stdout):
  rst  --iface TUN --flow JSON --count N [--towards s|c] [--pps R] [--seed S]
       RSTs with random sequence numbers on the flow's 4-tuple, towards the
       listening side (s, the flow as ftscapy.py `learn` prints it) or towards
       the connecting side (c). No seq comes within 2^24 of the receiver's next
       expected seq (taken from the flow, moved by --slack at most while the
       flood runs) or of the rst_window edges (2^30 either side) or 2^31 away,
       so which RSTs are in the window is known exactly: `in_window` of the
       `written` ones (re-sends included).
  syn  --iface VETH --dst-mac M --dst IP --port P --count N [--src-net CIDR] [--pps R]
       SYNs (random seq, random source address in --src-net and random source
       port) as Ethernet frames out of VETH (source MAC = VETH's own).
  ack  --iface TUN --dst IP --count N [--port P] [--src-net CIDR] [--pps R]
       Non-SYN ACK segments (random seq/ack, source in --src-net, random source
       port, destination port P or random with P 0) for tuples nobody has.
"""
import argparse
import ipaddress
import json
import random
import socket
import struct
import sys
import time

from udptool import fix_checksums

M32 = 0xFFFFFFFF
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD


def finish(pkt):
    """IPv4 or IPv6 + TCP bytes with both checksums recomputed."""
    return bytes(fix_checksums(bytearray(pkt)))


def template(fam, src, dst, sport, dport, flags, seq=0, ack=0, window=65535, payload=b""):
    """One packet built by scapy, as the stack would see it on the wire."""
    import logging
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.all import IP, IPv6, TCP, Raw, raw  # noqa: E402
    l3 = IPv6(src=src, dst=dst, hlim=64) if fam == 6 else IP(src=src, dst=dst, flags="DF", ttl=64, id=0)
    p = l3 / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window)
    if payload:
        p = p / Raw(payload)
    return raw(p)


def tcp_off(b):
    return (b[0] & 15) * 4 if b[0] >> 4 == 4 else 40


def sysfs_counter(iface, name):
    try:
        with open("/sys/class/net/%s/statistics/%s" % (iface, name)) as f:
            return int(f.read())
    except OSError:
        return 0


class Pacer:
    """Sends `count` packets from `make(i)` at about `pps` in bursts, re-sending
    (with fresh packets) as many as the device's tx_dropped grew by."""

    def __init__(self, sock, dest, iface, pps, burst, adaptive=True):
        self.sock, self.dest, self.iface = sock, dest, iface
        self.pps, self.burst, self.adaptive = pps, burst, adaptive

    def run(self, count, make, exact):
        drop0 = sysfs_counter(self.iface, "tx_dropped")
        sent = errors = resent = base = 0
        self.last_drops = drop0
        self.slowdowns = 0
        i = 0
        t0 = t_first = time.monotonic()
        target = count
        while sent < target:
            n = min(self.burst, target - sent)
            for _ in range(n):
                pkt = make(i)
                i += 1
                while True:  # ENOBUFS and the like: retry the same packet, bounded
                    try:
                        self.sock.sendto(pkt, self.dest)
                        sent += 1
                        break
                    except OSError:
                        errors += 1
                        if errors > 1000:
                            raise
                        time.sleep(0.001)
            if self.adaptive and self.pps:
                # The reader fell behind (the device dropped): halve the rate.
                d = sysfs_counter(self.iface, "tx_dropped")
                if d > self.last_drops:
                    self.last_drops = d
                    self.pps = max(1000.0, self.pps / 2)
                    self.slowdowns += 1
                    t0, base = time.monotonic(), sent
            if self.pps:
                due = t0 + (sent - base) / self.pps
                d = due - time.monotonic()
                if d > 0:
                    time.sleep(d)
            if exact and sent >= target:
                # Whatever the device dropped did not reach its reader: send that many more.
                time.sleep(0.02)
                dropped = sysfs_counter(self.iface, "tx_dropped") - drop0
                if dropped > resent:
                    target += dropped - resent
                    resent = dropped
        dt = time.monotonic() - t_first
        return dict(written=sent, slowdowns=self.slowdowns, final_pps=self.pps, dropped_by_device=sysfs_counter(self.iface, "tx_dropped") - drop0,
                    send_errors=errors, seconds=round(dt, 3), pps=round(sent / dt) if dt > 0 else 0)


def tun_socket(fam):
    return socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6 if fam == 6 else ETH_P_IP))


def rand_addr(rnd, net):
    n = ipaddress.ip_network(net, strict=False)
    if n.num_addresses <= 2:
        return str(n.network_address)
    # skip the network and broadcast addresses (a /31 or /32 has none)
    return str(n.network_address + rnd.randrange(1, n.num_addresses - 1))


# --- rst -----------------------------------------------------------------------
def serial_dist(a, b):
    """Signed distance a - b in sequence space."""
    d = (a - b) & M32
    return d - (1 << 32) if d >= 1 << 31 else d


def cmd_rst(a):
    flow = json.loads(a.flow)
    rnd = random.Random(a.seed)
    fam = flow["fam"]
    if a.towards == "s":
        src, dst, sp, dp, nxt = flow["c"], flow["s"], flow["cport"], flow["sport"], flow["c_nxt"]
    else:
        src, dst, sp, dp, nxt = flow["s"], flow["c"], flow["sport"], flow["cport"], flow["s_nxt"]
    tpl = template(fam, src, dst, sp, dp, "R", seq=0, ack=0, window=0)
    off = tcp_off(tpl)
    # Keep-out zones around the values that decide what a seq does: exact
    # (rcv_nxt), the window edges (rcv_nxt +- rst_window) and 2^31 away. The
    # receiver's rcv_nxt may advance by up to --slack while this runs.
    win = 1 << 30
    keep = 1 << 24
    cls = dict(in_window=0)
    seqs = []

    def draw():
        while True:
            s = rnd.getrandbits(32)
            d = serial_dist(s, nxt)
            if -keep <= d <= keep + a.slack or abs(abs(d) - win) <= keep + a.slack or \
                    abs(d) >= (1 << 31) - keep - a.slack:
                continue
            return s, abs(d) < win

    def make(i):
        # Drawn as written, so `in_window` counts every packet written, re-sends included.
        s, inw = draw()
        seqs.append(s)
        cls["in_window"] += inw
        b = bytearray(tpl)
        b[off + 4:off + 8] = struct.pack("!I", s)
        return finish(b)

    # Self-check: a patched packet equals scapy's own build of it.
    probe = make(0)
    if probe != template(fam, src, dst, sp, dp, "R", seq=seqs[0], window=0):
        raise SystemExit("flood_inject: patched RST differs from scapy's")
    seqs.clear()
    cls["in_window"] = 0
    res = Pacer(tun_socket(fam), (a.iface, ETH_P_IPV6 if fam == 6 else ETH_P_IP), a.iface, a.pps, a.burst) \
        .run(a.count, make, exact=True)
    # With device drops (dropped_by_device > 0) the ones that reached the reader
    # are not known one by one: in_window - dropped .. in_window of them were in the window.
    res.update(count=a.count, in_window=cls["in_window"], outside_window=res["written"] - cls["in_window"],
               towards=a.towards,
               rcv_nxt=nxt, tuple="%s:%d -> %s:%d" % (src, sp, dst, dp))
    print(json.dumps(res))
    return 0


# --- syn -----------------------------------------------------------------------
def mac_bytes(m):
    return bytes(int(x, 16) for x in m.split(":"))


def cmd_syn(a):
    rnd = random.Random(a.seed)
    fam = 6 if ":" in a.dst else 4
    src0 = str(ipaddress.ip_network(a.src_net, strict=False).network_address)
    tpl = template(fam, src0, a.dst, 1000, a.port, "S", seq=0, window=65535)
    off = tcp_off(tpl)
    with open("/sys/class/net/%s/address" % a.iface) as f:
        smac = mac_bytes(f.read().strip())
    eth = mac_bytes(a.dst_mac) + smac + struct.pack("!H", ETH_P_IPV6 if fam == 6 else ETH_P_IP)
    asz = 16 if fam == 6 else 4
    aoff = 8 if fam == 6 else 12
    af = socket.AF_INET6 if fam == 6 else socket.AF_INET
    # Prebuilt: the whole flood is in memory before the first frame leaves.
    frames = []
    for _ in range(a.count):
        b = bytearray(tpl)
        b[aoff:aoff + asz] = socket.inet_pton(af, rand_addr(rnd, a.src_net))
        b[off:off + 2] = struct.pack("!H", rnd.randrange(1024, 65536))
        b[off + 4:off + 8] = struct.pack("!I", rnd.getrandbits(32))
        frames.append(eth + finish(b))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    res = Pacer(s, (a.iface, 0), a.iface, a.pps, a.burst).run(a.count, lambda i: frames[i], exact=False)
    res.update(count=a.count, t_start=time.time() - res["seconds"], t_end=time.time())
    print(json.dumps(res))
    return 0


# --- ack -----------------------------------------------------------------------
def cmd_ack(a):
    rnd = random.Random(a.seed)
    fam = 6 if ":" in a.dst else 4
    src0 = str(ipaddress.ip_network(a.src_net, strict=False).network_address)
    tpl = template(fam, src0, a.dst, 1000, a.port or 1000, "A", seq=0, ack=0, window=65535)
    off = tcp_off(tpl)
    asz = 16 if fam == 6 else 4
    aoff = 8 if fam == 6 else 12
    af = socket.AF_INET6 if fam == 6 else socket.AF_INET
    pkts = []
    for _ in range(a.count):
        b = bytearray(tpl)
        b[aoff:aoff + asz] = socket.inet_pton(af, rand_addr(rnd, a.src_net))
        b[off:off + 4] = struct.pack("!HH", rnd.randrange(1024, 65536), a.port or rnd.randrange(1, 65536))
        b[off + 4:off + 12] = struct.pack("!II", rnd.getrandbits(32), rnd.getrandbits(32))
        pkts.append(finish(b))
    t0 = time.time()
    res = Pacer(tun_socket(fam), (a.iface, ETH_P_IPV6 if fam == 6 else ETH_P_IP), a.iface, a.pps, a.burst) \
        .run(a.count, lambda i: pkts[i % len(pkts)], exact=True)
    res.update(count=a.count, t_start=t0, t_end=time.time())
    print(json.dumps(res))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rst")
    r.add_argument("--iface", required=True)
    r.add_argument("--flow", required=True)
    r.add_argument("--count", type=int, default=10000)
    r.add_argument("--towards", choices=("s", "c"), default="s")
    r.add_argument("--slack", type=int, default=1 << 20, help="bytes the receiver's rcv_nxt may advance meanwhile")
    s = sub.add_parser("syn")
    s.add_argument("--iface", required=True)
    s.add_argument("--dst-mac", required=True)
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--count", type=int, default=50000)
    s.add_argument("--src-net", default="198.18.0.0/15")
    k = sub.add_parser("ack")
    k.add_argument("--iface", required=True)
    k.add_argument("--dst", required=True)
    k.add_argument("--port", type=int, default=0, help="destination port; 0: random per packet")
    k.add_argument("--count", type=int, default=100000)
    k.add_argument("--src-net", default="198.18.0.0/15")
    for p in (r, s, k):
        p.add_argument("--pps", type=float, default=20000, help="packets per second (0: as fast as possible)")
        p.add_argument("--burst", type=int, default=32)
        p.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    return {"rst": cmd_rst, "syn": cmd_syn, "ack": cmd_ack}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
