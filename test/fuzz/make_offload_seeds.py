#!/usr/bin/python3
# Seeds for fuzz_offload (run from this folder with /usr/bin/python3; needs
# python3-scapy). First byte 0: a TUN read follows (virtio-net header, host =
# little-endian, then the packet); first byte 1: a round-trip burst descriptor
# (see fuzz_offload.cpp). Checked-in output: corpus/fuzz_offload/.
import os
import struct
from scapy.all import IP, IPv6, TCP, UDP, Raw, raw

def put(name, data):
    os.makedirs("corpus/fuzz_offload", exist_ok=True)
    with open(f"corpus/fuzz_offload/{name}", "wb") as f:
        f.write(data)

def vnet(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)

def read(v, pkt):
    return b"\x00" + v + pkt

v4 = IP(src="10.0.0.1", dst="10.0.0.2", flags="DF", id=0)
v6 = IPv6(src="fd00::1", dst="fd00::2")
seg = TCP(sport=40000, dport=4567, flags="A", seq=1000, ack=7)
body = bytes(range(256)) * 2

# GRO'd super-packets of 4 x 128 bytes (checksum field: anything, it is recomputed).
put("gro4", read(vnet(1, 1, 40, 128, 20, 16), raw(v4 / seg / Raw(body))))
put("gro6", read(vnet(1, 4, 60, 128, 40, 16), raw(v6 / seg / Raw(body))))
put("gro4_last_short", read(vnet(1, 1, 40, 200, 20, 16), raw(v4 / seg / Raw(body[:450]))))
put("gro4_psh_fin", read(vnet(1, 0x81, 0, 100, 20, 16),
                         raw(v4 / TCP(sport=1, dport=2, flags="FPA", seq=5) / Raw(body[:300]))))
# Partial checksum without GSO, plain packets, a UDP packet.
put("csum4", read(vnet(1, 0, 0, 0, 20, 16), raw(v4 / seg / Raw(b"hello"))))
put("csum6", read(vnet(1, 0, 0, 0, 40, 16), raw(v6 / seg / Raw(b"hello"))))
put("plain4", read(vnet(0, 0, 0, 0, 0, 0), raw(v4 / seg / Raw(b"hi"))))
put("valid6", read(vnet(2, 0, 0, 0, 0, 0), raw(v6 / seg / Raw(b"hi"))))
put("udp_gso", read(vnet(1, 5, 28, 100, 20, 6), raw(v4 / UDP(sport=1, dport=2) / Raw(body))))

# Round-trip bursts: family, seq, ack, size (u16), count, then one tweak byte each.
def burst(v6, size, count, tweaks):
    return (b"\x01" + bytes([v6]) + struct.pack(">IIHB", 0xfffff000, 9, size, count) + bytes(tweaks))
put("burst4_40x1000", burst(0, 999, 40, [15] * 40))
put("burst6_50x1400", burst(1, 1399, 50, [15] * 50))
put("burst4_breaks", burst(0, 99, 30, [15, 15, 1, 4, 15, 15, 0, 0x30, 15, 2, 3, 5, 6, 7, 15, 15, 8, 1, 15, 15]))
