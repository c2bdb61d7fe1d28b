// libFuzzer target: the device offload functions (faketcp.h, namespace offload).
//
// First byte even — the rest is one TUN read (virtio-net header + packet),
// handed to parse_rx()/rx_segment(). Invariants: no crash or over-read; a
// plain result is either the input untouched or, when its checksum was
// completed, a valid TCP/IP packet; every split segment is a valid TCP/IP
// packet (lengths, both checksums), seq advances by gso_size, and the payloads
// concatenate to the super-packet's. With TcpChecksumFill::leave: the same
// verdict, the read untouched, segments differing only in the TCP checksum.
//
// First byte odd — the rest describes a burst of fake-TCP segments (sizes,
// seq gaps, other tuples, acks, flags, families), built here with valid
// checksums. Every run gso_run() finds coalesces and splits back byte-exact,
// within 64 segments and 64 KiB.
// Build: make fuzz (clang, -fsanitize=fuzzer,address,undefined).
#include "faketcp.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_common.h"
#include "fuzz_packets.h"

using namespace faketcp;
namespace ofl = faketcp::offload;

namespace {

// A clean IPv4 (IHL 5) or IPv6 (no extension headers) TCP packet with valid
// checksums; returns the IP header length.
size_t check_tcp_packet(const uint8_t* b, size_t n) {
    CHECK_INV(n >= 40);
    size_t ip_len;
    uint32_t pseudo;
    if ((b[0] >> 4) == 4) {
        CHECK_INV(b[0] == 0x45);
        CHECK_INV(be16(b + 2) == n);
        CHECK_INV(fold(sum16(b, 20)) == 0xffff);
        CHECK_INV((be16(b + 6) & 0x3fff) == 0);
        CHECK_INV(b[9] == 6);
        ip_len = 20;
        pseudo = sum16(b + 12, 8) + 6 + uint32_t(n - 20);
    } else {
        CHECK_INV((b[0] >> 4) == 6);
        CHECK_INV(n >= 60);
        CHECK_INV(size_t(be16(b + 4)) + 40 == n);
        CHECK_INV(b[6] == 6);
        ip_len = 40;
        pseudo = sum16(b + 8, 32) + 6 + uint32_t(n - 40);
    }
    const uint8_t* t = b + ip_len;
    const size_t off = size_t(t[12] >> 4) * 4;
    CHECK_INV(off >= 20 && off <= n - ip_len);
    CHECK_INV(fold(sum16(t, n - ip_len, pseudo)) == 0xffff);
    return ip_len;
}

void fuzz_split(const uint8_t* data, size_t size) {
    std::vector<uint8_t> read(data, data + size);  // parse_rx may complete a checksum in place
    const ofl::RxPacket rx = ofl::parse_rx(read.data(), read.size());
    switch (rx.kind) {
        case ofl::RxPacket::Kind::drop:
            CHECK_INV(rx.drop != ofl::RxDrop::count_ && rx.drop != ofl::RxDrop::no_room);
            return;
        case ofl::RxPacket::Kind::plain:
            CHECK_INV(size >= ofl::kVnetHdrLen);
            CHECK_INV(rx.packet.data == read.data() + ofl::kVnetHdrLen);
            CHECK_INV(rx.packet.size == size - ofl::kVnetHdrLen);
            if (rx.checksummed) {
                check_tcp_packet(rx.packet.data, rx.packet.size);
            } else {
                CHECK_INV(std::memcmp(read.data(), data, size) == 0);
            }
            return;
        case ofl::RxPacket::Kind::segments:
            break;
    }
    CHECK_INV(rx.count >= 2 && rx.gso_size > 0);
    CHECK_INV(rx.header_len < rx.packet.size);
    const uint8_t* super = rx.packet.data;
    const size_t ip_len = (super[0] >> 4) == 4 ? 20 : 40;
    const uint32_t seq0 = be32(super + ip_len + 4);
    std::vector<uint8_t> seg(rx.header_len + rx.gso_size);
    size_t payload_at = rx.header_len;
    for (size_t i = 0; i < rx.count; ++i) {
        const size_t n = rx.segment_size(i);
        CHECK_INV(n > rx.header_len && n <= seg.size());
        CHECK_INV(ofl::rx_segment(rx, i, seg.data()) == n);
        CHECK_INV(check_tcp_packet(seg.data(), n) == ip_len);
        CHECK_INV(be32(seg.data() + ip_len + 4) == seq0 + uint32_t(i * rx.gso_size));
        const size_t len = n - rx.header_len;
        CHECK_INV(i + 1 == rx.count || len == rx.gso_size);
        CHECK_INV(std::memcmp(seg.data() + rx.header_len, super + payload_at, len) == 0);
        payload_at += len;
    }
    CHECK_INV(payload_at == rx.packet.size);
    CHECK_INV(rx.segment_size(rx.count) == 0);
}

// TcpChecksumFill::leave, as StackDriver reads: the same verdict as the
// default, the read never written to, and segments equal to the default's
// in every byte but the TCP checksum field.
void fuzz_leave(const uint8_t* data, size_t size) {
    std::vector<uint8_t> full_read(data, data + size), left_read(data, data + size);
    const ofl::RxPacket full = ofl::parse_rx(full_read.data(), full_read.size());
    const ofl::RxPacket left = ofl::parse_rx(left_read.data(), left_read.size(), ofl::TcpChecksumFill::leave);
    CHECK_INV(full.kind == left.kind && full.drop == left.drop && full.count == left.count);
    CHECK_INV(full.checksum == left.checksum && full.checksummed == left.checksummed);
    CHECK_INV(size == 0 || std::memcmp(left_read.data(), data, size) == 0);  // an empty vector's data() may be null
    if (left.kind != ofl::RxPacket::Kind::segments) return;
    CHECK_INV(left.checksum == RxChecksum::kernel_verified);
    const size_t ck = ((left.packet.data[0] >> 4) == 4 ? 20 : 40) + 16;
    std::vector<uint8_t> a(left.header_len + left.gso_size), b(a.size());
    for (size_t i = 0; i < left.count; ++i) {
        const size_t n = left.segment_size(i);
        CHECK_INV(ofl::rx_segment(full, i, a.data()) == n);
        CHECK_INV(ofl::rx_segment(left, i, b.data(), ofl::TcpChecksumFill::leave) == n);
        CHECK_INV(std::memcmp(a.data(), b.data(), ck) == 0);
        CHECK_INV(std::memcmp(a.data() + ck + 2, b.data() + ck + 2, n - ck - 2) == 0);
    }
}

// What split() may legitimately change in a segment, as the kernel's GSO does:
// - the IPv4 ID (a run may take IPv4 packets whose IDs count up, the linux
//   profile's per-packet ID, which the kernel's GSO reproduces; split() gives
//   every segment the super-packet's ID, which nothing downstream reads), with
//   the IPv4 header checksum that covers it, which must still be valid;
// - PSH, which tcp_gso_segment keeps on the last segment only (the linux
//   profile sets it on every data segment), with the TCP checksum covering it.
// Every other byte must be identical.
bool ipv4_header_checksum_ok(const uint8_t* p) {
    uint32_t sum = 0;
    for (size_t k = 0; k < 20; k += 2) sum += uint32_t(p[k] << 8 | p[k + 1]);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}

bool may_differ(size_t k, size_t l3, bool v4) {
    if (v4 && (k == 4 || k == 5 || k == 10 || k == 11)) return true;  // ID, header checksum
    return k == l3 + 16 || k == l3 + 17;                                // TCP checksum
}

bool same_but_ipv4_id(const ByteView& got, const ByteView& want) {
    if (got.size != want.size || got.size < 20) return got.size == want.size &&
        std::memcmp(got.data, want.data, got.size) == 0;
    const bool v4 = (want.data[0] >> 4) == 4;
    const size_t l3 = v4 ? 20 : 40;
    if (got.size < l3 + 20) return std::memcmp(got.data, want.data, got.size) == 0;
    for (size_t k = 0; k < got.size; ++k) {
        if (may_differ(k, l3, v4)) continue;
        const uint8_t mask = k == l3 + 13 ? uint8_t(~0x08) : uint8_t(0xff);  // PSH
        if ((got.data[k] & mask) != (want.data[k] & mask)) return false;
    }
    return !v4 || ipv4_header_checksum_ok(got.data);
}

void fuzz_round_trip(Input in) {
    Spec s;
    s.v6 = in.u8() & 1;
    s.seq = in.u32();
    s.ack = in.u32();
    size_t size = in.u16() % 1500 + 1;
    const size_t count = in.u8() % 100 + 1;
    std::vector<std::vector<uint8_t>> pkts;
    static std::vector<uint8_t> payload(65535);  // static: one allocation per process, not per input
    for (size_t i = 0; i < count; ++i) {
        const uint8_t tweak = in.u8();
        switch (tweak % 16) {
            case 0: size = in.u16() % 1500; break;  // 0: a pure ACK
            case 1: s.seq += in.u8(); break;
            case 2: s.dport = uint16_t(s.dport + 1); break;
            case 3: s.ack += 1; break;
            case 4: s.flags = s.flags == 0x10 ? 0x18 : 0x10; break;
            case 5: s.v6 = !s.v6; break;
            case 6: s.ip_id = uint16_t(s.ip_id + 1); break;
            case 7: s.ttl = uint8_t(s.ttl - 1); break;
            case 8: size = 65535 - 60 - in.u8(); break;  // near the 64 KiB limit
            default: break;
        }
        const size_t len = s.v6 ? std::min<size_t>(size, 65535 - 20) : std::min<size_t>(size, 65535 - 40);
        for (size_t k = 0; k < len; ++k) payload[k] = uint8_t(i + k);
        for (size_t k = 0; k < len && !in.done() && k < 4; ++k) payload[k] = in.u8();
        pkts.push_back(build(s, payload.data(), len));
        s.seq += uint32_t(len);
    }
    std::vector<ByteView> views;
    for (const auto& p : pkts) views.emplace_back(p.data(), p.size());

    static std::vector<uint8_t> super(ofl::kVnetHdrLen + 65535);
    static std::vector<uint8_t> out(2 * 65536);
    static std::vector<ByteView> segs(ofl::kMaxGsoSegments);
    size_t i = 0;
    while (i < views.size()) {
        const size_t run = ofl::gso_run(&views[i], views.size() - i);
        CHECK_INV(run >= 1 && run <= views.size() - i && run <= ofl::kMaxGsoSegments);
        if (run == 1) {
            uint8_t hdr[ofl::kMaxGsoHeader];
            CHECK_INV(ofl::gso_header(&views[i], 1, hdr) == 0);
            ++i;
            continue;
        }
        const size_t n = ofl::coalesce(&views[i], run, super.data(), super.size());
        CHECK_INV(n > ofl::kVnetHdrLen && n - ofl::kVnetHdrLen <= ofl::kMaxGsoPacket);
        const ofl::SplitResult r = ofl::split(super.data(), n, out.data(), out.size(), segs.data(), segs.size());
        CHECK_INV(r.count == run);
        for (size_t k = 0; k < run; ++k) {
            CHECK_INV(segs[k].size == views[i + k].size);
            CHECK_INV(same_but_ipv4_id(segs[k], views[i + k]));
        }
        i += run;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    if ((data[0] & 1) == 0) {
        fuzz_split(data + 1, size - 1);
        fuzz_leave(data + 1, size - 1);
    } else {
        fuzz_round_trip(Input{data + 1, size - 1});
    }
    return 0;
}
