#!/usr/bin/python3
"""Compares the handshake and first data of two TCP connections, field by field.

  wirecmp.py KERNEL.pcap FAKETCP.pcap --port-a P --port-b Q

Each capture holds one connection to server port P (the kernel's) or Q
(faketcp's). The packets compared: the client's SYN, the server's SYN-ACK,
the client's handshake ACK, the client's first data segment and the server's
first pure ACK of data. Captured where the client emits, so the client's
TTLs compare exactly and the server's as the initial TTL they imply (the
paths have different hop counts). For each: TTL, DF, data offset, flags, window, TCP
option kinds in order with their lengths, MSS and window-scale values,
whether TSval is set and TSecr echoes, and the IPv4 ID behaviour (0 on the
SYN-ACK, the client's IDs counting up by one from its SYN's). Addresses,
ports, ISNs, timestamps and IDs' absolute values may differ.
Prints one line per field; exit 0 when every field matches, 1 otherwise.
"""
import argparse
import sys

from scapy.all import IP, TCP, rdpcap  # noqa: E402


def option_layout(tcp):
    """[(kind, length)] from the raw option bytes (scapy's decoded list hides NOP/EOL details)."""
    raw = bytes(tcp)[20:tcp.dataofs * 4]
    out, i = [], 0
    while i < len(raw):
        kind = raw[i]
        if kind in (0, 1):
            out.append((kind, 1))
            i += 1
            continue
        if i + 1 >= len(raw):
            out.append((kind, -1))
            break
        out.append((kind, raw[i + 1]))
        i += max(raw[i + 1], 2)
    return out


def opt(tcp, name):
    for k, v in tcp.options:
        if k == name:
            return v
    return None


def pick(pkts, server_port):
    """The five packets of one connection to server_port, or an error string."""
    mine = [p for p in pkts if IP in p and TCP in p and server_port in (p[TCP].sport, p[TCP].dport)]
    c2s = [p for p in mine if p[TCP].dport == server_port]
    s2c = [p for p in mine if p[TCP].sport == server_port]
    syn = next((p for p in c2s if p[TCP].flags == "S"), None)
    synack = next((p for p in s2c if p[TCP].flags == "SA"), None)
    if syn is None or synack is None:
        return "no SYN / SYN-ACK to port %d" % server_port
    after = [p for p in c2s if p[TCP].flags & 0x10 and not p[TCP].flags & 0x02]
    hs_ack = next((p for p in after if len(p[TCP].payload) == 0), None)
    data = next((p for p in after if len(p[TCP].payload) > 0), None)
    srv_ack = next((p for p in s2c if not p[TCP].flags & 0x02 and len(p[TCP].payload) == 0), None)
    if None in (hs_ack, data, srv_ack):
        return "incomplete connection to port %d (ACK %s, data %s, server ACK %s)" % (
            server_port, hs_ack is not None, data is not None, srv_ack is not None)
    return dict(syn=syn, synack=synack, ack=hs_ack, data=data, srv_ack=srv_ack)


def fields(c):
    f = {}
    for name, p in c.items():
        t = p[TCP]
        if name in ("synack", "srv_ack"):  # crossed the network: the TTL it started with
            f[name + ".initial_ttl"] = next(t for t in (32, 64, 128, 255) if t >= p[IP].ttl)
        else:  # captured where the client emits it
            f[name + ".ttl"] = p[IP].ttl
        f[name + ".df"] = bool(p[IP].flags & 2)
        f[name + ".data_offset"] = t.dataofs
        f[name + ".flags"] = str(t.flags)
        f[name + ".options"] = option_layout(t)
        ts = opt(t, "Timestamp")
        f[name + ".tsval_set"] = ts is not None and ts[0] != 0
        if name != "srv_ack":  # the receiver's window grows with what it got: compared below
            f[name + ".window"] = t.window
    f["syn.mss"] = opt(c["syn"][TCP], "MSS")
    f["syn.wscale"] = opt(c["syn"][TCP], "WScale")
    f["syn.tsecr_zero"] = opt(c["syn"][TCP], "Timestamp")[1] == 0
    f["synack.mss"] = opt(c["synack"][TCP], "MSS")
    f["synack.wscale"] = opt(c["synack"][TCP], "WScale")
    f["synack.tsecr_echoes_syn"] = opt(c["synack"][TCP], "Timestamp")[1] == opt(c["syn"][TCP], "Timestamp")[0]
    f["ack.tsecr_echoes_synack"] = opt(c["ack"][TCP], "Timestamp")[1] == opt(c["synack"][TCP], "Timestamp")[0]
    f["syn.ip_id_nonzero"] = c["syn"][IP].id != 0
    f["synack.ip_id"] = c["synack"][IP].id
    f["ack.ip_id_is_syn_plus_1"] = c["ack"][IP].id == (c["syn"][IP].id + 1) & 0xffff
    f["data.ip_id_is_syn_plus_2"] = c["data"][IP].id == (c["syn"][IP].id + 2) & 0xffff
    f["srv_ack.ip_id_nonzero"] = c["srv_ack"][IP].id != 0
    # The server's window after data: at least its SYN-ACK window, in its scale.
    scale = 1 << (opt(c["synack"][TCP], "WScale") or 0)
    f["srv_ack.window_at_least_synack"] = c["srv_ack"][TCP].window * scale >= c["synack"][TCP].window
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kernel")
    ap.add_argument("faketcp")
    ap.add_argument("--port-a", type=int, required=True)
    ap.add_argument("--port-b", type=int, required=True)
    a = ap.parse_args()
    k = pick(rdpcap(a.kernel), a.port_a)
    f = pick(rdpcap(a.faketcp), a.port_b)
    for what, c in (("kernel", k), ("faketcp", f)):
        if isinstance(c, str):
            print("%s: %s" % (what, c))
            return 1
    fk, ff = fields(k), fields(f)
    bad = 0
    for name in fk:
        same = fk[name] == ff.get(name)
        bad += not same
        print("%-4s %-32s kernel %-40s faketcp %s" % ("ok" if same else "DIFF", name, fk[name], ff.get(name)))
    print("%d fields, %d differ" % (len(fk), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
