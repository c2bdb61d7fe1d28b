#!/usr/bin/python3
"""HTTP clients for the metrics scenario (33-metrics), stdlib only.

  scrape  --target HOST:PORT [--out FILE]
          GET /metrics; exit 0 only on a 200 with the 0.0.4 Content-Type. The body
          goes to FILE (or stdout).
  value   --target HOST:PORT SERIES...
          The sum of every sample of each SERIES, one per line. SERIES is a metric
          name, optionally with label matchers: 'name{reason="oversized"}' sums the
          samples of `name` whose labels include reason="oversized".
  statuses --target HOST:PORT
          A battery of bad and odd requests, one connection each, each with the
          status it must get (431, 400, 404, 405 with Allow, 505, HEAD without a
          body, ...). One JSON line; exit 0 when every answer was the expected one.
  slow    --target HOST:PORT --conns N [--deadline S]
          N connections that send a request head one byte every 0.5 s and never
          finish it (slow loris). Each must be closed by the server (408, or 503 at
          once past its connection limit) within S seconds. JSON line; exit 0/1.
  flood   --target HOST:PORT --conns N [--deadline S]
          N connections at once, each sending a GET as soon as it connects and
          reading until the server closes. Every one must end (200, 503, or a reset
          while the server is at its limit) within S seconds, and some must get 200.
          JSON line; exit 0/1.

HOST may be an IPv6 address in brackets: [::1]:9464.
"""
import argparse
import errno
import json
import re
import resource
import selectors
import socket
import sys
import time


from udptool import parse_hp  # HOST:PORT and [v6]:PORT, as the suite's other tools (same directory)


def exchange(target, data, shut_wr=False, timeout=10.0):
    """Send `data` on a new connection, read until the server closes; the bytes read."""
    fam, addr = parse_hp(target)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    got = b""
    try:
        if data:
            s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except ConnectionResetError:
        pass  # what arrived before the reset still counts
    finally:
        s.close()
    return got


def split_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and lines[0].startswith("HTTP/1.1 ") else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def get_metrics(target):
    raw = exchange(target, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split_response(raw)
    if status != 200:
        raise RuntimeError("GET /metrics: status %d: %r" % (status, raw[:200]))
    ct = headers.get("content-type", "")
    if ct != "text/plain; version=0.0.4; charset=utf-8":
        raise RuntimeError("GET /metrics: Content-Type %r" % ct)
    if int(headers.get("content-length", "-1")) != len(body):
        raise RuntimeError("GET /metrics: Content-Length %s for %d bytes" % (headers.get("content-length"), len(body)))
    return body.decode()


def cmd_scrape(a):
    try:
        text = get_metrics(a.target)
    except (OSError, RuntimeError) as e:
        print("scrape %s: %s" % (a.target, e), file=sys.stderr)
        return 1
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def cmd_value(a):
    try:
        text = get_metrics(a.target)
    except (OSError, RuntimeError) as e:
        print("scrape %s: %s" % (a.target, e), file=sys.stderr)
        return 1
    samples = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            samples.append((m.group(1), m.group(2) or "", float(m.group(3))))
    for series in a.series:
        name, _, matchers = series.partition("{")
        wanted = [x for x in matchers.rstrip("}").split(",") if x]
        found = [v for n, labels, v in samples if n == name and all(w in labels for w in wanted)]
        if not found:
            print("no sample of %s" % series, file=sys.stderr)
            return 1
        print(int(sum(found)))
    return 0


def cmd_statuses(a):
    big = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
    cases = [
        # (name, request bytes, half-close after sending, expected status, check)
        ("oversized head", big, False, 431, None),
        ("oversized request line", b"GET /" + b"m" * 10000 + b" HTTP/1.1\r\n\r\n", False, 431, None),
        ("garbage", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", False, 400, None),
        ("no version", b"GET /metrics\r\n\r\n", False, 400, None),
        ("header without colon", b"GET /metrics HTTP/1.1\r\nnonsense\r\n\r\n", False, 400, None),
        ("NUL in a header", b"GET /metrics HTTP/1.1\r\nA: \x00\r\n\r\n", False, 400, None),
        ("half-closed partial head", b"GET /metr", True, 400, None),
        ("HTTP/2.0", b"GET /metrics HTTP/2.0\r\n\r\n", False, 505, None),
        ("other path", b"GET /admin HTTP/1.1\r\n\r\n", False, 404, None),
        ("POST", b"POST /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody", False, 405,
         lambda h, b: h.get("allow") == "GET, HEAD"),
        ("HEAD", b"HEAD /metrics HTTP/1.1\r\n\r\n", False, 200,
         lambda h, b: b == b"" and int(h.get("content-length", "0")) > 0),
        ("HTTP/1.0 GET", b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", False, 200,
         lambda h, b: b.startswith(b"# HELP ") and int(h["content-length"]) == len(b)),
    ]
    res = dict(cases=len(cases), ok=0, bad=[])
    for name, req, shut, want, check in cases:
        try:
            raw = exchange(a.target, req, shut_wr=shut)
            status, headers, body = split_response(raw)
            good = status == want and (check is None or check(headers, body))
            if not good:
                res["bad"].append("%s: got %d, want %d: %r" % (name, status, want, raw[:120]))
        except OSError as e:
            good = False
            res["bad"].append("%s: %s" % (name, e))
        res["ok"] += 1 if good else 0
    print(json.dumps(res))
    return 0 if not res["bad"] else 1


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        raise SystemExit("need %d file descriptors, the limit is %d" % (need, soft))


def cmd_slow(a):
    raise_fd_limit(a.conns + 64)
    fam, addr = parse_hp(a.target)
    head = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 100000
    conns = []
    for _ in range(a.conns):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.connect(addr)
        s.setblocking(False)
        conns.append(dict(sock=s, sent=0, got=b"", closed=None))
    t0 = time.monotonic()
    next_drip = t0
    while time.monotonic() - t0 < a.deadline and any(c["closed"] is None for c in conns):
        now = time.monotonic()
        if now >= next_drip:
            next_drip = now + 0.5
            for c in conns:
                if c["closed"] is None:
                    try:
                        c["sent"] += c["sock"].send(head[c["sent"]:c["sent"] + 1])
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        pass
        for c in conns:
            if c["closed"] is not None:
                continue
            try:
                d = c["sock"].recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                d = b""
            if d:
                c["got"] += d
            else:
                c["closed"] = time.monotonic() - t0
        time.sleep(0.05)
    res = dict(conns=a.conns, s408=0, s503=0, reset_or_silent=0, still_open=0, max_bytes_sent=0, last_close_s=0.0)
    for c in conns:
        status = split_response(c["got"])[0] if c["got"] else 0
        if c["closed"] is None:
            res["still_open"] += 1
        elif status == 408:
            res["s408"] += 1
        elif status == 503:
            res["s503"] += 1
        else:
            res["reset_or_silent"] += 1
        res["max_bytes_sent"] = max(res["max_bytes_sent"], c["sent"])
        if c["closed"] is not None:
            res["last_close_s"] = max(res["last_close_s"], round(c["closed"], 2))
        c["sock"].close()
    print(json.dumps(res))
    return 0 if res["still_open"] == 0 and res["s408"] > 0 else 1


def cmd_flood(a):
    raise_fd_limit(a.conns + 64)
    fam, addr = parse_hp(a.target)
    sel = selectors.DefaultSelector()
    req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    conns = {}
    for i in range(a.conns):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(addr)
        if rc not in (0, errno.EINPROGRESS):
            conns[i] = dict(sock=s, got=b"", end="connect:" + errno.errorcode.get(rc, str(rc)), sent=False)
            continue
        conns[i] = dict(sock=s, got=b"", end=None, sent=False)
        sel.register(s, selectors.EVENT_WRITE, i)
    t0 = time.monotonic()
    while time.monotonic() - t0 < a.deadline and any(c["end"] is None for c in conns.values()):
        for key, ev in sel.select(0.2):
            c = conns[key.data]
            s = c["sock"]
            if not c["sent"]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    c["end"] = "connect:" + errno.errorcode.get(err, str(err))
                    sel.unregister(s)
                    continue
                try:
                    s.send(req)
                except OSError as e:
                    c["end"] = "send:" + errno.errorcode.get(e.errno, str(e.errno))
                    sel.unregister(s)
                    continue
                c["sent"] = True
                sel.modify(s, selectors.EVENT_READ, key.data)
                continue
            try:
                d = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                c["end"] = "recv:" + errno.errorcode.get(e.errno, str(e.errno))
                sel.unregister(s)
                continue
            if d:
                c["got"] += d
            else:
                c["end"] = "closed"
                sel.unregister(s)
    res = dict(conns=a.conns, s200=0, s503=0, other_status=0, reset=0, unfinished=0,
               seconds=round(time.monotonic() - t0, 2))
    for c in conns.values():
        status = split_response(c["got"])[0] if c["got"] else 0
        if c["end"] is None:
            res["unfinished"] += 1
        elif status == 200:
            res["s200"] += 1
        elif status == 503:
            res["s503"] += 1
        elif status:
            res["other_status"] += 1
        else:
            res["reset"] += 1
        c["sock"].close()
    print(json.dumps(res))
    return 0 if res["unfinished"] == 0 and res["s200"] > 0 and res["other_status"] == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("scrape")
    p.add_argument("--target", required=True)
    p.add_argument("--out")
    p = sub.add_parser("value")
    p.add_argument("--target", required=True)
    p.add_argument("series", nargs="+")
    p = sub.add_parser("statuses")
    p.add_argument("--target", required=True)
    p = sub.add_parser("slow")
    p.add_argument("--target", required=True)
    p.add_argument("--conns", type=int, default=70)
    p.add_argument("--deadline", type=float, default=15.0)
    p = sub.add_parser("flood")
    p.add_argument("--target", required=True)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--deadline", type=float, default=60.0)
    a = ap.parse_args()
    return {"scrape": cmd_scrape, "value": cmd_value, "statuses": cmd_statuses, "slow": cmd_slow,
            "flood": cmd_flood}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
