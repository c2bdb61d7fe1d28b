// Stack::set_tx_checksum_offload: data segments leave the TCP checksum to the
// device (CHECKSUM_PARTIAL: the folded pseudo-header sum); control segments
// keep full checksums. Completing the partial sum must give the exact bytes
// of the normal mode.
#include <cstring>

#include "support.h"

using namespace tst;
using ft::Errc;

namespace {

constexpr uint16_t kPort = 5555;

// The pseudo-header sum the device starts from, folded, as stored on the wire.
uint16_t pseudo_partial(const Bytes& p) {
    const bool v4 = (p[0] >> 4) == 4;
    const size_t ip_len = v4 ? 20 : 40;
    const size_t tcp_len = p.size() - ip_len;
    uint8_t tail[8] = {0, 0, 0, 0, 0, 0, 0, 6};
    uint32_t acc;
    if (v4) {
        acc = ones_sum(p.data() + 12, 8);
        uint8_t t4[4] = {0, 6, uint8_t(tcp_len >> 8), uint8_t(tcp_len)};
        acc = ones_sum(t4, 4, acc);
    } else {
        acc = ones_sum(p.data() + 8, 32);
        put32(tail, uint32_t(tcp_len));
        acc = ones_sum(tail, 8, acc);
    }
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return uint16_t(acc);
}

Bytes send_one(bool offload, bool v6, const char* text, bool& partial) {
    Harness h;
    h.stack.set_tx_checksum_offload(offload);
    h.listen(kPort);
    Path in = v6 ? Path{{kPeer6, 40000}, {kStack6, kPort}} : Path{{kPeer4, 40000}, {kStack4, kPort}};
    ServerConn c = establish_server(h, in, 1000);
    REQUIRE(h.stack.send(c.id, ft::ByteView(text, std::strlen(text)), h.now) == Errc::ok);
    REQUIRE(h.stack.tx_count() == 1);
    partial = h.stack.tx_checksum_partial(0);
    std::vector<Bytes> raw = h.tx_raw();
    REQUIRE(raw.size() == 1);
    return raw[0];
}

}  // namespace

TEST_CASE("checksum_offload_data_segment_carries_pseudo_header_sum") {
    for (bool v6 : {false, true}) {
        for (const char* text : {"odd", "even"}) {
            CAPTURE(v6);
            CAPTURE(text);
            bool partial_full = true, partial_off = false;
            Bytes full = send_one(false, v6, text, partial_full);
            Bytes off = send_one(true, v6, text, partial_off);
            CHECK_FALSE(partial_full);
            CHECK(partial_off);
            const size_t ck = (v6 ? 40 : 20) + 16;
            REQUIRE(full.size() == off.size());
            // Only the TCP checksum differs, and it is the pseudo-header sum.
            Bytes a = full, b = off;
            a[ck] = a[ck + 1] = b[ck] = b[ck + 1] = 0;
            CHECK(a == b);
            CHECK(be16(off.data() + ck) == pseudo_partial(off));
            // Completing it, as the device does, gives the normal bytes.
            Bytes completed = off;
            fix_tcp_checksum(completed);
            CHECK(completed == full);
        }
    }
}

TEST_CASE("checksum_offload_control_segments_keep_full_checksums") {
    Harness h;
    h.stack.set_tx_checksum_offload(true);
    h.listen(kPort);
    Path in{{kPeer4, 40000}, {kStack4, kPort}};
    h.in(in.syn(7));
    REQUIRE(h.stack.tx_count() == 1);
    CHECK_FALSE(h.stack.tx_checksum_partial(0));
    // decode() verifies checksums: a SYN-ACK with a partial sum would not match.
    CHECK(h.tx() == pkts(in.reversed().syn_ack(0, 8)));
    CHECK_FALSE(h.stack.tx_checksum_partial(0));  // out of range: false, no crash
}
