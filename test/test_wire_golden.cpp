// Wire golden bytes, both ways: packets built by scapy (test/golden.h, from
// test/gen_golden.py) are fed to the Stack (decode), and what the Stack emits is
// compared byte for byte with scapy's packet for the same moment (encode).
#include "golden.h"
#include "support.h"

using namespace tst;
using namespace std::chrono_literals;

namespace {

const ft::Endpoint kPeerServer4{kPeer4, golden::kServerPort};  // the peer listens (client role)
const ft::Endpoint kPeerServer6{kPeer6, golden::kServerPort};

// Both views of a wire mismatch: decoded fields (readable) and the raw bytes.
#define CHECK_WIRE(actual, expected)                                                   \
    do {                                                                               \
        const Bytes& wire_a_ = (actual);                                               \
        const Bytes& wire_e_ = (expected);                                             \
        CHECK(decode(ft::ByteView(wire_a_.data(), wire_a_.size())) ==                  \
              decode(ft::ByteView(wire_e_.data(), wire_e_.size())));                   \
        CHECK(wire_a_ == wire_e_);                                                     \
    } while (0)

// The single packet the stack queued (REQUIRE: exactly one).
Bytes only_tx(Harness& h) {
    std::vector<Bytes> raw = h.tx_raw();
    REQUIRE(raw.size() == 1);
    return raw[0];
}

struct Golden {
    const char* name;
    const uint8_t* data;
    size_t size;
};
#define G(x) Golden{#x, golden::x, sizeof golden::x}

// Every valid golden packet (the kBad* ones are malformed on purpose).
const Golden kValidGoldens[] = {
    G(kStackClientSynV4), G(kStackClientSynV6), G(kStackServerSynAckV4), G(kStackServerSynAckV6),
    G(kStackClientAckV4), G(kStackClientAckV6), G(kStackClientDataOddV4), G(kStackClientDataOddV6),
    G(kStackClientDataEvenV4), G(kStackClientDataEvenV6), G(kStackClientCloseRstV4),
    G(kStackClientCloseRstV6), G(kStackRstForUnknownDataV4), G(kStackRstForUnknownDataV6),
    G(kStackRstForClosedPortSynV4), G(kStackRstForClosedPortSynV6), G(kPeerSynV4), G(kPeerSynV6),
    G(kPeerSynLinuxV4), G(kPeerSynLinuxV6), G(kPeerAckV4), G(kPeerAckV6), G(kPeerSynAckV4),
    G(kPeerSynAckV6), G(kPeerDataOddV4), G(kPeerDataOddV6), G(kPeerDataEvenV4),
    G(kPeerDataEvenV6), G(kPeerRstExactV4), G(kPeerRstExactV6), G(kPeerUnknownDataV4),
    G(kPeerUnknownDataV6), G(kPeerSynClosedPortV4), G(kPeerSynClosedPortV6),
};

// Server role: kPeerSyn then kPeerAck of the family; returns the accepted conn.
ft::ConnId accept_golden(Harness& h, bool v6) {
    h.listen(golden::kServerPort);
    h.in_bytes(v6 ? bytes(golden::kPeerSynV6) : bytes(golden::kPeerSynV4));
    REQUIRE(h.tx().size() == 1);
    h.in_bytes(v6 ? bytes(golden::kPeerAckV6) : bytes(golden::kPeerAckV4));
    Packets ack = h.tx();  // one pure ACK on accept: it carries the scaled window
    REQUIRE(ack.size() == 1);
    REQUIRE(ack[0].flags == 0x10);
    REQUIRE(ack[0].payload.empty());
    Evs e = h.events();
    REQUIRE(e.size() == 1);
    REQUIRE(e[0].type == ft::EventType::accepted);
    return e[0].conn;
}

// Client role: connect, then the peer's SYN-ACK (seq 3000) from scapy, our ACK consumed.
struct GoldenClient {
    ft::ConnId id;
    uint16_t port;
};
GoldenClient connect_golden(Harness& h, bool v6) {
    ft::Result<ft::ConnId> r = h.stack.connect(v6 ? kPeerServer6 : kPeerServer4, h.now);
    REQUIRE(r.ok());
    uint16_t port = h.stack.info(r.value())->local.port;
    REQUIRE(h.tx().size() == 1);
    h.in_bytes((v6 ? with_port(golden::kPeerSynAckV6, PortField::dst, port) : with_port(golden::kPeerSynAckV4, PortField::dst, port)));
    REQUIRE(h.tx().size() == 1);
    REQUIRE(h.events() == evs(ev_connected(r.value())));
    return GoldenClient{r.value(), port};
}

}  // namespace

// --- the test's own codec against scapy (so later byte comparisons mean something) ---

TEST_CASE("support_codec_agrees_with_scapy") {
    for (const Golden& g : kValidGoldens) {
        CAPTURE(g.name);
        Seg s = decode(ft::ByteView(g.data, g.size));
        CHECK(s.error == "");
        CHECK(encode(s) == Bytes(g.data, g.data + g.size));
    }
    Path out{{kStack4, golden::kServerPort}, {kPeer4, golden::kPeerPort}};
    CHECK(decode(ft::ByteView(golden::kStackServerSynAckV4, sizeof golden::kStackServerSynAckV4)) ==
          out.syn_ack(0, 1001));
}

TEST_CASE("support_port_patch_keeps_checksum_valid") {
    // RFC 1624 incremental update vs the full recomputation in decode().
    for (uint16_t port : {uint16_t{32768}, uint16_t{40000}, uint16_t{54321}, uint16_t{60999}}) {
        CAPTURE(port);
        Bytes p = with_port(golden::kStackClientDataOddV4, PortField::src, port);
        Seg s = decode(ft::ByteView(p.data(), p.size()));
        CHECK(s.error == "");
        CHECK(s.src.port == port);
        Bytes q = with_port(golden::kPeerSynAckV6, PortField::dst, port);
        Seg t = decode(ft::ByteView(q.data(), q.size()));
        CHECK(t.error == "");
        CHECK(t.dst.port == port);
    }
}

// --- client role: encode ---

TEST_CASE("client_syn_matches_scapy") {
    Harness h;
    bool v6 = false;
    SUBCASE("v4") { v6 = false; }
    SUBCASE("v6") { v6 = true; }
    CAPTURE(v6);
    ft::Result<ft::ConnId> r = h.stack.connect(v6 ? kPeerServer6 : kPeerServer4, h.now);
    REQUIRE(r.ok());
    uint16_t port = h.stack.info(r.value())->local.port;
    CHECK(port >= kEphemeralLo);
    CHECK(port <= kEphemeralHi);
    CHECK_WIRE(only_tx(h),
               (v6 ? with_port(golden::kStackClientSynV6, PortField::src, port) : with_port(golden::kStackClientSynV4, PortField::src, port)));
}

TEST_CASE("client_handshake_ack_matches_scapy") {
    Harness h;
    bool v6 = false;
    SUBCASE("v4") { v6 = false; }
    SUBCASE("v6") { v6 = true; }
    CAPTURE(v6);
    ft::Result<ft::ConnId> r = h.stack.connect(v6 ? kPeerServer6 : kPeerServer4, h.now);
    REQUIRE(r.ok());
    uint16_t port = h.stack.info(r.value())->local.port;
    REQUIRE(h.tx().size() == 1);
    h.in_bytes((v6 ? with_port(golden::kPeerSynAckV6, PortField::dst, port) : with_port(golden::kPeerSynAckV4, PortField::dst, port)));
    CHECK_WIRE(only_tx(h),
               (v6 ? with_port(golden::kStackClientAckV6, PortField::src, port) : with_port(golden::kStackClientAckV4, PortField::src, port)));
    CHECK(h.events() == evs(ev_connected(r.value())));
}

TEST_CASE("client_data_matches_scapy") {
    Harness h;
    bool v6 = false, odd = false;
    SUBCASE("v4 odd length") { v6 = false; odd = true; }
    SUBCASE("v4 even length") { v6 = false; odd = false; }
    SUBCASE("v6 odd length") { v6 = true; odd = true; }
    SUBCASE("v6 even length") { v6 = true; odd = false; }
    CAPTURE(v6);
    CAPTURE(odd);
    GoldenClient c = connect_golden(h, v6);
    Bytes payload = odd ? bytes(golden::kOddPayload) : bytes(golden::kEvenPayload);
    REQUIRE(h.stack.send(c.id, ft::ByteView(payload.data(), payload.size()), h.now) == ft::Errc::ok);
    const uint8_t* g = v6 ? (odd ? golden::kStackClientDataOddV6 : golden::kStackClientDataEvenV6)
                          : (odd ? golden::kStackClientDataOddV4 : golden::kStackClientDataEvenV4);
    size_t n = v6 ? (odd ? sizeof golden::kStackClientDataOddV6 : sizeof golden::kStackClientDataEvenV6)
                  : (odd ? sizeof golden::kStackClientDataOddV4 : sizeof golden::kStackClientDataEvenV4);
    CHECK_WIRE(only_tx(h), with_port(g, n, PortField::src, c.port));
}

TEST_CASE("client_close_rst_matches_scapy") {
    Harness h;
    bool v6 = false;
    SUBCASE("v4") { v6 = false; }
    SUBCASE("v6") { v6 = true; }
    CAPTURE(v6);
    GoldenClient c = connect_golden(h, v6);
    REQUIRE(h.stack.close(c.id, h.now) == ft::Errc::ok);
    CHECK_WIRE(only_tx(h), (v6 ? with_port(golden::kStackClientCloseRstV6, PortField::src, c.port) : with_port(golden::kStackClientCloseRstV4, PortField::src, c.port)));
    CHECK(h.events() == evs(ev_closed(c.id, ft::CloseReason::local_close)));
}

// --- server role: decode scapy's packets, encode the answers ---

TEST_CASE("server_syn_ack_matches_scapy") {
    Harness h;
    h.listen(golden::kServerPort);
    SUBCASE("v4 phantun SYN") {
        h.in_bytes(bytes(golden::kPeerSynV4));
        CHECK_WIRE(only_tx(h), bytes(golden::kStackServerSynAckV4));
    }
    SUBCASE("v6 phantun SYN") {
        h.in_bytes(bytes(golden::kPeerSynV6));
        CHECK_WIRE(only_tx(h), bytes(golden::kStackServerSynAckV6));
    }
    // A SYN with an MSS option is answered in its own (Linux) style; the
    // linux profile's tests check that SYN-ACK field by field.
    SUBCASE("v4 Linux SYN is answered with a Linux SYN-ACK") {
        h.in_bytes(bytes(golden::kPeerSynLinuxV4));
        Packets out = h.tx();
        REQUIRE(out.size() == 1);
        CHECK(flag_string(out[0].flags) == "S.");
        CHECK(out[0].ack == 1001);
        CHECK(out[0].window == 65160);
        CHECK(out[0].options.size() == 20);
    }
    SUBCASE("v6 Linux SYN is answered with a Linux SYN-ACK") {
        h.in_bytes(bytes(golden::kPeerSynLinuxV6));
        Packets out = h.tx();
        REQUIRE(out.size() == 1);
        CHECK(flag_string(out[0].flags) == "S.");
        CHECK(out[0].ack == 1001);
        CHECK(out[0].window == 64260);
        CHECK(out[0].options.size() == 20);
    }
    CHECK(h.events() == evs());
    CHECK(h.stats().total_drops() == 0);
}

TEST_CASE("server_scapy_handshake_ack_accepted") {
    Harness h;
    bool v6 = false;
    SUBCASE("v4") { v6 = false; }
    SUBCASE("v6") { v6 = true; }
    CAPTURE(v6);
    ft::ConnId c = accept_golden(h, v6);
    std::optional<ft::ConnInfo> info = h.stack.info(c);
    REQUIRE(info.has_value());
    CHECK(info->state == ft::ConnState::established);
    CHECK(info->local == ft::Endpoint{v6 ? kStack6 : kStack4, golden::kServerPort});
    CHECK(info->remote == ft::Endpoint{v6 ? kPeer6 : kPeer4, golden::kPeerPort});
}

TEST_CASE("server_scapy_data_delivered") {
    Harness h;
    bool v6 = false, odd = false;
    SUBCASE("v4 odd length") { v6 = false; odd = true; }
    SUBCASE("v4 even length") { v6 = false; odd = false; }
    SUBCASE("v6 odd length") { v6 = true; odd = true; }
    SUBCASE("v6 even length") { v6 = true; odd = false; }
    CAPTURE(v6);
    CAPTURE(odd);
    ft::ConnId c = accept_golden(h, v6);
    h.in_bytes(v6 ? (odd ? bytes(golden::kPeerDataOddV6) : bytes(golden::kPeerDataEvenV6))
                  : (odd ? bytes(golden::kPeerDataOddV4) : bytes(golden::kPeerDataEvenV4)));
    CHECK(h.events() ==
          evs(ev_datagram(c, odd ? bytes(golden::kOddPayload) : bytes(golden::kEvenPayload))));
    CHECK(h.tx() == pkts());
}

TEST_CASE("server_scapy_exact_rst_closes") {
    Harness h;
    bool v6 = false;
    SUBCASE("v4") { v6 = false; }
    SUBCASE("v6") { v6 = true; }
    CAPTURE(v6);
    ft::ConnId c = accept_golden(h, v6);
    h.in_bytes(v6 ? bytes(golden::kPeerRstExactV6) : bytes(golden::kPeerRstExactV4));
    CHECK(h.events() == evs(ev_closed(c, ft::CloseReason::peer_reset)));
    CHECK(h.tx() == pkts());
}

TEST_CASE("unknown_segment_rst_ack_matches_scapy") {
    Harness h;
    h.listen(golden::kServerPort);  // the port listens, but the tuple is unknown and no SYN
    SUBCASE("v4") {
        h.in_bytes(bytes(golden::kPeerUnknownDataV4));
        CHECK_WIRE(only_tx(h), bytes(golden::kStackRstForUnknownDataV4));
    }
    SUBCASE("v6") {
        h.in_bytes(bytes(golden::kPeerUnknownDataV6));
        CHECK_WIRE(only_tx(h), bytes(golden::kStackRstForUnknownDataV6));
    }
    CHECK(h.events() == evs());
}

TEST_CASE("closed_port_syn_rst_ack_matches_scapy") {
    Harness h;
    h.listen(golden::kServerPort);  // another port listens; 7777 does not
    SUBCASE("v4") {
        h.in_bytes(bytes(golden::kPeerSynClosedPortV4));
        CHECK_WIRE(only_tx(h), bytes(golden::kStackRstForClosedPortSynV4));
    }
    SUBCASE("v6") {
        h.in_bytes(bytes(golden::kPeerSynClosedPortV6));
        CHECK_WIRE(only_tx(h), bytes(golden::kStackRstForClosedPortSynV6));
    }
    CHECK(h.events() == evs());
}
