// Handshake timelines on a fake clock, both roles. Times are offsets from kT0.
//
//   client:  +0 > S 0   +1 > S 0 ... +5 > S 0   +6 connect_failed(handshake_timeout)
//   server:  < S x   > S. 0 ack x+1 (+1 .. +5 again)   +6 half-open dropped silently
#include "support.h"

using namespace tst;
using namespace std::chrono_literals;
using ft::CloseReason;
using ft::ConnState;

namespace {

constexpr uint16_t kPort = 5555;
const ft::Endpoint kRemote4{kPeer4, kPort};  // the peer listens here (client role)
const ft::Endpoint kRemote6{kPeer6, kPort};
const Path kIn4{{kPeer4, 40000}, {kStack4, kPort}};  // the peer connects to us (server role)
const Path kIn6{{kPeer6, 40000}, {kStack6, kPort}};
constexpr Duration kTick = 1ns;  // the smallest step of the fake clock

ConnState state_of(Harness& h, ft::ConnId c) {
    std::optional<ft::ConnInfo> i = h.stack.info(c);
    REQUIRE(i.has_value());
    return i->state;
}

}  // namespace

// ---------------------------------------------------------------------------
// Client role
// ---------------------------------------------------------------------------

TEST_CASE("syn_sent_syn_ack_connects") {
    Harness h(without_keepalive());
    ClientConn c = start_client(h, kRemote4);  // +0 > S 0
    CHECK(state_of(h, c.id) == ConnState::syn_sent);
    CHECK(h.stats().half_open_connections == 1);
    h.advance(300ms);
    h.in(c.in.syn_ack(3000, 1));  // < S. 3000 ack 1
    CHECK(h.tx() == pkts(c.out.ack(1, 3001)));
    CHECK(h.events() == evs(ev_connected(c.id)));
    CHECK(state_of(h, c.id) == ConnState::established);
    CHECK(h.stats().handshakes_completed == 1);
    CHECK(h.stats().open_connections == 1);
    CHECK(h.stats().half_open_connections == 0);
    CHECK(h.stack.next_deadline() == std::nullopt);
}

TEST_CASE("connect_uses_local_address_of_remote_family") {
    Harness h;
    ClientConn c4 = start_client(h, kRemote4);
    ClientConn c6 = start_client(h, kRemote6);
    CHECK(c4.out.src.addr == kStack4);
    CHECK(c6.out.src.addr == kStack6);
    for (const ClientConn* c : {&c4, &c6}) {
        CHECK(c->out.src.port >= kEphemeralLo);
        CHECK(c->out.src.port <= kEphemeralHi);
    }
}

TEST_CASE("connect_without_local_address_fails") {
    ft::StackConfig cfg = base_config();
    cfg.local_v6.reset();
    Harness h(cfg);
    ft::Result<ft::ConnId> r = h.stack.connect(kRemote6, h.now);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == ft::Errc::no_local_address);
    CHECK_FALSE(r.status().message().empty());
    CHECK(h.tx() == pkts());
    CHECK(h.stats().half_open_connections == 0);
}

TEST_CASE("connect_to_port_zero_or_unspecified_address_refused") {
    Harness h;
    ft::Result<ft::ConnId> r = h.stack.connect(ft::Endpoint{kPeer4, 0}, h.now);
    CHECK_FALSE(r.ok());
    ft::Result<ft::ConnId> r2 = h.stack.connect(ep("0.0.0.0", 80), h.now);
    CHECK_FALSE(r2.ok());
    CHECK(h.tx() == pkts());
}

TEST_CASE("syn_sent_syn_retransmitted_every_second") {
    Harness h;
    ClientConn c = start_client(h, kRemote4);  // send 1 at +0
    for (int k = 1; k <= 5; ++k) {
        CAPTURE(k);
        CHECK(h.stack.next_deadline() == kT0 + k * 1s);
        h.at(kT0 + k * 1s - kTick);
        CHECK(h.tx() == pkts());
        h.at(kT0 + k * 1s);
        CHECK(h.tx() == pkts(c.out.syn(0)));  // identical retransmission
    }
    CHECK(h.events() == evs());
    CHECK(state_of(h, c.id) == ConnState::syn_sent);
}

TEST_CASE("syn_sent_times_out_at_six_seconds") {
    Harness h;
    ClientConn c = start_client(h, kRemote4);
    size_t syns = 1;
    for (int k = 1; k <= 5; ++k) {
        h.at(kT0 + k * 1s);
        syns += h.tx().size();
    }
    CHECK(syns == 6);
    CHECK(h.stack.next_deadline() == kT0 + 6s);
    h.at(kT0 + 6s - kTick);
    CHECK(h.events() == evs());  // not before
    CHECK(h.stats().half_open_connections == 1);
    h.at(kT0 + 6s);
    CHECK(h.events() == evs(ev_connect_failed(c.id, CloseReason::handshake_timeout)));
    CHECK(h.tx() == pkts());  // no seventh SYN
    CHECK(h.stats().handshakes_failed == 1);
    CHECK(h.stats().half_open_connections == 0);
    CHECK(h.stack.next_deadline() == std::nullopt);  // the timeout consumed the last timer
    CHECK_FALSE(h.stack.info(c.id).has_value());
    CHECK(h.stack.close(c.id, h.now) == ft::Errc::stale_handle);
    h.advance(1h);
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
}

TEST_CASE("syn_sent_handshake_schedule_configurable") {
    ft::StackConfig cfg = base_config();
    cfg.handshake_attempts = 3;
    cfg.handshake_interval = 250ms;
    Harness h(cfg);
    ClientConn c = start_client(h, kRemote4);
    CHECK(h.stack.next_deadline() == kT0 + 250ms);
    h.at(kT0 + 250ms);
    CHECK(h.tx() == pkts(c.out.syn(0)));
    h.at(kT0 + 500ms);
    CHECK(h.tx() == pkts(c.out.syn(0)));
    CHECK(h.stack.next_deadline() == kT0 + 750ms);
    h.at(kT0 + 750ms - kTick);
    CHECK(h.events() == evs());
    h.at(kT0 + 750ms);
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs(ev_connect_failed(c.id, CloseReason::handshake_timeout)));
}

TEST_CASE("syn_sent_syn_ack_after_retransmit_connects_and_stops_timer") {
    Harness h(without_keepalive());
    ClientConn c = start_client(h, kRemote4);
    h.at(kT0 + 1s);
    h.at(kT0 + 2s);
    CHECK(h.tx() == pkts(c.out.syn(0), c.out.syn(0)));  // the first two SYNs were lost
    h.at(kT0 + 2500ms);
    h.in(c.in.syn_ack(7, 1));
    CHECK(h.tx() == pkts(c.out.ack(1, 8)));
    CHECK(h.events() == evs(ev_connected(c.id)));
    CHECK(h.stack.next_deadline() == std::nullopt);
    h.at(kT0 + 10s);
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
}

TEST_CASE("syn_sent_rst_good_ack_fails_connect") {
    Harness h;
    ClientConn c = start_client(h, kRemote4);
    SUBCASE("RST|ACK ack 1") { h.in(c.in.rst_ack(0, 1)); }
    SUBCASE("RST without ACK flag, ack field 1") { h.in(c.in.seg(kRst, 0, 1)); }
    CHECK(h.events() == evs(ev_connect_failed(c.id, CloseReason::peer_reset)));
    CHECK(h.tx() == pkts());
    CHECK_FALSE(h.stack.info(c.id).has_value());
    CHECK(h.stats().half_open_connections == 0);
    h.at(kT0 + 1s);
    CHECK(h.tx() == pkts());  // no retransmission after the reset
}

TEST_CASE("syn_sent_rst_bad_ack_dropped") {
    Harness h;
    ClientConn c = start_client(h, kRemote4);
    ft::Stats before = h.stats();
    SUBCASE("ack 2") { h.in(c.in.rst_ack(0, 2)); }
    SUBCASE("ack 0") { h.in(c.in.rst_ack(0, 0)); }
    SUBCASE("ack 0xffffffff") { h.in(c.in.seg(kRst, 1, 0xffffffff)); }
    CHECK(drop_delta(before, h.stats()) == "bad_ack+1");
    CHECK(h.events() == evs());
    CHECK(h.tx() == pkts());
    CHECK(state_of(h, c.id) == ConnState::syn_sent);
    h.at(kT0 + 1s);
    CHECK(h.tx() == pkts(c.out.syn(0)));  // still trying
}

TEST_CASE("syn_sent_syn_ack_bad_ack_dropped") {
    Harness h;
    ClientConn c = start_client(h, kRemote4);
    ft::Stats before = h.stats();
    h.in(c.in.syn_ack(3000, 7));
    CHECK(drop_delta(before, h.stats()) == "bad_ack+1");
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
    CHECK(state_of(h, c.id) == ConnState::syn_sent);
    h.in(c.in.syn_ack(3000, 1));  // the right one still completes
    CHECK(h.tx() == pkts(c.out.ack(1, 3001)));
    CHECK(h.events() == evs(ev_connected(c.id)));
}

TEST_CASE("syn_sent_non_syn_ack_dropped_bad_ack") {
    Harness h;
    ClientConn c = start_client(h, kRemote4);
    ft::Stats before = h.stats();
    SUBCASE("ACK with the right ack but no SYN") { h.in(c.in.ack(3000, 1)); }
    SUBCASE("data") { h.in(c.in.data(3000, 1, "early")); }
    SUBCASE("bare SYN (simultaneous open)") { h.in(c.in.syn(3000)); }
    CHECK(drop_delta(before, h.stats()) == "bad_ack+1");
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
    CHECK(state_of(h, c.id) == ConnState::syn_sent);
}

TEST_CASE("syn_sent_close_sends_rst_and_connect_failed") {
    Harness h;
    ClientConn c = start_client(h, kRemote4);
    REQUIRE(h.stack.close(c.id, h.now) == ft::Errc::ok);
    CHECK(h.tx() == pkts(c.out.rst(1)));  // snd_nxt = iss + SYN
    CHECK(h.events() == evs(ev_connect_failed(c.id, CloseReason::local_close)));
    CHECK(h.stats().half_open_connections == 0);
    CHECK(h.stack.next_deadline() == std::nullopt);
    h.in(c.in.syn_ack(3000, 1));  // too late: an unknown tuple now
    CHECK(h.tx() == pkts(c.out.rst_ack(1, 3001)));
    CHECK(h.events() == evs());
}

TEST_CASE("established_client_repeated_syn_ack_reacked") {
    Harness h;
    ClientConn c = establish_client(h, kRemote4, 3000);
    h.advance(1s);
    h.in(c.in.syn_ack(3000, 1));  // the peer never saw our ACK
    CHECK(h.tx() == pkts(c.out.ack(1, 3001)));
    CHECK(h.events() == evs());
    CHECK(state_of(h, c.id) == ConnState::established);
}

// ---------------------------------------------------------------------------
// Server role
// ---------------------------------------------------------------------------

TEST_CASE("listen_syn_ack_handshake_accepted") {
    Harness h(without_keepalive());
    h.listen(kPort);
    Path in = kIn4;
    SUBCASE("v4") { in = kIn4; }
    SUBCASE("v6") { in = kIn6; }
    Path out = in.reversed();
    h.in(in.syn(1000));
    CHECK(h.tx() == pkts(out.syn_ack(0, 1001)));
    CHECK(h.events() == evs());
    CHECK(h.stats().half_open_connections == 1);
    CHECK(h.stack.next_deadline() == kT0 + 1s);
    h.advance(50ms);
    h.in(in.ack(1001, 1));
    CHECK(h.tx() == pkts(out.ack(1, 1001)));  // the scaled window, for conntrack
    Evs e = h.events();
    REQUIRE(e.size() == 1);
    CHECK(e[0] == ev_accepted(e[0].conn));
    std::optional<ft::ConnInfo> info = h.stack.info(e[0].conn);
    REQUIRE(info.has_value());
    CHECK(info->state == ConnState::established);
    CHECK(info->local == in.dst);
    CHECK(info->remote == in.src);
    CHECK(h.stats().half_open_connections == 0);
    CHECK(h.stats().open_connections == 1);
    CHECK(h.stats().handshakes_completed == 1);
    CHECK(h.stack.next_deadline() == std::nullopt);
}

TEST_CASE("listen_any_isn_accepted_including_wrap") {
    Harness h;
    h.listen(kPort);
    h.in(kIn4.syn(0xffffffff));
    CHECK(h.tx() == pkts(kIn4.reversed().syn_ack(0, 0)));
    h.in(kIn4.ack(0, 1));
    CHECK(h.events().size() == 1);
}

TEST_CASE("syn_received_syn_ack_retransmitted_every_second") {
    Harness h;
    h.listen(kPort);
    h.in(kIn4.syn(1000));
    Seg synack = kIn4.reversed().syn_ack(0, 1001);
    CHECK(h.tx() == pkts(synack));  // send 1 at +0
    for (int k = 1; k <= 5; ++k) {
        CAPTURE(k);
        CHECK(h.stack.next_deadline() == kT0 + k * 1s);
        h.at(kT0 + k * 1s - kTick);
        CHECK(h.tx() == pkts());
        h.at(kT0 + k * 1s);
        CHECK(h.tx() == pkts(synack));
    }
    CHECK(h.stack.next_deadline() == kT0 + 6s);
}

TEST_CASE("syn_received_times_out_silently") {
    Harness h;
    h.listen(kPort);
    h.in(kIn4.syn(1000));
    for (int k = 1; k <= 5; ++k) h.at(kT0 + k * 1s);
    CHECK(h.tx().size() == 6);
    h.at(kT0 + 6s - kTick);
    CHECK(h.stats().half_open_connections == 1);
    h.at(kT0 + 6s);
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
    CHECK(h.stats().half_open_connections == 0);
    CHECK(h.stats().handshakes_failed == 1);
    CHECK(h.stack.next_deadline() == std::nullopt);  // the timeout consumed the last timer
    h.in(kIn4.ack(1001, 1));  // the peer's late ACK meets an unknown tuple
    CHECK(h.tx() == pkts(kIn4.reversed().rst_ack(1, 1001)));
    CHECK(h.events() == evs());
}

TEST_CASE("syn_received_late_ack_accepted_and_stops_timer") {
    Harness h(without_keepalive());
    h.listen(kPort);
    h.in(kIn4.syn(1000));
    h.at(kT0 + 1s);
    CHECK(h.tx().size() == 2);  // first SYN-ACK lost, retransmitted
    h.at(kT0 + 1500ms);
    h.in(kIn4.ack(1001, 1));
    CHECK(h.events().size() == 1);
    CHECK(h.tx() == pkts(kIn4.reversed().ack(1, 1001)));  // the pure ACK on accept, nothing else
    CHECK(h.stack.next_deadline() == std::nullopt);
    h.at(kT0 + 10s);
    CHECK(h.tx() == pkts());
}

TEST_CASE("syn_received_duplicate_syn_resends_syn_ack_at_once") {
    Harness h;
    h.listen(kPort);
    h.in(kIn4.syn(1000));
    CHECK(h.tx().size() == 1);
    h.advance(300ms);
    ft::Stats before = h.stats();
    h.in(kIn4.syn(1000));
    CHECK(h.tx() == pkts(kIn4.reversed().syn_ack(0, 1001)));
    CHECK(h.stats().syn_retransmits == before.syn_retransmits + 1);
    CHECK(h.stats().half_open_connections == 1);
    CHECK(h.events() == evs());
}

TEST_CASE("syn_received_rst_exact_removes_half_open") {
    Harness h;
    h.listen(kPort);
    h.in(kIn4.syn(1000));
    h.tx();
    h.in(kIn4.rst(1001));
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
    CHECK(h.stats().half_open_connections == 0);
    CHECK(h.stats().handshakes_failed == 1);
    CHECK(h.stack.next_deadline() == std::nullopt);
    h.in(kIn4.ack(1001, 1));  // gone: unknown tuple
    CHECK(h.tx() == pkts(kIn4.reversed().rst_ack(1, 1001)));
}

TEST_CASE("syn_received_rst_not_exact_dropped") {
    Harness h;
    h.listen(kPort);
    h.in(kIn4.syn(1000));
    h.tx();
    ft::Stats before = h.stats();
    SUBCASE("seq + 1") { h.in(kIn4.rst(1002)); }
    SUBCASE("the SYN's seq") { h.in(kIn4.rst(1000)); }
    SUBCASE("far away, with ACK") { h.in(kIn4.rst_ack(0x80001001, 1)); }
    CHECK(drop_delta(before, h.stats()) == "rst_not_exact+1");
    CHECK(h.tx() == pkts());
    CHECK(h.stats().half_open_connections == 1);
    h.in(kIn4.ack(1001, 1));
    CHECK(h.events().size() == 1);  // the handshake still completes
}

TEST_CASE("syn_received_bad_ack_dropped") {
    Harness h;
    h.listen(kPort);
    h.in(kIn4.syn(1000));
    h.tx();
    ft::Stats before = h.stats();
    SUBCASE("ack 2") { h.in(kIn4.ack(1001, 2)); }
    SUBCASE("ack 0") { h.in(kIn4.ack(1001, 0)); }
    CHECK(drop_delta(before, h.stats()) == "bad_ack+1");
    CHECK(h.events() == evs());
    CHECK(h.stats().half_open_connections == 1);
    h.in(kIn4.ack(1001, 1));
    CHECK(h.events().size() == 1);
}

TEST_CASE("syn_received_ack_with_data_accepted_then_delivered") {
    Harness h;
    h.listen(kPort);
    h.in(kIn4.syn(1000));
    h.tx();
    h.in(kIn4.data(1001, 1, "first"));
    // One reply, the pure ACK on accept, acknowledging the data too (the
    // fuzzer once found two identical ones here).
    CHECK(h.tx() == pkts(kIn4.reversed().ack(1, 1006)));
    Evs e = h.events();
    REQUIRE(e.size() == 2);
    CHECK(e == evs(ev_accepted(e[0].conn), ev_datagram(e[0].conn, "first")));
}

TEST_CASE("syn_received_data_far_ahead_gets_one_ack") {
    // Past the 128 MiB ack_every_bytes mark on the segment that completes the
    // handshake: still one reply (the fuzzer found two identical ACKs here).
    Harness h;
    h.listen(kPort);
    h.in(kIn4.syn(1000));
    h.tx();
    const uint32_t far = 1001 + 0x30000000;
    h.in(kIn4.data(far, 1, "hello!"));
    CHECK(h.tx() == pkts(kIn4.reversed().ack(1, far + 6)));
    Evs e = h.events();
    REQUIRE(e.size() == 2);
    CHECK(e == evs(ev_accepted(e[0].conn), ev_datagram(e[0].conn, "hello!")));
}

TEST_CASE("half_open_limit_refuses_syn") {
    ft::StackConfig cfg = base_config();
    cfg.max_half_open = 3;
    Harness h(cfg);
    h.listen(kPort);
    auto from = [](uint16_t port) { return Path{{kPeer4, port}, {kStack4, kPort}}; };
    for (uint16_t p = 40000; p < 40003; ++p) {
        h.in(from(p).syn(100));
        CHECK(h.tx() == pkts(from(p).reversed().syn_ack(0, 101)));
    }
    ft::Stats before = h.stats();
    h.in(from(40003).syn(100));
    CHECK(drop_delta(before, h.stats()) == "half_open_limit+1");
    CHECK(h.tx() == pkts());
    CHECK(h.stats().half_open_connections == 3);
    h.in(from(40000).ack(101, 1));  // one completes: room for one more
    CHECK(h.events().size() == 1);
    CHECK(h.tx() == pkts(from(40000).reversed().ack(1, 101)));
    h.in(from(40003).syn(100));
    CHECK(h.tx() == pkts(from(40003).reversed().syn_ack(0, 101)));
}

TEST_CASE("half_open_limit_counts_client_connects") {
    ft::StackConfig cfg = base_config();
    cfg.max_half_open = 2;
    Harness h(cfg);
    h.listen(kPort);
    start_client(h, kRemote4);
    start_client(h, kRemote6);
    ft::Stats before = h.stats();
    h.in(kIn4.syn(100));
    CHECK(drop_delta(before, h.stats()) == "half_open_limit+1");
    CHECK(h.tx() == pkts());
}

TEST_CASE("table_full_refuses_syn_and_connect") {
    ft::StackConfig cfg = base_config();
    cfg.max_connections = 2;
    Harness h(cfg);
    h.listen(kPort);
    establish_server(h, Path{{kPeer4, 40000}, {kStack4, kPort}}, 100);
    establish_server(h, Path{{kPeer4, 40001}, {kStack4, kPort}}, 100);
    ft::Stats before = h.stats();
    h.in(Path{{kPeer4, 40002}, {kStack4, kPort}}.syn(100));
    CHECK(drop_delta(before, h.stats()) == "table_full+1");
    CHECK(h.tx() == pkts());
    CHECK(h.stats().half_open_connections == 0);
    ft::Result<ft::ConnId> r = h.stack.connect(kRemote4, h.now);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == ft::Errc::table_full);
    CHECK(h.tx() == pkts());
}
