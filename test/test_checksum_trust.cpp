// Stack::on_packet with RxChecksum: `verify` (and the two-argument overload)
// sums every TCP byte and drops a mismatch; `kernel_verified` trusts the TCP
// checksum - the documented contract for packets whose virtio-net header says
// the kernel vouched for them - and still checks everything else.
#include "support.h"

using namespace tst;
using ft::RxChecksum;

namespace {

constexpr uint16_t kPort = 5555;

const Path kIn4{{kPeer4, 40000}, {kStack4, kPort}};
const Path kIn6{{kPeer6, 40000}, {kStack6, kPort}};

// A data segment on `c` whose TCP checksum is off by one bit.
Bytes with_bad_tcp_checksum(const ServerConn& c, const char* text) {
    Bytes b = encode(c.in.data(1001, 1, text));
    b[tcp_offset(b) + 16] ^= 0x40;
    return b;
}

}  // namespace

TEST_CASE("established_bad_checksum_kernel_verified_delivered") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        Harness h;
        h.listen(kPort);
        ServerConn c = establish_server(h, v6 ? kIn6 : kIn4, 1000);
        const Bytes bad = with_bad_tcp_checksum(c, "trusted");
        REQUIRE(decode(ft::ByteView(bad.data(), bad.size())).error != "");  // really wrong
        const ft::Stats before = h.stats();
        h.stack.on_packet(ft::ByteView(bad.data(), bad.size()), h.now, RxChecksum::kernel_verified);
        CHECK(drop_delta(before, h.stats()) == "");
        CHECK(h.events() == evs(ev_datagram(c.id, "trusted")));  // `bad` is still alive here
        CHECK(h.stats().checksum_trusted == before.checksum_trusted + 1);
        CHECK(h.stats().datagrams_in == before.datagrams_in + 1);
        CHECK(h.tx() == pkts());
    }
}

TEST_CASE("established_bad_checksum_verify_dropped") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        Harness h;
        h.listen(kPort);
        ServerConn c = establish_server(h, v6 ? kIn6 : kIn4, 1000);
        const Bytes bad = with_bad_tcp_checksum(c, "forged");
        ft::Stats before = h.stats();
        h.stack.on_packet(ft::ByteView(bad.data(), bad.size()), h.now, RxChecksum::verify);
        CHECK(drop_delta(before, h.stats()) == "bad_tcp_checksum+1");
        before = h.stats();
        h.in_bytes(bad);  // the two-argument overload verifies too
        CHECK(drop_delta(before, h.stats()) == "bad_tcp_checksum+1");
        CHECK(h.events() == evs());
        CHECK(h.stats().checksum_trusted == 0);
        CHECK(h.tx() == pkts());
    }
}

// Trust covers the TCP checksum alone: a packet marked kernel_verified whose
// other fields are broken is dropped for exactly the reason it would be
// without the mark, and never read past its end.
TEST_CASE("kernel_verified_still_checks_everything_but_the_tcp_checksum") {
    Harness h;
    h.listen(kPort);
    ServerConn c = establish_server(h, kIn4, 1000);
    const Bytes good = encode(c.in.data(1001, 1, "x"));
    GuardedBuffer guard;
    auto verdict = [&](const Bytes& b) {
        const ft::Stats before = h.stats();
        h.stack.on_packet(guard.place(b), h.now, RxChecksum::kernel_verified);
        return drop_delta(before, h.stats());
    };
    Bytes ip_sum = good;
    ip_sum[10] ^= 1;
    CHECK(verdict(ip_sum) == "ipv4_bad_checksum+1");
    Bytes offset = good;
    offset[20 + 12] = 0xf0;  // data offset 60 > the 21 bytes of TCP
    fix_ipv4_checksum(offset);
    CHECK(verdict(offset) == "bad_data_offset+1");
    Bytes length = good;
    put16(&length[2], uint16_t(good.size() + 1));
    fix_ipv4_checksum(length);
    CHECK(verdict(length) == "truncated+1");
    for (size_t n = 0; n < good.size(); ++n) {
        CAPTURE(n);
        CHECK(verdict(Bytes(good.begin(), good.begin() + long(n))) != "");
    }
    Bytes port0 = good;
    put16(&port0[20], 0);  // source port 0; the checksum is not looked at
    CHECK(verdict(port0) == "bad_port+1");
    CHECK(h.events() == evs());
    CHECK(h.stats().checksum_trusted == good.size() + 4);
}
