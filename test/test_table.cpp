// The connection table at scale: 100 000 connections held at once, 100 000
// opened and closed, ephemeral ports, handles with generations.
#include <set>
#include <unordered_set>

#include "support.h"

using namespace tst;
using namespace std::chrono_literals;
using ft::Errc;

namespace {

constexpr uint16_t kPort = 5555;
constexpr uint32_t kMany = 100000;

// The i-th distinct peer: 10.1.0.0/15 for most, fd00::2:xxxx for every 8th,
// ports spread over 1024..65023.
ft::Endpoint peer(uint32_t i) {
    ft::Endpoint e;
    if (i % 8 == 0) {
        e.addr = kPeer6;
        e.addr.bytes[12] = static_cast<uint8_t>(i >> 24);
        e.addr.bytes[13] = static_cast<uint8_t>(i >> 16);
        e.addr.bytes[14] = static_cast<uint8_t>(i >> 8);
        e.addr.bytes[15] = static_cast<uint8_t>(i);
    } else {
        e.addr = ft::IpAddr{ft::Family::v4, {10, static_cast<uint8_t>(1 + (i >> 16)),
                                             static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)}};
    }
    e.port = static_cast<uint16_t>(1024 + (i * 7919u) % 64000);
    return e;
}

Path inbound(uint32_t i) {
    ft::Endpoint p = peer(i);
    return Path{p, {p.addr.family == ft::Family::v6 ? kStack6 : kStack4, kPort}};
}

Errc send(Harness& h, ft::ConnId c, std::string_view text) {
    return h.stack.send(c, ft::ByteView(text.data(), text.size()), h.now);
}

}  // namespace

TEST_CASE("table_holds_100k_connections") {
    ft::StackConfig cfg = base_config();
    cfg.max_connections = kMany;
    cfg.max_half_open = kMany;
    Harness h(cfg);
    h.listen(kPort);

    std::vector<ft::ConnId> ids(kMany);
    size_t bad_synacks = 0, bad_accepts = 0;
    for (uint32_t i = 0; i < kMany; ++i) {
        Path in = inbound(i);
        uint32_t irs = i * 2654435761u;
        h.in(in.syn(irs));
        if (i % 1000 == 0) {
            CHECK(h.tx() == pkts(in.reversed().syn_ack(0, irs + 1)));
        } else {
            bad_synacks += h.stack.tx_count() != 1;
            h.stack.tx_clear();
        }
        h.in(in.ack(irs + 1, 1));
        bad_synacks += h.stack.tx_count() != 1;  // the pure ACK on accept
        h.stack.tx_clear();
        Evs e = h.events();
        if (e.size() != 1 || e[0].type != ft::EventType::accepted) {
            ++bad_accepts;
            continue;
        }
        ids[i] = e[0].conn;
    }
    CHECK(bad_synacks == 0);
    CHECK(bad_accepts == 0);
    CHECK(h.stats().open_connections == kMany);
    CHECK(h.stats().half_open_connections == 0);
    CHECK(h.stats().handshakes_completed == kMany);
    CHECK(h.stats().total_drops() == 0);

    // handles: dense, distinct
    std::vector<bool> seen(kMany, false);
    size_t out_of_range = 0, duplicates = 0;
    for (ft::ConnId id : ids) {
        if (id.index >= kMany) {
            ++out_of_range;
            continue;
        }
        duplicates += seen[id.index];
        seen[id.index] = true;
    }
    CHECK(out_of_range == 0);
    CHECK(duplicates == 0);

    // one more is refused
    ft::Stats before = h.stats();
    h.in(inbound(kMany).syn(1));
    CHECK(drop_delta(before, h.stats()) == "table_full+1");
    CHECK(h.tx() == pkts());

    // demux still finds every connection, both ways (a sample of 1000)
    for (uint32_t k = 0; k < 1000; ++k) {
        uint32_t i = (k * 7927u) % kMany;
        CAPTURE(i);
        Path in = inbound(i);
        uint32_t irs = i * 2654435761u;
        h.in(in.data(irs + 1, 1, "ping"));
        CHECK(h.events() == evs(ev_datagram(ids[i], "ping")));
        REQUIRE(send(h, ids[i], "pong") == Errc::ok);
        CHECK(h.tx() == pkts(in.reversed().data(1, irs + 5, "pong")));
        std::optional<ft::ConnInfo> info = h.stack.info(ids[i]);
        REQUIRE(info.has_value());
        CHECK(info->remote == in.src);
    }

    size_t footprint = h.stack.memory_footprint();
    MESSAGE("memory_footprint " << footprint << " bytes for max_connections " << kMany << " = "
                                << footprint / kMany << " bytes per connection");
    CHECK(footprint >= kMany * sizeof(ft::Endpoint) * 2);  // at least the tuples themselves
}

TEST_CASE("table_churn_100k_connect_close") {
    constexpr uint32_t kBatch = 4000;  // open at once
    ft::StackConfig cfg = base_config();
    cfg.max_connections = kBatch;
    cfg.max_half_open = kBatch;
    Harness h(cfg);
    const ft::Endpoint remote{kPeer4, kPort};

    std::vector<ft::ConnId> previous;
    size_t opened = 0, bad_port = 0, dup_tuple = 0, bad_connect = 0, bad_handle = 0,
           stale_accepted = 0, bad_close = 0, reused_handle = 0;
    std::set<std::pair<uint32_t, uint32_t>> ever_used;
    while (opened < kMany) {
        std::vector<ft::ConnId> ids;
        std::unordered_set<uint16_t> open_ports;
        for (uint32_t k = 0; k < kBatch; ++k) {
            ft::Result<ft::ConnId> r = h.stack.connect(remote, h.now);
            if (!r.ok()) {
                ++bad_connect;
                continue;
            }
            ft::ConnId id = r.value();
            bad_handle += id.index >= kBatch;
            reused_handle += !ever_used.insert({id.index, id.generation}).second;
            uint16_t port = h.stack.info(id)->local.port;
            bad_port += port < kEphemeralLo || port > kEphemeralHi;
            dup_tuple += !open_ports.insert(port).second;
            h.stack.tx_clear();
            Path in{remote, {kStack4, port}};
            h.in(in.syn_ack(k, 1));
            h.stack.tx_clear();
            ids.push_back(id);
        }
        Evs connected = h.events();
        CHECK(connected.size() == ids.size());
        CHECK(h.stats().open_connections == ids.size());
        for (ft::ConnId old : previous) stale_accepted += send(h, old, "x") != Errc::stale_handle;
        size_t rsts = 0;
        for (ft::ConnId id : ids) {
            bad_close += h.stack.close(id, h.now) != Errc::ok;
            rsts += h.stack.tx_count();  // one RST each
            h.stack.tx_clear();
        }
        CHECK(rsts == ids.size());
        Evs closed = h.events();
        CHECK(closed.size() == ids.size());
        CHECK(h.stats().open_connections == 0);
        CHECK(h.stats().half_open_connections == 0);
        for (ft::ConnId id : ids) stale_accepted += send(h, id, "x") != Errc::stale_handle;
        opened += ids.size();
        previous = std::move(ids);
        h.advance(1ms);
        if (bad_connect) break;
    }
    CHECK(opened == kMany);
    CHECK(bad_connect == 0);
    CHECK(bad_handle == 0);
    CHECK(reused_handle == 0);  // every (index, generation) handed out once
    CHECK(bad_port == 0);
    CHECK(dup_tuple == 0);
    CHECK(stale_accepted == 0);
    CHECK(bad_close == 0);
    CHECK(h.stats().handshakes_completed == kMany);
    CHECK(h.stats().rst_sent == kMany);
    CHECK(h.stats().open_connections == 0);
    CHECK(h.stats().total_drops() == 0);
    CHECK(h.stack.next_deadline() == std::nullopt);
}

TEST_CASE("ephemeral_ports_exhausted_towards_one_remote") {
    constexpr uint32_t kRange = kEphemeralHi - kEphemeralLo + 1;  // 28232
    ft::StackConfig cfg = base_config();
    cfg.max_connections = kRange + 8;
    cfg.max_half_open = kRange + 8;
    Harness h(cfg);
    const ft::Endpoint remote{kPeer4, kPort};
    std::vector<bool> used(kRange, false);
    std::vector<ft::ConnId> ids;
    size_t out_of_range = 0, duplicates = 0, failures = 0;
    for (uint32_t k = 0; k < kRange; ++k) {
        ft::Result<ft::ConnId> r = h.stack.connect(remote, h.now);
        h.stack.tx_clear();
        if (!r.ok()) {
            ++failures;
            continue;
        }
        ids.push_back(r.value());
        uint16_t port = h.stack.info(r.value())->local.port;
        if (port < kEphemeralLo || port > kEphemeralHi) {
            ++out_of_range;
            continue;
        }
        duplicates += used[port - kEphemeralLo];
        used[port - kEphemeralLo] = true;
    }
    CHECK(failures == 0);
    CHECK(out_of_range == 0);
    CHECK(duplicates == 0);
    // every port towards this remote is taken
    ft::Result<ft::ConnId> full = h.stack.connect(remote, h.now);
    REQUIRE_FALSE(full.ok());
    CHECK(full.status().code() == Errc::ports_exhausted);
    // another remote port is another 4-tuple
    ft::Result<ft::ConnId> other = h.stack.connect(ft::Endpoint{kPeer4, kPort + 1}, h.now);
    CHECK(other.ok());
    // free one: exactly that port comes back
    REQUIRE(ids.size() == kRange);
    uint16_t freed = h.stack.info(ids[12345])->local.port;
    REQUIRE(h.stack.close(ids[12345], h.now) == Errc::ok);
    ft::Result<ft::ConnId> again = h.stack.connect(remote, h.now);
    REQUIRE(again.ok());
    CHECK(h.stack.info(again.value())->local.port == freed);
    h.stack.tx_clear();
    h.events();
}

TEST_CASE("ephemeral_ports_deterministic_given_seed") {
    auto ports = [](uint64_t seed) {
        ft::StackConfig cfg = base_config();
        cfg.seed = seed;
        Harness h(cfg);
        std::vector<uint16_t> out;
        for (int i = 0; i < 16; ++i) {
            ft::Result<ft::ConnId> r = h.stack.connect(ft::Endpoint{kPeer4, kPort}, h.now);
            REQUIRE(r.ok());
            out.push_back(h.stack.info(r.value())->local.port);
        }
        return out;
    };
    std::vector<uint16_t> a = ports(1), b = ports(1), c = ports(2);
    CHECK(a == b);
    CHECK(a != c);  // the seed matters (16 equal draws by chance: ~2^-236)
    std::set<uint16_t> distinct(a.begin(), a.end());
    CHECK(distinct.size() == a.size());  // 16 distinct ports: no tuple reused while open
}
