// Liveness: keepalive probes, their answers and peer_dead (faketcp.h,
// "Liveness"), as fake-clock timelines. Defaults: interval 5 s, 3 probes, so
// D = 20 s; the accepting side runs a quarter interval (1.25 s) later.
#include <string>

#include "support.h"

using namespace tst;
using namespace std::chrono_literals;
using ft::CloseReason;
using ft::Errc;

namespace {

constexpr uint16_t kPort = 5555;
const ft::Endpoint kRemote{kPeer4, kPort};
const Path kIn4{{kPeer4, 40000}, {kStack4, kPort}};
constexpr uint32_t kIrs = 7000;  // the peer's ISN: its data starts at 7001

Errc send(Harness& h, ft::ConnId c, std::string_view text) {
    return h.stack.send(c, ft::ByteView(text.data(), text.size()), h.now);
}

// A client connection established at kT0 (our ISN 0: SND.UNA 1, probe seq 0).
struct ClientFixture {
    explicit ClientFixture(const ft::StackConfig& cfg = base_config()) : h(cfg) {
        c = establish_client(h, kRemote, kIrs);
    }
    Harness h;
    ClientConn c;
    // The probe with SND.UNA = `una`, acknowledging the peer's data up to `rcv`.
    Seg probe(uint32_t una = 1, uint32_t rcv = kIrs + 1) const { return c.out.ack(una - 1, rcv); }
    // The peer's answer: a pure ACK at its SND.NXT.
    Seg answer(uint32_t peer_nxt = kIrs + 1, uint32_t ack = 1) const { return c.in.ack(peer_nxt, ack); }
};

// Two stacks back to back: the client (10.0.0.1) connects to the server (10.0.0.2:5555) at kT0.
struct LinkFixture {
    explicit LinkFixture(ft::StackConfig ccfg = base_config(), ft::StackConfig scfg = base_config())
        : client(ccfg), server(server_cfg(scfg)), link{client, server} {
        server.listen(kPort);
        ft::Result<ft::ConnId> r = client.stack.connect(kRemote, client.now);
        REQUIRE(r.ok());
        cid = r.value();
        link.pump();
        REQUIRE(client.events() == evs(ev_connected(cid)));
        Evs e = server.events();
        REQUIRE(e.size() == 1);
        REQUIRE(e[0].type == ft::EventType::accepted);
        sid = e[0].conn;
    }
    static ft::StackConfig server_cfg(ft::StackConfig c) {
        c.local_v4 = kPeer4;
        c.seed = 99;
        return c;
    }
    Harness client, server;
    Link link;
    ft::ConnId cid, sid;
};

}  // namespace

TEST_CASE("keepalive: a probe after one interval of silence, then every interval") {
    ClientFixture f;
    Harness& h = f.h;
    CHECK(h.stack.next_deadline() == kT0 + 5s);
    h.at(kT0 + 5s - 1ns);
    CHECK(h.tx() == pkts());
    h.at(kT0 + 5s);
    // seq = SND.UNA - 1 = 0, no payload, ACK only: the SYN's own sequence number.
    CHECK(h.tx() == pkts(f.probe()));
    CHECK(h.stats().keepalive_probes_sent == 1);
    h.at(kT0 + 10s);
    CHECK(h.tx() == pkts(f.probe()));
    h.at(kT0 + 15s);
    CHECK(h.tx() == pkts(f.probe()));
    CHECK(h.stats().keepalive_probes_sent == 3);
    // The peer never answered one: it may be phantun, so nothing is declared.
    h.at(kT0 + 60s);
    CHECK(h.events() == evs());
    CHECK(h.stats().peer_dead_closes == 0);
    CHECK(h.stats().open_connections == 1);
}

TEST_CASE("keepalive: an answer or any data restarts the schedule") {
    ClientFixture f;
    Harness& h = f.h;
    h.at(kT0 + 5s);
    REQUIRE(h.tx() == pkts(f.probe()));
    h.at(kT0 + 5100ms);
    h.in(f.answer());
    CHECK(h.tx() == pkts());  // an answer is not answered
    CHECK(h.stats().keepalive_probes_answered == 1);
    CHECK(h.stack.next_deadline() == kT0 + 10100ms);
    h.at(kT0 + 8s);
    h.in(f.c.in.data(kIrs + 1, 1, "hi"));  // data is proof of life too
    CHECK(h.events() == evs(ev_datagram(f.c.id, "hi")));
    CHECK(h.stack.next_deadline() == kT0 + 9s);  // the idle ACK first
    h.at(kT0 + 9s);
    CHECK(h.tx() == pkts(f.c.out.ack(1, kIrs + 3)));
    CHECK(h.stack.next_deadline() == kT0 + 13s);
    h.at(kT0 + 13s);
    CHECK(h.tx() == pkts(f.probe(1, kIrs + 3)));
}

TEST_CASE("keepalive: N unanswered probes from a peer that answers give one peer_dead and nothing after") {
    ClientFixture f;
    Harness& h = f.h;
    h.at(kT0 + 5s);
    REQUIRE(h.tx() == pkts(f.probe()));
    h.in(f.answer());  // +5 s: the peer answers probes
    h.at(kT0 + 10s);
    CHECK(h.tx() == pkts(f.probe()));
    h.at(kT0 + 15s);
    CHECK(h.tx() == pkts(f.probe()));
    h.at(kT0 + 20s);
    CHECK(h.tx() == pkts(f.probe()));
    CHECK(h.events() == evs());
    h.at(kT0 + 25s - 1ns);
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
    h.at(kT0 + 25s);  // one interval after the third unanswered probe
    CHECK(h.tx() == pkts(f.c.out.seg(kRst, 1, 0)));  // best effort: it may free the peer's side
    CHECK(h.events() == evs(ev_closed(f.c.id, CloseReason::peer_dead)));
    CHECK(h.stats().peer_dead_closes == 1);
    CHECK(h.stats().open_connections == 0);
    CHECK(h.stack.next_deadline() == std::nullopt);
    h.in(f.answer());  // too late: the connection is gone (answered with an RST)
    CHECK(h.events() == evs());
    h.tx();
    h.at(kT0 + 300s);
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
    CHECK(h.stats().peer_dead_closes == 1);
    CHECK(h.stack.send(f.c.id, ft::ByteView("x", 1), h.now) == Errc::stale_handle);
}

TEST_CASE("keepalive: the probe count is configurable") {
    ft::StackConfig cfg = base_config();
    cfg.keepalive_interval = 2s;
    cfg.keepalive_probes = 1;
    ClientFixture f(cfg);
    Harness& h = f.h;
    h.at(kT0 + 2s);
    REQUIRE(h.tx() == pkts(f.probe()));
    h.in(f.answer());
    h.at(kT0 + 4s);
    CHECK(h.tx() == pkts(f.probe()));
    h.at(kT0 + 6s);
    CHECK(h.events() == evs(ev_closed(f.c.id, CloseReason::peer_dead)));
}

TEST_CASE("keepalive: a timer that fires late (a paused process) probes before it declares anything") {
    ClientFixture f;
    Harness& h = f.h;
    h.at(kT0 + 5s);
    REQUIRE(h.tx() == pkts(f.probe()));
    h.in(f.answer());
    h.at(kT0 + 300s);  // nothing ran for almost five minutes
    CHECK(h.tx() == pkts(f.probe()));  // one probe, not a burst
    CHECK(h.events() == evs());
    h.in(f.answer());
    h.at(kT0 + 400s);
    CHECK(h.tx().size() == 1);
    CHECK(h.events() == evs());
}

TEST_CASE("keepalive: probes and answers between two stacks are never datagrams; only the client probes an idle link") {
    LinkFixture f;
    for (int s = 1; s <= 120; ++s) f.link.at(kT0 + std::chrono::seconds(s));
    CHECK(f.client.events() == evs());
    CHECK(f.server.events() == evs());
    const ft::Stats& c = f.client.stats();
    const ft::Stats& s = f.server.stats();
    CHECK(c.datagrams_in == 0);
    CHECK(s.datagrams_in == 0);
    CHECK(c.peer_dead_closes == 0);
    CHECK(s.peer_dead_closes == 0);
    // The server's one discovery probe (at +6.25 s, as the server runs late),
    // then only the client's every 5 s: one probe and one answer per interval.
    CHECK(s.keepalive_probes_sent == 1);
    CHECK(c.keepalive_answers_sent == 1);
    CHECK(c.keepalive_probes_sent >= 22);
    CHECK(c.keepalive_probes_sent <= 24);
    CHECK(s.keepalive_answers_sent == c.keepalive_probes_sent);
    CHECK(c.keepalive_probes_answered == c.keepalive_probes_sent);
    MESSAGE("idle link, 120 s: client probes " << c.keepalive_probes_sent << ", server answers "
                                               << s.keepalive_answers_sent << ", server probes "
                                               << s.keepalive_probes_sent);
    // Data still flows as before.
    REQUIRE(f.client.stack.send(f.cid, ft::ByteView("ping", 4), f.client.now) == Errc::ok);
    f.link.pump();
    CHECK(f.server.events() == evs(ev_datagram(f.sid, "ping")));
}

TEST_CASE("keepalive: both ends learn the other answers, so a dead path is found on both") {
    LinkFixture f;
    // Echo traffic every second: the receive side is never idle, yet the
    // discovery probes teach each end that the other answers.
    for (int s = 1; s <= 10; ++s) {
        f.link.at(kT0 + std::chrono::seconds(s));
        REQUIRE(f.client.stack.send(f.cid, ft::ByteView("q", 1), f.client.now) == Errc::ok);
        f.link.pump();
        REQUIRE(f.server.stack.send(f.sid, ft::ByteView("a", 1), f.server.now) == Errc::ok);
        f.link.pump();
    }
    CHECK(f.client.stats().keepalive_probes_answered == 1);
    CHECK(f.server.stats().keepalive_probes_answered == 1);
    f.client.events();
    f.server.events();
    // The path dies at +10 s: nothing gets through either way any more.
    for (int s = 11; s <= 40; ++s) {
        f.client.at(kT0 + std::chrono::seconds(s));
        f.server.at(kT0 + std::chrono::seconds(s));
        f.client.tx();
        f.server.tx();
    }
    CHECK(f.client.events() == evs(ev_closed(f.cid, CloseReason::peer_dead)));  // +30 s
    CHECK(f.server.events() == evs(ev_closed(f.sid, CloseReason::peer_dead)));  // +31.25 s
}

TEST_CASE("keepalive: the receiver answers a probe with a pure ACK, at most one per 200 ms") {
    Harness h;
    h.listen(kPort);
    ServerConn c = establish_server(h, kIn4, kIrs);
    // The peer's probe: seq = RCV.NXT - 1, no payload.
    h.in(c.in.ack(kIrs, 1));
    CHECK(h.tx() == pkts(c.out.ack(1, kIrs + 1)));
    CHECK(h.stats().keepalive_answers_sent == 1);
    CHECK(h.events() == evs());
    h.advance(199ms);
    ft::Stats before = h.stats();
    h.in(c.in.ack(kIrs, 1));
    CHECK(h.tx() == pkts());
    CHECK(drop_delta(before, h.stats()) == "reply_rate_limited+1");
    h.advance(1ms);
    h.in(c.in.ack(kIrs, 1));
    CHECK(h.tx() == pkts(c.out.ack(1, kIrs + 1)));
    CHECK(h.stats().keepalive_answers_sent == 2);
    // A pure ACK at RCV.NXT is not a probe: no answer, ever (no ACK ping-pong).
    h.advance(1s);
    h.in(c.in.ack(kIrs + 1, 1));
    CHECK(h.tx() == pkts());
    CHECK(h.events() == evs());
}

TEST_CASE("keepalive: probe recognition across the 2^32 wrap (receiver)") {
    Harness h;
    h.listen(kPort);
    const uint32_t irs = 0xfffffff0u;
    ServerConn c = establish_server(h, kIn4, irs);
    h.in(c.in.data(irs + 1, 1, std::string(20, 'x')));  // RCV.NXT = 0xfffffff1 + 20 = 5
    CHECK(h.events().size() == 1);
    h.in(c.in.ack(4, 1));  // RCV.NXT - 1 after the wrap
    CHECK(h.tx() == pkts(c.out.ack(1, 5)));
    h.advance(1s);
    h.in(c.in.ack(0xffffffffu, 1));  // before RCV.NXT, across the wrap: also answered
    CHECK(h.tx() == pkts(c.out.ack(1, 5)));
    h.advance(1s);
    h.in(c.in.ack(5, 1));  // at RCV.NXT: a plain ACK
    CHECK(h.tx() == pkts());
    CHECK(h.stats().keepalive_answers_sent == 2);
}

TEST_CASE("keepalive: probe seq = SND.UNA - 1 across the 2^32 wrap (prober)") {
    // Find a seed whose random client ISN lies within 1 MiB below 2^32.
    ft::StackConfig cfg = base_config();
    cfg.random_isn = true;
    cfg.max_connections = 1;
    cfg.tx_queue_capacity = 4;
    cfg.event_queue_capacity = 4;
    uint32_t iss = 0;
    bool found = false;
    for (uint64_t seed = 1; seed < 200000 && !found; ++seed) {
        cfg.seed = seed;
        ft::Stack s(cfg);
        ft::Result<ft::ConnId> r = s.connect(kRemote, kT0);
        REQUIRE(r.ok());
        Seg syn = decode(s.tx_packet(0));
        if (syn.seq >= 0xfff00000u) {
            iss = syn.seq;
            found = true;
        }
    }
    REQUIRE(found);
    cfg.max_connections = 16;
    cfg.tx_queue_capacity = 256;
    cfg.event_queue_capacity = 64;
    Harness h(cfg);
    ft::Result<ft::ConnId> r = h.stack.connect(kRemote, h.now);
    REQUIRE(r.ok());
    std::optional<ft::ConnInfo> info = h.stack.info(r.value());
    REQUIRE(info.has_value());
    Path out{info->local, kRemote};
    Path in = out.reversed();
    REQUIRE(h.tx() == pkts(out.syn(iss)));
    h.in(in.syn_ack(kIrs, iss + 1));
    REQUIRE(h.tx() == pkts(out.ack(iss + 1, kIrs + 1)));
    h.events();
    // Send past 2^32: SND.NXT = iss + 1 + n * 1000 wraps.
    const uint32_t to_wrap = 0u - (iss + 1);
    const uint32_t n = to_wrap / 1000 + 2;
    const std::string chunk(1000, 'd');
    for (uint32_t i = 0; i < n; ++i) {
        REQUIRE(h.stack.send(r.value(), ft::ByteView(chunk.data(), chunk.size()), h.now) == Errc::ok);
        if (h.stack.tx_full()) h.tx();
    }
    h.tx();
    const uint32_t snd_nxt = iss + 1 + n * 1000;  // small, after the wrap
    REQUIRE(snd_nxt < 2000);
    // The peer acknowledges exactly up to 2^32 (0): SND.UNA = 0, probe seq 0xffffffff.
    h.at(kT0 + 1s);
    h.in(in.ack(kIrs + 1, 0));
    h.at(kT0 + 6s);
    CHECK(h.tx() == pkts(out.ack(0xffffffffu, kIrs + 1)));
    // An ACK beyond SND.NXT is not believed; one up to it is.
    h.in(in.ack(kIrs + 1, snd_nxt + 1));
    h.at(kT0 + 11s);
    CHECK(h.tx() == pkts(out.ack(0xffffffffu, kIrs + 1)));
    h.in(in.ack(kIrs + 1, snd_nxt));
    h.at(kT0 + 16s);
    CHECK(h.tx() == pkts(out.ack(snd_nxt - 1, kIrs + 1)));
}

TEST_CASE("keepalive: a phantun-like peer (data, never answers probes) is never declared dead while its data arrives") {
    ClientFixture f;
    Harness& h = f.h;
    uint32_t peer_seq = kIrs + 1;
    uint32_t our_seq = 1;
    for (int s = 1; s <= 180; ++s) {
        h.at(kT0 + std::chrono::seconds(s));
        REQUIRE(send(h, f.c.id, "q") == Errc::ok);  // the application's request
        ++our_seq;
        h.in(f.c.in.data(peer_seq, our_seq, "a"));  // phantun's reply: data, never a pure ACK
        ++peer_seq;
        for (const Seg& out : h.tx().segs) REQUIRE(out.flags == kAck);
    }
    CHECK(h.stats().peer_dead_closes == 0);
    CHECK(h.stats().open_connections == 1);
    CHECK(h.stats().keepalive_probes_sent == 1);  // the discovery probe only: data never stopped
    CHECK(h.stats().keepalive_probes_answered == 0);
    Evs e = h.events();
    CHECK(e.size() == 180);
    for (const Ev& ev : e.list) CHECK(ev.type == ft::EventType::datagram);
}

TEST_CASE("keepalive: a silent phantun-like peer is left alone, then carries traffic on the same connection") {
    ClientFixture f;
    Harness& h = f.h;
    REQUIRE(send(h, f.c.id, "q") == Errc::ok);
    h.in(f.c.in.data(kIrs + 1, 2, "a"));  // it sent data once
    h.events();
    for (int s = 1; s <= 120; ++s) h.at(kT0 + std::chrono::seconds(s));  // silence; probes unanswered
    CHECK(h.stats().keepalive_probes_sent == 24);
    CHECK(h.stats().peer_dead_closes == 0);
    CHECK(h.events() == evs());
    REQUIRE(send(h, f.c.id, "q") == Errc::ok);  // traffic again: the same connection
    h.in(f.c.in.data(kIrs + 2, 3, "a"));
    CHECK(h.events() == evs(ev_datagram(f.c.id, "a")));
    h.at(kT0 + 300s);
    CHECK(h.stats().peer_dead_closes == 0);
}

TEST_CASE("keepalive: a one-way stream toward a peer that never sends is never torn down") {
    ClientFixture f;
    Harness& h = f.h;
    for (int ms = 500; ms <= 180000; ms += 500) {
        h.at(kT0 + std::chrono::milliseconds(ms));
        REQUIRE(send(h, f.c.id, "x") == Errc::ok);
        h.tx();
    }
    CHECK(h.stats().peer_dead_closes == 0);
    CHECK(h.events() == evs());
    CHECK(h.stats().open_connections == 1);
}

TEST_CASE("keepalive: a peer that sent data, then nothing while we keep sending for D: peer_dead (rule b)") {
    ClientFixture f;
    Harness& h = f.h;
    REQUIRE(send(h, f.c.id, "q") == Errc::ok);
    h.in(f.c.in.data(kIrs + 1, 2, "a"));
    h.events();
    h.tx();
    // From +10 s on, a datagram every 0.5 s and nothing back.
    for (int ms = 10000; ms < 30000; ms += 500) {
        h.at(kT0 + std::chrono::milliseconds(ms));
        REQUIRE(send(h, f.c.id, "q") == Errc::ok);
        REQUIRE(h.events() == evs());
    }
    h.at(kT0 + 30s - 1ns);
    CHECK(h.events() == evs());
    h.at(kT0 + 30s);  // D = 20 s after the first unanswered datagram
    CHECK(h.events() == evs(ev_closed(f.c.id, CloseReason::peer_dead)));
    CHECK(h.stats().peer_dead_closes == 1);
}

TEST_CASE("keepalive: one unanswered datagram and then silence is no verdict (rule b needs a run)") {
    ClientFixture f;
    Harness& h = f.h;
    REQUIRE(send(h, f.c.id, "q") == Errc::ok);
    h.in(f.c.in.data(kIrs + 1, 2, "a"));
    h.events();
    h.at(kT0 + 10s);
    REQUIRE(send(h, f.c.id, "q") == Errc::ok);  // never answered by its application
    h.at(kT0 + 100s);
    CHECK(h.events() == evs());
    CHECK(h.stats().peer_dead_closes == 0);
}

TEST_CASE("keepalive: 0 turns probes and peer_dead off; the peer's probes are still answered") {
    ClientFixture f(without_keepalive());
    Harness& h = f.h;
    CHECK(h.stack.next_deadline() == std::nullopt);
    REQUIRE(send(h, f.c.id, "q") == Errc::ok);
    h.in(f.c.in.data(kIrs + 1, 2, "a"));
    h.events();
    h.at(kT0 + 2s);
    REQUIRE(h.tx() == pkts(f.c.out.data(1, kIrs + 1, "q"), f.c.out.ack(2, kIrs + 2)));  // and the idle ACK
    for (int s = 3; s <= 3600; s += 7) {
        h.at(kT0 + std::chrono::seconds(s));
        REQUIRE(send(h, f.c.id, "q") == Errc::ok);
        Packets out = h.tx();
        REQUIRE(out.size() == 1);
        CHECK(out[0].payload.size() == 1);  // the datagram, never a probe
    }
    CHECK(h.stats().keepalive_probes_sent == 0);
    CHECK(h.stats().peer_dead_closes == 0);
    CHECK(h.events() == evs());
    h.in(f.c.in.ack(kIrs + 1, 2));  // the peer probes us (seq = RCV.NXT - 1)
    CHECK(h.tx().size() == 1);
    CHECK(h.stats().keepalive_answers_sent == 1);
}

TEST_CASE("keepalive: phantun's accidental answer (ack = the probe's seq) is proof of life, not an answer") {
    ClientFixture f;
    Harness& h = f.h;
    REQUIRE(send(h, f.c.id, "q") == Errc::ok);
    h.in(f.c.in.data(kIrs + 1, 2, "a"));  // SND.UNA = 2
    h.events();
    h.tx();
    for (int s = 1; s <= 120; ++s) {
        h.at(kT0 + std::chrono::seconds(s));
        for (const Seg& out : h.tx().segs) {
            if (out.seq != 1) continue;  // the idle ACK at +1 s; every probe is SND.UNA - 1 = 1
            // phantun: its ack moves back to the probe's seq and it acknowledges that.
            h.in(f.c.in.ack(kIrs + 2, out.seq));
        }
    }
    CHECK(h.stats().keepalive_probes_answered == 0);
    CHECK(h.stats().peer_dead_closes == 0);
    CHECK(h.events() == evs());
}
