// Established connections: datagrams as single segments, sequence/ack tracking,
// ACK generation, RST handling (RFC 5961 §3), close, send errors, event hygiene.
#include <string>

#include "support.h"

using namespace tst;
using namespace std::chrono_literals;
using ft::CloseReason;
using ft::Errc;

namespace {

constexpr uint16_t kPort = 5555;
const Path kIn4{{kPeer4, 40000}, {kStack4, kPort}};
const Path kIn6{{kPeer6, 40000}, {kStack6, kPort}};
constexpr uint32_t kIrs = 1000;  // the peer's SYN seq in raw server tests: data starts at 1001

Errc send(Harness& h, ft::ConnId c, std::string_view text) {
    return h.stack.send(c, ft::ByteView(text.data(), text.size()), h.now);
}
Errc send(Harness& h, ft::ConnId c, const Bytes& b) {
    return h.stack.send(c, ft::ByteView(b.data(), b.size()), h.now);
}

// Server stack at 10.0.0.1 listening on 5555 with one connection from the peer.
struct ServerFixture {
    explicit ServerFixture(const ft::StackConfig& cfg = base_config(), uint32_t irs = kIrs,
                           const Path& in = kIn4)
        : h(cfg) {
        h.listen(kPort);
        c = establish_server(h, in, irs);
    }
    Harness h;
    ServerConn c;
};

// Two stacks back to back: the client (10.0.0.1) connects to the server (10.0.0.2:5555).
struct LinkFixture {
    LinkFixture() : client(base_config()), server(server_cfg()), link{client, server} {
        server.listen(kPort);
        ft::Result<ft::ConnId> r = client.stack.connect(ft::Endpoint{kPeer4, kPort}, client.now);
        REQUIRE(r.ok());
        cid = r.value();
        link.pump();
        REQUIRE(client.events() == evs(ev_connected(cid)));
        Evs e = server.events();
        REQUIRE(e.size() == 1);
        REQUIRE(e[0].type == ft::EventType::accepted);
        sid = e[0].conn;
    }
    static ft::StackConfig server_cfg() {
        ft::StackConfig c = base_config();
        c.local_v4 = kPeer4;
        c.seed = 99;
        return c;
    }
    Harness client, server;
    Link link;
    ft::ConnId cid, sid;
};

// The only packet queued, raw (REQUIRE: exactly one).
Bytes only_tx(Harness& h) {
    std::vector<Bytes> raw = h.tx_raw();
    REQUIRE(raw.size() == 1);
    return raw[0];
}

Seg decoded(const Bytes& b) { return decode(ft::ByteView(b.data(), b.size())); }

}  // namespace

// ---------------------------------------------------------------------------
// Datagrams
// ---------------------------------------------------------------------------

TEST_CASE("link_datagrams_both_ways_byte_exact") {
    LinkFixture f;
    Path c2s{f.client.stack.info(f.cid)->local, {kPeer4, kPort}};
    Path s2c = c2s.reversed();
    size_t max = f.client.stack.max_datagram(f.cid);
    REQUIRE(max == 1500 - 40);
    Bytes big(max);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7 + 3);

    // client > server: one segment per datagram, seq advancing by the length
    const std::vector<Bytes> up = {bytes("a"), bytes("bb"), big, bytes("ccc")};
    uint32_t seq = 1;
    for (const Bytes& d : up) {
        REQUIRE(send(f.client, f.cid, d) == Errc::ok);
        Bytes wire = only_tx(f.client);
        CHECK(wire == encode(c2s.data(seq, 1, d)));
        f.server.in_bytes(wire);
        CHECK(f.server.events() == evs(ev_datagram(f.sid, d)));
        CHECK(f.server.tx() == pkts());  // no per-segment ACK
        seq += static_cast<uint32_t>(d.size());
    }
    // server > client: acks what it received
    const std::vector<Bytes> down = {bytes("reply"), big};
    uint32_t sseq = 1;
    for (const Bytes& d : down) {
        REQUIRE(send(f.server, f.sid, d) == Errc::ok);
        Bytes wire = only_tx(f.server);
        CHECK(wire == encode(s2c.data(sseq, seq, d)));
        f.client.in_bytes(wire);
        CHECK(f.client.events() == evs(ev_datagram(f.cid, d)));
        sseq += static_cast<uint32_t>(d.size());
    }
    // and the client's next segment acks the server's data
    REQUIRE(send(f.client, f.cid, "z") == Errc::ok);
    CHECK(decoded(only_tx(f.client)) == c2s.data(seq, sseq, "z"));
    CHECK(f.client.stats().datagrams_out == up.size() + 1);
    CHECK(f.server.stats().datagrams_in == up.size());
}

TEST_CASE("out_of_order_segments_delivered_in_arrival_order") {
    LinkFixture f;
    std::vector<Bytes> wire;
    uint32_t total = 0;
    for (int i = 0; i < 10; ++i) {
        std::string d = "datagram-" + std::to_string(i) + std::string(static_cast<size_t>(i), '+');
        total += static_cast<uint32_t>(d.size());
        REQUIRE(send(f.client, f.cid, d) == Errc::ok);
        wire.push_back(only_tx(f.client));
    }
    Evs expected;
    for (int i = 9; i >= 0; --i) {
        f.server.in_bytes(wire[static_cast<size_t>(i)]);
        expected.list.push_back(
            ev_datagram(f.sid, "datagram-" + std::to_string(i) + std::string(static_cast<size_t>(i), '+')));
    }
    CHECK(f.server.events() == expected);
    // rcv_nxt is the highest seq end, not the last one to arrive
    REQUIRE(send(f.server, f.sid, "ack?") == Errc::ok);
    CHECK(decoded(only_tx(f.server)).ack == 1 + total);
}

TEST_CASE("duplicate_segment_delivered_twice") {
    ServerFixture f;
    Seg d = f.c.in.data(kIrs + 1, 1, "again");
    f.h.in(d);
    f.h.in(d);
    CHECK(f.h.events() == evs(ev_datagram(f.c.id, "again"), ev_datagram(f.c.id, "again")));
}

TEST_CASE("ack_tracks_highest_seq_end_across_wrap") {
    ServerFixture f(base_config(), 0xfffffff0);  // data starts at 0xfffffff1
    Harness& h = f.h;
    uint32_t snd = 1;
    auto our_ack = [&]() {  // the ack our next data segment carries
        REQUIRE(send(h, f.c.id, "?") == Errc::ok);
        Packets p = h.tx();
        REQUIRE(p.size() == 1);
        CHECK(p[0].seq == snd);
        ++snd;
        return p[0].ack;
    };
    CHECK(our_ack() == 0xfffffff1);
    h.in(f.c.in.data(0xfffffff1, 1, "8 bytes!"));
    CHECK(our_ack() == 0xfffffff9);
    h.in(f.c.in.data(0xfffffff9, 1, "sixteen bytes..."));  // crosses 2^32
    CHECK(our_ack() == 0x00000009);
    h.in(f.c.in.data(0xfffffff1, 1, "8 bytes!"));  // old: before the wrap
    CHECK(our_ack() == 0x00000009);
    h.in(f.c.in.data(0x00000100, 1, "gap!"));  // ahead, after a gap
    CHECK(our_ack() == 0x00000104);
    h.in(f.c.in.data(0x00000010, 1, "late"));  // behind again
    CHECK(our_ack() == 0x00000104);
    CHECK(h.events().size() == 5);  // all delivered
}

// ---------------------------------------------------------------------------
// ACK generation
// ---------------------------------------------------------------------------

TEST_CASE("idle_ack_sent_one_interval_after_first_unacked_data") {
    ServerFixture f(without_keepalive());
    Harness& h = f.h;
    h.at(kT0 + 10s);
    CHECK(h.stack.next_deadline() == std::nullopt);
    h.in(f.c.in.data(kIrs + 1, 1, "hello"));  // +10 s
    CHECK(h.tx() == pkts());
    CHECK(h.stack.next_deadline() == kT0 + 11s);
    h.at(kT0 + 11s - 1ns);
    CHECK(h.tx() == pkts());
    h.at(kT0 + 11s);
    CHECK(h.tx() == pkts(f.c.out.ack(1, kIrs + 6)));
    CHECK(h.stats().idle_acks_sent == 1);
    CHECK(h.stack.next_deadline() == std::nullopt);  // acknowledged: nothing more
}

TEST_CASE("idle_ack_timer_starts_at_first_unacked_data") {
    ServerFixture f;
    Harness& h = f.h;
    h.in(f.c.in.data(kIrs + 1, 1, "one"));  // +0
    h.at(kT0 + 600ms);
    h.in(f.c.in.data(kIrs + 4, 1, "two"));  // +0.6 s does not push the ACK back
    CHECK(h.stack.next_deadline() == kT0 + 1s);
    h.at(kT0 + 1s);
    CHECK(h.tx() == pkts(f.c.out.ack(1, kIrs + 7)));
}

TEST_CASE("idle_ack_not_sent_when_data_carried_the_ack") {
    ServerFixture f(without_keepalive());
    Harness& h = f.h;
    h.in(f.c.in.data(kIrs + 1, 1, "hello"));
    h.at(kT0 + 500ms);
    REQUIRE(send(h, f.c.id, "reply") == Errc::ok);
    CHECK(h.tx() == pkts(f.c.out.data(1, kIrs + 6, "reply")));
    CHECK(h.stack.next_deadline() == std::nullopt);
    CHECK(h.stats().idle_acks_sent == 0);
}

TEST_CASE("idle_ack_interval_configurable") {
    ft::StackConfig cfg = base_config();
    cfg.idle_ack_interval = 250ms;
    ServerFixture f(cfg);
    Harness& h = f.h;
    h.in(f.c.in.data(kIrs + 1, 1, "x"));
    CHECK(h.stack.next_deadline() == kT0 + 250ms);
    h.at(kT0 + 250ms - 1ns);
    CHECK(h.tx() == pkts());
    h.at(kT0 + 250ms);
    CHECK(h.tx() == pkts(f.c.out.ack(1, kIrs + 2)));
}

TEST_CASE("idle_ack_not_sent_for_stale_data") {
    ServerFixture f(without_keepalive());
    Harness& h = f.h;
    h.in(f.c.in.data(kIrs + 1, 1, "hello"));
    h.at(kT0 + 1s);
    CHECK(h.tx().size() == 1);  // the idle ACK
    h.in(f.c.in.data(kIrs + 1, 1, "hello"));  // a duplicate: rcv_nxt does not move
    CHECK(h.stack.next_deadline() == std::nullopt);
    CHECK(h.stats().idle_acks_sent == 1);
}

TEST_CASE("ack_every_bytes_sends_pure_ack_at_once") {
    ServerFixture f(without_keepalive());  // default ack_every_bytes = 128 MiB
    Harness& h = f.h;
    const uint32_t mib128 = 128u << 20;
    // last ACK sent = irs+1 (the SYN-ACK). Jump to exactly 128 MiB past it: not yet.
    uint32_t seq = kIrs + 1 + mib128 - 10;
    h.in(f.c.in.data(seq, 1, "0123456789"));
    CHECK(h.tx() == pkts());
    // one more byte: rcv_nxt - last_ack_sent = 128 MiB + 1 > 128 MiB
    h.in(f.c.in.data(seq + 10, 1, "!"));
    CHECK(h.tx() == pkts(f.c.out.ack(1, kIrs + 1 + mib128 + 1)));
    CHECK(h.stats().idle_acks_sent == 1);
    CHECK(h.stack.next_deadline() == std::nullopt);  // nothing left unacknowledged
    CHECK(h.events().size() == 2);
}

TEST_CASE("ack_every_bytes_counts_from_last_ack_sent") {
    ft::StackConfig cfg = base_config();
    cfg.ack_every_bytes = 1000;
    ServerFixture f(cfg);
    Harness& h = f.h;
    h.in(f.c.in.data(kIrs + 1, 1, Bytes(600, 'a')));
    CHECK(h.tx() == pkts());
    REQUIRE(send(h, f.c.id, "x") == Errc::ok);  // carries ack irs+601
    CHECK(h.tx().size() == 1);
    h.in(f.c.in.data(kIrs + 601, 1, Bytes(1000, 'b')));  // exactly 1000 past: not more
    CHECK(h.tx() == pkts());
    h.in(f.c.in.data(kIrs + 1601, 1, Bytes(1, 'c')));
    CHECK(h.tx() == pkts(f.c.out.ack(2, kIrs + 1602)));
}

// ---------------------------------------------------------------------------
// RST (RFC 5961 §3)
// ---------------------------------------------------------------------------

TEST_CASE("established_rst_exact_closes") {
    ServerFixture f;
    Harness& h = f.h;
    h.in(f.c.in.data(kIrs + 1, 1, "abc"));
    h.events();
    SUBCASE("RST") { h.in(f.c.in.rst(kIrs + 4)); }
    SUBCASE("RST|ACK") { h.in(f.c.in.rst_ack(kIrs + 4, 1)); }
    CHECK(h.events() == evs(ev_closed(f.c.id, CloseReason::peer_reset)));
    CHECK(h.tx() == pkts());
    CHECK(h.stats().rst_received == 1);
    CHECK(h.stats().open_connections == 0);
    CHECK_FALSE(h.stack.info(f.c.id).has_value());
    CHECK(send(h, f.c.id, "late") == Errc::stale_handle);
    CHECK(h.stack.next_deadline() == std::nullopt);
}

TEST_CASE("established_rst_in_window_gets_challenge_ack") {
    ServerFixture f;
    Harness& h = f.h;
    h.in(f.c.in.data(kIrs + 1, 1, "abc"));  // rcv_nxt = irs + 4
    REQUIRE(send(h, f.c.id, "hi") == Errc::ok);  // snd_nxt = 3
    h.tx();
    REQUIRE(h.events() == evs(ev_datagram(f.c.id, "abc")));
    uint32_t rcv_nxt = kIrs + 4;
    uint32_t seq = 0;
    SUBCASE("one past") { seq = rcv_nxt + 1; }
    SUBCASE("one before") { seq = rcv_nxt - 1; }
    SUBCASE("far ahead, inside 2^30") { seq = rcv_nxt + (1u << 30) - 1; }
    SUBCASE("far behind, inside 2^30") { seq = rcv_nxt - ((1u << 30) - 1); }
    CAPTURE(seq);
    ft::Stats before = h.stats();
    h.in(f.c.in.rst(seq));
    CHECK(h.tx() == pkts(f.c.out.ack(3, rcv_nxt)));
    CHECK(drop_delta(before, h.stats()) == "rst_not_exact+1");
    CHECK(h.stats().challenge_acks_sent == before.challenge_acks_sent + 1);
    CHECK(h.events() == evs());
    REQUIRE(h.stack.info(f.c.id).has_value());
    CHECK(h.stack.info(f.c.id)->state == ft::ConnState::established);
}

TEST_CASE("established_challenge_ack_answered_by_exact_rst_closes") {
    ServerFixture f;
    Harness& h = f.h;
    h.in(f.c.in.rst(kIrs + 500));  // the peer's RST, guessed wrong
    Packets challenge = h.tx();
    REQUIRE(challenge.size() == 1);
    h.in(f.c.in.rst(challenge[0].ack));  // a genuine peer answers with seq = that ack
    CHECK(h.events() == evs(ev_closed(f.c.id, CloseReason::peer_reset)));
}

TEST_CASE("established_rst_far_away_dropped") {
    ServerFixture f;
    Harness& h = f.h;
    uint32_t rcv_nxt = kIrs + 1;
    uint32_t seq = 0;
    SUBCASE("2^30 + 10 ahead") { seq = rcv_nxt + (1u << 30) + 10; }
    SUBCASE("2^30 + 10 behind") { seq = rcv_nxt - (1u << 30) - 10; }
    SUBCASE("2^31 away") { seq = rcv_nxt + (1u << 31); }
    CAPTURE(seq);
    ft::Stats before = h.stats();
    h.in(f.c.in.rst(seq));
    CHECK(drop_delta(before, h.stats()) == "rst_not_exact+1");
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
    CHECK(h.stats().challenge_acks_sent == 0);
    CHECK(h.stack.info(f.c.id).has_value());
}

TEST_CASE("established_rst_window_configurable") {
    ft::StackConfig cfg = base_config();
    cfg.rst_window = 100;
    ServerFixture f(cfg);
    f.h.in(f.c.in.rst(kIrs + 1 + 50));
    CHECK(f.h.tx().size() == 1);  // challenge
    f.h.in(f.c.in.rst(kIrs + 1 + 5000));
    CHECK(f.h.tx() == pkts());  // outside the window: silent
    CHECK(f.h.stats().dropped(ft::DropReason::rst_not_exact) == 2);
}

TEST_CASE("established_syn_gets_challenge_ack") {
    ServerFixture f;
    Harness& h = f.h;
    ft::Stats before = h.stats();
    h.in(f.c.in.syn(77777));  // a restarted peer, or a blind attacker
    CHECK(h.tx() == pkts(f.c.out.ack(1, kIrs + 1)));
    CHECK(drop_delta(before, h.stats()) == "unexpected_syn+1");
    CHECK(h.stats().challenge_acks_sent == before.challenge_acks_sent + 1);
    CHECK(h.events() == evs());
    CHECK(h.stack.info(f.c.id).has_value());
}

TEST_CASE("established_pure_ack_counted_without_event") {
    ServerFixture f;
    ft::Stats before = f.h.stats();
    f.h.in(f.c.in.ack(kIrs + 1, 1));
    CHECK(f.h.stats().pure_acks_in == before.pure_acks_in + 1);
    CHECK(f.h.stats().total_drops() == before.total_drops());
    CHECK(f.h.events() == evs());
    CHECK(f.h.tx() == pkts());
}

// ---------------------------------------------------------------------------
// close() and send() errors
// ---------------------------------------------------------------------------

TEST_CASE("close_sends_rst_with_snd_nxt") {
    ServerFixture f;
    Harness& h = f.h;
    for (std::string_view d : {"four", "five5", "abc"}) REQUIRE(send(h, f.c.id, d) == Errc::ok);
    h.tx();
    h.in(f.c.in.data(kIrs + 1, 1, "peer data"));
    h.events();
    REQUIRE(h.stack.close(f.c.id, h.now) == Errc::ok);
    CHECK(h.tx() == pkts(f.c.out.rst(1 + 12)));  // RST only, ack 0
    CHECK(h.events() == evs(ev_closed(f.c.id, CloseReason::local_close)));
    CHECK(h.stats().rst_sent == 1);
    CHECK(h.stats().open_connections == 0);
    CHECK(h.stack.next_deadline() == std::nullopt);
}

TEST_CASE("send_before_established_not_established") {
    Harness h;
    ClientConn c = start_client(h, ft::Endpoint{kPeer4, kPort});
    CHECK(send(h, c.id, "early") == Errc::not_established);
    CHECK(h.tx() == pkts());
}

TEST_CASE("send_too_big_at_mtu_minus_headers_plus_one") {
    uint32_t mtu = 1500;
    bool v6 = false;
    SUBCASE("v4, mtu 1500") { mtu = 1500; v6 = false; }
    SUBCASE("v6, mtu 1500") { mtu = 1500; v6 = true; }
    SUBCASE("v4, mtu 1280") { mtu = 1280; v6 = false; }
    SUBCASE("v6, mtu 1280") { mtu = 1280; v6 = true; }
    SUBCASE("v4, mtu 9000") { mtu = 9000; v6 = false; }
    CAPTURE(mtu);
    CAPTURE(v6);
    ft::StackConfig cfg = base_config();
    cfg.mtu = mtu;
    ServerFixture f(cfg, kIrs, v6 ? kIn6 : kIn4);
    size_t max = mtu - (v6 ? 60 : 40);
    CHECK(f.h.stack.max_datagram(f.c.id) == max);
    CHECK(send(f.h, f.c.id, Bytes(max + 1, 0x55)) == Errc::too_big);
    CHECK(f.h.tx() == pkts());
    CHECK(send(f.h, f.c.id, Bytes(max, 0x55)) == Errc::ok);
    std::vector<Bytes> raw = f.h.tx_raw();
    REQUIRE(raw.size() == 1);
    CHECK(raw[0].size() == mtu);
    CHECK(raw[0] == encode(f.c.out.data(1, kIrs + 1, Bytes(max, 0x55))));
}

TEST_CASE("send_empty_datagram_refused") {
    ServerFixture f;
    CHECK(f.h.stack.send(f.c.id, ft::ByteView(), f.h.now) == Errc::empty_datagram);
    CHECK(f.h.tx() == pkts());
}

TEST_CASE("stale_handle_after_close") {
    ServerFixture f;
    Harness& h = f.h;
    REQUIRE(h.stack.close(f.c.id, h.now) == Errc::ok);
    h.tx();
    h.events();
    CHECK(send(h, f.c.id, "late") == Errc::stale_handle);
    CHECK(h.stack.close(f.c.id, h.now) == Errc::stale_handle);
    CHECK(h.stack.set_user_data(f.c.id, 1) == Errc::stale_handle);
    CHECK_FALSE(h.stack.info(f.c.id).has_value());
    CHECK(h.tx() == pkts());
    // a new connection may reuse the slot, never the handle
    ServerConn again = establish_server(h, kIn4, 5000);
    CHECK(again.id != f.c.id);
    CHECK(send(h, f.c.id, "late") == Errc::stale_handle);
    CHECK(send(h, again.id, "new") == Errc::ok);
}

TEST_CASE("invalid_handle_refused") {
    Harness h;
    CHECK(send(h, ft::ConnId{}, "x") == Errc::stale_handle);
    CHECK(send(h, ft::ConnId{7, 0}, "x") == Errc::stale_handle);
    CHECK(h.stack.close(ft::ConnId{0, 12345}, h.now) == Errc::stale_handle);
    CHECK_FALSE(h.stack.info(ft::ConnId{UINT32_MAX - 1, 0}).has_value());
}

TEST_CASE("send_tx_queue_full") {
    ft::StackConfig cfg = base_config();
    cfg.tx_queue_capacity = 2;
    ServerFixture f(cfg);
    CHECK(send(f.h, f.c.id, "1") == Errc::ok);
    CHECK(send(f.h, f.c.id, "2") == Errc::ok);
    CHECK(f.h.stack.tx_full());
    CHECK(send(f.h, f.c.id, "3") == Errc::tx_queue_full);
    CHECK(f.h.tx() == pkts(f.c.out.data(1, kIrs + 1, "1"), f.c.out.data(2, kIrs + 1, "2")));
    CHECK(send(f.h, f.c.id, "3") == Errc::ok);  // seq not consumed by the refused one
    CHECK(f.h.tx() == pkts(f.c.out.data(3, kIrs + 1, "3")));
}

TEST_CASE("datagram_event_queue_full_drops_counted") {
    ft::StackConfig cfg = base_config();
    cfg.event_queue_capacity = 2;
    ServerFixture f(cfg);
    Harness& h = f.h;
    ft::Stats before = h.stats();
    h.in(f.c.in.data(kIrs + 1, 1, "a"));
    h.in(f.c.in.data(kIrs + 2, 1, "b"));
    h.in(f.c.in.data(kIrs + 3, 1, "c"));
    CHECK(drop_delta(before, h.stats()) == "event_queue_full+1");
    CHECK(h.events() == evs(ev_datagram(f.c.id, "a"), ev_datagram(f.c.id, "b")));
    h.in(f.c.in.data(kIrs + 4, 1, "d"));  // drained: room again
    CHECK(h.events() == evs(ev_datagram(f.c.id, "d")));
}

TEST_CASE("listen_twice_already_listening") {
    Harness h;
    h.listen(kPort);
    ft::Status st = h.stack.listen(kPort);
    CHECK(st.code() == Errc::already_listening);
    CHECK_FALSE(st.message().empty());
    CHECK(h.stack.listen(kPort + 1).code() == Errc::ok);
}

TEST_CASE("listen_port_zero_invalid_argument") {
    Harness h;
    CHECK(h.stack.listen(0).code() == Errc::invalid_argument);
}

TEST_CASE("unlisten_stops_accepting") {
    Harness h;
    CHECK(h.stack.unlisten(kPort).code() == Errc::not_listening);
    h.listen(kPort);
    ServerConn c = establish_server(h, kIn4, 100);
    REQUIRE(h.stack.unlisten(kPort).code() == Errc::ok);
    Path other{{kPeer4, 40001}, {kStack4, kPort}};
    h.in(other.syn(100));
    CHECK(h.tx() == pkts(other.reversed().rst_ack(0, 101)));
    CHECK(send(h, c.id, "still open") == Errc::ok);  // existing connections stay
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

TEST_CASE("no_event_for_connection_after_close") {
    ServerFixture f;
    Harness& h = f.h;
    ServerConn other = establish_server(h, Path{{kPeer4, 40001}, {kStack4, kPort}}, 100);
    h.in(f.c.in.data(kIrs + 1, 1, "one"));
    h.in(other.in.data(101, 1, "other"));
    h.in(f.c.in.data(kIrs + 4, 1, "two"));
    h.in(f.c.in.data(kIrs + 7, 1, "three"));
    REQUIRE(h.stack.close(f.c.id, h.now) == Errc::ok);  // before draining
    CHECK(h.events() == evs(ev_datagram(other.id, "other"), ev_closed(f.c.id, CloseReason::local_close)));
}

TEST_CASE("no_event_after_connect_failed") {
    Harness h;
    ClientConn c = start_client(h, ft::Endpoint{kPeer4, kPort});
    REQUIRE(h.stack.close(c.id, h.now) == Errc::ok);
    h.at(kT0 + 10s);  // retransmission and timeout times pass
    CHECK(h.events() == evs(ev_connect_failed(c.id, CloseReason::local_close)));
    CHECK(h.tx().size() == 1);  // just the RST
}

TEST_CASE("user_data_carried_in_events") {
    ServerFixture f;
    Harness& h = f.h;
    REQUIRE(h.stack.set_user_data(f.c.id, 0xfeedf00d) == Errc::ok);
    CHECK(h.stack.info(f.c.id)->user_data == 0xfeedf00d);
    h.in(f.c.in.data(kIrs + 1, 1, "x"));
    h.in(f.c.in.rst(kIrs + 2));
    Ev d = ev_datagram(f.c.id, "x");
    d.user_data = 0xfeedf00d;
    Ev closed = ev_closed(f.c.id, CloseReason::peer_reset);
    closed.user_data = 0xfeedf00d;
    CHECK(h.events() == evs(d, closed));
}

TEST_CASE("stats_count_packets_and_bytes") {
    ServerFixture f;
    Harness& h = f.h;
    ft::Stats before = h.stats();
    Bytes in = encode(f.c.in.data(kIrs + 1, 1, "12345"));
    h.in_bytes(in);
    REQUIRE(send(h, f.c.id, "abc") == Errc::ok);
    const ft::Stats& s = h.stats();
    CHECK(s.packets_in - before.packets_in == 1);
    CHECK(s.bytes_in - before.bytes_in == in.size());
    CHECK(s.packets_out - before.packets_out == 1);
    CHECK(s.bytes_out - before.bytes_out == 40 + 3);
    CHECK(s.datagrams_in - before.datagrams_in == 1);
    CHECK(s.datagram_bytes_in - before.datagram_bytes_in == 5);
    CHECK(s.datagrams_out - before.datagrams_out == 1);
    CHECK(s.datagram_bytes_out - before.datagram_bytes_out == 3);
}

TEST_CASE("tx_packets_have_writable_headroom") {
    ServerFixture f;
    REQUIRE(send(f.h, f.c.id, "payload") == Errc::ok);
    REQUIRE(f.h.stack.tx_count() == 1);
    uint8_t* p = f.h.stack.tx_packet_mutable(0);
    CHECK(p == f.h.stack.tx_packet(0).data);
    for (size_t i = 1; i <= ft::kTxHeadroom; ++i) p[-static_cast<long>(i)] = 0xee;  // ASan checks
    CHECK(decoded(Bytes(f.h.stack.tx_packet(0).begin(), f.h.stack.tx_packet(0).end())) ==
          f.c.out.data(1, kIrs + 1, "payload"));
}
