// libFuzzer target: the whole sans-IO stack, both roles, driven by a byte
// stream decoded as a sequence of operations (packets — raw or well-formed
// with fuzzed fields —, time steps, connects, sends, closes).
//
// After every step it checks the stack's own invariants:
//   - every emitted packet is a well-formed IPv4/IPv6 TCP segment with valid
//     IP and TCP checksums (checked by the independent decoder below);
//   - stats agree with a model of the connections the application knows of;
//   - no event arrives for a connection after its closed/connect_failed event,
//     and datagram events only for connections the app knows;
//   - send/close on handles the app closed answer stale_handle.
// Build: make fuzz (clang, -fsanitize=fuzzer,address,undefined).
#include "faketcp.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "fuzz_common.h"

using namespace faketcp;

namespace {

constexpr uint64_t kHandshakeMs = 1000;

struct Side {
    Stack stack;
    // What the application knows: live connections and their state.
    std::set<std::pair<uint32_t, uint32_t>> live;     // (index, generation)
    std::set<std::pair<uint32_t, uint32_t>> pending;  // connect() issued, no result yet
    std::set<std::pair<uint32_t, uint32_t>> dead;
    std::set<std::pair<uint32_t, uint32_t>> closing;  // close() called, local_close event due
    explicit Side(const StackConfig& c) : stack(c) {}
};

StackConfig config(bool client, uint8_t knobs) {
    StackConfig c;
    c.local_v4 = IpAddr::v4(10, 0, 0, client ? 1 : 2);
    c.local_v6 = IpAddr::v6({0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, uint8_t(client ? 1 : 2)});
    c.max_connections = 8 + (knobs & 7);
    c.max_half_open = 2 + ((knobs >> 3) & 3);
    c.tx_queue_capacity = 4 + ((knobs >> 5) & 3) * 8;
    c.event_queue_capacity = 4;
    c.reply_rate_per_sec = 5;
    c.random_isn = (knobs & 0x80) != 0;
    c.seed = knobs;
    c.mtu = 1280;
    return c;
}

ConnId key_to_id(const std::pair<uint32_t, uint32_t>& k) { return ConnId{k.first, k.second}; }
std::pair<uint32_t, uint32_t> id_key(ConnId c) { return {c.index, c.generation}; }

void drain(Side& s) {
    for (size_t i = 0; i < s.stack.tx_count(); ++i) check_emitted(s.stack.tx_packet(i));
    Event ev;
    while (s.stack.poll_event(ev)) {
        auto k = id_key(ev.conn);
        CHECK_INV(!s.dead.count(k));
        if (s.closing.count(k)) {  // after close(): exactly one local_close event, nothing else
            CHECK_INV(ev.type == EventType::closed || ev.type == EventType::connect_failed);
            CHECK_INV(ev.reason == CloseReason::local_close);
            s.closing.erase(k);
            s.dead.insert(k);
            continue;
        }
        switch (ev.type) {
            case EventType::accepted:
                CHECK_INV(!s.live.count(k));
                s.live.insert(k);
                break;
            case EventType::connected:
                CHECK_INV(s.pending.erase(k) == 1);
                s.live.insert(k);
                break;
            case EventType::connect_failed:
                CHECK_INV(ev.reason != CloseReason::local_close);
                CHECK_INV(s.pending.erase(k) == 1);
                s.dead.insert(k);
                break;
            case EventType::datagram:
                CHECK_INV(s.live.count(k));
                CHECK_INV(ev.data.size > 0);
                break;
            case EventType::closed:
                CHECK_INV(ev.reason != CloseReason::local_close);
                CHECK_INV(s.live.erase(k) == 1);
                s.dead.insert(k);
                break;
        }
    }
    const Stats& st = s.stack.stats();
    CHECK_INV(st.open_connections <= s.stack.config().max_connections);
    CHECK_INV(st.half_open_connections <= s.stack.config().max_half_open ||
              st.half_open_connections <= s.pending.size() + s.stack.config().max_half_open);
    CHECK_INV(st.open_connections + st.half_open_connections <= s.stack.config().max_connections);
    CHECK_INV(s.pending.size() <= st.half_open_connections);
}

// Build a well-formed segment towards `to` with fuzzed fields.
std::vector<uint8_t> build(Input& in, bool v6, const IpAddr& src, const IpAddr& dst,
                           uint16_t sport, uint16_t dport) {
    uint32_t seq = in.u32(), ack = in.u32();
    uint8_t flags = in.u8();
    size_t plen = in.u8() % 48;
    size_t ip_len = v6 ? 40 : 20;
    std::vector<uint8_t> p(ip_len + 20 + plen, 0);
    uint8_t* b = p.data();
    size_t tcp_len = 20 + plen;
    uint32_t pseudo;
    if (!v6) {
        b[0] = 0x45;
        b[2] = uint8_t(p.size() >> 8);
        b[3] = uint8_t(p.size());
        b[6] = 0x40;
        b[8] = 64;
        b[9] = 6;
        std::memcpy(b + 12, src.bytes.data(), 4);
        std::memcpy(b + 16, dst.bytes.data(), 4);
        uint16_t c = uint16_t(~fold(sum16(b, 20)));
        b[10] = uint8_t(c >> 8);
        b[11] = uint8_t(c);
        pseudo = sum16(b + 12, 8) + 6 + uint32_t(tcp_len);
    } else {
        b[0] = 0x60;
        b[4] = uint8_t(tcp_len >> 8);
        b[5] = uint8_t(tcp_len);
        b[6] = 6;
        b[7] = 64;
        std::memcpy(b + 8, src.bytes.data(), 16);
        std::memcpy(b + 24, dst.bytes.data(), 16);
        pseudo = sum16(b + 8, 32) + 6 + uint32_t(tcp_len);
    }
    uint8_t* t = b + ip_len;
    t[0] = uint8_t(sport >> 8); t[1] = uint8_t(sport);
    t[2] = uint8_t(dport >> 8); t[3] = uint8_t(dport);
    for (int i = 0; i < 4; ++i) t[4 + i] = uint8_t(seq >> (24 - 8 * i));
    for (int i = 0; i < 4; ++i) t[8 + i] = uint8_t(ack >> (24 - 8 * i));
    t[12] = 0x50;
    t[13] = flags;
    t[14] = t[15] = 0xff;
    for (size_t i = 0; i < plen; ++i) t[20 + i] = in.u8();
    uint16_t c = uint16_t(~fold(sum16(t, tcp_len, pseudo)));
    t[16] = uint8_t(c >> 8);
    t[17] = uint8_t(c);
    return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Input in{data, size};
    uint8_t knobs = in.u8();
    Side client(config(true, knobs)), server(config(false, knobs));
    if (!server.stack.listen(4567)) fail("listen");
    TimePoint now = TimePoint{} + std::chrono::hours(1);
    std::vector<std::vector<uint8_t>> held;  // packets "in flight", delivered out of order on demand

    auto forward = [&](Side& from, Side& to, bool deliver_all) {
        for (size_t i = 0; i < from.stack.tx_count(); ++i) {
            ByteView p = from.stack.tx_packet(i);
            held.emplace_back(p.begin(), p.end());
        }
        from.stack.tx_clear();
        if (deliver_all) {
            for (auto& p : held) to.stack.on_packet(ByteView(p.data(), p.size()), now);
            drain(to);
            held.clear();
        }
    };

    for (int steps = 0; steps < 256 && !in.done(); ++steps) {
        uint8_t op = in.u8();
        Side& s = (op & 0x80) ? server : client;
        Side& peer = (op & 0x80) ? client : server;
        switch (op & 0x0f) {
            case 0: {  // connect, v4 or v6
                bool v6 = in.u8() & 1;
                Endpoint remote{v6 ? *server.stack.config().local_v6 : *server.stack.config().local_v4, 4567};
                auto r = client.stack.connect(remote, now);
                if (r) client.pending.insert(id_key(*r));
                break;
            }
            case 1: {  // send on a known connection (or a dead one)
                auto& pool = (in.u8() & 1) ? s.dead : s.live;
                if (pool.empty()) break;
                auto it = pool.begin();
                std::advance(it, in.u8() % pool.size());
                uint8_t buf[1300];
                size_t len = in.u16() % sizeof buf;
                std::memset(buf, 0xab, len);
                Errc e = s.stack.send(key_to_id(*it), ByteView(buf, len), now);
                if (&pool == &s.dead) CHECK_INV(e == Errc::stale_handle);
                if (e == Errc::ok) CHECK_INV(len > 0 && len <= s.stack.max_datagram(key_to_id(*it)));
                break;
            }
            case 2: {  // close a live or pending connection
                auto& pool = (in.u8() & 1) && &s == &client ? s.pending : s.live;
                if (pool.empty()) break;
                auto it = pool.begin();
                std::advance(it, in.u8() % pool.size());
                auto k = *it;
                if (s.stack.tx_full()) break;  // a driver flushes first
                CHECK_INV(s.stack.close(key_to_id(k), now) == Errc::ok);
                pool.erase(k);
                s.closing.insert(k);
                CHECK_INV(s.stack.close(key_to_id(k), now) == Errc::stale_handle);
                CHECK_INV(!s.stack.info(key_to_id(k)).has_value());
                drain(s);
                CHECK_INV(s.closing.empty());
                break;
            }
            case 3:  // time passes
                now += std::chrono::milliseconds(in.u16() % (3 * kHandshakeMs));
                s.stack.on_timer(now);
                peer.stack.on_timer(now);
                drain(s);
                drain(peer);
                break;
            case 4:  // deliver everything in flight from s to its peer
                forward(s, peer, true);
                break;
            case 5:  // hold s's packets back (reordering / loss when dropped later)
                forward(s, peer, false);
                break;
            case 6:  // drop what is held
                held.clear();
                break;
            case 7: {  // deliver held packets in reverse order
                for (auto it = held.rbegin(); it != held.rend(); ++it)
                    peer.stack.on_packet(ByteView(it->data(), it->size()), now);
                held.clear();
                drain(peer);
                break;
            }
            case 8: case 9: case 10: {  // a well-formed segment with fuzzed fields into s
                bool v6 = in.u8() & 1;
                const StackConfig& pc = peer.stack.config();
                const StackConfig& sc = s.stack.config();
                IpAddr src = v6 ? *pc.local_v6 : *pc.local_v4;
                IpAddr dst = v6 ? *sc.local_v6 : *sc.local_v4;
                uint16_t sport = (op & 0x40) ? uint16_t(32768 + in.u8() % 8) : uint16_t(32768 + in.u16() % 28232);
                uint16_t dport = (&s == &server) ? 4567 : uint16_t(32768 + in.u16() % 28232);
                auto p = build(in, v6, src, dst, sport, dport);
                s.stack.on_packet(ByteView(p.data(), p.size()), now);
                drain(s);
                break;
            }
            case 11: {  // raw bytes
                size_t len = in.u8();
                std::vector<uint8_t> raw(len);
                for (auto& b : raw) b = in.u8();
                s.stack.on_packet(ByteView(raw.data(), raw.size()), now);
                drain(s);
                break;
            }
            case 12: {  // a held packet with one byte flipped
                if (held.empty()) break;
                auto& p = held[in.u8() % held.size()];
                p[in.u16() % p.size()] ^= uint8_t(1 + in.u8() % 255);
                break;
            }
            default:
                drain(s);
                break;
        }
        // Queues must be drained before the next step, as a driver does.
        for (size_t i = 0; i < s.stack.tx_count(); ++i) check_emitted(s.stack.tx_packet(i));
    }
    // Everything the app knows as live must still answer info().
    for (auto& k : client.live) CHECK_INV(client.stack.info(key_to_id(k)).has_value());
    for (auto& k : server.live) CHECK_INV(server.stack.info(key_to_id(k)).has_value());
    for (auto& k : client.dead) CHECK_INV(!client.stack.info(key_to_id(k)).has_value());
    return 0;
}
