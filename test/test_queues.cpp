// The Stack's three queues on their own (faketcp::detail): TxQueue (fixed
// buffers with headroom, bounded), EventQueue (FIFO, bounded datagrams,
// storage reused once drained) and TimerHeap (earliest first, rebuilt in
// one go). Each invariant in their comments in faketcp.h has a test here.
#include <algorithm>
#include <cstring>
#include <vector>

#include "support.h"

using namespace tst;
using namespace std::chrono_literals;
namespace dt = faketcp::detail;

namespace {

// Writes `len` bytes of `fill` at next() and commits them.
bool queue_packet(dt::TxQueue& q, size_t len, uint8_t fill, bool partial = false) {
    uint8_t* p = q.next();
    if (!p) return false;
    std::memset(p, fill, len);
    q.commit(len, partial);
    return true;
}

ft::Event event(ft::EventType type, uint32_t conn, uint8_t tag = 0) {
    static const uint8_t bytes[256] = {};
    ft::Event ev;
    ev.type = type;
    ev.conn = ft::ConnId{conn, 1};
    ev.data = ft::ByteView(bytes + tag, tag);  // the size tells events apart
    return ev;
}

std::vector<uint32_t> drain_conns(dt::EventQueue& q) {
    std::vector<uint32_t> out;
    ft::Event ev;
    while (q.pop(ev)) out.push_back(ev.conn.index);
    return out;
}

// Pops every entry: (milliseconds after kT0, connection index) in order.
std::vector<std::pair<long, uint32_t>> drain(dt::TimerHeap& h) {
    std::vector<std::pair<long, uint32_t>> out;
    while (std::optional<dt::TimerHeap::Entry> e = h.earliest()) {
        out.emplace_back(std::chrono::duration_cast<std::chrono::milliseconds>(e->when - kT0).count(), e->conn.index);
        h.pop();
    }
    return out;
}

}  // namespace

// --- TxQueue ----------------------------------------------------------------

TEST_CASE("txqueue_empty_past_size_gives_nothing") {
    dt::TxQueue q;
    q.init(4, 1500);
    CHECK(q.size() == 0);
    CHECK(q.capacity() == 4);
    CHECK(q.packet(0).empty());
    CHECK(q.packet_mutable(0) == nullptr);
    CHECK_FALSE(q.checksum_partial(0));
}

TEST_CASE("txqueue_packets_keep_order_bytes_and_partial_flags") {
    dt::TxQueue q;
    q.init(3, 1500);
    REQUIRE(queue_packet(q, 40, 0xa1));
    REQUIRE(queue_packet(q, 1500, 0xb2, true));
    REQUIRE(queue_packet(q, 1, 0xc3));
    REQUIRE(q.size() == 3);
    const size_t lens[] = {40, 1500, 1};
    const uint8_t fills[] = {0xa1, 0xb2, 0xc3};
    for (size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        const ft::ByteView p = q.packet(i);
        REQUIRE(p.size == lens[i]);
        CHECK(std::all_of(p.begin(), p.end(), [&](uint8_t b) { return b == fills[i]; }));
        CHECK(q.packet_mutable(i) == p.data);
    }
    CHECK_FALSE(q.checksum_partial(0));
    CHECK(q.checksum_partial(1));
    CHECK_FALSE(q.checksum_partial(2));
}

TEST_CASE("txqueue_full_takes_nothing_until_clear") {
    dt::TxQueue q;
    q.init(2, 1280);
    REQUIRE(queue_packet(q, 60, 1));
    REQUIRE(queue_packet(q, 60, 2));
    CHECK(q.full());
    CHECK(q.next() == nullptr);
    q.commit(60, false);  // without room: ignored
    CHECK(q.size() == 2);
    q.clear();
    CHECK(q.size() == 0);
    CHECK_FALSE(q.full());
    REQUIRE(queue_packet(q, 70, 3));
    CHECK(q.packet(0).size == 70);
    CHECK(q.packet(0).data[0] == 3);
}

TEST_CASE("txqueue_commit_longer_than_mtu_queues_nothing") {
    dt::TxQueue q;
    q.init(2, 1280);
    REQUIRE(q.next() != nullptr);
    q.commit(1281, false);
    CHECK(q.size() == 0);
}

TEST_CASE("txqueue_headroom_is_writable_and_packets_do_not_overlap") {
    dt::TxQueue q;
    q.init(3, 1400);
    for (uint8_t i = 0; i < 3; ++i) REQUIRE(queue_packet(q, q.mtu(), uint8_t(0x10 + i)));
    for (size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        // The headroom in front of packet i lies after packet i-1's last byte.
        uint8_t* head = q.packet_mutable(i) - ft::kTxHeadroom;
        if (i > 0) CHECK(head >= q.packet(i - 1).end());
        std::memset(head, 0xee, ft::kTxHeadroom);
    }
    // Writing every headroom changed no packet byte.
    for (size_t i = 0; i < 3; ++i) {
        const ft::ByteView p = q.packet(i);
        CHECK(std::all_of(p.begin(), p.end(), [&](uint8_t b) { return b == 0x10 + i; }));
    }
}

// --- EventQueue -------------------------------------------------------------

TEST_CASE("eventqueue_pops_in_push_order") {
    dt::EventQueue q;
    q.init(8);
    REQUIRE(q.push(event(ft::EventType::accepted, 1)));
    REQUIRE(q.push(event(ft::EventType::datagram, 1, 5)));
    REQUIRE(q.push(event(ft::EventType::closed, 2)));
    CHECK(q.size() == 3);
    ft::Event ev;
    REQUIRE(q.pop(ev));
    CHECK(ev.type == ft::EventType::accepted);
    REQUIRE(q.pop(ev));
    CHECK(ev.type == ft::EventType::datagram);
    CHECK(ev.data.size == 5);
    REQUIRE(q.pop(ev));
    CHECK(ev.type == ft::EventType::closed);
    CHECK(ev.conn.index == 2);
    CHECK_FALSE(q.pop(ev));
}

TEST_CASE("eventqueue_full_of_datagrams_refuses_datagrams_not_control_events") {
    dt::EventQueue q;
    q.init(2);
    REQUIRE(q.push(event(ft::EventType::datagram, 1, 1)));
    REQUIRE(q.push(event(ft::EventType::datagram, 1, 2)));
    CHECK_FALSE(q.push(event(ft::EventType::datagram, 1, 3)));
    CHECK(q.push(event(ft::EventType::closed, 1)));
    CHECK(q.datagrams() == 2);
    CHECK(q.size() == 3);
}

TEST_CASE("eventqueue_draining_a_datagram_makes_room_for_one") {
    dt::EventQueue q;
    q.init(1);
    REQUIRE(q.push(event(ft::EventType::datagram, 1, 1)));
    CHECK_FALSE(q.push(event(ft::EventType::datagram, 1, 2)));
    ft::Event ev;
    REQUIRE(q.pop(ev));
    CHECK(q.datagrams() == 0);
    CHECK(q.push(event(ft::EventType::datagram, 1, 3)));
    REQUIRE(q.pop(ev));
    CHECK(ev.data.size == 3);
}

TEST_CASE("eventqueue_drained_starts_over_without_growing") {
    dt::EventQueue q;
    q.init(4);
    const size_t before = q.memory_footprint();
    for (int round = 0; round < 1000; ++round) {
        CAPTURE(round);
        for (uint32_t i = 0; i < 4; ++i) REQUIRE(q.push(event(ft::EventType::datagram, i, 1)));
        REQUIRE(q.push(event(ft::EventType::closed, 9)));
        CHECK(drain_conns(q) == std::vector<uint32_t>{0, 1, 2, 3, 9});
        CHECK(q.size() == 0);
        CHECK(q.datagrams() == 0);
    }
    CHECK(q.memory_footprint() == before);
}

// --- TimerHeap --------------------------------------------------------------

TEST_CASE("timerheap_empty_has_no_earliest_and_pop_is_harmless") {
    dt::TimerHeap h;
    CHECK_FALSE(h.earliest().has_value());
    h.pop();
    CHECK(h.empty());
}

TEST_CASE("timerheap_pushed_out_of_order_pops_earliest_first") {
    dt::TimerHeap h;
    const long ms[] = {700, 100, 900, 300, 500, 200, 800, 400, 600};
    for (uint32_t i = 0; i < 9; ++i) h.push(kT0 + std::chrono::milliseconds(ms[i]), ft::ConnId{i, 1});
    CHECK(h.size() == 9);
    const auto out = drain(h);
    REQUIRE(out.size() == 9);
    for (size_t i = 0; i < out.size(); ++i) {
        CAPTURE(i);
        CHECK(out[i].first == long(100 * (i + 1)));
        CHECK(ms[out[i].second] == out[i].first);  // each entry kept its connection
    }
}

TEST_CASE("timerheap_equal_times_all_surface_before_later_ones") {
    dt::TimerHeap h;
    for (uint32_t i = 0; i < 5; ++i) h.push(kT0 + 1s, ft::ConnId{i, 1});
    h.push(kT0 + 500ms, ft::ConnId{7, 1});
    h.push(kT0 + 2s, ft::ConnId{8, 1});
    const auto out = drain(h);
    REQUIRE(out.size() == 7);
    CHECK(out.front() == std::make_pair(500L, 7u));
    CHECK(out.back() == std::make_pair(2000L, 8u));
    std::vector<uint32_t> middle;
    for (size_t i = 1; i < 6; ++i) {
        CHECK(out[i].first == 1000);
        middle.push_back(out[i].second);
    }
    std::sort(middle.begin(), middle.end());
    CHECK(middle == std::vector<uint32_t>{0, 1, 2, 3, 4});
}

TEST_CASE("timerheap_rebuild_replaces_every_entry_and_orders_them") {
    dt::TimerHeap h;
    for (uint32_t i = 0; i < 50; ++i) h.push(kT0 + std::chrono::milliseconds(i), ft::ConnId{i, 1});
    h.rebuild([](auto add) {
        add(kT0 + 3s, ft::ConnId{30, 2});
        add(kT0 + 1s, ft::ConnId{10, 2});
        add(kT0 + 2s, ft::ConnId{20, 2});
    });
    REQUIRE(h.size() == 3);
    const std::optional<dt::TimerHeap::Entry> e = h.earliest();
    REQUIRE(e.has_value());
    CHECK(e->conn == ft::ConnId{10, 2});
    CHECK(drain(h) == std::vector<std::pair<long, uint32_t>>{{1000, 10}, {2000, 20}, {3000, 30}});
}

TEST_CASE("timerheap_interleaved_push_and_pop_keeps_the_earliest_on_top") {
    // A deterministic pseudo-random sequence of pushes and pops against a
    // sorted reference.
    dt::TimerHeap h;
    std::vector<long> ref;
    uint32_t x = 12345;
    for (int step = 0; step < 5000; ++step) {
        x = x * 1103515245u + 12345u;
        if ((x >> 16) % 3 != 0 || ref.empty()) {
            const long ms = long((x >> 8) % 10000);
            h.push(kT0 + std::chrono::milliseconds(ms), ft::ConnId{uint32_t(step), 1});
            ref.push_back(ms);
        } else {
            std::sort(ref.begin(), ref.end());
            const std::optional<dt::TimerHeap::Entry> e = h.earliest();
            REQUIRE(e.has_value());
            CHECK(e->when == kT0 + std::chrono::milliseconds(ref.front()));
            ref.erase(ref.begin());
            h.pop();
        }
        REQUIRE(h.size() == ref.size());
    }
}
