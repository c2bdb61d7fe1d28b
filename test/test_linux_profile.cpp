// The linux_tcp wire profile: SYN fields, ISNs, retransmission schedule,
// timestamps, ACK cadence, the peer's window. Expected values come from the
// kernel's source and a 6.18 capture (README, "Wire format"), not from the emitter.
#include <set>

#include "support.h"

using namespace tst;
using namespace std::chrono_literals;

namespace {

ft::StackConfig linux_config() {
    ft::StackConfig c = base_config();
    c.profile = ft::Profile::linux_tcp;
    c.linux_window_scale = 7;
    return c;
}

const ft::Endpoint kServer = ep("10.0.0.2", 4567);

uint32_t ts_val(const Seg& s) {  // TSval of NOP NOP TS (12 bytes) or of a SYN's options; 0 if none
    for (size_t i = 0; i + 10 <= s.options.size();) {
        if (s.options[i] == 1) { ++i; continue; }
        if (s.options[i] == 8) return be32(&s.options[i + 2]);
        if (i + 1 >= s.options.size() || s.options[i + 1] < 2) break;
        i += s.options[i + 1];
    }
    return 0;
}
uint32_t ts_ecr(const Seg& s) {
    for (size_t i = 0; i + 10 <= s.options.size();) {
        if (s.options[i] == 1) { ++i; continue; }
        if (s.options[i] == 8) return be32(&s.options[i + 6]);
        if (i + 1 >= s.options.size() || s.options[i + 1] < 2) break;
        i += s.options[i + 1];
    }
    return 0;
}

Bytes ts_option(uint32_t val, uint32_t ecr) {
    Bytes o{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0};
    put32(&o[4], val);
    put32(&o[8], ecr);
    return o;
}

// A Linux peer's SYN: MSS 1460, SACK-permitted, TS, NOP, WS `ws` (or no WS).
Seg linux_syn(const Path& p, uint32_t seq, uint16_t window, int ws, uint32_t tsval = 100) {
    Seg s = p.seg(kSyn, seq, 0);
    s.window = window;
    s.options = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0};
    put32(&s.options[8], tsval);
    if (ws >= 0) {
        s.options.insert(s.options.end(), {1, 3, 3, static_cast<uint8_t>(ws)});
    } else {
        s.options.insert(s.options.end(), {1, 1, 1, 1});
    }
    return s;
}

struct LinuxServer {
    ft::ConnId id;
    Path in, out;
    uint32_t iss = 0;
};

// A Linux peer connects to the (linux-style answering) stack: SYN(1000) with
// `window`/`ws`, the stack's SYN-ACK, the peer's ACK with TSval 101.
LinuxServer accept_linux_peer(Harness& h, uint16_t window, int ws, uint32_t ts0 = 100) {
    h.listen(5555);
    LinuxServer c;
    c.in = Path{ep("10.0.0.2", 40000), ep("10.0.0.1", 5555)};
    c.out = c.in.reversed();
    h.in(linux_syn(c.in, 1000, window, ws, ts0));
    Packets sa = h.tx();
    REQUIRE(sa.size() == 1);
    REQUIRE(flag_string(sa[0].flags) == "S.");
    c.iss = sa[0].seq;
    Seg ack = c.in.ack(1001, c.iss + 1);
    ack.window = window;
    ack.options = ts_option(ts0 + 1, ts_val(sa[0]));
    h.in(ack);
    Evs e = h.events();
    REQUIRE(e.size() == 1);
    REQUIRE(e[0].type == ft::EventType::accepted);
    c.id = e[0].conn;
    return c;
}

Seg linux_data(const LinuxServer& c, uint32_t seq, uint32_t tsval, size_t len) {
    Seg d = c.in.data(seq, c.iss + 1, Bytes(len, 0x61));
    d.flags |= kPsh;
    d.window = 502;
    d.options = ts_option(tsval, 0);
    return d;
}

}  // namespace

TEST_CASE("linux_client_syn_matches_kernel_fields") {
    Harness h(linux_config());
    REQUIRE(h.stack.connect(kServer, h.now));
    Packets out = h.tx();
    REQUIRE(out.size() == 1);
    const Seg& syn = out[0];
    CHECK(flag_string(syn.flags) == "S");
    CHECK(syn.window == 64240);  // 44 x 1460, as the kernel's SYN on a 1500-byte MTU
    CHECK(syn.ttl == 64);
    CHECK(syn.frag == 0x4000);  // DF
    CHECK(syn.ip_id != 0);      // the socket's random inet_id
    CHECK(syn.seq != 0);
    // mss 1460, sackOK, TS val ecr 0, nop, wscale 7: tcp_options_write's order.
    Bytes want{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7};
    put32(&want[8], ts_val(syn));
    CHECK(syn.options == want);
    CHECK(ts_val(syn) != 0);
}

TEST_CASE("linux_syn_retransmissions_double_from_one_second") {
    Harness h(linux_config());
    REQUIRE(h.stack.connect(kServer, h.now));
    REQUIRE(h.tx().size() == 1);
    const Duration gaps[] = {1s, 2s, 4s, 8s, 16s};
    TimePoint t = kT0;
    for (Duration g : gaps) {
        CAPTURE(g.count());
        h.at(t + g - 1ms);
        CHECK(h.tx().empty());
        t += g;
        h.at(t);
        Packets p = h.tx();
        REQUIRE(p.size() == 1);
        CHECK(flag_string(p[0].flags) == "S");
    }
    h.at(t + 32s);  // 6 attempts: failure one (doubled) interval after the last
    CHECK(h.events() == evs(ev_connect_failed(ft::ConnId{0, 1}, ft::CloseReason::handshake_timeout)));
}

// RFC 6528 ISNs: F(4-tuple, key) + a 64 ns clock. Across different 4-tuples
// they are 32-bit keyed-hash values: unpredictable, and as likely to collide
// as any random 32-bit numbers (a collision between different tuples harms
// nothing). On one 4-tuple, reused 100 000 times, they never repeat.
std::vector<uint32_t> client_isns(ft::Stack& s, size_t n, TimePoint& now) {
    std::vector<uint32_t> isns;
    isns.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        const ft::Endpoint remote{kPeer4, static_cast<uint16_t>(1000 + i % 50000)};
        ft::Result<ft::ConnId> c = s.connect(remote, now);
        REQUIRE(c);
        REQUIRE(s.tx_count() >= 1);
        isns.push_back(be32(s.tx_packet(0).data + 20 + 4));
        REQUIRE(s.close(*c, now) == ft::Errc::ok);
        s.tx_clear();
        ft::Event ev;
        while (s.poll_event(ev)) {
        }
        now += 1us;
    }
    return isns;
}

TEST_CASE("linux_isn_unpredictable_across_tuples_never_repeating_on_one") {
    ft::StackConfig cfg = linux_config();
    cfg.max_connections = 64;
    cfg.max_half_open = 64;
    ft::Stack s(cfg);
    TimePoint now = kT0;
    const size_t n = 100000;
    std::vector<uint32_t> isns = client_isns(s, n, now);
    std::set<uint32_t> seen(isns.begin(), isns.end());
    // Birthday bound for 100 000 random 32-bit values: 1.16 collisions expected.
    CHECK(n - seen.size() <= 6);
    // Not predictable from the previous one: the difference of successive
    // ISNs is spread evenly (16 buckets of its top 4 bits, each within 10% of
    // n/16), where a counter or a clock alone would put all in one bucket.
    std::array<size_t, 16> buckets{};
    for (size_t i = 1; i < n; ++i) ++buckets[(isns[i] - isns[i - 1]) >> 28];
    for (size_t b = 0; b < 16; ++b) {
        CAPTURE(b);
        CHECK(buckets[b] > (n / 16) * 9 / 10);
        CHECK(buckets[b] < (n / 16) * 11 / 10);
    }
}

TEST_CASE("linux_isn_one_tuple_100000_times_never_repeats") {
    // The same peer SYNs from the same port 100 000 times, 1 us apart; each
    // half-open connection is reset (exact RST) before the next SYN.
    Harness h(linux_config());
    h.listen(5555);
    const Path in{ep("10.0.0.2", 40000), ep("10.0.0.1", 5555)};
    const Bytes syn = encode(linux_syn(in, 1000, 64240, 7));
    const Bytes rst = encode(in.rst(1001));
    const size_t n = 100000;
    std::vector<uint32_t> isns;
    isns.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        h.stack.on_packet(ft::ByteView(syn.data(), syn.size()), h.now);
        REQUIRE(h.stack.tx_count() == 1);
        isns.push_back(be32(h.stack.tx_packet(0).data + 20 + 4));
        h.stack.tx_clear();
        h.stack.on_packet(ft::ByteView(rst.data(), rst.size()), h.now);
        h.now += 1us;
    }
    std::set<uint32_t> seen(isns.begin(), isns.end());
    CHECK(seen.size() == n);
    // 1 us apart: the 64 ns clock moves the ISN on by 15 or 16 each time.
    size_t bad_steps = 0;
    for (size_t i = 1; i < n; ++i) {
        const uint32_t step = isns[i] - isns[i - 1];
        if (step < 15 || step > 16) ++bad_steps;
    }
    CHECK(bad_steps == 0);
}

TEST_CASE("linux_server_answers_linux_syn_like_the_kernel") {
    Harness h(base_config());  // a phantun-profile server: the client's style wins
    h.listen(5555);
    Path in{ep("10.0.0.2", 40000), ep("10.0.0.1", 5555)};
    h.in(linux_syn(in, 1000, 64240, 10));
    Packets sa = h.tx();
    REQUIRE(sa.size() == 1);
    CHECK(sa[0].ack == 1001);
    CHECK(sa[0].window == 65160);  // 45 x 1448: MSS less the timestamp option
    CHECK(sa[0].ip_id == 0);       // from the request socket
    Bytes want{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 100, 1, 3, 3, 7};
    put32(&want[8], ts_val(sa[0]));
    CHECK(sa[0].options == want);
}

TEST_CASE("linux_timestamps_echo_across_the_wrap_and_count_milliseconds") {
    Harness h(linux_config());
    LinuxServer c = accept_linux_peer(h, 502, 7, 0xffffff00u);
    // The peer's clock wraps between two segments: the later TSval is newer
    // in serial arithmetic, so it is the one echoed.
    h.in(linux_data(c, 1001, 0xfffffff0u, 1400));
    h.at(h.now);
    Packets a1 = h.tx();
    REQUIRE(a1.size() == 1);
    CHECK(ts_ecr(a1[0]) == 0xfffffff0u);
    h.advance(1500ms);
    h.in(linux_data(c, 2401, 0x00000010u, 1400));
    h.at(h.now);
    Packets a2 = h.tx();
    REQUIRE(a2.size() == 1);
    CHECK(ts_ecr(a2[0]) == 0x00000010u);
    // Our own TSval is a millisecond clock: 1500 ms later, 1500 more (mod 2^32).
    CHECK(static_cast<uint32_t>(ts_val(a2[0]) - ts_val(a1[0])) == 1500u);
    // An older TSval (before the wrap) does not replace the newer one.
    h.advance(10ms);
    h.in(linux_data(c, 3801, 0xffffff00u, 1400));
    h.at(h.now);
    Packets a3 = h.tx();
    REQUIRE(a3.size() == 1);
    CHECK(ts_ecr(a3[0]) == 0x00000010u);
}

TEST_CASE("linux_ack_cadence_quickacks_then_every_second_segment_or_40ms") {
    Harness h(linux_config());
    LinuxServer c = accept_linux_peer(h, 502, 7);
    CHECK(h.tx().empty());  // the kernel sends nothing when the handshake completes
    uint32_t seq = 1001;
    // +0 < 16 x P. 1400: quick-ACK mode, each one ACKed at the end of its batch.
    for (int i = 0; i < 16; ++i) {
        h.in(linux_data(c, seq, 200 + i, 1400));
        seq += 1400;
        h.at(h.now);
        Packets a = h.tx();
        REQUIRE(a.size() == 1);
        CHECK(a[0].ack == seq);
        CHECK(a[0].payload.empty());
        h.advance(1ms);
    }
    // One full-sized segment: no ACK now, one after the 40 ms delayed-ACK time.
    h.in(linux_data(c, seq, 300, 1400));
    seq += 1400;
    h.at(h.now);
    CHECK(h.tx().empty());
    h.advance(39ms);
    CHECK(h.tx().empty());
    h.advance(1ms);
    Packets d = h.tx();
    REQUIRE(d.size() == 1);
    CHECK(d[0].ack == seq);
    // Two full-sized segments: ACKed at once (more than one rcv_mss unacked).
    h.in(linux_data(c, seq, 400, 1400));
    h.in(linux_data(c, seq + 1400, 401, 1400));
    seq += 2800;
    h.at(h.now);
    Packets two = h.tx();
    REQUIRE(two.size() == 1);
    CHECK(two[0].ack == seq);
    // Ten segments in one input batch: one ACK for all of them (as with GRO).
    for (int i = 0; i < 10; ++i) {
        h.in(linux_data(c, seq, 500, 1400));
        seq += 1400;
    }
    h.at(h.now);
    Packets ten = h.tx();
    REQUIRE(ten.size() == 1);
    CHECK(ten[0].ack == seq);
    // The advertised window grows as data arrives (tcp_grow_window), never shrinks.
    const uint32_t window_bytes = uint32_t{ten[0].window} << 7;
    CHECK(window_bytes > 65160u);
    CHECK(ten[0].window >= two[0].window);
}

TEST_CASE("linux_sender_never_exceeds_the_peer_window") {
    Harness h(linux_config());
    // No window scale: the peer's window is 3000 bytes, exactly.
    LinuxServer c = accept_linux_peer(h, 3000, -1);
    Bytes d(1400, 0x62);
    ft::ByteView v(d.data(), d.size());
    CHECK(h.stack.send(c.id, v, h.now) == ft::Errc::ok);            // 1400
    CHECK(h.stack.send(c.id, v, h.now) == ft::Errc::ok);            // 2800
    CHECK(h.stack.send(c.id, v, h.now) == ft::Errc::window_full);   // 4200 > 3000: dropped
    CHECK(h.stats().window_full_drops == 1);
    CHECK(h.tx().size() == 2);
    // The peer acknowledges 2800 bytes and offers 3000 again: room for two more.
    Seg ack = c.in.ack(1001, c.iss + 1 + 2800);
    ack.window = 3000;
    ack.options = ts_option(102, 0);
    h.in(ack);
    CHECK(h.stack.send(c.id, v, h.now) == ft::Errc::ok);
    CHECK(h.stack.send(c.id, v, h.now) == ft::Errc::ok);
    CHECK(h.stack.send(c.id, v, h.now) == ft::Errc::window_full);
    // Every segment sent ends inside the window the peer advertised.
    Packets sent = h.tx();
    REQUIRE(sent.size() == 2);
    for (const Seg& s : sent.segs) {
        const int32_t past_edge = static_cast<int32_t>(s.seq + static_cast<uint32_t>(s.payload.size()) -
                                                       (c.iss + 1 + 2800 + 3000));
        CHECK(past_edge <= 0);
        CHECK(flag_string(s.flags) == "P.");
        CHECK(s.options.size() == 12);
    }
    CHECK(h.stack.max_datagram(c.id) == 1500 - 20 - 20 - 12);
}

TEST_CASE("linux_rst_to_unknown_segment_like_tcp_v4_send_reset") {
    Harness h(linux_config());
    Path in{ep("10.0.0.2", 40000), ep("10.0.0.1", 5555)};
    h.in(in.ack(100, 5000));
    Packets r = h.tx();
    REQUIRE(r.size() == 1);
    CHECK(flag_string(r[0].flags) == "R");
    CHECK(r[0].seq == 5000);
    CHECK(r[0].window == 0);
    CHECK(r[0].options.empty());
    h.in(linux_syn(in, 77, 64240, 7));  // nothing listens on 5555
    Packets r2 = h.tx();
    REQUIRE(r2.size() == 1);
    CHECK(flag_string(r2[0].flags) == "R.");
    CHECK(r2[0].seq == 0);
    CHECK(r2[0].ack == 78);
}

// Keepalive on a linux_tcp connection: the peer's probe (seq RCV.NXT - 1, no
// payload) is answered like every linux segment (timestamp option, scaled
// window, the next IP ID), echoing the last acceptable TSval, not the
// probe's; the answer ACKs pending data, so no delayed ACK follows; our own
// probe (seq SND.UNA - 1) carries the option too.
TEST_CASE("linux_keepalive_probes_and_answers_carry_the_profile_fields") {
    Harness h(linux_config());
    LinuxServer c = accept_linux_peer(h, 502, 7);
    uint32_t seq = 1001;
    for (int i = 0; i < 16; ++i) {  // use up quick-ACK mode
        h.in(linux_data(c, seq, 200, 1400));
        seq += 1400;
        h.at(h.now);
        REQUIRE(h.tx().size() == 1);
    }
    // One full-sized segment: its ACK is delayed (40 ms) ...
    h.in(linux_data(c, seq, 300, 1400));
    seq += 1400;
    h.at(h.now);
    CHECK(h.tx().empty());
    const ft::Stats before = h.stats();
    // ... when the peer's probe arrives with a newer TSval.
    h.advance(10ms);
    Seg probe = c.in.ack(seq - 1, c.iss + 1);
    probe.window = 502;
    probe.options = ts_option(9999, 0);
    h.in(probe);
    h.at(h.now);
    Packets answer = h.tx();
    REQUIRE(answer.size() == 1);
    CHECK(flag_string(answer[0].flags) == ".");
    CHECK(answer[0].seq == c.iss + 1);
    CHECK(answer[0].ack == seq);
    CHECK(answer[0].payload.empty());
    CHECK(answer[0].options.size() == 12);
    CHECK(ts_ecr(answer[0]) == 300u);
    CHECK((uint32_t{answer[0].window} << 7) > 65160u);  // the grown window, scaled by 7
    CHECK(h.stats().keepalive_answers_sent == before.keepalive_answers_sent + 1);
    // The answer acknowledged the delayed segment: no second ACK at 40 ms.
    h.advance(50ms);
    CHECK(h.tx().empty());
    // The cadence goes on: one more full-sized segment is again delayed 40 ms.
    h.in(linux_data(c, seq, 301, 1400));
    seq += 1400;
    h.at(h.now);
    CHECK(h.tx().empty());
    h.advance(40ms);
    Packets d = h.tx();
    REQUIRE(d.size() == 1);
    CHECK(d[0].ack == seq);
    CHECK(ts_ecr(d[0]) == 301u);
    CHECK(static_cast<uint16_t>(d[0].ip_id - answer[0].ip_id) == 1);
    // Silence: our probe, seq SND.UNA - 1, no payload, timestamps on, next IP ID.
    h.advance(10s);
    Packets ours = h.tx();
    REQUIRE(ours.size() == 1);
    CHECK(flag_string(ours[0].flags) == ".");
    CHECK(ours[0].seq == c.iss);
    CHECK(ours[0].ack == seq);
    CHECK(ours[0].payload.empty());
    CHECK(ours[0].options.size() == 12);
    CHECK(ts_ecr(ours[0]) == 301u);
    CHECK(ours[0].window == d[0].window);
    CHECK(static_cast<uint16_t>(ours[0].ip_id - d[0].ip_id) == 1);
    CHECK(static_cast<uint32_t>(ts_val(ours[0]) - ts_val(d[0])) == 10000u);
    CHECK(h.stats().keepalive_probes_sent == before.keepalive_probes_sent + 1);
    // A probe with everything acknowledged: still not a TSval to echo.
    h.advance(1s);
    Seg probe2 = c.in.ack(seq - 1, c.iss + 1);
    probe2.window = 502;
    probe2.options = ts_option(20000, 0);
    h.in(probe2);
    h.at(h.now);
    Packets answer2 = h.tx();
    REQUIRE(answer2.size() == 1);
    CHECK(answer2[0].ack == seq);
    CHECK(ts_ecr(answer2[0]) == 301u);
}
