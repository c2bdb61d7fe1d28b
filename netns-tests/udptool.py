#!/usr/bin/python3
"""UDP test applications for the netns suite (stdlib only).

  echo   --bind HOST:PORT [--sink] [--log FILE] [--ready FILE]
         Echo every datagram back to its sender (or, with --sink, swallow it).
         --log appends one line per datagram: its payload in hex, in arrival order.
  load   --target HOST:PORT [--bind HOST:PORT] [--flows F] [--count N] [--min A] [--max B]
         F UDP sockets (one UDP peer each), N datagrams per flow of random sizes A..B,
         each echo checked byte-exact. Prints one JSON summary line; exit 0 only
         when nothing was lost, corrupted or duplicated.
  probe  --target HOST:PORT [--bind HOST:PORT] [--tries N] [--interval S]
         Send a probe every S seconds until one comes back; JSON line, exit 0/1.
  listen --bind HOST:PORT [--count N] [--seconds S] [--log FILE]   receive and log (hex lines)
  nooffload --iface DEV   transmit offloads off (ethtool ioctls), so captures show wire segments
  ping   --host ADDR [--count N] [--size S]   ICMP echo over a raw socket (no ping binary here)
  send   --target HOST:PORT [--bind HOST:PORT] --count N [--burst B] [--size S] [--interval S]
         One-way: N bursts of B datagrams ("oneway-<i>-<j>" padded to S bytes), never read.

HOST may be an IPv6 address in brackets: [::1]:5000.
"""
import argparse
import json
import os
import random
import selectors
import signal
import socket
import sys
import time


def parse_hp(text):
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    return fam, (host, int(port))


def make_socket(target, bind):
    fam, taddr = parse_hp(target)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
    if bind:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(parse_hp(bind)[1])
    s.connect(taddr)
    s.setblocking(False)
    return s


# ---------------------------------------------------------------------------
def cmd_echo(a):
    fam, addr = parse_hp(a.bind)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    log = open(a.log, "a", buffering=1) if a.log else None
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    if a.ready:
        open(a.ready, "w").close()
    s.settimeout(0.2)
    n = 0
    while not stop:
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        except OSError:
            continue  # e.g. ECONNREFUSED from an earlier sendto
        n += 1
        if log:
            log.write(data.hex() + "\n")
        if not a.sink:
            try:
                s.sendto(data, peer)
            except OSError:
                pass
    if a.count_file:
        with open(a.count_file, "w") as f:
            f.write("%d\n" % n)
    return 0


# ---------------------------------------------------------------------------
class Flow:
    __slots__ = ("sock", "left", "outstanding", "in_flight", "warm", "warm_next", "warm_n")

    def __init__(self, sock, count):
        self.sock = sock
        self.left = count
        self.outstanding = {}  # payload -> [copies, first send time]
        self.in_flight = 0
        self.warm = False
        self.warm_next = 0.0
        self.warm_n = 0


def cmd_load(a):
    rnd = random.Random(a.seed)
    flows = []
    for i in range(a.flows):
        bind = None
        if a.bind:
            fam, (h, p) = parse_hp(a.bind)
            bind = ("[%s]:%d" if fam == socket.AF_INET6 else "%s:%d") % (h, p + i if p else 0)
        flows.append(Flow(make_socket(a.target, bind), a.count))
    sel = selectors.DefaultSelector()
    for i, f in enumerate(flows):
        sel.register(f.sock, selectors.EVENT_READ, i)
    res = dict(flows=a.flows, sent=0, received=0, lost=0, corrupt=0, dup=0, refused=0,
               warmup_failed=0, bytes=0)
    rtts = []

    # Warm-up: one probe per flow until it comes back, so that every flow's
    # fake-TCP connection is established before the measured run starts.
    t0 = time.monotonic()
    deadline = t0 + a.warmup
    while a.warmup > 0 and not all(f.warm for f in flows) and time.monotonic() < deadline:
        now = time.monotonic()
        for i, f in enumerate(flows):
            if not f.warm and now >= f.warm_next:
                f.warm_n += 1
                try:
                    f.sock.send(b"warmup-%d-%d" % (i, f.warm_n))
                except OSError:
                    res["refused"] += 1
                f.warm_next = now + a.warmup_interval
        for key, _ in sel.select(0.05):
            f = flows[key.data]
            while True:
                try:
                    d = f.sock.recv(65535)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    res["refused"] += 1
                    break
                if d.startswith(b"warmup-%d-" % key.data):
                    f.warm = True
    res["warmup_failed"] = sum(1 for f in flows if not f.warm) if a.warmup > 0 else 0
    res["warmup_s"] = round(time.monotonic() - t0, 3)

    def drain(f, idx):
        while True:
            try:
                d = f.sock.recv(65535)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                res["refused"] += 1
                return
            if d.startswith(b"warmup-"):
                continue  # a late echo of a warm-up probe
            ent = f.outstanding.get(d)
            if ent is None:
                res["corrupt"] += 1
                if a.verbose:
                    print("unexpected datagram on flow %d: %d bytes %s" % (idx, len(d), d[:32].hex()),
                          file=sys.stderr)
                continue
            res["received"] += 1
            res["bytes"] += len(d)
            rtts.append(time.monotonic() - ent[1])
            ent[0] -= 1
            if ent[0] == 0:
                del f.outstanding[d]
            f.in_flight -= 1

    t1 = time.monotonic()
    last_progress = t1
    seqno = 0
    total_in_flight = lambda: sum(f.in_flight for f in flows)  # noqa: E731
    while True:
        sent_any = False
        budget = a.total_window - total_in_flight() if a.total_window else 1 << 30
        for idx, f in enumerate(flows):
            while f.left > 0 and f.in_flight < a.window and budget > 0:
                budget -= 1
                size = rnd.randint(a.min, a.max)
                seqno += 1
                hdr = b"%d:%d:" % (idx, seqno)
                body = (hdr + rnd.randbytes(max(0, size - len(hdr))))[:size]
                try:
                    f.sock.send(body)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    res["refused"] += 1
                    continue
                ent = f.outstanding.get(body)
                if ent:
                    ent[0] += 1
                else:
                    f.outstanding[body] = [1, time.monotonic()]
                f.in_flight += 1
                f.left -= 1
                res["sent"] += 1
                sent_any = True
        if all(f.left == 0 and f.in_flight == 0 for f in flows):
            break
        before = res["received"]
        for key, _ in sel.select(0.05):
            drain(flows[key.data], key.data)
        now = time.monotonic()
        if res["received"] != before or sent_any:
            last_progress = now
        elif now - last_progress > a.timeout:
            # Nothing came back for a while: what is still in flight is lost.
            for f in flows:
                f.in_flight = 0
                f.left = 0 if a.stop_on_loss else f.left
            if all(f.left == 0 for f in flows):
                break
            last_progress = now
    # Give stragglers (duplicates, late ones) a short grace period.
    end = time.monotonic() + a.grace
    while time.monotonic() < end:
        for key, _ in sel.select(0.05):
            drain(flows[key.data], key.data)
    elapsed = time.monotonic() - t1
    res["lost"] = sum(c for f in flows for c, _ in f.outstanding.values())
    res["dup"] = max(0, res["received"] - (res["sent"] - res["lost"]))
    res["elapsed_s"] = round(elapsed, 3)
    if rtts:
        rtts.sort()
        res["rtt_ms_avg"] = round(1000 * sum(rtts) / len(rtts), 3)
        res["rtt_ms_p50"] = round(1000 * rtts[len(rtts) // 2], 3)
        res["rtt_ms_max"] = round(1000 * rtts[-1], 3)
    res["mbit_s"] = round(8 * res["bytes"] / elapsed / 1e6, 2) if elapsed > 0 else 0
    print(json.dumps(res))
    bad = res["lost"] or res["corrupt"] or res["dup"] or res["warmup_failed"]
    return 1 if bad else 0


# ---------------------------------------------------------------------------
def cmd_probe(a):
    s = make_socket(a.target, a.bind)
    t0 = time.monotonic()
    sent = set()
    for n in range(1, a.tries + 1):
        p = b"probe-%d-%d" % (os.getpid(), n)
        try:
            s.send(p)
            sent.add(p)
        except OSError:
            pass
        end = time.monotonic() + a.interval
        while time.monotonic() < end:
            s.settimeout(max(0.001, end - time.monotonic()))
            try:
                d = s.recv(65535)
            except (socket.timeout, BlockingIOError):
                break
            except ConnectionRefusedError:
                continue
            if d in sent:
                print(json.dumps(dict(ok=True, tries=n, elapsed_s=round(time.monotonic() - t0, 3))))
                return 0
    print(json.dumps(dict(ok=False, tries=a.tries, elapsed_s=round(time.monotonic() - t0, 3))))
    return 1


def cmd_listen(a):
    """Receive on BIND (unconnected) until COUNT datagrams or SECONDS passed;
    log each payload as a hex line."""
    fam, addr = parse_hp(a.bind)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    if a.ready:
        open(a.ready, "w").close()
    log = open(a.log, "a", buffering=1) if a.log else None
    n = 0
    end = time.monotonic() + a.seconds
    while n < a.count and time.monotonic() < end:
        s.settimeout(max(0.001, end - time.monotonic()))
        try:
            d = s.recv(65535)
        except (socket.timeout, InterruptedError):
            continue
        n += 1
        if log:
            log.write(d.hex() + "\n")
    print(json.dumps(dict(received=n)))
    return 0 if n >= a.count else 1


def cmd_send(a):
    s = make_socket(a.target, a.bind)
    sent = 0
    for i in range(a.count):
        for j in range(a.burst):
            p = (b"oneway-%d-%d-" % (i, j)).ljust(a.size, b".")
            try:
                s.send(p)
                sent += 1
            except OSError:
                pass
        if a.interval and i + 1 < a.count:
            time.sleep(a.interval)
    print(json.dumps(dict(sent=sent)))
    return 0 if sent == a.count * a.burst else 1


def cmd_ping(a):
    """ICMP echo (the Debian base image has no ping binary): raw socket, root."""
    import struct
    v6 = ":" in a.host
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    got = 0
    rtts = []
    for seq in range(1, a.count + 1):
        payload = b"faketcp-netns-ping".ljust(a.size, b".")
        typ = 128 if v6 else 8
        hdr = struct.pack("!BBHHH", typ, 0, 0, ident, seq)
        if not v6:  # the kernel fills in the ICMPv6 checksum itself
            c = checksum(hdr + payload)
            hdr = struct.pack("!BBHHH", typ, 0, c, ident, seq)
        t0 = time.monotonic()
        s.sendto(hdr + payload, (a.host, 0))
        end = t0 + a.wait
        while time.monotonic() < end:
            s.settimeout(max(0.001, end - time.monotonic()))
            try:
                d, _ = s.recvfrom(65535)
            except socket.timeout:
                break
            icmp = d if v6 else d[(d[0] & 15) * 4:]
            if len(icmp) >= 8:
                t, _, _, i, q = struct.unpack("!BBHHH", icmp[:8])
                if t == (129 if v6 else 0) and i == ident and q == seq:
                    got += 1
                    rtts.append(time.monotonic() - t0)
                    break
        if a.interval and seq < a.count:
            time.sleep(a.interval)
    res = dict(sent=a.count, received=got)
    if rtts:
        res["rtt_ms_avg"] = round(1000 * sum(rtts) / len(rtts), 3)
    print(json.dumps(res))
    return 0 if got >= a.min_ok else 1


def cmd_nooffload(a):
    """Turns off a device's transmit offloads (checksum, scatter-gather, TSO, GSO)
    with the legacy ethtool ioctls (no ethtool binary here): the kernel then
    segments and checksums in software before the device, so a capture on it
    shows what a wire would carry. Prints the resulting settings."""
    import ctypes
    import fcntl
    import struct
    SIOCETHTOOL = 0x8946
    cmds = dict(tx_csum=(0x16, 0x17), sg=(0x18, 0x19), tso=(0x1e, 0x1f), gso=(0x23, 0x24))

    class EthtoolValue(ctypes.Structure):
        _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def call(cmd, data=0):
        ev = EthtoolValue(cmd, data)
        ifr = struct.pack("16sP", a.iface.encode(), ctypes.addressof(ev))
        fcntl.ioctl(s, SIOCETHTOOL, ifr)
        return ev.data

    for name in ("gso", "tso", "sg", "tx_csum"):
        call(cmds[name][1], 0)
    res = {name: call(get) for name, (get, _) in cmds.items()}
    print(json.dumps(dict(iface=a.iface, **res)))
    return 0 if not any(res.values()) else 1


# --- the Internet checksum, shared by every tool here that builds or checks packets
def checksum(b):
    """RFC 1071: the one's complement of the one's complement sum of b."""
    b = bytes(b)
    if len(b) % 2:
        b += b"\0"
    s = sum(int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_offset(b):
    """Where TCP starts in an IPv4 (any IHL) or IPv6 (no extension header) packet."""
    return (b[0] & 15) * 4 if b[0] >> 4 == 4 else 40


def tcp_pseudo_header(b):
    """The pseudo-header the TCP checksum of IP packet b covers (RFC 9293 / 8200)."""
    t = tcp_offset(b)
    if b[0] >> 4 == 4:
        return bytes(b[12:20]) + bytes((0, 6)) + (len(b) - t).to_bytes(2, "big")
    return bytes(b[8:40]) + (len(b) - t).to_bytes(4, "big") + bytes((0, 0, 0, 6))


def fix_checksums(b):
    """Recompute the IPv4 header and the TCP checksum of b (a bytearray) in place; returns b."""
    t = tcp_offset(b)
    if b[0] >> 4 == 4:
        b[10:12] = b"\0\0"
        b[10:12] = checksum(b[:t]).to_bytes(2, "big")
    b[t + 16:t + 18] = b"\0\0"
    b[t + 16:t + 18] = checksum(tcp_pseudo_header(b) + bytes(b[t:])).to_bytes(2, "big")
    return b


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--bind", required=True)
    e.add_argument("--sink", action="store_true")
    e.add_argument("--log")
    e.add_argument("--ready")
    e.add_argument("--count-file")
    l = sub.add_parser("load")
    l.add_argument("--target", required=True)
    l.add_argument("--bind", help="first flow's address; flow i binds port+i (port 0: ephemeral)")
    l.add_argument("--flows", type=int, default=1)
    l.add_argument("--count", type=int, default=100)
    l.add_argument("--min", type=int, default=1)
    l.add_argument("--max", type=int, default=1460)
    l.add_argument("--window", type=int, default=16, help="datagrams in flight per flow")
    l.add_argument("--total-window", type=int, default=0,
                   help="datagrams in flight over all flows (0: no limit); one UDP socket on the "
                        "far side only buffers ~200 KB")
    l.add_argument("--timeout", type=float, default=2.0, help="seconds without progress = loss")
    l.add_argument("--grace", type=float, default=0.2)
    l.add_argument("--warmup", type=float, default=10.0, help="seconds for warm-up probes (0: none)")
    l.add_argument("--warmup-interval", type=float, default=0.3)
    l.add_argument("--seed", type=int, default=1)
    l.add_argument("--stop-on-loss", action="store_true", default=True)
    l.add_argument("--verbose", action="store_true")
    p = sub.add_parser("probe")
    p.add_argument("--target", required=True)
    p.add_argument("--bind")
    p.add_argument("--tries", type=int, default=20)
    p.add_argument("--interval", type=float, default=0.25)
    s = sub.add_parser("send")
    s.add_argument("--target", required=True)
    s.add_argument("--bind")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--interval", type=float, default=0.0, help="seconds between bursts")
    s.add_argument("--burst", type=int, default=1, help="datagrams sent back to back each time")
    o = sub.add_parser("nooffload")
    o.add_argument("--iface", required=True)
    r = sub.add_parser("listen")
    r.add_argument("--bind", required=True)
    r.add_argument("--count", type=int, default=1 << 30)
    r.add_argument("--seconds", type=float, default=10.0)
    r.add_argument("--log")
    r.add_argument("--ready")
    g = sub.add_parser("ping")
    g.add_argument("--host", required=True)
    g.add_argument("--count", type=int, default=3)
    g.add_argument("--size", type=int, default=56)
    g.add_argument("--wait", type=float, default=2.0, help="seconds to wait for each reply")
    g.add_argument("--interval", type=float, default=0.2)
    g.add_argument("--min-ok", type=int, default=1, help="replies needed for exit 0")
    a = ap.parse_args()
    return dict(echo=cmd_echo, load=cmd_load, probe=cmd_probe, send=cmd_send, ping=cmd_ping,
                listen=cmd_listen, nooffload=cmd_nooffload)[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
