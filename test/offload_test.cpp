// Device offload: the pure GSO coalesce / GRO split functions (faketcp.h,
// namespace offload), table-tested against packets built by test/support.cpp
// (its own checksums and encoder, not the library's), and - as root only - the
// StackDriver over real TUN devices in a private network namespace.
//
// vnet headers are in host byte order; these tests spell them little-endian
// by hand, so they run on little-endian hosts only (every machine we use).
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

#include "support.h"

using namespace tst;
namespace ofl = faketcp::offload;
using ofl::RxDrop;
using ofl::RxPacket;

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__

namespace {

const Path kOut4{{kStack4, 5555}, {kPeer4, 40000}};
const Path kOut6{{kStack6, 5555}, {kPeer6, 40000}};

// A virtio_net_hdr spelled out byte by byte (little-endian host).
Bytes vnet(uint8_t flags, uint8_t gso_type, uint16_t hdr_len, uint16_t gso_size,
           uint16_t csum_start, uint16_t csum_offset) {
    return Bytes{flags,
                 gso_type,
                 uint8_t(hdr_len),
                 uint8_t(hdr_len >> 8),
                 uint8_t(gso_size),
                 uint8_t(gso_size >> 8),
                 uint8_t(csum_start),
                 uint8_t(csum_start >> 8),
                 uint8_t(csum_offset),
                 uint8_t(csum_offset >> 8)};
}
uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }

Bytes cat(Bytes a, const Bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// A recognisable payload: byte k of segment `index` of `size` bytes.
Bytes payload(size_t index, size_t size) {
    Bytes b(size);
    for (size_t k = 0; k < size; ++k) b[k] = uint8_t(index * 31 + k * 7 + 1);
    return b;
}

// n data segments on `path` from seq0, each `size` bytes, the last `last`
// bytes if nonzero: what the Stack queues for a burst of datagrams.
std::vector<Seg> burst(const Path& path, uint32_t seq0, uint32_t ack, size_t n, size_t size,
                       size_t last = 0) {
    std::vector<Seg> out;
    uint32_t seq = seq0;
    for (size_t i = 0; i < n; ++i) {
        const size_t len = (i + 1 == n && last) ? last : size;
        out.push_back(path.data(seq, ack, payload(i, len)));
        seq += uint32_t(len);
    }
    return out;
}

std::vector<Bytes> encode_all(const std::vector<Seg>& segs) {
    std::vector<Bytes> out;
    for (const Seg& s : segs) out.push_back(encode(s));
    return out;
}

std::vector<ft::ByteView> views(const std::vector<Bytes>& pkts) {
    std::vector<ft::ByteView> v;
    for (const Bytes& p : pkts) v.emplace_back(p.data(), p.size());
    return v;
}

size_t run_of(const std::vector<Bytes>& pkts, size_t from = 0) {
    auto v = views(pkts);
    return ofl::gso_run(v.data() + from, v.size() - from);
}

Bytes coalesced(const std::vector<Bytes>& pkts, size_t from, size_t run) {
    auto v = views(pkts);
    Bytes out(70000);
    const size_t n = ofl::coalesce(v.data() + from, run, out.data(), out.size());
    out.resize(n);
    return out;
}

// split() into fresh buffers; the segments copied out. Empty on a drop.
struct Split {
    size_t count = 0;
    RxDrop drop = RxDrop::vnet_truncated;
    std::vector<Bytes> segs;
};
Split split_all(Bytes read) {
    Bytes out(256 * 1024);
    std::vector<ft::ByteView> segs(4096);
    const ofl::SplitResult r =
        ofl::split(read.data(), read.size(), out.data(), out.size(), segs.data(), segs.size());
    Split s;
    s.count = r.count;
    s.drop = r.drop;
    for (size_t i = 0; i < r.count; ++i) s.segs.emplace_back(segs[i].begin(), segs[i].end());
    return s;
}

RxPacket parse(Bytes& read) { return ofl::parse_rx(read.data(), read.size()); }

// The folded, not complemented, TCP pseudo-header sum (RFC 9293 §3.1).
uint16_t pseudo_partial(const Bytes& ip_packet, size_t tcp_len) {
    Bytes ph;
    if ((ip_packet[0] >> 4) == 4) {
        ph.assign(ip_packet.begin() + 12, ip_packet.begin() + 20);
        ph.insert(ph.end(), {0, 6, uint8_t(tcp_len >> 8), uint8_t(tcp_len)});
    } else {
        ph.assign(ip_packet.begin() + 8, ip_packet.begin() + 40);
        ph.insert(ph.end(), {0, 0, uint8_t(tcp_len >> 8), uint8_t(tcp_len), 0, 0, 0, 6});
    }
    return uint16_t(ones_sum(ph.data(), ph.size()));
}

}  // namespace

TEST_CASE("offload: vnet header encodes field by field in host byte order") {
    ofl::VnetHdr h;
    h.flags = ofl::kNeedsCsum;
    h.gso_type = ofl::kGsoTcpv6;
    h.hdr_len = 60;
    h.gso_size = 1400;
    h.csum_start = 40;
    h.csum_offset = 16;
    Bytes b(ofl::kVnetHdrLen);
    ofl::encode(h, b.data());
    CHECK(b == vnet(1, 4, 60, 1400, 40, 16));
    const ofl::VnetHdr d = ofl::decode(b.data());
    CHECK(d.flags == h.flags);
    CHECK(d.gso_type == h.gso_type);
    CHECK(d.hdr_len == h.hdr_len);
    CHECK(d.gso_size == h.gso_size);
    CHECK(d.csum_start == h.csum_start);
    CHECK(d.csum_offset == h.csum_offset);
}

TEST_CASE("offload: 40 segments coalesce into one super-packet and split back byte-exact") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        const Path& path = v6 ? kOut6 : kOut4;
        const size_t ip_len = v6 ? 40 : 20;
        const auto pkts = encode_all(burst(path, 1000, 777, 40, 1000));
        REQUIRE(run_of(pkts) == 40);
        const Bytes c = coalesced(pkts, 0, 40);
        REQUIRE(c.size() == 10 + ip_len + 20 + 40 * 1000);

        // virtio_net_hdr: NEEDS_CSUM, TCPV4/6, headers, gso_size, checksum field.
        CHECK(c[0] == ofl::kNeedsCsum);
        CHECK(c[1] == (v6 ? ofl::kGsoTcpv6 : ofl::kGsoTcpv4));
        CHECK(le16(&c[2]) == ip_len + 20);
        CHECK(le16(&c[4]) == 1000);
        CHECK(le16(&c[6]) == ip_len);
        CHECK(le16(&c[8]) == 16);

        // IP header of the whole; TCP header of the first segment.
        const Bytes ip(c.begin() + 10, c.end());
        if (v6) {
            CHECK(be16(&ip[4]) == 20 + 40 * 1000);
        } else {
            CHECK(be16(&ip[2]) == ip.size());
            CHECK(ones_sum(ip.data(), 20) == 0xffff);
        }
        // Every other header byte is the first packet's.
        auto same = [&](size_t from, size_t to) {
            return Bytes(ip.begin() + long(from), ip.begin() + long(to)) ==
                   Bytes(pkts[0].begin() + long(from), pkts[0].begin() + long(to));
        };
        if (v6) {
            CHECK(same(0, 4));
            CHECK(same(6, 40));
        } else {
            CHECK(same(0, 2));
            CHECK(same(4, 10));
            CHECK(same(12, 20));
        }
        CHECK(same(ip_len, ip_len + 16));
        CHECK(same(ip_len + 18, ip_len + 20));
        const uint8_t* t = ip.data() + ip_len;
        CHECK(be32(t + 4) == 1000);
        CHECK(be32(t + 8) == 777);
        CHECK(t[13] == kAck);
        // CHECKSUM_PARTIAL: the pseudo-header sum over the whole TCP length.
        CHECK(be16(t + 16) == pseudo_partial(ip, ip.size() - ip_len));
        // Payloads concatenated.
        for (size_t i = 0; i < 40; ++i) {
            CAPTURE(i);
            CHECK(Bytes(t + 20 + i * 1000, t + 20 + (i + 1) * 1000) == payload(i, 1000));
        }

        // The gather form (header + payloads where they lie) is the same bytes.
        auto v = views(pkts);
        Bytes hdr(ofl::kMaxGsoHeader);
        const size_t hl = ofl::gso_header(v.data(), 40, hdr.data());
        REQUIRE(hl == 10 + ip_len + 20);
        Bytes gathered(hdr.begin(), hdr.begin() + hl);
        for (const Bytes& p : pkts) gathered.insert(gathered.end(), p.begin() + (hl - 10), p.end());
        CHECK(gathered == c);

        // Split gives back the originals, byte for byte.
        const Split s = split_all(c);
        REQUIRE(s.count == 40);
        for (size_t i = 0; i < 40; ++i) {
            CAPTURE(i);
            CHECK(decode(ft::ByteView(s.segs[i].data(), s.segs[i].size())).error == "");
            CHECK(hex(s.segs[i]) == hex(pkts[i]));
        }
    }
}

TEST_CASE("offload: a shorter last segment ends the run and splits back") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        const Path& path = v6 ? kOut6 : kOut4;
        // 5 x 1000, one of 300, then 1000 again: [0..6) is a run, [6] is alone.
        auto segs = burst(path, 50, 9, 6, 1000, 300);
        const uint32_t next = 50 + 5 * 1000 + 300;
        segs.push_back(path.data(next, 9, payload(6, 1000)));
        const auto pkts = encode_all(segs);
        CHECK(run_of(pkts) == 6);
        CHECK(run_of(pkts, 6) == 1);
        const Bytes c = coalesced(pkts, 0, 6);
        CHECK(le16(&c[4]) == 1000);
        const Split s = split_all(c);
        REQUIRE(s.count == 6);
        for (size_t i = 0; i < 6; ++i) CHECK(hex(s.segs[i]) == hex(pkts[i]));
        CHECK(s.segs[5].size() == (v6 ? 60u : 40u) + 300);
    }
}

TEST_CASE("offload: runs break on a different size, tuple, ack, flags or a seq gap") {
    struct Row {
        const char* what;
        std::function<void(Seg&)> edit;  // applied to packet 3 of 8 (seq kept consistent)
        size_t expected_run;
    };
    const std::vector<Row> rows = {
        {"unchanged", [](Seg&) {}, 8},
        {"larger payload", [](Seg& s) { s.payload.push_back(0); }, 3},
        {"smaller payload is the last of the run", [](Seg& s) { s.payload.pop_back(); }, 4},
        {"other source port", [](Seg& s) { s.src.port++; }, 3},
        {"other destination port", [](Seg& s) { s.dst.port++; }, 3},
        {"other destination address", [](Seg& s) { s.dst.addr.bytes[3]++; }, 3},
        {"other ack", [](Seg& s) { s.ack++; }, 3},
        {"other window", [](Seg& s) { s.window = 1000; }, 3},
        {"PSH set", [](Seg& s) { s.flags |= kPsh; }, 3},
        {"FIN set", [](Seg& s) { s.flags |= kFin; }, 3},
        {"urgent pointer", [](Seg& s) { s.urgent = 1; }, 3},
        {"TCP options", [](Seg& s) { s.options = {1, 1, 1, 1}; }, 3},
        {"seq gap", [](Seg& s) { s.seq++; }, 3},
        {"seq repeats the previous", [](Seg& s) { s.seq -= 100; }, 3},
        {"other IP ID", [](Seg& s) { s.ip_id = 1; }, 3},
        {"other TTL", [](Seg& s) { s.ttl = 63; }, 3},
        {"other TOS", [](Seg& s) { s.tos = 4; }, 3},
        {"DF clear", [](Seg& s) { s.frag = 0; }, 3},
    };
    for (const Row& row : rows) {
        CAPTURE(row.what);
        auto segs = burst(kOut4, 0, 1, 8, 100);
        row.edit(segs[3]);
        const auto pkts = encode_all(segs);
        CHECK(run_of(pkts) == row.expected_run);
        // Whatever the break, each run round-trips.
        size_t i = 0;
        while (i < pkts.size()) {
            const size_t run = run_of(pkts, i);
            REQUIRE(run >= 1);
            if (run >= 2) {
                const Split s = split_all(coalesced(pkts, i, run));
                REQUIRE(s.count == run);
                for (size_t k = 0; k < run; ++k) CHECK(hex(s.segs[k]) == hex(pkts[i + k]));
            }
            i += run;
        }
    }
    SUBCASE("IPv4 and IPv6 do not mix") {
        auto segs = burst(kOut4, 0, 1, 2, 100);
        segs.push_back(kOut6.data(200, 1, payload(2, 100)));
        CHECK(run_of(encode_all(segs)) == 2);
    }
}

TEST_CASE("offload: a run stops at 64 KiB of IP packet and at 64 segments") {
    CHECK(run_of(encode_all(burst(kOut4, 0, 1, 60, 1400))) == 46);  // 20+20 + 46*1400 = 64440
    CHECK(run_of(encode_all(burst(kOut6, 0, 1, 60, 1400))) == 46);  // 40+20 + 46*1400 = 64460
    const auto tiny = encode_all(burst(kOut4, 0, 1, 100, 10));
    CHECK(run_of(tiny) == ofl::kMaxGsoSegments);
    CHECK(run_of(tiny, 64) == 36);
    // Exactly at the limit: 20 + 20 + 65495 = 65535 in two segments.
    const auto edge = encode_all(burst(kOut4, 0, 1, 3, 32747));
    CHECK(run_of(edge) == 2);  // 40 + 3 * 32747 would not fit
    const auto over = encode_all(burst(kOut4, 0, 1, 2, 32748));
    CHECK(run_of(over) == 1);  // 40 + 2 * 32748 = 65536
    const auto fits = encode_all(burst(kOut4, 0, 1, 2, 32748, 32747));
    CHECK(run_of(fits) == 2);  // 40 + 32748 + 32747 = 65535
    CHECK(coalesced(fits, 0, 2).size() == 10 + 65535);
}

TEST_CASE("offload: packets that cannot be segmented go out alone") {
    struct Row {
        const char* what;
        Seg first;
    };
    const std::vector<Row> rows = {
        {"pure ACK", kOut4.ack(0, 1)},
        {"SYN", kOut4.syn(0)},
        {"RST", kOut4.rst_ack(0, 1)},
        {"PSH data", kOut4.seg(kAck | kPsh, 0, 1, payload(0, 100))},
    };
    for (const Row& row : rows) {
        CAPTURE(row.what);
        std::vector<Seg> segs{row.first};
        const uint32_t next = row.first.seq + uint32_t(row.first.payload.size());
        segs.push_back(kOut4.data(next, 1, payload(1, 100)));
        const auto pkts = encode_all(segs);
        CHECK(run_of(pkts) == 1);
        auto v = views(pkts);
        Bytes hdr(ofl::kMaxGsoHeader);
        CHECK(ofl::gso_header(v.data(), 2, hdr.data()) == 0);
    }
    const auto pkts = encode_all(burst(kOut4, 0, 1, 3, 100));
    auto v = views(pkts);
    Bytes hdr(ofl::kMaxGsoHeader), out(1000);
    CHECK(ofl::gso_run(v.data(), 0) == 0);
    CHECK(ofl::gso_header(v.data(), 1, hdr.data()) == 0);   // a run of one is not GSO
    CHECK(ofl::gso_header(v.data(), 3, hdr.data()) == 10 + 20 + 20);
    CHECK(ofl::coalesce(v.data(), 3, out.data(), 10 + 40 + 299) == 0);  // one byte short
    CHECK(ofl::coalesce(v.data(), 3, out.data(), 10 + 40 + 300) == 350);
    // A claimed run that is not one.
    auto broken = burst(kOut4, 0, 1, 3, 100);
    broken[2].ack = 5;
    const auto bp = encode_all(broken);
    auto bv = views(bp);
    CHECK(ofl::gso_header(bv.data(), 3, hdr.data()) == 0);
    // Garbage and truncated packets.
    const Bytes junk(80, 0x45);
    const ft::ByteView jv[2] = {{junk.data(), junk.size()}, {junk.data(), junk.size()}};
    CHECK(ofl::gso_run(jv, 2) == 1);
    const ft::ByteView empty[2] = {};
    CHECK(ofl::gso_run(empty, 2) == 1);
}

TEST_CASE("offload: seq wraps through 2^32 inside a run") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        const auto pkts = encode_all(burst(v6 ? kOut6 : kOut4, 0xffffffffu - 1500, 3, 5, 1000));
        REQUIRE(run_of(pkts) == 5);
        const Split s = split_all(coalesced(pkts, 0, 5));
        REQUIRE(s.count == 5);
        for (size_t i = 0; i < 5; ++i) CHECK(hex(s.segs[i]) == hex(pkts[i]));
    }
}

TEST_CASE("offload: reads without offload metadata reach the Stack untouched") {
    const Bytes pkt = encode(kOut4.data(1, 2, payload(0, 50)));
    for (uint8_t flags : {uint8_t(0), ofl::kDataValid}) {
        CAPTURE(int(flags));
        Bytes read = cat(vnet(flags, ofl::kGsoNone, 0, 0, 0, 0), pkt);
        const RxPacket rx = parse(read);
        REQUIRE(rx.kind == RxPacket::Kind::plain);
        CHECK(rx.packet.data == read.data() + 10);
        CHECK(rx.packet.size == pkt.size());
        CHECK_FALSE(rx.checksummed);
        CHECK(Bytes(read.begin() + 10, read.end()) == pkt);
    }
    // Not even parsed: garbage goes to the Stack, which drops and counts it.
    Bytes junk = cat(vnet(0, 0, 0, 0, 0, 0), Bytes{0x99, 1, 2});
    CHECK(parse(junk).kind == RxPacket::Kind::plain);
}

TEST_CASE("offload: NEEDS_CSUM without GSO gets its TCP checksum computed in full") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        const size_t ip_len = v6 ? 40 : 20;
        const Bytes good = encode((v6 ? kOut6 : kOut4).data(7, 8, payload(0, 333)));
        for (uint16_t field : {uint16_t(0), uint16_t(0xbeef), pseudo_partial(good, good.size() - ip_len)}) {
            CAPTURE(field);
            Bytes pkt = good;
            put16(&pkt[ip_len + 16], field);
            Bytes read = cat(vnet(ofl::kNeedsCsum, 0, uint16_t(ip_len + 20), 0, uint16_t(ip_len), 16), pkt);
            const RxPacket rx = parse(read);
            REQUIRE(rx.kind == RxPacket::Kind::plain);
            CHECK(rx.checksummed);
            CHECK(Bytes(rx.packet.begin(), rx.packet.end()) == good);
        }
    }
}

TEST_CASE("offload: GSO that fits in one segment is completed in place") {
    const auto pkts = encode_all(burst(kOut4, 0, 1, 2, 100));
    Bytes read = coalesced(pkts, 0, 2);
    read[4] = 200;  // gso_size 200 >= payload 200: one segment
    read[5] = 0;
    const RxPacket rx = parse(read);
    REQUIRE(rx.kind == RxPacket::Kind::plain);
    CHECK(rx.checksummed);
    const Seg s = decode(rx.packet);
    CHECK(s.error == "");
    CHECK(s.payload.size() == 200);
}

TEST_CASE("offload: split gives FIN and PSH to the last segment, CWR to the first") {
    const auto pkts = encode_all(burst(kOut4, 0, 1, 4, 100));
    Bytes read = coalesced(pkts, 0, 4);
    read[10 + 20 + 13] = kAck | kPsh | kFin | 0x80;  // what GRO leaves: the union
    const Split s = split_all(read);
    REQUIRE(s.count == 4);
    const uint8_t expected[4] = {kAck | 0x80, kAck, kAck, kAck | kPsh | kFin};
    for (size_t i = 0; i < 4; ++i) {
        CAPTURE(i);
        const Seg d = decode(ft::ByteView(s.segs[i].data(), s.segs[i].size()));
        CHECK(d.error == "");
        CHECK(int(d.flags) == int(expected[i]));
        CHECK(d.seq == i * 100);
    }
}

TEST_CASE("offload: split ignores the kernel's hdr_len and its TCP options are kept") {
    // GRO'd segments may carry options (identical in every segment).
    std::vector<Seg> segs;
    for (size_t i = 0; i < 3; ++i) {
        Seg s = kOut6.data(uint32_t(i * 500), 4, payload(i, 500));
        s.options = {1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2};  // NOP NOP timestamps
        segs.push_back(s);
    }
    const auto pkts = encode_all(segs);
    Bytes whole;  // built by hand: options rule out gso_run
    whole = pkts[0];
    put16(&whole[4], uint16_t(32 + 1500));
    for (size_t i = 1; i < 3; ++i) whole.insert(whole.end(), pkts[i].begin() + 72, pkts[i].end());
    for (uint16_t hint : {uint16_t(0), uint16_t(72), uint16_t(128), uint16_t(65535)}) {
        CAPTURE(hint);
        const Split s = split_all(cat(vnet(ofl::kNeedsCsum, ofl::kGsoTcpv6, hint, 500, 40, 16), whole));
        REQUIRE(s.count == 3);
        for (size_t i = 0; i < 3; ++i) CHECK(hex(s.segs[i]) == hex(pkts[i]));
    }
}

TEST_CASE("offload: split drops inconsistent vnet headers and packets, with a reason") {
    const auto pkts4 = encode_all(burst(kOut4, 0, 1, 3, 100));
    const Bytes c4 = coalesced(pkts4, 0, 3);
    const Bytes ip4 = Bytes(c4.begin() + 10, c4.end());
    const auto pkts6 = encode_all(burst(kOut6, 0, 1, 3, 100));
    const Bytes c6 = coalesced(pkts6, 0, 3);
    const Bytes ip6 = Bytes(c6.begin() + 10, c6.end());
    const Bytes gso4 = vnet(1, ofl::kGsoTcpv4, 40, 100, 20, 16);
    const Bytes gso6 = vnet(1, ofl::kGsoTcpv6, 60, 100, 40, 16);
    auto patched = [](Bytes b, size_t at, std::initializer_list<uint8_t> v) {
        for (uint8_t x : v) b.at(at++) = x;
        return b;
    };
    auto fix4 = [](Bytes b) {  // IPv4 header checksum valid again after a patch
        put16(&b[10], 0);
        put16(&b[10], inet_checksum(b.data(), 20));
        return b;
    };
    struct Row {
        const char* what;
        Bytes read;
        RxDrop why;
    };
    std::vector<Row> rows = {
        {"flag RSC_INFO", cat(vnet(4, 1, 40, 100, 20, 16), ip4), RxDrop::vnet_bad_flags},
        {"flag 0x80", cat(vnet(0x81, 1, 40, 100, 20, 16), ip4), RxDrop::vnet_bad_flags},
        {"GSO UDP (UFO)", cat(vnet(1, 3, 40, 100, 20, 16), ip4), RxDrop::vnet_bad_gso_type},
        {"GSO UDP_L4", cat(vnet(1, 5, 40, 100, 20, 16), ip4), RxDrop::vnet_bad_gso_type},
        {"ECN without a type", cat(vnet(1, 0x80, 40, 100, 20, 16), ip4), RxDrop::vnet_bad_gso_type},
        {"GSO type 2", cat(vnet(1, 2, 40, 100, 20, 16), ip4), RxDrop::vnet_bad_gso_type},
        {"gso_size 0", cat(vnet(1, 1, 40, 0, 20, 16), ip4), RxDrop::vnet_bad_gso_size},
        {"TCPV6 on IPv4", cat(vnet(1, 4, 40, 100, 20, 16), ip4), RxDrop::gso_family_mismatch},
        {"TCPV4 on IPv6", cat(vnet(1, 1, 60, 100, 40, 16), ip6), RxDrop::gso_family_mismatch},
        {"csum_start 0", cat(vnet(1, 1, 40, 100, 0, 16), ip4), RxDrop::vnet_bad_csum},
        {"csum_start 24", cat(vnet(1, 1, 40, 100, 24, 16), ip4), RxDrop::vnet_bad_csum},
        {"csum_offset 6 (UDP's)", cat(vnet(1, 1, 40, 100, 20, 6), ip4), RxDrop::vnet_bad_csum},
        {"csum_start 20 on IPv6", cat(vnet(1, 4, 60, 100, 20, 16), ip6), RxDrop::vnet_bad_csum},
        {"NEEDS_CSUM, no GSO, bad offset",
         cat(vnet(1, 0, 0, 0, 20, 18), encode(kOut4.data(0, 0, payload(0, 5)))), RxDrop::vnet_bad_csum},
        {"one byte too many", cat(cat(gso4, ip4), Bytes{0}), RxDrop::length_mismatch},
        {"IPv6 one byte too few", cat(gso6, Bytes(ip6.begin(), ip6.end() - 1)), RxDrop::length_mismatch},
        {"IPv4 options", cat(gso4, fix4(patched(ip4, 0, {0x46}))), RxDrop::bad_ip_header},
        {"IPv4 bad header checksum", cat(gso4, patched(ip4, 10, {0, 0})), RxDrop::bad_ip_header},
        {"IPv4 MF", cat(gso4, fix4(patched(ip4, 6, {0x20}))), RxDrop::bad_ip_header},
        {"IPv4 fragment offset", cat(gso4, fix4(patched(ip4, 7, {1}))), RxDrop::bad_ip_header},
        {"IP version 5", cat(vnet(1, 0, 0, 0, 20, 16), patched(ip4, 0, {0x55})), RxDrop::bad_ip_header},
        {"TCPV4 on IP version 5", cat(gso4, patched(ip4, 0, {0x55})), RxDrop::gso_family_mismatch},
        {"empty packet", gso4, RxDrop::bad_ip_header},
        {"IPv4 UDP", cat(gso4, fix4(patched(ip4, 9, {17}))), RxDrop::not_tcp},
        {"IPv6 UDP", cat(gso6, patched(ip6, 6, {17})), RxDrop::not_tcp},
        {"IPv6 hop-by-hop", cat(gso6, patched(ip6, 6, {0})), RxDrop::bad_ip_header},
        {"IPv6 fragment header", cat(gso6, patched(ip6, 6, {44})), RxDrop::bad_ip_header},
        {"TCP data offset 4", cat(gso4, patched(ip4, 32, {0x40})), RxDrop::bad_tcp_header},
        {"TCP data offset 15 past the end",
         cat(vnet(1, 0, 0, 0, 20, 16), encode(kOut4.data(0, 0, payload(0, 5))))  // patched below
         , RxDrop::bad_tcp_header},
    };
    rows.back().read[10 + 32] = 0xf0;
    // An IPv4 header of 20 bytes with 19 bytes of TCP.
    {
        Bytes short_tcp = Bytes(ip4.begin(), ip4.begin() + 39);
        put16(&short_tcp[2], 39);
        rows.push_back({"TCP header truncated", cat(gso4, fix4(short_tcp)), RxDrop::bad_tcp_header});
    }
    for (size_t n = 0; n < 10; ++n)
        rows.push_back({"vnet header truncated", Bytes(gso4.begin(), gso4.begin() + long(n)),
                        RxDrop::vnet_truncated});
    for (Row& row : rows) {
        CAPTURE(row.what);
        CAPTURE(row.read.size());
        const RxPacket rx = parse(row.read);
        CHECK(rx.kind == RxPacket::Kind::drop);
        CHECK(std::string(ofl::to_string(rx.drop)) == ofl::to_string(row.why));
        const Split s = split_all(row.read);
        CHECK(s.count == 0);
    }
    CHECK(ofl::parse_rx(nullptr, 0).drop == RxDrop::vnet_truncated);
}

TEST_CASE("offload: split of every truncation of a super-packet stays in bounds") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        const Bytes read = coalesced(encode_all(burst(v6 ? kOut6 : kOut4, 9, 9, 4, 100)), 0, 4);
        GuardedBuffer guard;
        for (size_t n = 0; n <= read.size(); ++n) {
            CAPTURE(n);
            const ft::ByteView placed = guard.place(read.data(), n);
            uint8_t* at = const_cast<uint8_t*>(placed.data);  // the guard page's buffer is writable
            const RxPacket rx = ofl::parse_rx(at, n);
            if (n < read.size()) {
                CHECK(rx.kind == RxPacket::Kind::drop);
                continue;
            }
            REQUIRE(rx.kind == RxPacket::Kind::segments);
            CHECK(rx.count == 4);
            Bytes out(200);
            for (size_t i = 0; i < rx.count; ++i)
                CHECK(decode(ft::ByteView(out.data(), ofl::rx_segment(rx, i, out.data()))).error == "");
        }
    }
}

TEST_CASE("offload: split reports no_room and out-of-range segments are empty") {
    const Bytes read = coalesced(encode_all(burst(kOut4, 0, 1, 4, 100)), 0, 4);
    Bytes copy = read;
    Bytes out(4 * 140);
    ft::ByteView segs[4];
    CHECK(ofl::split(copy.data(), copy.size(), out.data(), out.size(), segs, 4).count == 4);
    copy = read;
    auto r = ofl::split(copy.data(), copy.size(), out.data(), out.size() - 1, segs, 4);
    CHECK(r.count == 0);
    CHECK(r.drop == RxDrop::no_room);
    copy = read;
    r = ofl::split(copy.data(), copy.size(), out.data(), out.size(), segs, 3);
    CHECK(r.count == 0);
    CHECK(r.drop == RxDrop::no_room);
    copy = read;
    const RxPacket rx = parse(copy);
    REQUIRE(rx.kind == RxPacket::Kind::segments);
    CHECK(rx.segment_size(3) == 140);
    CHECK(rx.segment_size(4) == 0);
    CHECK(ofl::rx_segment(rx, 4, out.data()) == 0);
    RxPacket none;
    CHECK(none.segment_size(0) == 0);
    for (size_t i = 0; i < ofl::kRxDropCount; ++i)
        CHECK(std::string(ofl::to_string(RxDrop(i))) != "unknown");
}

// ---------------------------------------------------------------------------
// What the kernel vouched for: RxPacket::checksum, TcpChecksumFill::leave and
// the Stack's RxChecksum::kernel_verified, as StackDriver chains them.
// ---------------------------------------------------------------------------

namespace {

const Path kIn4{{kPeer4, 40000}, {kStack4, 5555}};
const Path kIn6{{kPeer6, 40000}, {kStack6, 5555}};

size_t tcp_checksum_at(const Bytes& ip_packet) { return ((ip_packet[0] >> 4) == 4 ? 20 : 40) + 16; }

}  // namespace

TEST_CASE("offload: parse_rx says which reads the kernel vouched for") {
    const Bytes pkt = encode(kOut4.data(1, 2, payload(0, 50)));
    struct Row {
        uint8_t flags, gso;
        ft::RxChecksum want;
    };
    for (const Row& r : {Row{0, 0, ft::RxChecksum::verify},
                         Row{ofl::kDataValid, 0, ft::RxChecksum::kernel_verified},
                         Row{ofl::kNeedsCsum, 0, ft::RxChecksum::kernel_verified},
                         Row{ofl::kNeedsCsum | ofl::kDataValid, 0, ft::RxChecksum::kernel_verified},
                         Row{ofl::kNeedsCsum, ofl::kGsoTcpv4, ft::RxChecksum::kernel_verified}}) {
        CAPTURE(int(r.flags));
        CAPTURE(int(r.gso));
        for (auto fill : {ofl::TcpChecksumFill::complete, ofl::TcpChecksumFill::leave}) {
            Bytes read = cat(vnet(r.flags, r.gso, 40, 64, 20, 16), pkt);
            const RxPacket rx = ofl::parse_rx(read.data(), read.size(), fill);
            REQUIRE(rx.kind == RxPacket::Kind::plain);  // GSO of 50 bytes fits one 64-byte segment
            CHECK(rx.checksum == r.want);
        }
    }
    // A super-packet: segments, vouched for.
    Bytes read = coalesced(encode_all(burst(kOut4, 0, 1, 3, 100)), 0, 3);
    const RxPacket rx = parse(read);
    REQUIRE(rx.kind == RxPacket::Kind::segments);
    CHECK(rx.checksum == ft::RxChecksum::kernel_verified);
}

// The documented trust: DATA_VALID means the kernel verified the checksum
// (CHECKSUM_UNNECESSARY), so a wrong one is not looked at. The same bytes
// without the flag are summed and dropped.
TEST_CASE("offload: a DATA_VALID read with a wrong TCP checksum is delivered, without DATA_VALID dropped") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        Harness h;
        h.listen(5555);
        ServerConn c = establish_server(h, v6 ? kIn6 : kIn4, 1000);
        Bytes bad = encode(c.in.data(1001, 1, payload(0, 1400)));
        bad[tcp_checksum_at(bad)] ^= 0x40;
        for (uint8_t flags : {ofl::kDataValid, uint8_t(0)}) {
            CAPTURE(int(flags));
            Bytes read = cat(vnet(flags, 0, 0, 0, 0, 0), bad);
            const RxPacket rx = ofl::parse_rx(read.data(), read.size(), ofl::TcpChecksumFill::leave);
            REQUIRE(rx.kind == RxPacket::Kind::plain);
            CHECK(Bytes(rx.packet.begin(), rx.packet.end()) == bad);  // untouched
            const ft::Stats before = h.stats();
            h.stack.on_packet(rx.packet, h.now, rx.checksum);
            if (flags == ofl::kDataValid) {
                CHECK(drop_delta(before, h.stats()) == "");
                CHECK(h.events() == evs(ev_datagram(c.id, payload(0, 1400))));
                CHECK(h.stats().checksum_trusted == before.checksum_trusted + 1);
            } else {
                CHECK(drop_delta(before, h.stats()) == "bad_tcp_checksum+1");
                CHECK(h.events() == evs());
                CHECK(h.stats().checksum_trusted == before.checksum_trusted);
            }
        }
    }
}

TEST_CASE("offload: NEEDS_CSUM left unsummed keeps the partial sum and reaches the Stack") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        const size_t ip_len = v6 ? 40 : 20;
        Harness h;
        h.listen(5555);
        ServerConn c = establish_server(h, v6 ? kIn6 : kIn4, 1000);
        Bytes pkt = encode(c.in.data(1001, 1, payload(3, 333)));
        put16(&pkt[ip_len + 16], pseudo_partial(pkt, pkt.size() - ip_len));  // as a local sender leaves it
        Bytes read = cat(vnet(ofl::kNeedsCsum, 0, uint16_t(ip_len + 20), 0, uint16_t(ip_len), 16), pkt);
        const RxPacket rx = ofl::parse_rx(read.data(), read.size(), ofl::TcpChecksumFill::leave);
        REQUIRE(rx.kind == RxPacket::Kind::plain);
        CHECK(rx.checksummed);
        CHECK(rx.checksum == ft::RxChecksum::kernel_verified);
        CHECK(Bytes(rx.packet.begin(), rx.packet.end()) == pkt);  // not summed
        const ft::Stats before = h.stats();
        h.stack.on_packet(rx.packet, h.now, rx.checksum);
        CHECK(drop_delta(before, h.stats()) == "");
        CHECK(h.events() == evs(ev_datagram(c.id, payload(3, 333))));
        // The same partial sum handed over as unverified bytes is dropped.
        h.stack.on_packet(rx.packet, h.now);
        CHECK(drop_delta(before, h.stats()) == "bad_tcp_checksum+1");
    }
}

// GRO: 40 segments in one read. Split without their TCP checksums, they
// carry every other byte of the original segments and reach the Stack whole,
// in order; split with them (the default), they are the originals.
TEST_CASE("offload: GRO segments split without a TCP checksum reach the Stack byte-exact") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        Harness h;
        h.listen(5555);
        ServerConn c = establish_server(h, v6 ? kIn6 : kIn4, 1000);
        const auto originals = encode_all(burst(c.in, 1001, 1, 40, 1000, 456));
        Bytes read = coalesced(originals, 0, 40);
        REQUIRE(read.size() > 0);
        const RxPacket rx = ofl::parse_rx(read.data(), read.size(), ofl::TcpChecksumFill::leave);
        REQUIRE(rx.kind == RxPacket::Kind::segments);
        REQUIRE(rx.count == 40);
        REQUIRE(rx.checksum == ft::RxChecksum::kernel_verified);
        std::vector<Bytes> left;
        for (size_t i = 0; i < rx.count; ++i) {
            CAPTURE(i);
            Bytes full(rx.segment_size(i)), leave(rx.segment_size(i));
            REQUIRE(ofl::rx_segment(rx, i, full.data()) == full.size());
            REQUIRE(ofl::rx_segment(rx, i, leave.data(), ofl::TcpChecksumFill::leave) == leave.size());
            CHECK(full == originals[i]);
            const size_t ck = tcp_checksum_at(full);
            CHECK(be16(&leave[ck]) != be16(&full[ck]));  // not computed ...
            leave[ck] = full[ck];
            leave[ck + 1] = full[ck + 1];
            CHECK(leave == full);  // ... and nothing else differs (IPv4 header checksum included)
            put16(&leave[ck], be16(&read[10 + ck]));  // back to what rx_segment left
            left.push_back(leave);
        }
        ft::Stats before = h.stats();
        for (const Bytes& s : left) h.stack.on_packet(ft::ByteView(s.data(), s.size()), h.now, rx.checksum);
        CHECK(drop_delta(before, h.stats()) == "");
        CHECK(h.stats().checksum_trusted == before.checksum_trusted + 40);
        Evs want;
        for (size_t i = 0; i < 40; ++i) want.list.push_back(ev_datagram(c.id, payload(i, i == 39 ? 456 : 1000)));
        CHECK(h.events() == want);
        // Handed over as unverified bytes, every one of them is dropped.
        before = h.stats();
        for (const Bytes& s : left) h.stack.on_packet(ft::ByteView(s.data(), s.size()), h.now);
        CHECK(h.stats().dropped(ft::DropReason::bad_tcp_checksum) ==
              before.dropped(ft::DropReason::bad_tcp_checksum) + 40);
        CHECK(h.events() == evs());
    }
}

// ---------------------------------------------------------------------------
// TunBatch without a device: the bookkeeping Tun::read() and Tun::write()
// drive around their syscalls, fed here with bytes.
// ---------------------------------------------------------------------------

namespace {

// Hands `reads[next..]` to `b` as Tun::read() does, EAGAIN once they run
// out. Returns the reads the batch took.
size_t feed(ft::TunBatch& b, const std::vector<Bytes>& reads, size_t& next, size_t max_reads) {
    b.rx_begin(max_reads);
    size_t cap = 0;
    while (uint8_t* slot = b.rx_slot(cap)) {
        if (next == reads.size()) {
            b.rx_stop(EAGAIN);
            break;
        }
        REQUIRE(reads[next].size() <= cap);
        std::memcpy(slot, reads[next].data(), reads[next].size());
        b.rx_commit(reads[next].size());
        ++next;
    }
    return b.rx_reads();
}

Bytes rx_bytes(const ft::TunBatch& b, size_t i) { return Bytes(b.rx_packet(i).begin(), b.rx_packet(i).end()); }

// Packets as the Stack queues them: kTxHeadroom writable bytes in front.
struct TxBuffers {
    std::vector<Bytes> bufs;
    void add(ft::TunBatch& b, const Bytes& pkt, ft::TxChecksum sum = ft::TxChecksum::complete) {
        bufs.push_back(Bytes(ft::kTxHeadroom, 0xee));
        bufs.back().insert(bufs.back().end(), pkt.begin(), pkt.end());
        b.add_tx(bufs.back().data() + ft::kTxHeadroom, pkt.size(), sum);
    }
};

// Every write a Tun::write() of `b` would make, its parts joined, each
// answered with `result` (0: success, the byte count).
std::vector<Bytes> drain_writes(ft::TunBatch& b, long result = 0) {
    std::vector<Bytes> writes;
    b.tx_plan();
    for (ft::TunBatch::Write w = b.tx_next(); w.count != 0; w = b.tx_next()) {
        Bytes joined;
        for (size_t k = 0; k < w.count; ++k) joined.insert(joined.end(), w.parts[k].begin(), w.parts[k].end());
        writes.push_back(joined);
        b.tx_done(result != 0 ? result : long(joined.size()));
        REQUIRE(writes.size() < 10000);
    }
    b.tx_clear();
    return writes;
}

}  // namespace

TEST_CASE("TunBatch: plain reads fill up to kMaxReads slots; rx_more until the queue is empty or the budget spent") {
    ft::TunBatch b(ft::TunBatch::Framing::plain, 1500, 16);
    std::vector<Bytes> reads;
    for (size_t i = 0; i < 150; ++i) reads.push_back(encode(kOut4.data(uint32_t(1 + i * 100), 1, payload(i, 100))));
    size_t next = 0;
    CHECK(feed(b, reads, next, 256) == ft::TunBatch::kMaxReads);
    REQUIRE(b.rx_count() == ft::TunBatch::kMaxReads);
    CHECK(b.rx_more());  // full, budget left
    for (size_t i = 0; i < b.rx_count(); ++i) {
        CAPTURE(i);
        CHECK(rx_bytes(b, i) == reads[i]);
        CHECK(b.rx_checksum(i) == ft::RxChecksum::verify);
    }
    CHECK(feed(b, reads, next, 192) == 64);
    CHECK(rx_bytes(b, 0) == reads[64]);
    CHECK(feed(b, reads, next, 128) == 22);
    CHECK(b.rx_count() == 22);
    CHECK_FALSE(b.rx_more());  // EAGAIN: the queue is empty
    next = 0;
    CHECK(feed(b, reads, next, 10) == 10);
    CHECK_FALSE(b.rx_more());  // the budget is spent: epoll brings the reader back
    CHECK(b.stats().read_errors == 0);
    b.rx_begin(64);
    b.rx_stop(EIO);
    CHECK(b.stats().read_errors == 1);
    CHECK(b.rx_count() == 0);
    CHECK_FALSE(b.rx_more());
}

TEST_CASE("TunBatch: an offload read arrives without its vnet header, a super-packet as its segments") {
    for (bool v6 : {false, true}) {
        CAPTURE(v6);
        const Path& out = v6 ? kOut6 : kOut4;
        const auto originals = encode_all(burst(out, 1, 1, 40, 1000, 456));
        const Bytes plain = encode(out.data(99, 1, payload(7, 300)));
        const std::vector<Bytes> reads = {cat(vnet(0, 0, 0, 0, 0, 0), plain), coalesced(originals, 0, 40),
                                          cat(vnet(0x80, 0, 0, 0, 0, 0), plain)};
        ft::TunBatch b(ft::TunBatch::Framing::vnet, 1500, 16);
        size_t next = 0;
        CHECK(feed(b, reads, next, 64) == 3);
        CHECK_FALSE(b.rx_more());
        REQUIRE(b.rx_count() == 41);
        CHECK(rx_bytes(b, 0) == plain);
        CHECK(b.rx_checksum(0) == ft::RxChecksum::verify);  // no offload metadata: the Stack sums it
        for (size_t i = 0; i < 40; ++i) {
            CAPTURE(i);
            Bytes seg = rx_bytes(b, i + 1);
            REQUIRE(seg.size() == originals[i].size());
            const size_t ck = tcp_checksum_at(seg);
            seg[ck] = originals[i][ck];  // left as read (TcpChecksumFill::leave) ...
            seg[ck + 1] = originals[i][ck + 1];
            CHECK(seg == originals[i]);  // ... and nothing else differs
            CHECK(b.rx_checksum(i + 1) == ft::RxChecksum::kernel_verified);
        }
        CHECK(b.stats().gro_reads == 1);
        CHECK(b.stats().gro_segments == 40);
        CHECK(b.stats().csum_trusted == 40);
        CHECK(b.stats().dropped(RxDrop::vnet_bad_flags) == 1);
    }
}

TEST_CASE("TunBatch: 8000 tiny segments are handed over in chunks, the last ones past the read budget") {
    Bytes tiny(64000);
    for (size_t k = 0; k < tiny.size(); ++k) tiny[k] = uint8_t(k / 8 + k);
    const std::vector<Bytes> reads = {cat(vnet(ofl::kNeedsCsum, ofl::kGsoTcpv4, 40, 8, 20, 16),
                                          encode(kOut4.data(123456, 1, tiny)))};
    ft::TunBatch b(ft::TunBatch::Framing::vnet, 1500, 16);
    size_t next = 0;
    Bytes joined;
    uint32_t want_seq = 123456;
    size_t segments = 0, batches = 0;
    size_t budget = 1;
    do {
        budget -= feed(b, reads, next, budget);
        ++batches;
        for (size_t i = 0; i < b.rx_count(); ++i) {
            const Seg s = decode(b.rx_packet(i));
            CHECK(s.seq == want_seq);
            want_seq += uint32_t(s.payload.size());
            joined.insert(joined.end(), s.payload.begin(), s.payload.end());
            ++segments;
        }
        REQUIRE(batches < 100);
    } while (b.rx_more());
    CHECK(segments == 8000);
    CHECK(joined == tiny);
    CHECK(batches > 2);
    CHECK(b.stats().gro_segments == 8000);
}

TEST_CASE("TunBatch: round-robin flows leave as one super-packet each, which split back to the packets") {
    ft::TunBatch b(ft::TunBatch::Framing::vnet, 1500, 64);
    TxBuffers tx;
    std::vector<std::vector<Bytes>> flows(4);
    for (size_t i = 0; i < 10; ++i)
        for (size_t f = 0; f < 4; ++f) {
            const Path path{{kStack4, uint16_t(41000 + f)}, {kPeer4, 4567}};
            flows[f].push_back(encode(path.data(uint32_t(1 + i * 1000), 1, payload(i, 1000))));
            tx.add(b, flows[f].back());
        }
    CHECK(b.tx_count() == 40);
    const auto writes = drain_writes(b);
    REQUIRE(writes.size() == 4);
    for (size_t f = 0; f < 4; ++f) {
        CAPTURE(f);
        const Split s = split_all(writes[f]);
        CHECK(s.segs == flows[f]);
    }
    CHECK(b.stats().gso_writes == 4);
    CHECK(b.stats().gso_segments == 40);
    CHECK(b.tx_count() == 0);
}

TEST_CASE("TunBatch: a refused super-packet goes out one by one, and GSO stays off; failed writes are counted") {
    ft::TunBatch b(ft::TunBatch::Framing::vnet, 1500, 64);
    TxBuffers tx;
    const auto pkts = encode_all(burst(kOut4, 1, 1, 10, 1000));
    for (const Bytes& p : pkts) tx.add(b, p, ft::TxChecksum::partial);
    b.tx_plan();
    ft::TunBatch::Write w = b.tx_next();
    CHECK(w.count == 11);
    b.tx_done(-EINVAL);
    CHECK(b.stats().gso_rejected == 1);
    std::vector<Bytes> singles;
    for (w = b.tx_next(); w.count != 0; w = b.tx_next()) {
        REQUIRE(w.count == 1);
        singles.emplace_back(w.parts[0].begin(), w.parts[0].end());
        b.tx_done(long(w.parts[0].size));
    }
    b.tx_clear();
    REQUIRE(singles.size() == 10);
    for (size_t i = 0; i < 10; ++i) {
        CAPTURE(i);
        // NEEDS_CSUM at the TCP checksum: the kernel completes the partial sum.
        CHECK(singles[i] == cat(vnet(ofl::kNeedsCsum, 0, 0, 0, 20, 16), pkts[i]));
    }
    for (const Bytes& p : pkts) tx.add(b, p);
    const auto again = drain_writes(b, -ENOBUFS);
    CHECK(again.size() == 10);  // GSO stays off
    CHECK(again[0] == cat(vnet(0, 0, 0, 0, 0, 0), pkts[0]));
    CHECK(b.stats().write_errors == 10);
    CHECK(b.stats().gso_writes == 0);
}

TEST_CASE("TunBatch: without offload every packet is written as it is, in order") {
    ft::TunBatch b(ft::TunBatch::Framing::plain, 1500, 2);  // grows past its capacity
    TxBuffers tx;
    const auto pkts = encode_all(burst(kOut6, 1, 1, 5, 700));
    for (const Bytes& p : pkts) tx.add(b, p, ft::TxChecksum::complete);
    CHECK(drain_writes(b) == pkts);
    CHECK(b.stats().gso_writes == 0);
    CHECK(b.stats().write_errors == 0);
}

// ---------------------------------------------------------------------------
// StackDriver over real TUN devices (root only), in a network namespace of
// its own that disappears with the test: two TUNs, IP forwarding between them.
// ---------------------------------------------------------------------------

namespace {


bool write_file(const char* path, const char* text) {
    const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::write(fd, text, std::strlen(text)) == ssize_t(std::strlen(text));
    ::close(fd);
    return ok;
}

struct Collector : ft::StackHandler {
    ft::StackDriver* driver = nullptr;
    ft::Reactor* reactor = nullptr;
    bool echo = false;
    int connected = 0, accepted = 0, failed = 0;
    std::vector<Bytes> got;
    void on_accepted(ft::ConnId, const ft::ConnInfo&) override { ++accepted; }
    void on_connected(ft::ConnId, const ft::ConnInfo&) override { ++connected; }
    void on_connect_failed(ft::ConnId, ft::CloseReason) override { ++failed; }
    void on_datagram(ft::ConnId c, ft::ByteView d) override {
        got.emplace_back(d.begin(), d.end());
        if (echo) (void)driver->send(c, d, reactor->now());
    }
};

bool pump(ft::Reactor& r, const std::function<bool()>& done) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done()) {
        if (std::chrono::steady_clock::now() > until) return false;
        REQUIRE(r.run_once(std::chrono::milliseconds(10)));
    }
    return true;
}

uint64_t checksum_drops(const ft::Stack& s) {
    return s.stats().dropped(ft::DropReason::bad_tcp_checksum) +
           s.stats().dropped(ft::DropReason::ipv4_bad_checksum);
}

// Drops other than the kernel's own IPv6 chatter on a new link (MLD reports
// behind a hop-by-hop header, router solicitations), which is not for us.
uint64_t other_drops(const ft::Stack& s) {
    return s.stats().total_drops() - s.stats().dropped(ft::DropReason::ipv6_extension_headers) -
           s.stats().dropped(ft::DropReason::not_tcp);
}

// Stack A (behind tun A) connects to stack B (behind tun B), sends 40
// datagrams of 1000 bytes in one flush, B echoes each. Then a kernel TCP
// socket sends 5000 bytes to B: TSO super-packets, if tun B offloads.
void run_pair(bool off_a, bool off_b, bool v6) {
    CAPTURE(off_a);
    CAPTURE(off_b);
    CAPTURE(v6);
    PrivateNetns ns;
    REQUIRE_MESSAGE(ns.ok(), ns.why());
    REQUIRE(write_file("/proc/sys/net/ipv4/ip_forward", "1"));
    REQUIRE(write_file("/proc/sys/net/ipv6/conf/all/forwarding", "1"));

    ft::TunConfig ca, cb;
    ca.offload = off_a;
    cb.offload = off_b;
    ca.local_v4 = ip("10.1.0.1");
    ca.peer_v4 = ip("10.1.0.2");
    ca.local_v6 = ip("fd01::1");
    ca.peer_v6 = ip("fd01::2");
    cb.local_v4 = ip("10.2.0.1");
    cb.peer_v4 = ip("10.2.0.2");
    cb.local_v6 = ip("fd02::1");
    cb.peer_v6 = ip("fd02::2");
    auto ta = ft::Tun::open(ca);
    REQUIRE_MESSAGE(ta.ok(), ta.status().message());
    auto tb = ft::Tun::open(cb);
    REQUIRE_MESSAGE(tb.ok(), tb.status().message());
    CHECK_MESSAGE(ta->offload() == off_a, ta->offload_note());
    CHECK_MESSAGE(tb->offload() == off_b, tb->offload_note());

    ft::StackConfig sa, sb;
    sa.local_v4 = ip("10.1.0.2");
    sa.local_v6 = ip("fd01::2");
    sb.local_v4 = ip("10.2.0.2");
    sb.local_v6 = ip("fd02::2");
    ft::Stack a(sa), b(sb);
    REQUIRE(b.listen(7000));
    auto reactor = ft::Reactor::create();
    REQUIRE(reactor.ok());
    Collector ha, hb;
    ft::StackDriver da(a, *ta, ha), db(b, *tb, hb);
    ha.driver = &da;
    hb.driver = &db;
    ha.reactor = hb.reactor = &*reactor;
    hb.echo = true;
    REQUIRE(da.attach(*reactor));
    REQUIRE(db.attach(*reactor));

    auto conn = da.connect(ep(v6 ? "fd02::2" : "10.2.0.2", 7000), reactor->now());
    REQUIRE(conn.ok());
    REQUIRE(pump(*reactor, [&] { return ha.connected + ha.failed > 0 && hb.accepted > 0; }));
    REQUIRE(ha.connected == 1);

    // ---- 40 datagrams in one flush, echoed back
    std::vector<Bytes> sent;
    for (size_t i = 0; i < 40; ++i) {
        sent.push_back(payload(i, 1000));
        REQUIRE(da.send(*conn, ft::ByteView(sent.back().data(), 1000), reactor->now()) == ft::Errc::ok);
    }
    da.flush();
    REQUIRE(pump(*reactor, [&] { return ha.got.size() >= 40; }));
    CHECK(hb.got == sent);
    CHECK(ha.got == sent);
    CHECK(checksum_drops(a) == 0);
    CHECK(checksum_drops(b) == 0);
    CHECK(other_drops(a) == 0);
    CHECK(other_drops(b) == 0);
    const auto& oa = da.offload_stats();
    const auto& ob = db.offload_stats();
    if (off_a) {
        CHECK(oa.gso_writes >= 1);
        CHECK(oa.gso_segments >= 40);
    } else {
        CHECK(oa.gso_writes == 0);
    }
    if (off_b) CHECK(ob.gso_writes >= 1);
    CHECK(oa.gso_rejected == 0);
    CHECK(ob.gso_rejected == 0);
    MESSAGE("A: gso ", oa.gso_writes, "/", oa.gso_segments, " gro ", oa.gro_reads, "/",
            oa.gro_segments, " csum ", oa.partial_csum_reads, "; B: gso ", ob.gso_writes, "/",
            ob.gso_segments, " gro ", ob.gro_reads, "/", ob.gro_segments, " csum ", ob.partial_csum_reads);

    // ---- one hand-made super-packet of 8000 segments of 8 bytes, written to
    // tun A: B gets it whole and must split it in chunks (its segment buffer
    // holds a third), dispatching events in between, so none is lost to the
    // event queue (4096) and every view is still valid when delivered.
    if (off_a && off_b && !v6) {
        hb.echo = false;
        hb.got.clear();
        const auto info = a.info(*conn);
        REQUIRE(info.has_value());
        Bytes tiny(64000);
        for (size_t k = 0; k < tiny.size(); ++k) tiny[k] = uint8_t(k / 8 + k);
        Bytes pkt = encode(Path{info->local, info->remote}.data(123456, 1, tiny));
        Bytes w = cat(vnet(ofl::kNeedsCsum, ofl::kGsoTcpv4, 40, 8, 20, 16), pkt);
        REQUIRE(ta->write(0, w.data(), w.size()) == long(w.size()));
        REQUIRE(pump(*reactor, [&] { return hb.got.size() >= 8000; }));
        CHECK(hb.got.size() == 8000);
        Bytes joined;
        for (const Bytes& d : hb.got) joined.insert(joined.end(), d.begin(), d.end());
        CHECK(joined == tiny);
        CHECK(b.stats().dropped(ft::DropReason::event_queue_full) == 0);
        MESSAGE("8000 tiny segments: B gro ", ob.gro_reads, "/", ob.gro_segments);
        CHECK(ob.gro_segments >= 8000 + 40);
    }

    // ---- a kernel TCP socket talks to B: its TSO skbs reach tun B whole
    hb.echo = false;
    hb.got.clear();
    const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(fd >= 0);
    sockaddr_storage ss{};
    socklen_t sl = 0;
    if (v6) {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(7000);
        std::memcpy(&s6->sin6_addr, ip("fd02::2").bytes.data(), 16);
        sl = sizeof *s6;
    } else {
        auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
        s4->sin_family = AF_INET;
        s4->sin_port = htons(7000);
        std::memcpy(&s4->sin_addr, ip("10.2.0.2").bytes.data(), 4);
        sl = sizeof *s4;
    }
    REQUIRE((::connect(fd, reinterpret_cast<sockaddr*>(&ss), sl) == 0 || errno == EINPROGRESS));
    REQUIRE(pump(*reactor, [&] { return hb.accepted >= 2; }));
    Bytes stream(5000);
    for (size_t k = 0; k < stream.size(); ++k) stream[k] = uint8_t(k * 13 + 5);
    size_t written = 0;
    REQUIRE(pump(*reactor, [&] {
        if (written < stream.size()) {
            const ssize_t n = ::send(fd, stream.data() + written, stream.size() - written, MSG_NOSIGNAL);
            if (n > 0) written += size_t(n);
        }
        size_t got = 0;
        for (const Bytes& d : hb.got) got += d.size();
        return got >= stream.size();
    }));
    ::close(fd);
    Bytes joined;
    for (const Bytes& d : hb.got) joined.insert(joined.end(), d.begin(), d.end());
    CHECK(joined == stream);
    CHECK(checksum_drops(b) == 0);
    MESSAGE("kernel TCP -> B: ", hb.got.size(), " datagrams, B gro ", ob.gro_reads, "/", ob.gro_segments,
            " csum ", ob.partial_csum_reads);
    if (off_b) CHECK(ob.gro_reads >= 1);  // TSO skbs from a local socket are handed over whole
    // Every segment the kernel vouched for skipped the Stack's checksum, and
    // only those: the driver's count is the Stack's; without offload, none.
    MESSAGE("B trusted the checksum of ", ob.csum_trusted, " of ", b.stats().packets_in, " packets");
    CHECK(b.stats().checksum_trusted == ob.csum_trusted);
    CHECK(a.stats().checksum_trusted == oa.csum_trusted);
    if (off_b) CHECK(ob.csum_trusted >= ob.gro_segments);
    if (!off_b) CHECK(b.stats().checksum_trusted == 0);
    da.detach(*reactor);
    db.detach(*reactor);
}

}  // namespace

TEST_CASE("offload: StackDriver through the kernel, offload on, off and mixed (root)" * tst::unless_root()) {
    for (bool v6 : {false, true}) {
        run_pair(true, true, v6);
        run_pair(false, false, v6);
        run_pair(true, false, v6);  // the kernel finishes our partial checksums itself
        run_pair(false, true, v6);
    }
}

#endif  // little-endian
