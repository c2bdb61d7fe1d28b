#!/usr/bin/python3
"""The soak's fault injector (netns-tests/soak.sh): runs beside one faketcp
process and, every --period seconds, learns the live connections by sniffing
its TUN, then writes one kind of fault into that TUN (the process reads it as
if it came from the network), in turn:

  garbage   --garbage packets: real segments with 1-4 bytes flipped (checksums
            left stale), truncations, random bytes, IPv4 options; never a
            valid segment (each is re-checked and redrawn if it verifies)
  dup       the --replay newest data segments towards the stack, again, as is
  reorder   the --replay newest data segments of one connection, newest first
  rst       --rsts RSTs on each of up to 5 connections, random sequence numbers
            at least 2^24 away from the next expected one (never exact)

A replayed data segment is delivered again by design (fake TCP does not
deduplicate), so each one may show up as one duplicate datagram at the far
application: `replayed` bounds the duplicates the soak may see. Nothing else
injected may change what an application receives.

Only plain segments are replayed: a packet the kernel hands to the TUN as a
GSO/GRO super-packet (its virtio-net header, PACKET_VNET_HDR on the sniffing
socket, says so) carries several datagrams that the TUN reader splits again;
written back as one plain segment it would become one datagram made of
several, which no network can produce (--allow-gso-replay does it anyway).

Direction: on a TUN a packet socket sees the packets the kernel sends to the
stack as PACKET_OUTGOING and those the stack writes as PACKET_HOST; only the
former are learned and imitated, so one injector works for a client or a
server alike.

  soak_inject.py --iface TUN --stop-file F [--pause-file P] [--period S] [--seed N]

While --pause-file exists it injects nothing (checked before every packet).
At the end (--stop-file exists, or SIGTERM) it prints one JSON summary.
"""
import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import time

from udptool import checksum, fix_checksums, tcp_pseudo_header

ETH_P_ALL, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0800, 0x86DD
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_VNET_HDR = 263, 15
VNET_HDR_LEN = 10
M32 = 0xFFFFFFFF


def parse(b):
    """(fam, src, dst, sport, dport, seq, ack, flags, toff, plen) of a plain
    IPv4 (IHL 5) / IPv6 (no extension header) TCP packet, else None."""
    if len(b) < 20:
        return None
    v = b[0] >> 4
    if v == 4:
        if (b[0] & 15) != 5 or b[9] != 6 or struct.unpack_from("!H", b, 2)[0] != len(b):
            return None
        toff, src, dst = 20, b[12:16], b[16:20]
    elif v == 6:
        if len(b) < 40 or b[6] != 6 or 40 + struct.unpack_from("!H", b, 4)[0] != len(b):
            return None
        toff, src, dst = 40, b[8:24], b[24:40]
    else:
        return None
    if len(b) < toff + 20:
        return None
    sp, dp, seq, ack, off_flags = struct.unpack_from("!HHIIH", b, toff)
    doff = (off_flags >> 12) * 4
    if doff < 20 or toff + doff > len(b):
        return None
    return (v, bytes(src), bytes(dst), sp, dp, seq, ack, off_flags & 0x3F, toff, len(b) - toff - doff)




def valid(b):
    """A packet the stack would accept as a well-formed TCP segment."""
    p = parse(b)
    if p is None:
        return False
    v, toff = p[0], p[8]
    if v == 4 and (checksum(b[:20]) != 0 or struct.unpack_from("!H", b, 6)[0] & 0x3FFF):
        return False
    return checksum(tcp_pseudo_header(b) + bytes(b[toff:])) == 0


class Injector:
    def __init__(self, a):
        self.a = a
        self.rnd = random.Random(a.seed)
        self.stats = dict(rounds=0, paused_rounds=0, no_traffic_rounds=0, errors=0, garbage=0, replayed=0,
                          dup_rounds=0, reorder_rounds=0, rsts=0, rst_rounds=0, garbage_rounds=0,
                          super_packets_seen=0)
        self.seq_only = []
        self.kinds = ["garbage", "dup", "reorder", "rst"]
        self.k = 0

    def paused(self):
        return self.a.pause_file and os.path.exists(self.a.pause_file)

    def sniff(self, seconds):
        """Packets towards the stack seen on the TUN within `seconds`."""
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            # A virtio-net header in front of each packet says whether it is a GSO/GRO
            # super-packet (several segments the TUN's offloads will split): replaying
            # one as a plain packet would glue datagrams together, which no network does.
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            s.bind((self.a.iface, 0))
            s.settimeout(0.05)
            end = time.monotonic() + seconds
            got = []
            while time.monotonic() < end:
                try:
                    b, addr = s.recvfrom(65535)
                except socket.timeout:
                    continue
                if addr[2] != PACKET_OUTGOING or len(b) < VNET_HDR_LEN:
                    continue
                gso_type = b[1]
                b = b[VNET_HDR_LEN:]
                p = parse(b)
                if p is None:
                    continue
                if gso_type != 0 or len(b) > 1500:
                    self.stats["super_packets_seen"] += 1
                    if not self.a.allow_gso_replay:
                        self.seq_only.append(p)  # still tells where the connection's seq is
                        continue
                got.append((bytearray(b), p))
            return got
        finally:
            s.close()

    def send(self, b):
        if self.paused():
            return False
        fam = b[0] >> 4
        proto = ETH_P_IPV6 if fam == 6 else ETH_P_IP
        s = self.s6 if fam == 6 else self.s4
        try:
            s.sendto(bytes(b), (self.a.iface, proto))
        except OSError:
            self.stats["errors"] += 1
            return False
        time.sleep(0.001)  # gentle: the soak measures the stack, not a full TUN queue
        return True

    def round(self):
        if self.paused():
            self.stats["paused_rounds"] += 1
            return
        self.seq_only = []
        try:
            pk = self.sniff(self.a.listen)
        except OSError:  # the TUN is gone (a restart): try again next round
            self.stats["errors"] += 1
            return
        data = [(b, p) for b, p in pk if p[9] > 0 and p[7] == 0x10]
        if not data:
            self.stats["no_traffic_rounds"] += 1
            return
        self.stats["rounds"] += 1
        kind = self.kinds[self.k % len(self.kinds)]
        self.k += 1
        getattr(self, "do_" + kind)(data)

    def do_garbage(self, data):
        self.stats["garbage_rounds"] += 1
        for _ in range(self.a.garbage):
            b0 = fix_checksums(bytearray(self.rnd.choice(data)[0]))
            for _attempt in range(20):
                b = bytearray(b0)
                how = self.rnd.randrange(4)
                if how == 0:  # flipped bytes, stale checksums
                    for i in self.rnd.sample(range(len(b)), self.rnd.randint(1, 4)):
                        b[i] ^= self.rnd.randint(1, 255)
                elif how == 1:  # truncated
                    b = b[:self.rnd.randrange(1, len(b))]
                elif how == 2:  # random bytes with a plausible first nibble
                    b = bytearray(self.rnd.getrandbits(8) for _ in range(self.rnd.randint(1, 120)))
                    b[0] = (b0[0] & 0xF0) | (b[0] & 0x0F)
                else:  # IPv4 options / IPv6 hop-by-hop: the header announces what is not there
                    b[0] = (b[0] & 0xF0) | 6 if b[0] >> 4 == 4 else b[0]
                    if b[0] >> 4 == 6:
                        b[6] = 0
                if not valid(b):
                    break
            else:
                continue
            if self.send(b):
                self.stats["garbage"] += 1

    def do_dup(self, data):
        self.stats["dup_rounds"] += 1
        for b, _ in data[-self.a.replay:]:
            if self.send(fix_checksums(bytearray(b))):
                self.stats["replayed"] += 1

    def do_reorder(self, data):
        self.stats["reorder_rounds"] += 1
        tup = data[-1][1][1:5]
        mine = [(b, p) for b, p in data if p[1:5] == tup][-self.a.replay:]
        for b, _ in reversed(mine):
            if self.send(fix_checksums(bytearray(b))):
                self.stats["replayed"] += 1

    def do_rst(self, data):
        self.stats["rst_rounds"] += 1
        nxt = {}
        for b, p in data:
            key = p[1:5]
            end = (p[5] + p[9]) & M32
            if key not in nxt or ((end - nxt[key][0]) & M32) < 1 << 31:
                nxt[key] = (end, b, p)
        for p in self.seq_only:  # super-packets are not replayed, but move the connection's seq
            key, end = p[1:5], (p[5] + p[9]) & M32
            if key in nxt and ((end - nxt[key][0]) & M32) < 1 << 31:
                nxt[key] = (end,) + nxt[key][1:]
        keys = list(nxt)
        self.rnd.shuffle(keys)
        for key in keys[:5]:
            end, b, p = nxt[key]
            toff = p[8]
            for _ in range(self.a.rsts):
                while True:  # never within 2^24 (+ what the flow may move meanwhile) of exact
                    seq = self.rnd.getrandbits(32)
                    d = (seq - end) & M32
                    if (1 << 24) < d < (1 << 32) - (1 << 24):
                        break
                r = bytearray(b[:toff + 20])
                if r[0] >> 4 == 4:
                    r[2:4] = struct.pack("!H", len(r))
                else:
                    r[4:6] = struct.pack("!H", 20)
                struct.pack_into("!IIHH", r, toff + 4, seq, 0, 0x5004, 0)  # RST only, window 0
                if self.send(fix_checksums(r)):
                    self.stats["rsts"] += 1

    def run(self):
        self.s4 = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.s6 = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        while not stop and not os.path.exists(self.a.stop_file):
            t = time.monotonic()
            self.round()
            rest = self.a.period - (time.monotonic() - t)
            while rest > 0 and not stop and not os.path.exists(self.a.stop_file):
                time.sleep(min(rest, 0.1))
                rest -= 0.1
        print(json.dumps(self.stats))
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--pause-file")
    ap.add_argument("--period", type=float, default=1.0)
    ap.add_argument("--listen", type=float, default=0.3, help="seconds of sniffing per round")
    ap.add_argument("--garbage", type=int, default=20)
    ap.add_argument("--replay", type=int, default=5)
    ap.add_argument("--rsts", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--allow-gso-replay", action="store_true",
                    help="also replay GSO/GRO super-packets as one plain segment (a test of the test: "
                         "this glues datagrams together)")
    return Injector(ap.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
