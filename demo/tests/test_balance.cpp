// The client's flow placement (demo/balance.h): place_flow as a pure
// function, the bound it keeps over a sequence of placements, and
// FlowBalance's directory, counts and mailbox.
// Built into build/unit_tests together with demo/balance.cpp.
#include <doctest/doctest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "demo/balance.h"

using demo::FlowBalance;
using demo::FlowMail;
using demo::place_flow;

namespace {

demo::PeerKey key_for_port(uint16_t port) {
    demo::PeerKey k;
    k.family = AF_INET;
    k.port = port;
    k.addr[0] = 127;
    k.addr[3] = 1;
    return k;
}

}  // namespace

TEST_CASE("place_flow keeps a flow where it arrived unless that worker is kRebalanceGap ahead") {
    CHECK(place_flow({0, 0}, 0) == 0);
    CHECK(place_flow({1, 0}, 0) == 0);  // ahead by 1: stays
    CHECK(place_flow({2, 0}, 0) == 1);  // ahead by 2: moves
    CHECK(place_flow({0, 2}, 1) == 0);
    CHECK(place_flow({5, 3, 4}, 0) == 1);
    CHECK(place_flow({5, 3, 3}, 0) == 1);  // the lowest index among the least loaded
    CHECK(place_flow({3, 5, 4}, 2) == 2);  // behind the busiest: stays
    CHECK(place_flow({7}, 0) == 0);        // one worker
}

TEST_CASE("placements one at a time keep max - min within kRebalanceGap, whatever the kernel's hash does") {
    for (uint32_t workers : {2u, 3u, 4u}) {
        // The worst hash: every new peer arrives at worker 0; then a skewed one.
        for (int pattern = 0; pattern < 2; ++pattern) {
            std::vector<uint32_t> active(workers, 0);
            for (uint32_t i = 0; i < 64; ++i) {
                const uint32_t arrived = pattern == 0 ? 0 : (i % 5 == 0 ? workers - 1 : 0);
                ++active[place_flow(active, arrived)];
                const auto [lo, hi] = std::minmax_element(active.begin(), active.end());
                CHECK(*hi - *lo <= demo::kRebalanceGap);
            }
        }
    }
    // 16 flows over 2 workers, all arriving at one: 7..9 each.
    std::vector<uint32_t> active(2, 0);
    for (int i = 0; i < 16; ++i) ++active[place_flow(active, 1)];
    CHECK(active[0] >= 7);
    CHECK(active[0] <= 9);
    CHECK(active[0] + active[1] == 16);
}

TEST_CASE("FlowBalance: the directory names each peer's owner until its flow is released") {
    FlowBalance b(2, 1);
    {
        FlowBalance::Guard g = b.lock();
        CHECK_FALSE(b.owner(g, key_for_port(1)).has_value());
        b.assign(g, key_for_port(1), 0);
        b.assign(g, key_for_port(2), 0);
        REQUIRE(b.owner(g, key_for_port(1)).has_value());
        CHECK(*b.owner(g, key_for_port(1)) == 0);
        CHECK(b.choose(g, 0) == 1);  // 2 ahead of worker 1
        CHECK(b.choose(g, 1) == 1);
    }
    CHECK(b.active() == std::vector<uint32_t>{2, 0});
    b.release(key_for_port(1), 1);  // not worker 1's: nothing happens
    CHECK(b.active() == std::vector<uint32_t>{2, 0});
    b.release(key_for_port(1), 0);
    CHECK(b.active() == std::vector<uint32_t>{1, 0});
    FlowBalance::Guard g = b.lock();
    CHECK_FALSE(b.owner(g, key_for_port(1)).has_value());
}

TEST_CASE("FlowBalance: mail arrives in order, wakes its worker, and a full mailbox refuses more") {
    FlowBalance b(2, 1);
    const int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    REQUIRE(wake >= 0);
    b.set_wake(1, wake);
    for (uint8_t i = 0; i < 3; ++i) {
        FlowMail m;
        m.data = {i};
        CHECK(b.post(1, std::move(m)));
    }
    uint64_t count = 0;
    CHECK(::read(wake, &count, sizeof count) == static_cast<ssize_t>(sizeof count));
    CHECK(count == 3);
    std::vector<FlowMail> got;
    b.take(0, got);
    CHECK(got.empty());
    b.take(1, got);
    REQUIRE(got.size() == 3);
    for (uint8_t i = 0; i < 3; ++i) CHECK(got[i].data == std::vector<uint8_t>{i});
    b.take(1, got);
    CHECK(got.empty());
    for (size_t i = 0; i < FlowBalance::kMailboxLimit; ++i) REQUIRE(b.post(1, FlowMail{}));
    CHECK_FALSE(b.post(1, FlowMail{}));
    ::close(wake);
}
