#!/usr/bin/python3
"""A paced UDP application and its recovery arithmetic, for the liveness
scenarios (12-17). Stdlib only; times are wall-clock seconds (time.time()), so
a script can compare them with `date +%s.%N` taken around an event.

  run      --target HOST:PORT [--bind HOST:PORT] --rate R --seconds S --log FILE
           Sends datagram "pace-<seq>" every 1/R s for S s (R = 0: one datagram),
           keeps reading, and logs one line per echo: "<seq> <sent> <received>".
           Send errors (the tunnel's UDP port briefly gone) are counted, not
           fatal. Prints {"sent", "echoed", "send_errors"} as JSON.
  recovery --log FILE --after T
           The first echo of a datagram sent after T: prints {"recovery_s":
           received - T, "rtt_s": its round trip, "seq", "echoed_after": echoes
           of datagrams sent after T}; exit 1 if there is none.
"""
import argparse
import json
import socket
import sys
import time


from udptool import parse_hp  # HOST:PORT and [v6]:PORT, as the suite's other tools (same directory)


def cmd_run(a):
    fam, taddr = parse_hp(a.target)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if a.bind:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(parse_hp(a.bind)[1])
    s.connect(taddr)
    log = open(a.log, "a", buffering=1)
    sent_at = {}
    echoed = errors = 0
    start = time.monotonic()
    count = 1 if a.rate == 0 else max(1, int(a.seconds * a.rate))
    step = 0 if a.rate == 0 else 1.0 / a.rate
    end = start + a.seconds
    seq = 0
    while True:
        now = time.monotonic()
        if seq < count and now >= start + seq * step:
            try:
                s.send(b"pace-%d" % seq)
                sent_at[seq] = time.time()
            except OSError:
                errors += 1
            seq += 1
            continue
        if now >= end and seq >= count:
            break
        wake = min(end, start + seq * step) if seq < count else end
        s.settimeout(max(0.001, wake - now))
        try:
            d = s.recv(65535)
        except socket.timeout:
            continue
        except OSError:  # ECONNREFUSED: an ICMP error for an earlier send
            continue
        if not d.startswith(b"pace-"):
            continue
        n = int(d[5:])
        if n in sent_at:
            echoed += 1
            log.write("%d %.6f %.6f\n" % (n, sent_at.pop(n), time.time()))
    print(json.dumps(dict(sent=seq - errors, echoed=echoed, send_errors=errors)))
    return 0


def cmd_recovery(a):
    rows = []
    with open(a.log) as f:
        for line in f:
            p = line.split()
            if len(p) == 3:
                rows.append((int(p[0]), float(p[1]), float(p[2])))
    after = [r for r in rows if r[1] > a.after]
    if not after:
        print(json.dumps(dict(ok=False, echoed_after=0)))
        return 1
    first = min(after, key=lambda r: r[2])
    print(json.dumps(dict(ok=True, recovery_s=round(first[2] - a.after, 3), rtt_s=round(first[2] - first[1], 3),
                          seq=first[0], echoed_after=len(after))))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--target", required=True)
    r.add_argument("--bind")
    r.add_argument("--rate", type=float, default=2.0)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--log", required=True)
    v = sub.add_parser("recovery")
    v.add_argument("--log", required=True)
    v.add_argument("--after", type=float, required=True)
    a = ap.parse_args()
    return dict(run=cmd_run, recovery=cmd_recovery)[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
