// One Stack per TUN queue: client ports sharded by (local + remote port) %
// shard_count (StackConfig), the TUN's eBPF queue steering by the same port
// sum (Tun::steer_by_ports), and StackDriver::attach_queue. The port rule is
// tested sans-IO; the steering and the threads only as root, in a private
// network namespace that disappears with the test.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support.h"

using namespace tst;
using ft::Errc;

namespace {

constexpr uint16_t kRemotePort = 7000;

// A sharded config that lets thousands of handshakes be in progress at once.
ft::StackConfig sharded(uint32_t count, uint32_t index) {
    ft::StackConfig c = base_config();
    c.shard_count = count;
    c.shard_index = index;
    c.max_connections = 12000;
    c.max_half_open = 12000;
    return c;
}

// How many ports of 32768-60999 are in the class, counted by brute force.
uint32_t class_size(uint32_t count, uint32_t index, uint16_t remote_port) {
    uint32_t n = 0;
    for (uint32_t p = kEphemeralLo; p <= kEphemeralHi; ++p) n += (p + remote_port) % count == index;
    return n;
}

}  // namespace

// ---------------------------------------------------------------------------
// StackConfig validation
// ---------------------------------------------------------------------------

TEST_CASE("shard_config_validate_accepts_the_range_and_refuses_the_rest") {
    CHECK(ft::validate(base_config()).ok());  // 1 / 0: no sharding
    CHECK(ft::validate(sharded(4, 3)).ok());
    CHECK(ft::validate(sharded(ft::kMaxShards, ft::kMaxShards - 1)).ok());
    CHECK(ft::kMaxShards == uint32_t(kEphemeralHi - kEphemeralLo + 1));

    const ft::Status zero = ft::validate(sharded(0, 0));
    CHECK(zero.code() == Errc::invalid_argument);
    CHECK(zero.message().find("shard_count is 0") != std::string::npos);
    const ft::Status index = ft::validate(sharded(4, 4));
    CHECK(index.code() == Errc::invalid_argument);
    CHECK(index.message().find("shard_index is 4") != std::string::npos);
    CHECK(ft::validate(sharded(ft::kMaxShards + 1, 0)).code() == Errc::invalid_argument);
}

TEST_CASE("shard_config_invalid_connect_refused_listen_still_works") {
    for (auto bad : {sharded(0, 0), sharded(3, 3), sharded(ft::kMaxShards + 1, 1)}) {
        CAPTURE(bad.shard_count);
        CAPTURE(bad.shard_index);
        Harness h(bad);
        ft::Result<ft::ConnId> r = h.stack.connect(ft::Endpoint{kPeer4, kRemotePort}, h.now);
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().code() == Errc::invalid_argument);
        CHECK(r.status().message().find("StackConfig::shard_") != std::string::npos);
        CHECK(h.tx().empty());  // no SYN
        CHECK(h.stack.listen(5555).ok());
    }
}

// ---------------------------------------------------------------------------
// connect() picks ports of its class
// ---------------------------------------------------------------------------

TEST_CASE("shard_connect_thousands_every_port_in_its_class") {
    const std::vector<uint16_t> remote_ports = {kRemotePort, 1, 443, 51820, 65535};
    for (uint32_t count : {2u, 3u, 4u, 7u, 256u}) {
        for (uint32_t index : {0u, 1u, count / 2, count - 1}) {
            CAPTURE(count);
            CAPTURE(index);
            Harness h(sharded(count, index));
            // 600 connects towards each remote port, fewer if its class is smaller.
            std::vector<uint32_t> budget;
            size_t planned = 0;
            for (uint16_t rport : remote_ports) {
                budget.push_back(std::min(600u, class_size(count, index, rport)));
                planned += budget.back();
            }
            size_t failures = 0, wrong_class = 0, out_of_range = 0, connects = 0;
            std::set<std::pair<uint16_t, uint16_t>> tuples;
            for (int k = 0; k < 3000; ++k) {
                const size_t which = size_t(k) % remote_ports.size();
                const uint16_t rport = remote_ports[which];
                if (budget[which] == 0) continue;
                --budget[which];
                ft::Result<ft::ConnId> r = h.stack.connect(ft::Endpoint{kPeer4, rport}, h.now);
                h.stack.tx_clear();
                ++connects;
                if (!r.ok()) {
                    ++failures;
                    continue;
                }
                const uint16_t port = h.stack.info(r.value())->local.port;
                out_of_range += port < kEphemeralLo || port > kEphemeralHi;
                wrong_class += (uint32_t(port) + rport) % count != index;
                tuples.insert({port, rport});
            }
            CHECK(connects == planned);
            if (count <= 7) CHECK(connects == 3000);
            CHECK(failures == 0);
            CHECK(out_of_range == 0);
            CHECK(wrong_class == 0);
            CHECK(tuples.size() == connects);  // no 4-tuple twice
        }
    }
}

TEST_CASE("shard_connect_the_sent_syn_carries_the_port_info_reports") {
    Harness h(sharded(4, 2));
    ClientConn c = start_client(h, ft::Endpoint{kPeer6, 40000});
    CHECK((uint32_t(c.out.src.port) + 40000) % 4 == 2);
    CHECK(h.stack.info(c.id)->local.port == c.out.src.port);
}

TEST_CASE("shard_connect_class_exhausted_reports_ports_exhausted") {
    constexpr uint32_t kCount = 4, kIndex = 1;
    const uint32_t size = class_size(kCount, kIndex, kRemotePort);
    REQUIRE(size == 7058);  // 28232 / 4
    Harness h(sharded(kCount, kIndex));
    const ft::Endpoint remote{kPeer4, kRemotePort};
    std::set<uint16_t> ports;
    size_t failures = 0;
    for (uint32_t k = 0; k < size; ++k) {
        ft::Result<ft::ConnId> r = h.stack.connect(remote, h.now);
        h.stack.tx_clear();
        if (!r.ok()) {
            ++failures;
            continue;
        }
        ports.insert(h.stack.info(r.value())->local.port);
    }
    CHECK(failures == 0);
    CHECK(ports.size() == size);  // the whole class, each port once
    ft::Result<ft::ConnId> full = h.stack.connect(remote, h.now);
    REQUIRE_FALSE(full.ok());
    CHECK(full.status().code() == Errc::ports_exhausted);
    CHECK(full.status().message().find("with (port + 7000) % 4 == 1") != std::string::npos);
    // The other classes stay free: another remote port shifts the class.
    ft::Result<ft::ConnId> other = h.stack.connect(ft::Endpoint{kPeer4, kRemotePort + 1}, h.now);
    REQUIRE(other.ok());
    CHECK((uint32_t(h.stack.info(other.value())->local.port) + kRemotePort + 1) % kCount == kIndex);
    h.stack.tx_clear();
}

TEST_CASE("shard_connect_max_shards_one_port_per_class") {
    // 28232 shards: every class holds exactly one port of the range.
    for (uint32_t index : {0u, 1u, 4321u, ft::kMaxShards - 1}) {
        CAPTURE(index);
        Harness h(sharded(ft::kMaxShards, index));
        ft::Result<ft::ConnId> r = h.stack.connect(ft::Endpoint{kPeer4, kRemotePort}, h.now);
        REQUIRE(r.ok());
        const uint16_t port = h.stack.info(r.value())->local.port;
        CHECK((uint32_t(port) + kRemotePort) % ft::kMaxShards == index);
        h.stack.tx_clear();
        ft::Result<ft::ConnId> again = h.stack.connect(ft::Endpoint{kPeer4, kRemotePort}, h.now);
        REQUIRE_FALSE(again.ok());
        CHECK(again.status().code() == Errc::ports_exhausted);
    }
}

TEST_CASE("shard_one_shard_draws_the_same_ports_as_before") {
    // shard_count 1 walks the range exactly as the unsharded stack always did:
    // the first port of seed 0x5eed is fixed by its first draw.
    auto first_ports = [](uint32_t count, uint32_t index) {
        Harness h(sharded(count, index));
        std::vector<uint16_t> out;
        for (int i = 0; i < 8; ++i) {
            ft::Result<ft::ConnId> r = h.stack.connect(ft::Endpoint{kPeer4, kRemotePort}, h.now);
            REQUIRE(r.ok());
            out.push_back(h.stack.info(r.value())->local.port);
        }
        return out;
    };
    Harness plain;  // base_config(): shard fields left at their defaults
    ft::Result<ft::ConnId> r = plain.stack.connect(ft::Endpoint{kPeer4, kRemotePort}, plain.now);
    REQUIRE(r.ok());
    CHECK(first_ports(1, 0).front() == plain.stack.info(r.value())->local.port);
    CHECK(first_ports(3, 1) == first_ports(3, 1));  // deterministic given the seed
}

TEST_CASE("attach_queue_refuses_a_queue_the_tun_lacks") {
    ft::Tun none;  // not open: no queues
    auto reactor = ft::Reactor::create();
    REQUIRE(reactor.ok());
    Harness h;
    ft::StackHandler handler;
    ft::StackDriver driver(h.stack, none, handler);
    const ft::Status s = driver.attach_queue(*reactor, 0);
    CHECK(s.code() == Errc::invalid_argument);
    CHECK(s.message().find("queue 0") != std::string::npos);
    CHECK(none.steer_by_ports().code() == Errc::invalid_argument);
    CHECK(none.clear_steering().code() == Errc::invalid_argument);
}

// ---------------------------------------------------------------------------
// Root only: the kernel steers by the port sum; one thread per queue
// ---------------------------------------------------------------------------

namespace {

// Threads started while it is alive share the private namespace.
using Netns = tst::PrivateNetns;

// Host side 10.9.0.1 / fd09::1, the Stack side 10.9.0.2 / fd09::2.
ft::TunConfig tun_config(uint32_t queues, bool offload = false) {
    ft::TunConfig c;
    c.queues = queues;
    c.offload = offload;  // off: plain packets, which syn_queues() parses itself
    c.local_v4 = ip("10.9.0.1");
    c.peer_v4 = ip("10.9.0.2");
    c.local_v6 = ip("fd09::1");
    c.peer_v6 = ip("fd09::2");
    return c;
}

sockaddr_storage sockaddr_of(const ft::Endpoint& e, socklen_t& len) {
    sockaddr_storage ss{};
    if (e.addr.family == ft::Family::v6) {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(e.port);
        std::memcpy(&s6->sin6_addr, e.addr.bytes.data(), 16);
        len = sizeof *s6;
    } else {
        auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
        s4->sin_family = AF_INET;
        s4->sin_port = htons(e.port);
        std::memcpy(&s4->sin_addr, e.addr.bytes.data(), 4);
        len = sizeof *s4;
    }
    return ss;
}

// A kernel TCP socket bound to `from` (port 0: the kernel picks), its
// non-blocking connect to `to` started. -1 on failure.
int start_kernel_connect(const ft::Endpoint& from, const ft::Endpoint& to) {
    const int domain = to.addr.family == ft::Family::v6 ? AF_INET6 : AF_INET;
    const int fd = ::socket(domain, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    const int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t fl = 0, tl = 0;
    sockaddr_storage f = sockaddr_of(from, fl), t = sockaddr_of(to, tl);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&f), fl) != 0 ||
        (::connect(fd, reinterpret_cast<sockaddr*>(&t), tl) != 0 && errno != EINPROGRESS)) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// The TCP ports of a plain IPv4/IPv6 packet, parsed independently of the library.
bool tcp_ports(const uint8_t* p, size_t n, uint16_t& sport, uint16_t& dport, uint8_t& flags) {
    if (n < 1) return false;
    size_t l4 = 0;
    if ((p[0] >> 4) == 4) {
        if (n < 20 || p[9] != 6) return false;
        l4 = size_t(p[0] & 0x0f) * 4;
    } else if ((p[0] >> 4) == 6) {
        if (n < 40 || p[6] != 6) return false;
        l4 = 40;
    } else {
        return false;
    }
    if (n < l4 + 14) return false;
    sport = be16(p + l4);
    dport = be16(p + l4 + 2);
    flags = p[l4 + 13];
    return true;
}

// Starts one kernel connect per (sport, dport) from the host address to the
// Stack's address and returns, per pair, the queue its SYN was read from
// (-1: not seen within 3 s).
std::vector<int> syn_queues(const ft::Tun& tun, bool v6, const std::vector<std::pair<uint16_t, uint16_t>>& pairs) {
    const ft::IpAddr host = ip(v6 ? "fd09::1" : "10.9.0.1"), stack = ip(v6 ? "fd09::2" : "10.9.0.2");
    std::vector<int> fds;
    for (const auto& pr : pairs) {
        const int fd = start_kernel_connect(ft::Endpoint{host, pr.first}, ft::Endpoint{stack, pr.second});
        CHECK_MESSAGE(fd >= 0, "socket/bind/connect for port ", pr.first, ": ", std::strerror(errno));
        fds.push_back(fd);
    }
    std::vector<int> queue(pairs.size(), -1);
    size_t seen = 0;
    uint8_t buf[2048];
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (seen < pairs.size() && std::chrono::steady_clock::now() < until) {
        std::vector<pollfd> pfds;
        for (size_t q = 0; q < tun.queue_count(); ++q) pfds.push_back({tun.fd(q), POLLIN, 0});
        if (::poll(pfds.data(), pfds.size(), 50) <= 0) continue;
        for (size_t q = 0; q < tun.queue_count(); ++q) {
            for (;;) {
                const long n = tun.read(q, buf, sizeof buf);
                if (n <= 0) break;
                uint16_t sport = 0, dport = 0;
                uint8_t flags = 0;
                if (!tcp_ports(buf, size_t(n), sport, dport, flags) || flags != kSyn) continue;
                for (size_t i = 0; i < pairs.size(); ++i) {
                    if (pairs[i].first != sport || pairs[i].second != dport) continue;
                    if (queue[i] == -1) {
                        queue[i] = int(q);
                        ++seen;
                    } else if (queue[i] != int(q)) {
                        queue[i] = -2;  // a retransmitted SYN came on another queue
                    }
                }
            }
        }
    }
    for (int fd : fds)
        if (fd >= 0) ::close(fd);
    return queue;
}

// Port pairs whose sums exceed 65535 too: the kernel truncates the program's
// result to 16 bits before its own % queues, which 3 queues would expose.
std::vector<std::pair<uint16_t, uint16_t>> port_pairs(uint16_t salt) {
    std::vector<std::pair<uint16_t, uint16_t>> v = {
        {uint16_t(65535 - salt), 65535}, {uint16_t(60000 + salt), 40000}, {uint16_t(1024 + salt), 80}};
    for (uint16_t i = 0; i < 29; ++i)
        v.push_back({uint16_t(20000 + salt + i * 1187), uint16_t(1 + (i * 2903 + salt * 7) % 65000)});
    return v;
}

}  // namespace

TEST_CASE("steer_by_ports: each SYN from the kernel arrives on queue (sport + dport) % queues (root)" * tst::unless_root()) {
    for (uint32_t queues : {4u, 3u}) {
        for (bool v6 : {false, true}) {
            CAPTURE(queues);
            CAPTURE(v6);
            Netns ns;
            REQUIRE_MESSAGE(ns.ok(), ns.why());
            auto tun = ft::Tun::open(tun_config(queues));
            REQUIRE_MESSAGE(tun.ok(), tun.status().message());
            REQUIRE(tun->queue_count() == queues);
            const ft::Status steer = tun->steer_by_ports();
            REQUIRE_MESSAGE(steer.ok(), steer.message());

            const auto pairs = port_pairs(0);
            const std::vector<int> got = syn_queues(*tun, v6, pairs);
            size_t wrong = 0;
            for (size_t i = 0; i < pairs.size(); ++i) {
                const int want = int((uint32_t(pairs[i].first) + pairs[i].second) % queues);
                if (got[i] != want) {
                    ++wrong;
                    MESSAGE("sport ", pairs[i].first, " dport ", pairs[i].second, ": queue ", got[i], ", want ",
                            want);
                }
            }
            CHECK(wrong == 0);

            // Without the program the kernel's automq hashes unknown flows
            // instead: the port sum no longer predicts the queue.
            REQUIRE(tun->clear_steering().ok());
            const auto others = port_pairs(7);
            const std::vector<int> hashed = syn_queues(*tun, v6, others);
            size_t unseen = 0, differ = 0;
            for (size_t i = 0; i < others.size(); ++i) {
                unseen += hashed[i] < 0;
                differ += hashed[i] != int((uint32_t(others[i].first) + others[i].second) % queues);
            }
            CHECK(unseen == 0);
            CHECK(differ > 0);  // all 32 matching by chance: < 3^-32
            MESSAGE("without steering ", differ, " of ", others.size(), " SYNs left the port-sum queue");
        }
    }
}

TEST_CASE("steer_by_ports: refuses more shards than a TUN can have queues (root)" * tst::unless_root()) {
    Netns ns;
    REQUIRE_MESSAGE(ns.ok(), ns.why());
    auto tun = ft::Tun::open(tun_config(2));
    REQUIRE_MESSAGE(tun.ok(), tun.status().message());
    const ft::Status s = tun->steer_by_ports(257);
    CHECK(s.code() == Errc::invalid_argument);
    CHECK(tun->steer_by_ports(2).ok());
    CHECK(tun->clear_steering().ok());
}

namespace {

// One thread's Reactor, Stack and StackDriver on one queue. Counters are
// atomics the main thread reads while the thread runs; everything else is
// read after join().
struct QueueThread : ft::StackHandler {
    uint32_t queue = 0, queues = 0;
    ft::Tun* tun = nullptr;
    int connects = 0;  // towards the host's listener
    std::atomic<int> connected{0}, failed{0}, accepted{0}, wrong_queue{0};
    std::atomic<int> conns_with_data{0};
    std::set<uint32_t> got_data;  // ConnId.index with at least one datagram (this thread only)
    ft::StackDriver* driver = nullptr;
    std::string error;
    ft::Stats stats;

    void check(const ft::ConnInfo& i) {
        if ((uint32_t(i.local.port) + i.remote.port) % queues != queue) ++wrong_queue;
    }
    void on_accepted(ft::ConnId, const ft::ConnInfo& i) override {
        check(i);
        ++accepted;
    }
    void on_connected(ft::ConnId, const ft::ConnInfo& i) override {
        check(i);
        ++connected;
    }
    void on_connect_failed(ft::ConnId, ft::CloseReason) override { ++failed; }
    void on_datagram(ft::ConnId c, ft::ByteView) override {
        if (got_data.insert(c.index).second) ++conns_with_data;
    }

    void run(const std::atomic<bool>& stop) {
        auto reactor = ft::Reactor::create();
        if (!reactor) {
            error = reactor.status().message();
            return;
        }
        ft::StackConfig cfg;
        cfg.local_v4 = ip("10.9.0.2");
        cfg.shard_count = queues;
        cfg.shard_index = queue;
        cfg.seed = 1000 + queue;
        cfg.idle_ack_interval = std::chrono::milliseconds(20);  // ACK the kernel's data before it resends
        ft::Stack stack(cfg);
        ft::StackDriver d(stack, *tun, *this);
        driver = &d;
        if (ft::Status s = stack.listen(kRemotePort); !s) error = s.message();
        if (ft::Status s = d.attach_queue(*reactor, queue); !s) error = s.message();
        for (int k = 0; k < connects && error.empty(); ++k) {
            auto r = d.connect(ft::Endpoint{ip("10.9.0.1"), kRemotePort}, reactor->now());
            if (!r) error = r.status().message();
        }
        while (error.empty() && !stop.load()) {
            if (ft::Status s = reactor->run_once(std::chrono::milliseconds(10)); !s) error = s.message();
        }
        d.detach(*reactor);
        stats = stack.stats();
        driver = nullptr;
    }
};

template <class F>
bool wait_for(F done, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

// Four threads, one queue each. Each Stack connects to a kernel listener on
// the host and accepts kernel clients; after `idle` of silence (longer than
// automq's 3 s memory) the kernel sends on every connection, and each
// datagram must reach the Stack that owns the connection. Steering is what
// makes that hold: without it automq hashes flows it has not learnt or has
// forgotten after 3 s idle, and (seen on Linux 6.18) even the handshakes
// failed, the SYN-ACK coming back on the SYN's queue only at chance rate.
void run_queue_threads(std::chrono::milliseconds idle, bool offload) {
    CAPTURE(offload);
    constexpr uint32_t kQueues = 4;
    constexpr int kConnectsPerThread = 8, kKernelClients = 24;
    Netns ns;
    REQUIRE_MESSAGE(ns.ok(), ns.why());
    auto tun = ft::Tun::open(tun_config(kQueues, offload));
    REQUIRE_MESSAGE(tun.ok(), tun.status().message());
    CHECK_MESSAGE(tun->offload() == offload, tun->offload_note());
    const ft::Status steered = tun->steer_by_ports();
    REQUIRE_MESSAGE(steered.ok(), steered.message());

    // The host's listener for the Stacks' connects.
    const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(lfd >= 0);
    socklen_t ll = 0;
    sockaddr_storage la = sockaddr_of(ft::Endpoint{ip("10.9.0.1"), kRemotePort}, ll);
    REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&la), ll) == 0);
    REQUIRE(::listen(lfd, 256) == 0);

    std::vector<QueueThread> qt(kQueues);
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (uint32_t q = 0; q < kQueues; ++q) {
        qt[q].queue = q;
        qt[q].queues = kQueues;
        qt[q].tun = &*tun;
        qt[q].connects = kConnectsPerThread;
    }
    for (uint32_t q = 0; q < kQueues; ++q) threads.emplace_back([&, q] { qt[q].run(stop); });
    auto sum = [&](std::atomic<int> QueueThread::*field) {
        int n = 0;
        for (const QueueThread& t : qt) n += (t.*field).load();
        return n;
    };

    // Kernel clients towards the Stacks, from consecutive ports so every
    // queue gets some (Linux's own picks share one parity: bind() takes odd
    // ports, which with 7000 would reach queues 1 and 3 only).
    std::vector<int> clients;
    for (int i = 0; i < kKernelClients; ++i) {
        const ft::Endpoint from{ip("10.9.0.1"), uint16_t(41000 + i)};
        const int fd = start_kernel_connect(from, ft::Endpoint{ip("10.9.0.2"), kRemotePort});
        CHECK(fd >= 0);
        if (fd >= 0) clients.push_back(fd);
    }
    const bool handshakes = wait_for(
        [&] {
            return sum(&QueueThread::connected) + sum(&QueueThread::failed) >= int(kQueues) * kConnectsPerThread &&
                   sum(&QueueThread::accepted) >= kKernelClients;
        },
        std::chrono::seconds(10));
    CHECK(handshakes);
    std::vector<int> served;  // the host's ends of the Stacks' connects
    wait_for(
        [&] {
            for (int fd; (fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0;) served.push_back(fd);
            return served.size() >= size_t(kQueues) * kConnectsPerThread;
        },
        std::chrono::seconds(2));

    // Silence, then the kernel sends on every connection.
    std::this_thread::sleep_for(idle);
    const char msg[] = "after the idle";
    size_t sent = 0;
    for (int fd : clients) sent += ::send(fd, msg, sizeof msg, MSG_NOSIGNAL) == ssize_t(sizeof msg);
    for (int fd : served) sent += ::send(fd, msg, sizeof msg, MSG_NOSIGNAL) == ssize_t(sizeof msg);
    const bool delivered = wait_for([&] { return sum(&QueueThread::conns_with_data) >= int(sent); },
                                    std::chrono::seconds(5));

    stop = true;
    for (std::thread& t : threads) t.join();
    for (int fd : clients) ::close(fd);
    for (int fd : served) ::close(fd);
    ::close(lfd);

    uint64_t no_listener = 0, rst_sent = 0;
    std::string summary;
    for (const QueueThread& t : qt) {
        CAPTURE(t.queue);
        CHECK_MESSAGE(t.error.empty(), t.error);
        CHECK(t.wrong_queue.load() == 0);
        CHECK(t.connected.load() == kConnectsPerThread);
        CHECK(t.failed.load() == 0);
        no_listener += t.stats.dropped(ft::DropReason::no_listener);
        rst_sent += t.stats.rst_sent;
        summary += " [queue " + std::to_string(t.queue) + ": connected " + std::to_string(t.connected.load()) +
                   ", accepted " + std::to_string(t.accepted.load()) + ", with data " +
                   std::to_string(t.conns_with_data.load()) + "]";
    }
    MESSAGE("offload ", offload, ":", summary);
    CHECK(sum(&QueueThread::accepted) == kKernelClients);
    CHECK(served.size() == size_t(kQueues) * kConnectsPerThread);
    CHECK(sent == clients.size() + served.size());
    CHECK(delivered);
    CHECK(sum(&QueueThread::conns_with_data) == int(sent));
    CHECK(no_listener == 0);  // no packet reached a Stack that does not own its flow
    CHECK(rst_sent == 0);
}

}  // namespace

TEST_CASE("attach_queue: four threads, one queue each, flows stay on their owner across a 3.5 s idle (root)" * tst::unless_root()) {
    run_queue_threads(std::chrono::milliseconds(3500), false);
    run_queue_threads(std::chrono::milliseconds(300), true);  // vnet headers, GRO reads
}

