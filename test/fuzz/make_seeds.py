#!/usr/bin/python3
# Writes the small seed corpora for the fuzz targets (run from this folder
# with /usr/bin/python3; needs python3-scapy). Checked-in output: corpus/.
import os
from scapy.all import IP, IPv6, TCP, UDP, Raw, raw

def put(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/{name}", "wb") as f:
        f.write(data)

v4 = IP(src="10.0.0.1", dst="10.0.0.2", flags="DF", id=0)
v6 = IPv6(src="fd00::1", dst="fd00::2")
syn = TCP(sport=40000, dport=4567, flags="S", seq=0, options=[("NOP", None), ("WScale", 14)])
put("fuzz_packet", "syn4", raw(v4 / syn))
put("fuzz_packet", "syn6", raw(v6 / syn))
put("fuzz_packet", "ack4", raw(v4 / TCP(sport=40000, dport=4567, flags="A", seq=1, ack=1)))
put("fuzz_packet", "data4", raw(v4 / TCP(sport=40000, dport=4567, flags="A", seq=1, ack=1) / Raw(b"hello")))
put("fuzz_packet", "data6", raw(v6 / TCP(sport=40000, dport=4567, flags="A", seq=1, ack=1) / Raw(b"hello!")))
put("fuzz_packet", "rst4", raw(v4 / TCP(sport=40000, dport=4567, flags="R", seq=1)))
put("fuzz_packet", "udp4", raw(v4 / UDP(sport=1, dport=2) / Raw(b"x")))
put("fuzz_packet", "opts4", raw(IP(src="10.0.0.1", dst="10.0.0.2", options=[b"\x01\x01\x01\x00"]) / syn))

# fuzz_stack: knobs, then ops (see fuzz_stack.cpp): connect v4, deliver
# client->server, server->client, client->server, send both ways, deliver, time.
handshake = bytes([0x00, 0x00, 0x00, 0x04, 0x84, 0x04])
put("fuzz_stack", "handshake_v4", handshake)
put("fuzz_stack", "handshake_v6", bytes([0x00, 0x00, 0x01, 0x04, 0x84, 0x04]))
put("fuzz_stack", "handshake_send", handshake + bytes([0x01, 0x00, 0x00, 0x00, 0x10, 0x04,
                                                       0x81, 0x00, 0x00, 0x00, 0x20, 0x84,
                                                       0x03, 0x07, 0xd0, 0x02, 0x00, 0x00, 0x04]))
put("fuzz_stack", "timeouts", bytes([0x00, 0x00, 0x00, 0x03, 0x0b, 0xb8, 0x03, 0x0b, 0xb8,
                                     0x03, 0x0b, 0xb8, 0x03, 0x0b, 0xb8]))
