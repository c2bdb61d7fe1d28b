// Segments for unknown 4-tuples: exactly one RST|ACK each (RFC 9293 §3.10.7.1),
// never an RST in reply to an RST, and replies rate-limited by a token bucket.
#include "support.h"

using namespace tst;
using namespace std::chrono_literals;

namespace {

constexpr uint16_t kPort = 5555;
const Path kIn4{{kPeer4, 40001}, {kStack4, kPort}};
const Path kIn6{{kPeer6, 40001}, {kStack6, kPort}};

Harness listening(uint32_t reply_rate = 1000) {
    ft::StackConfig c = base_config();
    c.reply_rate_per_sec = reply_rate;
    Harness h(c);
    h.listen(kPort);
    return h;
}

}  // namespace

TEST_CASE("unknown_data_answered_by_one_rst_ack") {
    Harness h = listening();
    Path in = kIn4;
    SUBCASE("v4") { in = kIn4; }
    SUBCASE("v6") { in = kIn6; }
    ft::Stats before = h.stats();
    h.in(in.data(777, 888, "abc"));
    // seq = its ack, ack = its seq + length
    CHECK(h.tx() == pkts(in.reversed().rst_ack(888, 780)));
    CHECK(drop_delta(before, h.stats()) == "no_listener+1");
    CHECK(h.events() == evs());
}

TEST_CASE("unknown_pure_ack_answered_with_its_ack_as_seq") {
    Harness h = listening();
    h.in(kIn4.ack(0xfffffff0, 0x80000000));
    CHECK(h.tx() == pkts(kIn4.reversed().rst_ack(0x80000000, 0xfffffff0)));
}

TEST_CASE("unknown_fin_counts_in_rst_ack_number") {
    Harness h = listening();
    h.in(kIn4.seg(kFin | kAck, 500, 600, bytes("xy")));
    CHECK(h.tx() == pkts(kIn4.reversed().rst_ack(600, 503)));  // 500 + 2 + FIN
}

TEST_CASE("unknown_segment_without_ack_answered_with_seq_zero") {
    Harness h = listening();
    h.in(kIn4.seg(kFin, 0xffffffff, 12345, bytes("hello")));  // the ack field is not valid
    CHECK(h.tx() == pkts(kIn4.reversed().rst_ack(0, 5)));     // wraps: 0xffffffff + 5 + FIN
}

TEST_CASE("syn_to_closed_port_answered_with_rst_ack") {
    Harness h = listening();
    Path in{kIn4.src, {kStack4, 7777}};
    ft::Stats before = h.stats();
    h.in(in.syn(1000));
    CHECK(h.tx() == pkts(in.reversed().rst_ack(0, 1001)));
    CHECK(drop_delta(before, h.stats()) == "no_listener+1");
    CHECK(h.stats().half_open_connections == 0);
}

TEST_CASE("syn_without_any_listener_answered_with_rst_ack") {
    Harness h;  // listens nowhere
    Path in{{kPeer6, 1234}, {kStack6, 80}};
    h.in(in.syn(0xffffffff));
    CHECK(h.tx() == pkts(in.reversed().rst_ack(0, 0)));  // 0xffffffff + SYN wraps to 0
}

TEST_CASE("unknown_rst_never_answered") {
    Harness h = listening();
    ft::Stats before = h.stats();
    h.in(kIn4.rst(777));
    h.in(kIn4.rst_ack(777, 888));
    h.in(kIn6.rst(1));
    h.in(kIn4.seg(kRst, 5, 0, bytes("rst with data")));
    CHECK(h.tx() == pkts());
    CHECK(drop_delta(before, h.stats()) == "unknown_rst+4");
    CHECK(h.events() == evs());
}

TEST_CASE("unknown_segments_each_answered_exactly_once") {
    Harness h = listening();
    for (uint32_t i = 0; i < 40; ++i) {
        CAPTURE(i);
        bool v6 = i % 2;
        Path in{{v6 ? kPeer6 : kPeer4, static_cast<uint16_t>(20000 + i * 7)},
                {v6 ? kStack6 : kStack4, static_cast<uint16_t>(i % 3 ? kPort : 9000 + i)}};
        uint32_t seq = 0x9e3779b9u * (i + 1), ack = 0x7f4a7c15u * (i + 3);
        std::string payload(i % 5, 'p');
        h.in(in.data(seq, ack, payload));
        CHECK(h.tx() == pkts(in.reversed().rst_ack(ack, seq + static_cast<uint32_t>(payload.size()))));
    }
    CHECK(h.stats().dropped(ft::DropReason::no_listener) == 40);
}

TEST_CASE("unknown_replies_rate_limited_by_token_bucket") {
    Harness h = listening(5);  // 5 per second, burst 5
    auto burst = [&](int n) {
        for (int i = 0; i < n; ++i) h.in(kIn4.data(100 + static_cast<uint32_t>(i), 7, "x"));
        return h.tx().size();
    };
    // +0: the burst allowance, then silence
    ft::Stats before = h.stats();
    CHECK(burst(12) == 5);
    CHECK(h.stats().dropped(ft::DropReason::reply_rate_limited) -
              before.dropped(ft::DropReason::reply_rate_limited) == 7);
    // +1 s: five more tokens
    h.advance(1s);
    before = h.stats();
    CHECK(burst(12) == 5);
    CHECK(h.stats().dropped(ft::DropReason::reply_rate_limited) -
              before.dropped(ft::DropReason::reply_rate_limited) == 7);
    // +200 ms: one token (rate 5/s)
    h.advance(200ms);
    CHECK(burst(3) == 1);
    // +10 s idle: the bucket holds at most the burst size
    h.advance(10s);
    CHECK(burst(20) == 5);
}

TEST_CASE("rst_replies_never_exceed_rate_even_for_rsts") {
    // RSTs to unknown tuples are not answered and spend no tokens.
    Harness h = listening(2);
    for (int i = 0; i < 10; ++i) h.in(kIn4.rst(static_cast<uint32_t>(i)));
    CHECK(h.tx() == pkts());
    h.in(kIn4.data(1, 2, "x"));
    h.in(kIn4.data(5, 2, "y"));
    CHECK(h.tx().size() == 2);
    CHECK(h.stats().dropped(ft::DropReason::reply_rate_limited) == 0);
}

TEST_CASE("challenge_acks_rate_limited") {
    Harness h = listening(3);
    ServerConn c = establish_server(h, Path{{kPeer4, 40000}, {kStack4, kPort}}, 1000);
    ft::Stats before = h.stats();
    for (uint32_t i = 0; i < 5; ++i) h.in(c.in.rst(1001 + 100 + i));  // in window, not exact
    CHECK(h.tx() == pkts(c.out.ack(1, 1001), c.out.ack(1, 1001), c.out.ack(1, 1001)));
    CHECK(drop_delta(before, h.stats()) == "rst_not_exact+5 reply_rate_limited+2");
    CHECK(h.stats().challenge_acks_sent - before.challenge_acks_sent == 3);
    CHECK(h.events() == evs());
    CHECK(h.stack.info(c.id).has_value());
}
