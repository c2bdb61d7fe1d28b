#!/usr/bin/python3
"""Reads the stats the faketcp CLI logs (every --stats-interval and at exit).

  ftstats.py LOG NAME      the value of NAME in the last stack stats dump
  ftstats.py LOG --all     the last dump (stack + client/server lines) as JSON
  ftstats.py LOG --count   how many stack stats dumps the log holds

The line it parses (demo/stats.cpp, log_stats):
  ... INFO stats[ at exit]: stack: packets in 5 (300 B) out 4 (200 B), datagrams in 2 (20 B)
  out 2 (20 B), connections open 1 half-open 0, handshakes ok 1 failed 0, RST sent 0 received 0,
  challenge ACKs 0, idle ACKs 0, SYN retransmits 0, pure ACKs in 1, keepalive probes 2 answered 1,
  probe answers 0, peer-dead 0, TUN read errors 0 write errors 0, drops 3 (bad_flags=2, no_listener=1)
A drop reason missing from the parenthesis is 0 (DropReason names, faketcp.h).
tcp_drops = drops_total - ipv6_extension_headers - not_tcp: the kernel's own
IPv6 chatter out of a new TUN (router solicitations, MLD) is not a TCP problem.
The lines that follow it are parsed too: "TUN offload: ..." into offload_* names,
"client: ..." / "server: ..." (the dump's last line) into mode_* names; a dump
whose last line is not written yet is ignored.
An unrecognised stack line is an error (exit 3), so a format change cannot
silently turn every counter into 0.
"""
import json
import re
import sys

STACK = re.compile(
    r"stats(?P<when>[^:]*): stack: packets in (?P<packets_in>\d+) \((?P<bytes_in>\d+) B\) "
    r"out (?P<packets_out>\d+) \((?P<bytes_out>\d+) B\), "
    r"datagrams in (?P<datagrams_in>\d+) \((?P<datagram_bytes_in>\d+) B\) "
    r"out (?P<datagrams_out>\d+) \((?P<datagram_bytes_out>\d+) B\), "
    r"connections open (?P<open_connections>\d+) half-open (?P<half_open_connections>\d+), "
    r"handshakes ok (?P<handshakes_completed>\d+) failed (?P<handshakes_failed>\d+), "
    r"RST sent (?P<rst_sent>\d+) received (?P<rst_received>\d+), "
    r"challenge ACKs (?P<challenge_acks_sent>\d+), idle ACKs (?P<idle_acks_sent>\d+), "
    r"SYN retransmits (?P<syn_retransmits>\d+), pure ACKs in (?P<pure_acks_in>\d+), "
    r"keepalive probes (?P<keepalive_probes_sent>\d+) answered (?P<keepalive_probes_answered>\d+), "
    r"probe answers (?P<keepalive_answers_sent>\d+), peer-dead (?P<peer_dead_closes>\d+), "
    r"TUN read errors (?P<tun_read_errors>\d+) write errors (?P<tun_write_errors>\d+), "
    r"drops (?P<drops_total>\d+)(?: \((?P<drops>[^)]*)\))?")

DROP_REASONS = """truncated bad_ip_version ipv4_options ipv4_bad_checksum ipv4_fragment
ipv6_extension_headers length_mismatch not_tcp bad_data_offset bad_tcp_checksum bad_address
bad_port bad_flags syn_with_payload no_listener unknown_rst rst_not_exact bad_ack unexpected_syn
half_open_limit table_full reply_rate_limited tx_queue_full event_queue_full""".split()


def mode_values(line):
    """'stats: server: connections accepted 3 closed-by-peer 0, UDP in 5 out 5, dropped: oversized 0'
    -> mode_connections_accepted=3, mode_connections_closed_by_peer=0, mode_udp_in=5,
    mode_udp_out=5, mode_dropped_oversized=0. In a section, later counters take the
    section's first word as prefix; a 'label:' prefixes them all."""
    body = re.split(r"stats[^:]*: (?:client|server|TUN offload): ", line, maxsplit=1)[-1]
    vals = {}
    for section in body.split(", "):
        label = ""
        if ":" in section:
            label, section = section.split(":", 1)
            label = label.strip() + " "
        words, first = [], None
        for tok in section.split():
            if not tok.isdigit():
                words.append(tok)
                continue
            if first is None:
                first = words[0] if words else ""
                name = label + " ".join(words)
            else:
                name = label + (first + " " if not label else "") + " ".join(words)
            key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
            vals["mode_" + key] = int(tok)
            words = []
    return vals


def parse(path):
    dumps = []
    bad = None
    with open(path, errors="replace") as f:
        text = f.read()
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines.pop()  # a line still being written
    for i, line in enumerate(lines):
        if ": stack: packets in" not in line:
            continue
        m = STACK.search(line)
        if not m:
            bad = line
            continue
        d = {k: int(v) for k, v in m.groupdict().items() if k not in ("when", "drops") and v is not None}
        d["at_exit"] = "exit" in m.group("when")
        for r in DROP_REASONS:
            d[r] = 0
        if m.group("drops"):
            for kv in m.group("drops").split(", "):
                k, _, v = kv.partition("=")
                d[k.strip()] = int(v)
        # What the kernel itself sends out of a fresh TUN (IPv6 router solicitations,
        # MLD reports with a hop-by-hop header) is dropped too; tcp_drops leaves it out.
        d["tcp_drops"] = d["drops_total"] - d["ipv6_extension_headers"] - d["not_tcp"]
        # The dump's other lines follow it: "stats: TUN offload: ..." (offload_*), then
        # "stats: client: ..." or "stats: server: ..." (mode_*), which ends the dump.
        complete = False
        for nxt in lines[i + 1:i + 4]:
            m2 = re.search(r"stats[^:]*: (client|server|TUN offload): ", nxt)
            if not m2:
                break
            vals = mode_values(nxt)
            if m2.group(1) == "TUN offload":
                vals = {"offload_" + k[5:]: v for k, v in vals.items()}
            d.update(vals)
            if m2.group(1) in ("client", "server"):
                complete = True
                break
        if not complete:
            continue  # its client/server line is not written yet: not a whole dump
        dumps.append(d)
    return dumps, bad


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    dumps, bad = parse(sys.argv[1])
    if bad is not None and not dumps:
        print("ftstats: unrecognised stats line: " + bad, file=sys.stderr)
        return 3
    what = sys.argv[2]
    if what == "--count":
        print(len(dumps))
        return 0
    if not dumps:
        return 1
    last = dumps[-1]
    if what == "--all":
        print(json.dumps(last))
        return 0
    if what not in last:
        print("ftstats: no counter %r (have: %s)" % (what, " ".join(sorted(last))), file=sys.stderr)
        return 3
    print(last[what])
    return 0


if __name__ == "__main__":
    sys.exit(main())
