// libFuzzer target: TunBatch's receive bookkeeping (faketcp.h), the part of
// Tun::read() that is not a syscall. The input describes up to 8 reads from
// an offload TUN (raw bytes, plain packets behind a zero vnet header, GSO
// super-packets of any gso_size) and the read budget of each Tun::read()
// call, and where the queue runs empty. Invariants: no crash or over-read;
// the calls end; and the packets handed over, across however many batches a
// super-packet takes, are exactly what parse_rx()/rx_segment() make of each
// read, in order.
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

using Bytes = std::vector<uint8_t>;

void append_vnet(Bytes& out, uint8_t flags, uint8_t gso_type, uint16_t gso_size, uint16_t csum_start) {
    ofl::VnetHdr h;
    h.flags = flags;
    h.gso_type = gso_type;
    h.gso_size = gso_size;
    h.csum_start = csum_start;
    h.csum_offset = 16;
    uint8_t b[ofl::kVnetHdrLen];
    ofl::encode(h, b);
    out.insert(out.end(), b, b + sizeof b);
}

Bytes make_read(Input& in) {
    Bytes r;
    const uint8_t kind = in.u8() % 3;
    if (kind == 0) {  // anything at all
        const size_t n = in.u8() % 200;
        for (size_t k = 0; k < n; ++k) r.push_back(in.u8());
        return r;
    }
    Spec s;
    s.v6 = in.u8() & 1;
    s.seq = in.u32();
    static Bytes payload(8000);
    const size_t len = kind == 1 ? in.u8() % 100 : in.u16() % payload.size();
    for (size_t k = 0; k < len; ++k) payload[k] = uint8_t(k * 7 + len);
    const Bytes pkt = build(s, payload.data(), len);
    if (kind == 1) {
        append_vnet(r, 0, ofl::kGsoNone, 0, 0);
    } else {
        const uint16_t gso_size = uint16_t(in.u8() % 64 + 1);
        append_vnet(r, ofl::kNeedsCsum, s.v6 ? ofl::kGsoTcpv6 : ofl::kGsoTcpv4, gso_size, s.v6 ? 40 : 20);
    }
    r.insert(r.end(), pkt.begin(), pkt.end());
    if (in.u8() % 16 == 0 && !r.empty()) r[in.u8() % r.size()] ^= in.u8();  // now and then a damaged one
    return r;
}

// What the batch must hand over for `read`, computed by the pure functions alone.
void expected_packets(Bytes read, std::vector<Bytes>& out) {
    const ofl::RxPacket rx = ofl::parse_rx(read.data(), read.size(), ofl::TcpChecksumFill::leave);
    switch (rx.kind) {
        case ofl::RxPacket::Kind::drop: return;
        case ofl::RxPacket::Kind::plain: out.emplace_back(rx.packet.begin(), rx.packet.end()); return;
        case ofl::RxPacket::Kind::segments:
            for (size_t i = 0; i < rx.count; ++i) {
                Bytes seg(rx.segment_size(i));
                CHECK_INV(ofl::rx_segment(rx, i, seg.data(), ofl::TcpChecksumFill::leave) == seg.size());
                out.push_back(seg);
            }
            return;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Input in{data, size};
    std::vector<Bytes> reads(in.u8() % 8 + 1);
    std::vector<Bytes> want;
    for (Bytes& r : reads) {
        r = make_read(in);
        expected_packets(r, want);
    }
    TunBatch b(TunBatch::Framing::vnet, 1500, 4);
    size_t next = 0, got = 0, rounds = 0;
    bool more = false;
    while (next < reads.size() || more) {
        CHECK_INV(++rounds < 100000);
        const size_t max_reads = more && (in.u8() & 1) ? 0 : in.u8() % 4 + 1;
        b.rx_begin(max_reads);
        for (size_t cap = 0; uint8_t* slot = b.rx_slot(cap);) {
            // The queue runs empty after the last read, and now and then
            // before it (more arrives later).
            if (next == reads.size() || in.u8() % 8 == 7) {
                b.rx_stop(EAGAIN);
                break;
            }
            const Bytes& r = reads[next++];
            CHECK_INV(r.size() <= cap);
            if (!r.empty()) std::memcpy(slot, r.data(), r.size());
            b.rx_commit(r.size());
        }
        CHECK_INV(b.rx_reads() <= max_reads);
        for (size_t i = 0; i < b.rx_count(); ++i, ++got) {
            CHECK_INV(got < want.size());
            const ByteView p = b.rx_packet(i);
            CHECK_INV(p.size == want[got].size());
            CHECK_INV(p.size == 0 || std::memcmp(p.data, want[got].data(), p.size) == 0);
        }
        more = b.rx_more();
    }
    CHECK_INV(got == want.size());
    return 0;
}
