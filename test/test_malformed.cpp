// Hostile input: every malformed packet is dropped with its exact DropReason,
// counted once, produces no event and (unless documented) no packet. Inputs sit
// right before a PROT_NONE page, so a one-byte over-read faults here.
#include <random>

#include "golden.h"
#include "support.h"

using namespace tst;
using namespace std::chrono_literals;
using ft::DropReason;

namespace {

constexpr uint16_t kPort = golden::kServerPort;  // the Stack listens here
const Path kIn4{{kPeer4, golden::kPeerPort}, {kStack4, kPort}};
const Path kIn6{{kPeer6, golden::kPeerPort}, {kStack6, kPort}};

struct Row {
    std::string what;
    Bytes packet;
    DropReason reason;
};

// kPeerSyn (a valid SYN to the listening port) changed by `edit`.
template <class F>
Bytes edited(const Bytes& base, F edit) {
    Bytes p = base;
    edit(p);
    return p;
}

Bytes syn4() { return bytes(golden::kPeerSynV4); }
Bytes syn6() { return bytes(golden::kPeerSynV6); }

Seg with_flags(Seg s, uint8_t flags) {
    s.flags = flags;
    return s;
}

Seg from(ft::IpAddr src, ft::IpAddr dst, Seg s) {
    s.src.addr = src;
    s.dst.addr = dst;
    return s;
}

std::vector<Row> malformed_rows() {
    std::vector<Row> rows;
    auto add = [&](std::string what, Bytes p, DropReason r) {
        rows.push_back(Row{std::move(what), std::move(p), r});
    };
    using DR = DropReason;

    // 1. empty / version
    add("empty packet", {}, DR::truncated);
    add("one byte 0x45", {0x45}, DR::truncated);
    add("one byte 0x60", {0x60}, DR::truncated);
    add("one byte version 5", {0x55}, DR::bad_ip_version);
    for (uint8_t v : {0, 1, 5, 7, 15}) {
        add("IP version " + std::to_string(v),
            edited(syn4(), [v](Bytes& p) {
                p[0] = static_cast<uint8_t>(v << 4 | 5);
                fix_ipv4_checksum(p);
            }),
            DR::bad_ip_version);
    }

    // 2. IPv4 header
    add("IPv4 options (scapy, IHL 6)", bytes(golden::kBadIpv4Options), DR::ipv4_options);
    add("IPv4 IHL 4", edited(syn4(), [](Bytes& p) { p[0] = 0x44; }), DR::ipv4_options);
    add("IPv4 IHL 0", edited(syn4(), [](Bytes& p) { p[0] = 0x40; }), DR::ipv4_options);
    add("IPv4 IHL 15 on a 44-byte packet", edited(syn4(), [](Bytes& p) { p[0] = 0x4f; }),
        DR::ipv4_options);
    add("IPv4 total length = size + 1", edited(syn4(), [](Bytes& p) {
            put16(&p[2], static_cast<uint16_t>(p.size() + 1));
            fix_ipv4_checksum(p);
        }),
        DR::truncated);
    add("IPv4 total length 65535", edited(syn4(), [](Bytes& p) {
            put16(&p[2], 65535);
            fix_ipv4_checksum(p);
        }),
        DR::truncated);
    add("IPv4 total length = size - 1 (buffer longer)", edited(syn4(), [](Bytes& p) {
            put16(&p[2], static_cast<uint16_t>(p.size() - 1));
            fix_ipv4_checksum(p);
        }),
        DR::length_mismatch);
    add("IPv4 one trailing byte after the packet", edited(syn4(), [](Bytes& p) { p.push_back(0); }),
        DR::length_mismatch);
    add("IPv4 total length 19", edited(syn4(), [](Bytes& p) {
            put16(&p[2], 19);
            fix_ipv4_checksum(p);
        }),
        DR::length_mismatch);
    add("IPv4 total length 0", edited(syn4(), [](Bytes& p) {
            put16(&p[2], 0);
            fix_ipv4_checksum(p);
        }),
        DR::length_mismatch);
    add("IPv4 header checksum wrong", edited(syn4(), [](Bytes& p) { p[11] ^= 0x01; }),
        DR::ipv4_bad_checksum);
    add("IPv4 header checksum zero", edited(syn4(), [](Bytes& p) { put16(&p[10], 0); }),
        DR::ipv4_bad_checksum);
    add("IPv4 fragment, MF (scapy)", bytes(golden::kBadFragmentMfV4), DR::ipv4_fragment);
    add("IPv4 fragment, offset 3 (scapy)", bytes(golden::kBadFragmentOffsetV4), DR::ipv4_fragment);
    add("IPv4 fragment, DF+MF", edited(syn4(), [](Bytes& p) {
            put16(&p[6], 0x6000);
            fix_ipv4_checksum(p);
        }),
        DR::ipv4_fragment);
    add("IPv4 fragment, DF + offset 1", edited(syn4(), [](Bytes& p) {
            put16(&p[6], 0x4001);
            fix_ipv4_checksum(p);
        }),
        DR::ipv4_fragment);
    add("IPv4 UDP (scapy)", bytes(golden::kBadUdpV4), DR::not_tcp);
    add("IPv4 ICMP (scapy)", bytes(golden::kBadIcmpV4), DR::not_tcp);
    add("IPv4 protocol 132 (SCTP)", edited(syn4(), [](Bytes& p) {
            p[9] = 132;
            fix_ipv4_checksum(p);
        }),
        DR::not_tcp);

    // 3. IPv6 header
    add("IPv6 payload length = size - 40 + 1", edited(syn6(), [](Bytes& p) {
            put16(&p[4], static_cast<uint16_t>(p.size() - 40 + 1));
        }),
        DR::truncated);
    add("IPv6 payload length 65535", edited(syn6(), [](Bytes& p) { put16(&p[4], 65535); }),
        DR::truncated);
    add("IPv6 payload length = size - 40 - 1", edited(syn6(), [](Bytes& p) {
            put16(&p[4], static_cast<uint16_t>(p.size() - 40 - 1));
        }),
        DR::length_mismatch);
    add("IPv6 one trailing byte after the packet", edited(syn6(), [](Bytes& p) { p.push_back(0); }),
        DR::length_mismatch);
    add("IPv6 hop-by-hop header (scapy)", bytes(golden::kBadIpv6HopByHop),
        DR::ipv6_extension_headers);
    add("IPv6 routing header (scapy)", bytes(golden::kBadIpv6Routing), DR::ipv6_extension_headers);
    add("IPv6 fragment header (scapy)", bytes(golden::kBadIpv6Fragment),
        DR::ipv6_extension_headers);
    add("IPv6 destination options (scapy)", bytes(golden::kBadIpv6DestOpts),
        DR::ipv6_extension_headers);
    for (uint8_t nh : {50, 51, 135, 139, 140, 253, 254}) {
        add("IPv6 next header " + std::to_string(nh),
            edited(syn6(), [nh](Bytes& p) { p[6] = nh; }), DR::ipv6_extension_headers);
    }
    add("IPv6 UDP (scapy)", bytes(golden::kBadUdpV6), DR::not_tcp);
    add("IPv6 ICMPv6 (scapy)", bytes(golden::kBadIcmpV6), DR::not_tcp);
    add("IPv6 no next header (59)", edited(syn6(), [](Bytes& p) { p[6] = 59; }), DR::not_tcp);

    // 4. TCP header
    for (bool v6 : {false, true}) {
        std::string fam = v6 ? " (v6)" : " (v4)";
        Bytes base = v6 ? syn6() : syn4();  // 24-byte TCP header: data offset 6
        for (uint8_t doff : {0, 1, 4}) {
            add("TCP data offset " + std::to_string(doff) + fam, edited(base, [doff](Bytes& p) {
                    size_t t = tcp_offset(p);
                    p[t + 12] = static_cast<uint8_t>(doff << 4);
                    fix_tcp_checksum(p);
                }),
                DR::bad_data_offset);
        }
        for (uint8_t doff : {7, 15}) {
            add("TCP data offset " + std::to_string(doff) + " past a 24-byte segment" + fam,
                edited(base, [doff](Bytes& p) {
                    size_t t = tcp_offset(p);
                    p[t + 12] = static_cast<uint8_t>(doff << 4);
                    fix_tcp_checksum(p);
                }),
                DR::bad_data_offset);
        }
        add("TCP checksum wrong" + fam, edited(base, [](Bytes& p) { p[tcp_offset(p) + 17] ^= 0x80; }),
            DR::bad_tcp_checksum);
        add("TCP checksum zero" + fam, edited(base, [](Bytes& p) { put16(&p[tcp_offset(p) + 16], 0); }),
            DR::bad_tcp_checksum);
        add("TCP checksum without pseudo-header" + fam, edited(base, [](Bytes& p) {
                size_t t = tcp_offset(p);
                put16(&p[t + 16], 0);
                put16(&p[t + 16], inet_checksum(&p[t], p.size() - t));
            }),
            DR::bad_tcp_checksum);
        add("payload byte flipped" + fam,
            edited(encode((v6 ? kIn6 : kIn4).data(1001, 1, "payload")), [](Bytes& p) { p.back() ^= 1; }),
            DR::bad_tcp_checksum);
    }

    // 5. addresses and ports
    const Seg syn = kIn4.syn(1000);
    const Seg syn_v6 = kIn6.syn(1000);
    add("source multicast 224.0.0.1", encode(from(ip("224.0.0.1"), kStack4, syn)), DR::bad_address);
    add("source multicast 239.1.2.3", encode(from(ip("239.1.2.3"), kStack4, syn)), DR::bad_address);
    add("source broadcast", encode(from(ip("255.255.255.255"), kStack4, syn)), DR::bad_address);
    add("source 0.0.0.0", encode(from(ip("0.0.0.0"), kStack4, syn)), DR::bad_address);
    add("destination multicast 224.0.0.5", encode(from(kPeer4, ip("224.0.0.5"), syn)), DR::bad_address);
    add("destination broadcast", encode(from(kPeer4, ip("255.255.255.255"), syn)), DR::bad_address);
    add("destination 0.0.0.0", encode(from(kPeer4, ip("0.0.0.0"), syn)), DR::bad_address);
    add("source multicast ff02::1", encode(from(ip("ff02::1"), kStack6, syn_v6)), DR::bad_address);
    add("source ::", encode(from(ip("::"), kStack6, syn_v6)), DR::bad_address);
    add("destination multicast ff05::2", encode(from(kPeer6, ip("ff05::2"), syn_v6)), DR::bad_address);
    add("destination ::", encode(from(kPeer6, ip("::"), syn_v6)), DR::bad_address);
    {
        Seg s = syn;
        s.src.port = 0;
        add("source port 0", encode(s), DR::bad_port);
        s = syn;
        s.dst.port = 0;
        add("destination port 0", encode(s), DR::bad_port);
        s = syn_v6;
        s.src.port = 0;
        add("source port 0 (v6)", encode(s), DR::bad_port);
    }

    // 6. flags (to the listening port: a valid SYN here would be answered)
    add("SYN+FIN", encode(with_flags(syn, kSyn | kFin)), DR::bad_flags);
    add("SYN+FIN (v6)", encode(with_flags(syn_v6, kSyn | kFin)), DR::bad_flags);
    add("SYN+RST", encode(with_flags(syn, kSyn | kRst)), DR::bad_flags);
    add("SYN+FIN+ACK", encode(with_flags(syn, kSyn | kFin | kAck)), DR::bad_flags);
    add("no flags", encode(with_flags(syn, 0)), DR::bad_flags);
    add("no flags, with payload", encode(kIn4.seg(0, 1000, 0, bytes("x"))), DR::bad_flags);
    add("SYN+FIN to a closed port (no RST reply)",
        encode(with_flags(Path{kIn4.src, {kStack4, golden::kClosedPort}}.syn(5), kSyn | kFin)),
        DR::bad_flags);
    add("no flags to a closed port (no RST reply)",
        encode(Path{kIn4.src, {kStack4, golden::kClosedPort}}.seg(0, 5, 0)), DR::bad_flags);
    {
        Seg s = syn;
        s.payload = bytes("hello");
        add("SYN with payload", encode(s), DR::syn_with_payload);
        s = syn_v6;
        s.payload = bytes("x");
        add("SYN with payload (v6)", encode(s), DR::syn_with_payload);
    }
    return rows;
}

}  // namespace

TEST_CASE("malformed_control_valid_syn_answered") {
    // The base of every row below is this SYN; intact, it is answered.
    for (const Bytes& base : {syn4(), syn6()}) {
        Harness h;
        h.listen(kPort);
        h.in_guarded(base);
        CHECK(h.stats().total_drops() == 0);
        CHECK(h.tx().size() == 1);
        CHECK(h.stats().half_open_connections == 1);
    }
}

TEST_CASE("malformed_packets_dropped_with_reason") {
    for (const Row& row : malformed_rows()) {
        CAPTURE(row.what);
        CAPTURE(row.packet);
        Harness h;
        h.listen(kPort);
        ft::Stats before = h.stats();
        h.in_guarded(row.packet);
        CHECK(drop_delta(before, h.stats()) == std::string(name(row.reason)) + "+1");
        CHECK(h.stats().total_drops() == before.total_drops() + 1);
        CHECK(h.stats().packets_in == before.packets_in + 1);
        CHECK(h.stats().bytes_in == before.bytes_in + row.packet.size());
        CHECK(h.tx() == pkts());
        CHECK(h.events() == evs());
        CHECK(h.stats().half_open_connections == 0);
    }
}

TEST_CASE("truncated_at_every_length_dropped_as_truncated") {
    const std::pair<const char*, Bytes> bases[] = {
        {"v4 phantun SYN", syn4()},
        {"v6 phantun SYN", syn6()},
        {"v4 Linux SYN", bytes(golden::kPeerSynLinuxV4)},
        {"v6 Linux SYN", bytes(golden::kPeerSynLinuxV6)},
        {"v4 data", bytes(golden::kPeerUnknownDataV4)},
        {"v6 data", bytes(golden::kPeerUnknownDataV6)},
        {"v4 1400-byte data", encode(kIn4.data(1, 1, Bytes(1400, 0xab)))},
    };
    Harness h;
    h.listen(kPort);
    for (const auto& base : bases) {
        const char* what = base.first;
        const Bytes& full = base.second;
        CAPTURE(what);
        for (size_t len = 0; len < full.size(); ++len) {
            CAPTURE(len);
            ft::Stats before = h.stats();
            h.in_guarded(Bytes(full.begin(), full.begin() + static_cast<long>(len)));
            CHECK(drop_delta(before, h.stats()) == "truncated+1");
            CHECK(h.tx_raw().empty());
        }
    }
    CHECK(h.events() == evs());
    CHECK(h.stats().half_open_connections == 0);
}

TEST_CASE("established_corrupt_data_not_delivered") {
    Harness h;
    h.listen(kPort);
    ServerConn c = establish_server(h, kIn4, 1000);
    Bytes good = encode(c.in.data(1001, 1, "payload"));
    Bytes bad = good;
    bad[bad.size() - 2] ^= 0x10;
    ft::Stats before = h.stats();
    h.in_guarded(bad);
    CHECK(drop_delta(before, h.stats()) == "bad_tcp_checksum+1");
    CHECK(h.events() == evs());
    CHECK(h.tx() == pkts());
    h.in_bytes(good);  // the intact one still arrives
    CHECK(h.events() == evs(ev_datagram(c.id, "payload")));
}

TEST_CASE("established_malformed_flags_dropped") {
    Harness h;
    h.listen(kPort);
    ServerConn c = establish_server(h, kIn4, 1000);
    SUBCASE("FIN") {
        ft::Stats before = h.stats();
        h.in(c.in.seg(kFin | kAck, 1001, 1));
        CHECK(drop_delta(before, h.stats()) == "bad_flags+1");
    }
    SUBCASE("data without ACK") {
        ft::Stats before = h.stats();
        h.in(c.in.seg(kPsh, 1001, 0, bytes("x")));
        CHECK(drop_delta(before, h.stats()) == "bad_flags+1");
    }
    SUBCASE("SYN+FIN") {
        ft::Stats before = h.stats();
        h.in(c.in.seg(kSyn | kFin, 1000, 0));
        CHECK(drop_delta(before, h.stats()) == "bad_flags+1");
    }
    SUBCASE("no flags") {
        ft::Stats before = h.stats();
        h.in(c.in.seg(0, 1001, 0));
        CHECK(drop_delta(before, h.stats()) == "bad_flags+1");
    }
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
    REQUIRE(h.stack.info(c.id).has_value());
    CHECK(h.stack.info(c.id)->state == ft::ConnState::established);
}

TEST_CASE("random_mutations_never_crash_and_count_once") {
    // Flip, truncate and extend valid packets; whatever the stack makes of them,
    // it reads in bounds (guard page, ASan), counts each at most once as a drop
    // and answers each with at most one packet.
    std::mt19937 rng(12345);
    const Bytes bases[] = {syn4(), syn6(), bytes(golden::kPeerUnknownDataV4),
                           bytes(golden::kPeerUnknownDataV6), bytes(golden::kPeerSynLinuxV4)};
    Harness h;
    h.listen(kPort);
    for (int i = 0; i < 20000; ++i) {
        Bytes p = bases[rng() % 5];
        int edits = 1 + static_cast<int>(rng() % 3);
        for (int e = 0; e < edits; ++e) {
            switch (rng() % 4) {
                case 0: p[rng() % p.size()] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
                case 1: p[rng() % p.size()] = static_cast<uint8_t>(rng()); break;
                case 2: p.resize(rng() % p.size()); break;
                case 3: p.push_back(static_cast<uint8_t>(rng())); break;
            }
            if (p.empty()) break;
        }
        if (rng() % 2 && p.size() >= 20 && (p[0] >> 4) == 4 && (p[0] & 0xf) == 5) fix_ipv4_checksum(p);
        CAPTURE(p);
        ft::Stats before = h.stats();
        h.in_guarded(p);
        CHECK(h.stats().total_drops() - before.total_drops() <= 1);
        CHECK(h.stack.tx_count() <= 1);
        h.tx_raw();
        Evs e = h.events();
        for (const Ev& ev : e.list) CHECK(ev.type != ft::EventType::datagram);  // nothing was accepted
        // keep the half-open table from filling up with accepted mutated SYNs: let
        // them time out, discarding their SYN-ACK retransmissions
        for (int k = 0; k < 8 && h.stats().half_open_connections > 200; ++k) {
            h.advance(1s);
            h.tx_raw();
        }
    }
    CHECK(h.stats().packets_in == 20000);
}
