// The CLI's UDP side (demo/udp.h): the pure GSO-run and GRO-split helpers,
// the per-flow transmit queue, and - over loopback, no root needed - the send
// batch and receive batch with and without the kernel's UDP offloads.
// Built into build/unit_tests together with demo/udp.cpp.
#include <doctest/doctest.h>
#include <netinet/udp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "demo/udp.h"

using demo::UdpTxQueue;
using faketcp::ByteView;

namespace {

std::vector<iovec> iovs(std::initializer_list<size_t> sizes) {
    static uint8_t buf[70000];
    std::vector<iovec> v;
    for (size_t s : sizes) v.push_back(iovec{buf, s});
    return v;
}

size_t run_of(std::initializer_list<size_t> sizes, size_t max_segments = demo::kGsoMaxSegments,
              size_t max_bytes = demo::kGsoMaxBytes) {
    std::vector<iovec> v = iovs(sizes);
    return demo::gso_run(v.data(), v.size(), max_segments, max_bytes);
}

// `n` distinct datagrams of `size` bytes: byte k of datagram i is i * 31 + k.
std::vector<std::vector<uint8_t>> datagrams(size_t n, size_t size, size_t last_size = 0) {
    std::vector<std::vector<uint8_t>> v;
    for (size_t i = 0; i < n; ++i) {
        std::vector<uint8_t> d(i + 1 == n && last_size != 0 ? last_size : size);
        for (size_t k = 0; k < d.size(); ++k) d[k] = static_cast<uint8_t>(i * 31 + k);
        v.push_back(d);
    }
    return v;
}

}  // namespace

TEST_CASE("gso_run: runs of equal sizes, only the last shorter") {
    CHECK(run_of({}) == 0);
    CHECK(run_of({100}) == 1);
    CHECK(run_of({100, 100, 100}) == 3);
    CHECK(run_of({100, 100, 40}) == 3);        // a shorter last one ends the run ...
    CHECK(run_of({100, 40, 100}) == 2);        // ... even if more follow
    CHECK(run_of({100, 100, 101, 100}) == 2);  // a longer one cannot join
    CHECK(run_of({40, 100}) == 1);
    CHECK(run_of({0, 0}) == 1);                // empty datagrams never join a run
    CHECK(run_of({100, 0, 100}) == 1);
}

TEST_CASE("gso_run: segment and byte limits") {
    std::vector<iovec> v = iovs({});
    for (int i = 0; i < 100; ++i) v.push_back(iovec{nullptr, 10});
    CHECK(demo::gso_run(v.data(), v.size()) == demo::kGsoMaxSegments);
    CHECK(demo::gso_run(v.data(), v.size(), 5) == 5);
    CHECK(demo::gso_run(v.data(), v.size(), 64, 35) == 3);  // 3 x 10 fits 35, 4 do not
    // Full-size datagrams: the byte limit binds before the segment limit.
    std::vector<iovec> big(64, iovec{nullptr, 1460});
    const size_t n = demo::gso_run(big.data(), big.size());
    CHECK(n == demo::kGsoMaxBytes / 1460);
    CHECK(n * 1460 <= demo::kGsoMaxBytes);
    CHECK(demo::kGsoMaxBytes <= 65507);  // one IPv4 UDP packet's payload
}

TEST_CASE("gro_segment: splits at gso_size, the last shorter, never past the end") {
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof buf; ++i) buf[i] = static_cast<uint8_t>(i);
    const ByteView whole(buf, 1000);
    CHECK(demo::gro_segment_count(1000, 0) == 1);  // no control message
    CHECK(demo::gro_segment_count(1000, 1000) == 1);
    CHECK(demo::gro_segment_count(1000, 5000) == 1);
    CHECK(demo::gro_segment_count(1000, 250) == 4);
    CHECK(demo::gro_segment_count(1000, 300) == 4);
    CHECK(demo::gro_segment_count(0, 300) == 1);  // an empty datagram is still one
    CHECK(demo::gro_segment_count(1000, 1) == 1000);

    CHECK(demo::gro_segment(whole, 0, 0).size == 1000);
    CHECK(demo::gro_segment(whole, 0, 1).size == 0);
    CHECK(demo::gro_segment(whole, 5000, 0).size == 1000);
    size_t total = 0;
    for (size_t i = 0; i < 4; ++i) {
        const ByteView s = demo::gro_segment(whole, 300, i);
        CHECK(s.data == buf + i * 300);
        CHECK(s.size == (i < 3 ? 300u : 100u));
        total += s.size;
    }
    CHECK(total == 1000);
    CHECK(demo::gro_segment(whole, 300, 4).size == 0);
    CHECK(demo::gro_segment(whole, 300, 1000000).size == 0);
}

TEST_CASE("UdpTxQueue: per-flow order, flows in first-datagram order, bounded") {
    UdpTxQueue q(8);
    const uint8_t a[3] = {1, 2, 3}, b[2] = {4, 5}, c[1] = {6};
    CHECK(q.empty());
    CHECK(q.add(5, {a, 3}));
    CHECK(q.add(2, {b, 2}));
    CHECK(q.add(5, {c, 1}));
    CHECK_FALSE(q.add(8, {a, 3}));  // out of range
    CHECK(q.flow_count() == 2);
    CHECK(q.flow(0) == 5);
    CHECK(q.flow(1) == 2);
    CHECK(q.has(5));
    CHECK_FALSE(q.has(3));
    uint32_t e = q.first(5);
    REQUIRE(e != UdpTxQueue::kNone);
    CHECK(q.data(e).size == 3);
    CHECK(std::memcmp(q.data(e).data, a, 3) == 0);
    e = q.next(e);
    REQUIRE(e != UdpTxQueue::kNone);
    CHECK(q.data(e).size == 1);
    CHECK(q.data(e).data[0] == 6);
    CHECK(q.next(e) == UdpTxQueue::kNone);
    q.clear();
    CHECK(q.empty());
    CHECK_FALSE(q.has(5));
    CHECK(q.flow_count() == 0);

    // Full by entries ...
    size_t n = 0;
    while (q.add(1, {a, 1})) ++n;
    CHECK(n == UdpTxQueue::kEntries);
    q.clear();
    // ... and by bytes.
    std::vector<uint8_t> big(1460);
    n = 0;
    while (q.add(static_cast<uint32_t>(n % 8), {big.data(), big.size()})) ++n;
    CHECK(n == UdpTxQueue::kBytes / 1460);
    q.clear();
    CHECK(q.add(0, {big.data(), big.size()}));
}

namespace {

// A UDP socket on 127.0.0.1, an ephemeral port; invalid if loopback is unusable.
demo::Fd loopback_socket(demo::SockAddr& bound) {
    demo::Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return fd;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int big = 1 << 21;
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) return demo::Fd();
    bound.len = sizeof bound.ss;
    if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound.ss), &bound.len) != 0) return demo::Fd();
    return fd;
}

// Every datagram `rx` can read now, split at the UDP_GRO size; `receives` counts reads.
std::vector<std::vector<uint8_t>> receive_all(int fd, demo::UdpRxBatch& rx, size_t& receives) {
    std::vector<std::vector<uint8_t>> got;
    for (int round = 0; round < 50; ++round) {
        const int n = rx.receive(fd);
        if (n == -EAGAIN) {
            usleep(2000);  // loopback delivery is synchronous, but be patient
            if (round > 3) break;
            continue;
        }
        REQUIRE(n > 0);
        for (int i = 0; i < n; ++i) {
            ++receives;
            const demo::RxMeta m = rx.meta(size_t(i));
            const size_t count = demo::gro_segment_count(rx.size(size_t(i)), m.gro_size);
            for (size_t k = 0; k < count; ++k) {
                const ByteView d = demo::gro_segment(rx.data(size_t(i)), m.gro_size, k);
                got.emplace_back(d.data, d.data + d.size);
            }
        }
    }
    return got;
}

// Sends `dgrams` as flow 3 through a UdpTxQueue and a UdpSendBatch to a
// loopback receiver (UDP_GRO if `gro`); returns what arrived.
std::vector<std::vector<uint8_t>> round_trip(const std::vector<std::vector<uint8_t>>& dgrams, bool gso, bool gro,
                                             demo::UdpOffloadStats& stats, size_t& receives) {
    demo::SockAddr rx_addr, tx_addr;
    demo::Fd rxfd = loopback_socket(rx_addr);
    demo::Fd txfd = loopback_socket(tx_addr);
    if (!rxfd.valid() || !txfd.valid()) return {};
    std::string why;
    if (gro) REQUIRE(demo::enable_udp_gro(rxfd.get(), why));
    UdpTxQueue q(4);
    for (const auto& d : dgrams) REQUIRE(q.add(3, {d.data(), d.size()}));
    demo::UdpSendBatch batch;
    batch.add_flow(q, 3, &rx_addr, nullptr, gso);
    demo::UdpErrors errors;
    const demo::UdpSendBatch::Outcome out = batch.send(txfd.get(), errors, stats);
    CHECK(out.sent == dgrams.size());
    CHECK(out.failed == 0);
    CHECK(out.gso_refused_errno == 0);
    demo::UdpRxBatch rx;
    return receive_all(rxfd.get(), rx, receives);
}

}  // namespace

TEST_CASE("UdpSendBatch / UdpRxBatch over loopback: runs arrive whole, byte-exact, with and without offloads") {
    std::string why;
    const bool have_gso = demo::probe_udp_gso(why);
    const auto dgrams = datagrams(10, 1000, 333);  // 9 x 1000 and a shorter last one
    for (int mode = 0; mode < 4; ++mode) {
        const bool gso = (mode & 1) != 0 && have_gso;
        const bool gro = (mode & 2) != 0;
        CAPTURE(gso);
        CAPTURE(gro);
        demo::UdpOffloadStats stats;
        size_t receives = 0;
        const auto got = round_trip(dgrams, gso, gro, stats, receives);
        REQUIRE_MESSAGE(!got.empty(), "no UDP over loopback: the sockets could not be set up");
        CHECK(got == dgrams);
        CHECK(stats.gso_sends == (gso ? 1u : 0u));
        CHECK(stats.gso_datagrams == (gso ? 10u : 0u));
        // A GSO send over loopback reaches a UDP_GRO socket as one receive;
        // a socket without UDP_GRO gets it cut up by the kernel.
        CHECK(receives == (gso && gro ? 1u : 10u));
    }
}

TEST_CASE("UdpSendBatch: different sizes make several runs in one sendmmsg") {
    std::string why;
    if (!demo::probe_udp_gso(why)) return;
    auto dgrams = datagrams(3, 500);
    for (const auto& d : datagrams(4, 200, 50)) dgrams.push_back(d);
    dgrams.push_back(std::vector<uint8_t>(1400, 7));
    demo::UdpOffloadStats stats;
    size_t receives = 0;
    const auto got = round_trip(dgrams, true, false, stats, receives);
    if (got.empty()) return;
    CHECK(got == dgrams);
    CHECK(stats.gso_sends == 2);  // 3 x 500 + a 200 (shorter: ends the run), 2 x 200 + a 50; the 1400 alone
    CHECK(stats.gso_datagrams == 7);
}
