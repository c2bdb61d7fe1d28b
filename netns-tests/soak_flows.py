#!/usr/bin/python3
"""Paced UDP echo flows with per-datagram accounting (stdlib only), for the
hardening scenarios and the soak (netns-tests/2N-*.sh, soak.sh).

  soak_flows.py run --target HOST:PORT --bind-base HOST:PORT --flows F --rate R
                    [--sizes 16,64,...] [--seconds S] [--stop-file F] [--status FILE]
                    [--windows FILE] [--grace G] [--seed N]

F UDP sockets (flow i bound to bind-base port + i, so each is one UDP peer of
the faketcp client) each send R datagrams per second, with sizes drawn from
--sizes, to --target, and check every echo byte for byte. A datagram carries
its flow, its number and its send time; the rest is a pattern derived from
them, so a corrupted, duplicated or foreign datagram is told apart from a
lost one.

It runs for --seconds, or until --stop-file exists or SIGTERM/SIGINT; then it
stops sending, waits --grace seconds for the last echoes and prints one JSON
summary. --status FILE is rewritten every second while it runs:
  {"t": wall time, "sent": n, "received": n, "last_recv": [per flow, wall time
   of the last echo], "last_ok_send": [per flow, send time of the newest
   datagram echoed]}
so a script can wait for "every flow has echoed something sent after T".

Loss accounting. --windows FILE (read at the end) lists fault windows the
caller caused: [{"what": "restart-1", "t0": wall, "t1": wall}, ...] where t0 is
when the fault began (e.g. the server killed) and t1 when the service was back
(the new server ready). A datagram lost with a send time in
[t0 - pre, S_f] is explained by that window, where S_f is the send time of
flow f's first datagram sent at or after t1 that was echoed (the flow had
recovered) and pre = --pre (0.5 s: datagrams in flight when the fault began).
Every other loss is "unexplained". The summary has, per window, the lost and
the recovery time (S_f - t1, worst flow); and overall sent, received, lost,
unexplained (with the first few), dup, corrupt, foreign, late (echoes after
--late seconds), rtt percentiles. Exit status 0 always unless the arguments
are wrong: the caller decides what passes.
"""
import argparse
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from array import array

MAGIC = b"SKF1"
HDR = struct.Struct("!4sHId")  # magic, flow, seq, send time (wall)


def parse_hp(text):
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    return fam, host, int(port)


def pattern(flow, seq, n):
    """n bytes that depend on flow and seq (cheap: a repeated 8-byte word)."""
    w = struct.pack("!II", (flow * 2654435761) & 0xFFFFFFFF, (seq * 40503 + flow) & 0xFFFFFFFF)
    return (w * (n // 8 + 1))[:n]


class Flow:
    __slots__ = ("i", "sock", "seq", "send_t", "recv_t", "size", "next_due", "last_recv", "last_ok_send")

    def __init__(self, i, sock):
        self.i, self.sock = i, sock
        self.seq = 0
        self.send_t = array("d")  # by seq: wall send time
        self.recv_t = array("d")  # by seq: wall receive time of the first echo, 0 = none
        self.size = array("H")  # by seq: datagram size
        self.next_due = 0.0
        self.last_recv = 0.0
        self.last_ok_send = 0.0


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return round(v[min(len(v) - 1, int(p / 100.0 * len(v)))] * 1000, 3)


def cmd_run(a):
    rnd = random.Random(a.seed)
    sizes = [int(x) for x in a.sizes.split(",")]
    fam, host, port = parse_hp(a.bind_base)
    tfam, thost, tport = parse_hp(a.target)
    flows = []
    sel = selectors.DefaultSelector()
    for i in range(a.flows):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port + i))
        s.connect((thost, tport))
        s.setblocking(False)
        f = Flow(i, s)
        flows.append(f)
        sel.register(s, selectors.EVENT_READ, f)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    res = dict(flows=a.flows, rate_per_flow=a.rate, sent=0, received=0, dup=0, corrupt=0, foreign=0,
               refused=0, send_errors=0, late=0)
    rtts = []
    corrupt = []  # details of the first few corrupted datagrams
    interval = 1.0 / a.rate
    t_start = time.time()
    mono0 = time.monotonic()
    # Spread the flows' send times over one interval.
    for f in flows:
        f.next_due = mono0 + interval * f.i / a.flows
    end = mono0 + a.seconds if a.seconds > 0 else float("inf")
    next_status = mono0

    def receive(f):
        while True:
            try:
                d = f.sock.recv(65535)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                res["refused"] += 1
                continue
            except OSError:
                return
            now = time.time()
            if len(d) < HDR.size or d[:4] != MAGIC:
                res["foreign"] += 1
                continue
            _, fl, seq, st = HDR.unpack_from(d)
            if fl != f.i or seq >= f.seq or f.send_t[seq] != st:
                res["foreign"] += 1
                continue
            if len(d) != f.size[seq] or d[HDR.size:] != pattern(fl, seq, len(d) - HDR.size):
                res["corrupt"] += 1
                if len(corrupt) < 20:
                    corrupt.append(describe_corrupt(f, fl, seq, d, now))
                continue
            if f.recv_t[seq]:
                res["dup"] += 1
                continue
            f.recv_t[seq] = now
            res["received"] += 1
            rtt = now - st
            if rtt > a.late:
                res["late"] += 1
            if len(rtts) < 200000:
                rtts.append(rtt)
            f.last_recv = now
            if st > f.last_ok_send:
                f.last_ok_send = st

    while not stop:
        now_m = time.monotonic()
        if now_m >= end or (a.stop_file and os.path.exists(a.stop_file)):
            break
        for f in flows:
            while f.next_due <= now_m:
                n = rnd.choice(sizes)
                st = time.time()
                seq = f.seq
                body = HDR.pack(MAGIC, f.i, seq, st) + pattern(f.i, seq, max(0, n - HDR.size))
                f.send_t.append(st)
                f.recv_t.append(0.0)
                f.size.append(len(body))
                f.seq += 1
                try:
                    f.sock.send(body)
                    res["sent"] += 1
                except ConnectionRefusedError:
                    res["refused"] += 1
                    res["sent"] += 1
                except OSError:
                    res["send_errors"] += 1
                    res["sent"] += 1
                f.next_due += interval
                if f.next_due < now_m - 1.0:  # fell far behind (stopped?): do not burst to catch up
                    f.next_due = now_m
        if a.status and now_m >= next_status:
            write_status(a.status, res, flows)
            next_status = now_m + 1.0
        wait = min(f.next_due for f in flows) - time.monotonic()
        for key, _ in sel.select(max(0.0, min(wait, 0.05))):
            receive(key.data)
    t_stop = time.time()
    # Grace: collect the last echoes.
    g_end = time.monotonic() + a.grace
    while time.monotonic() < g_end:
        for key, _ in sel.select(0.05):
            receive(key.data)
    if a.status:
        write_status(a.status, res, flows)

    windows = []
    if a.windows and os.path.exists(a.windows):
        with open(a.windows) as fh:
            windows = json.load(fh)
    # Per window and flow: explained interval [t0 - pre, S_f].
    expl = []  # (flow, lo, hi, window index)
    wres = []
    for wi, w in enumerate(windows):
        worst, unrec = 0.0, []
        for f in flows:
            s_f = None
            for seq in range(len(f.send_t)):
                if f.send_t[seq] >= w["t1"] and f.recv_t[seq]:
                    s_f = f.send_t[seq]
                    break
            if s_f is None:
                unrec.append(f.i)
                s_f = t_stop
            worst = max(worst, s_f - w["t1"])
            expl.append((f.i, w["t0"] - a.pre, s_f, wi))
        wres.append(dict(what=w.get("what", "window %d" % wi), t0=w["t0"], t1=w["t1"], lost=0,
                         recovery_worst=round(worst, 3), unrecovered_flows=unrec))
    lost = 0
    unexplained = []
    per_flow = []
    for f in flows:
        fl_lost = 0
        for seq in range(len(f.send_t)):
            if f.recv_t[seq]:
                continue
            st = f.send_t[seq]
            if st > t_stop - 0.0:  # cannot happen: nothing is sent after t_stop
                continue
            lost += 1
            fl_lost += 1
            for (fi, lo, hi, wi) in expl:
                if fi == f.i and lo <= st <= hi:
                    wres[wi]["lost"] += 1
                    break
            else:
                unexplained.append(dict(flow=f.i, seq=seq, sent=round(st, 3), size=f.size[seq]))
        per_flow.append(dict(flow=f.i, sent=len(f.send_t), lost=fl_lost,
                             last_recv_age=round(t_stop - f.last_recv, 3) if f.last_recv else None))
    res.update(t_start=round(t_start, 3), t_stop=round(t_stop, 3), lost=lost,
               unexplained=len(unexplained), unexplained_first=unexplained[:20], windows=wres,
               rtt_ms_p50=pct(rtts, 50), rtt_ms_p99=pct(rtts, 99), rtt_ms_max=pct(rtts, 100),
               flows_never_echoed=[f.i for f in flows if not f.last_recv],
               flows_silent_at_end=[f.i for f in flows if t_stop - f.last_recv > a.silent],
               worst_flow_loss=max((p["lost"] for p in per_flow), default=0), corrupt_first=corrupt)
    if a.per_flow:
        res["per_flow"] = per_flow
    print(json.dumps(res))
    return 0


def describe_corrupt(f, fl, seq, d, now):
    """What a corrupted datagram with a valid header (flow, seq, send time) is:
    how long it is against what was sent, where its bytes first differ, and
    whether the rest is the flow's following datagram(s) glued on ("merged":
    two segments delivered as one datagram)."""
    want = f.size[seq]
    exp = HDR.pack(MAGIC, fl, seq, f.send_t[seq]) + pattern(fl, seq, max(0, want - HDR.size))
    diff = next((i for i in range(min(len(d), want)) if d[i] != exp[i]), None)
    merged = []
    off, k = want, seq + 1
    while diff is None and off < len(d) and k < f.seq:
        nxt = HDR.pack(MAGIC, fl, k, f.send_t[k]) + pattern(fl, k, max(0, f.size[k] - HDR.size))
        if d[off:off + f.size[k]] != nxt[:len(d) - off]:
            break
        merged.append(k)
        off += f.size[k]
        k += 1
    return dict(flow=fl, seq=seq, got_len=len(d), sent_len=want, first_diff=diff,
                merged_with=merged, merged_exactly=bool(merged) and off == len(d),
                original_received=bool(f.recv_t[seq]), sent=round(f.send_t[seq], 3),
                age=round(now - f.send_t[seq], 3), tail_hex=d[want:want + 24].hex() if len(d) > want else "")


def write_status(path, res, flows):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(dict(t=time.time(), sent=res["sent"], received=res["received"],
                       last_recv=[f.last_recv for f in flows], last_ok_send=[f.last_ok_send for f in flows]), fh)
    os.replace(tmp, path)


def cmd_waitall(a):
    """Exit 0 once every flow in the status file has echoed a datagram sent at
    or after --since (wall time); 1 after --timeout seconds."""
    end = time.monotonic() + a.timeout
    while True:
        try:
            with open(a.status) as fh:
                st = json.load(fh)
            behind = [i for i, t in enumerate(st["last_ok_send"]) if t < a.since]
            if not behind:
                print(json.dumps(dict(ok=True, t=st["t"])))
                return 0
        except (OSError, ValueError):
            behind = None
        if time.monotonic() >= end:
            print(json.dumps(dict(ok=False, behind=behind)))
            return 1
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--target", required=True)
    r.add_argument("--bind-base", required=True)
    r.add_argument("--flows", type=int, default=1)
    r.add_argument("--rate", type=float, default=50.0, help="datagrams per second per flow")
    r.add_argument("--sizes", default="16,64,200,512,1000,1400")
    r.add_argument("--seconds", type=float, default=0, help="0: until --stop-file or a signal")
    r.add_argument("--stop-file")
    r.add_argument("--status")
    r.add_argument("--windows")
    r.add_argument("--grace", type=float, default=1.5)
    r.add_argument("--pre", type=float, default=0.5)
    r.add_argument("--late", type=float, default=1.0, help="an echo later than this counts as late")
    r.add_argument("--silent", type=float, default=2.0, help="a flow without an echo this long at the end is silent")
    r.add_argument("--per-flow", action="store_true")
    r.add_argument("--seed", type=int, default=1)
    w = sub.add_parser("waitall")
    w.add_argument("--status", required=True)
    w.add_argument("--since", type=float, required=True)
    w.add_argument("--timeout", type=float, default=15)
    a = ap.parse_args()
    return {"run": cmd_run, "waitall": cmd_waitall}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
