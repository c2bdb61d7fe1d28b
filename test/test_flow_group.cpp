// offload::FlowGrouper: the tx queue reordered so that each flow's packets
// are adjacent (and gso_run finds them as one run), every flow keeping its
// own order. Packets are built by test/support.cpp's encoder.
#include <algorithm>
#include <map>
#include <numeric>

#include "support.h"

using namespace tst;
namespace ofl = faketcp::offload;

namespace {

ft::IpAddr peer4(uint8_t last) { return ft::IpAddr{ft::Family::v4, {10, 0, 1, last}}; }

std::vector<ft::ByteView> views_of(const std::vector<Bytes>& pkts) {
    std::vector<ft::ByteView> v;
    for (const Bytes& p : pkts) v.emplace_back(p.data(), p.size());
    return v;
}

std::vector<uint32_t> group(ofl::FlowGrouper& g, const std::vector<Bytes>& pkts) {
    auto v = views_of(pkts);
    std::vector<uint32_t> order(pkts.size(), UINT32_MAX);
    g.group(v.data(), v.size(), order.data());
    return order;
}

// True when `order` is a permutation of 0..n-1.
bool is_permutation_of_n(std::vector<uint32_t> order) {
    std::sort(order.begin(), order.end());
    for (size_t i = 0; i < order.size(); ++i)
        if (order[i] != i) return false;
    return true;
}

// `flows` data flows from distinct peers, `per_flow` datagrams each of
// `size` bytes, sent round robin (flow 0, 1, ..., flows-1, 0, 1, ...).
// flow_of[k] names packet k's flow.
std::vector<Bytes> round_robin(size_t flows, size_t per_flow, size_t size, std::vector<size_t>& flow_of) {
    std::vector<Bytes> pkts;
    for (size_t i = 0; i < per_flow; ++i)
        for (size_t f = 0; f < flows; ++f) {
            const Path path{{kStack4, uint16_t(40000 + f)}, {peer4(uint8_t(f % 200)), uint16_t(5000 + f / 200)}};
            pkts.push_back(encode(path.data(uint32_t(1 + i * size), 1, Bytes(size, uint8_t(f)))));
            flow_of.push_back(f);
        }
    return pkts;
}

}  // namespace

TEST_CASE("FlowGrouper: round-robin flows come out grouped, each in its own order") {
    ofl::FlowGrouper g(64);
    std::vector<size_t> flow_of;
    const auto pkts = round_robin(16, 4, 1400, flow_of);
    const auto order = group(g, pkts);
    REQUIRE(is_permutation_of_n(order));
    // Flow f's packets are order[4f .. 4f+3], in the order they were queued.
    for (size_t f = 0; f < 16; ++f)
        for (size_t i = 0; i < 4; ++i) {
            CAPTURE(f);
            CAPTURE(i);
            CHECK(order[f * 4 + i] == i * 16 + f);
        }
    // And gso_run now sees 16 runs of 4 where it saw 64 runs of 1.
    auto v = views_of(pkts);
    CHECK(ofl::gso_run(v.data(), v.size()) == 1);
    std::vector<ft::ByteView> sorted;
    for (uint32_t k : order) sorted.push_back(v[k]);
    for (size_t f = 0; f < 16; ++f) CHECK(ofl::gso_run(sorted.data() + 4 * f, sorted.size() - 4 * f) == 4);
}

TEST_CASE("FlowGrouper: a flow's control packets stay in place within it; IPv4 and IPv6 are distinct flows") {
    const Path a{{kStack4, 41000}, {kPeer4, 4567}};
    const Path b{{kStack6, 41000}, {kPeer6, 4567}};
    const Path c{{kStack4, 41001}, {kPeer4, 4567}};  // differs from a in the source port only
    std::vector<Bytes> pkts = {
        encode(a.data(1, 1, "a1")), encode(b.data(1, 1, "b1")), encode(c.syn(0)),
        encode(a.data(3, 1, "a2")), encode(c.ack(1, 1)),        encode(a.rst(5)),
        encode(b.data(3, 1, "b2")),
    };
    ofl::FlowGrouper g(4);  // smaller than the batch: it grows
    const auto order = group(g, pkts);
    CHECK(order == std::vector<uint32_t>{0, 3, 5, 1, 6, 2, 4});
}

TEST_CASE("FlowGrouper: packets it cannot name stay alone, in first-appearance order") {
    const Path a{{kStack4, 41000}, {kPeer4, 4567}};
    Bytes udp = encode(a.data(1, 1, "x"));
    udp[9] = 17;  // protocol UDP
    Bytes options = encode(a.data(1, 1, "y"));
    options[0] = 0x46;  // IHL 6: the ports are not where a 20-byte header puts them
    const Bytes tiny = {0x45, 0, 0, 20};
    std::vector<Bytes> pkts = {encode(a.data(1, 1, "a1")), udp, tiny, encode(a.data(3, 1, "a2")), options, udp};
    ofl::FlowGrouper g(8);
    CHECK(group(g, pkts) == std::vector<uint32_t>{0, 3, 1, 2, 4, 5});
}

TEST_CASE("FlowGrouper: 3000 flows (hash collisions, probing) in a batch of 9000, reused across batches") {
    ofl::FlowGrouper g(16);
    for (int round = 0; round < 2; ++round) {
        std::vector<size_t> flow_of;
        const auto pkts = round_robin(3000, 3, 64, flow_of);
        const auto order = group(g, pkts);
        REQUIRE(is_permutation_of_n(order));
        // Grouped: flows appear as contiguous blocks, each flow's packets in queue order.
        std::map<size_t, size_t> block_start;
        size_t errors = 0;
        for (size_t k = 0; k < order.size(); ++k) {
            const size_t f = flow_of[order[k]];
            auto it = block_start.find(f);
            if (it == block_start.end()) {
                block_start[f] = k;
                continue;
            }
            if (k - it->second > 2 || order[k] <= order[k - 1] || flow_of[order[k - 1]] != f) ++errors;
        }
        CHECK(errors == 0);
        CHECK(block_start.size() == 3000);
    }
}

TEST_CASE("FlowGrouper: empty and single batches") {
    ofl::FlowGrouper g;
    CHECK(group(g, {}).empty());
    const Path a{{kStack4, 41000}, {kPeer4, 4567}};
    CHECK(group(g, {encode(a.data(1, 1, "z"))}) == std::vector<uint32_t>{0});
}
