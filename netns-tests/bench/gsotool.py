#!/usr/bin/python3
"""UDP applications that use the kernel's UDP segmentation offloads (stdlib only),
to drive the CLI's UDP_GRO receive and UDP_SEGMENT send paths (udp-offload-check.sh).

  echo --bind HOST:PORT [--ready FILE]
       Receives with UDP_GRO and sends each coalesced run back with UDP_SEGMENT
       (same segment size), so the sender's socket gets a run too; plain
       datagrams go back plain.
  load --target HOST:PORT [--bursts N] [--burst B] [--seed S] [--timeout S]
       N bursts of B unique datagrams to one target: B-1 of one random size
       (12..1460 bytes) and a last one shorter, all in ONE sendmsg with
       UDP_SEGMENT; waits for every echo of the burst (received with UDP_GRO),
       each checked byte-exact. Prints one JSON line; exit 0 only when nothing
       was lost, corrupted or duplicated.

HOST may be an IPv6 address in brackets: [::1]:5000.
"""
import argparse
import json
import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from udptool import parse_hp  # noqa: E402  (HOST:PORT and [v6]:PORT, as the suite's other tools)

UDP_SEGMENT = 103  # linux/udp.h
UDP_GRO = 104
SOL_UDP = 17
CMSG_ROOM = socket.CMSG_SPACE(4)


def gro_socket(fam):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.setsockopt(SOL_UDP, UDP_GRO, 1)
    return s


def recv_run(s):
    """One receive: (list of datagrams split at the UDP_GRO size, peer)."""
    data, anc, _flags, peer = s.recvmsg(65536, CMSG_ROOM)
    size = 0
    for level, kind, payload in anc:
        if level == SOL_UDP and kind == UDP_GRO and len(payload) >= 4:
            size = struct.unpack("i", payload[:4])[0]
    if size <= 0 or len(data) <= size:
        return [data], peer
    return [data[i:i + size] for i in range(0, len(data), size)], peer


def send_run(s, datagrams, peer=None):
    """Every datagram in one sendmsg: UDP_SEGMENT cuts it at the first's size."""
    anc = []
    if len(datagrams) > 1:
        anc = [(SOL_UDP, UDP_SEGMENT, struct.pack("H", len(datagrams[0])))]
    payload = b"".join(datagrams)
    if peer is None:
        s.sendmsg([payload], anc)
    else:
        s.sendmsg([payload], anc, 0, peer)


def cmd_echo(a):
    fam, addr = parse_hp(a.bind)
    s = gro_socket(fam)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    if a.ready:
        open(a.ready, "w").close()
    while True:
        run, peer = recv_run(s)
        send_run(s, run, peer)


def make_burst(rng, burst_no, count):
    size = rng.randint(12, 1460)
    out = []
    for j in range(count):
        n = size if j < count - 1 else rng.randint(8, size - 1)
        head = struct.pack("!II", burst_no, j)
        out.append(head + rng.randbytes(n - len(head)))
    return out


def cmd_load(a):
    fam, addr = parse_hp(a.target)
    s = gro_socket(fam)
    s.connect(addr)
    s.settimeout(a.timeout)
    rng = random.Random(a.seed)
    sent = received = bad = dup = lost = runs_in = 0
    for b in range(a.bursts):
        want = {d[:8]: d for d in make_burst(rng, b, a.burst)}
        send_run(s, list(want.values()))
        sent += len(want)
        got = set()
        deadline = time.monotonic() + a.timeout
        while len(got) < len(want) and time.monotonic() < deadline:
            try:
                run, _ = recv_run(s)
            except socket.timeout:
                break
            runs_in += 1
            for d in run:
                key = d[:8]
                if key not in want:
                    if struct.unpack("!I", key[:4])[0] != b:
                        continue  # a late echo of an earlier burst: counted there as lost
                    bad += 1
                elif key in got:
                    dup += 1
                elif d != want[key]:
                    bad += 1
                else:
                    got.add(key)
                    received += 1
        lost += len(want) - len(got)
    print(json.dumps({"sent": sent, "received": received, "lost": lost, "corrupt": bad, "duplicate": dup,
                      "receives": runs_in}))
    return 0 if lost == 0 and bad == 0 and dup == 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--bind", required=True)
    e.add_argument("--ready")
    ld = sub.add_parser("load")
    ld.add_argument("--target", required=True)
    ld.add_argument("--bursts", type=int, default=200)
    ld.add_argument("--burst", type=int, default=8)
    ld.add_argument("--seed", type=int, default=1)
    ld.add_argument("--timeout", type=float, default=2.0)
    a = p.parse_args()
    if a.cmd == "load" and not 2 <= a.burst <= 64:
        p.error("--burst must be 2..64 (UDP_SEGMENT's limit)")
    return cmd_echo(a) if a.cmd == "echo" else cmd_load(a)


if __name__ == "__main__":
    sys.exit(main())
