// offload_rx_bench: CPU per datagram of the receiving side, a StackDriver
// reading an offload TUN (a benchmark tool, not a test; root; run it inside a
// throw-away network namespace, see offload_rx_bench.sh). offload_bench
// measures the sender; this measures the reader.
//
//   offload_rx_bench MODE COUNT SIZE
//     Stack A (tun "orxA", 10.97.1.0/24) sends COUNT datagrams of SIZE bytes
//     to stack B (tun "orxB", offload on, 10.97.2.0/24); the kernel forwards
//     them from one TUN to the other. B's driver runs in a thread of its own.
//     MODE  gro:     A offload on, 64 datagrams per flush: GSO super-packets,
//                    which reach B whole (NEEDS_CSUM + GSO) and B splits
//           partial: A offload on, one datagram per flush: single NEEDS_CSUM
//                    packets (a partial checksum)
//           plain:   A offload off: full checksums, no vnet flags at B (B
//                    sums every byte: the path a forged packet takes)
//   Prints B's thread CPU time (CLOCK_THREAD_CPUTIME_ID: user + system, the
//   read syscalls included) per datagram B delivered. The kernel's forwarding
//   runs in A's write calls and is not counted.
//
// Build: g++ -std=c++17 -O2 -I. test/tools/offload_rx_bench.cpp faketcp.cpp tun.cpp -pthread
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "faketcp.h"

using namespace faketcp;

namespace {

double thread_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

IpAddr v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) { return IpAddr::v4(a, b, c, d); }

struct Counter : StackHandler {
    std::atomic<uint64_t> datagrams{0};
    bool connected = false, accepted = false;
    void on_connected(ConnId, const ConnInfo&) override { connected = true; }
    void on_accepted(ConnId, const ConnInfo&) override { accepted = true; }
    void on_datagram(ConnId, ByteView) override { datagrams.fetch_add(1, std::memory_order_relaxed); }
};

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "offload_rx_bench: %s\n", what.c_str());
    std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: offload_rx_bench gro|partial|plain COUNT SIZE\n");
        return 2;
    }
    const std::string mode = argv[1];
    const size_t count = size_t(std::atol(argv[2])), size = size_t(std::atol(argv[3]));
    if (mode != "gro" && mode != "partial" && mode != "plain") die("unknown mode " + mode);

    TunConfig ca, cb;
    ca.name = "orxA";
    ca.local_v4 = v4(10, 97, 1, 1);
    ca.peer_v4 = v4(10, 97, 1, 2);
    ca.offload = mode != "plain";
    cb.name = "orxB";
    cb.local_v4 = v4(10, 97, 2, 1);
    cb.peer_v4 = v4(10, 97, 2, 2);
    auto ta = Tun::open(ca);
    if (!ta) die(ta.status().message());
    auto tb = Tun::open(cb);
    if (!tb) die(tb.status().message());
    if (!tb->offload()) die("offload unavailable on B: " + tb->offload_note());

    StackConfig sa, sb;
    sa.local_v4 = v4(10, 97, 1, 2);
    sb.local_v4 = v4(10, 97, 2, 2);
    sa.tx_queue_capacity = 256;
    Stack a(sa), b(sb);
    if (!b.listen(7000)) die("listen");
    Counter ha, hb;
    StackDriver da(a, *ta, ha), db(b, *tb, hb);

    // Handshake on one reactor, then B moves to its own thread.
    auto r0 = Reactor::create();
    if (!r0) die(r0.status().message());
    if (!da.attach(*r0) || !db.attach(*r0)) die("attach");
    auto conn = da.connect(Endpoint{v4(10, 97, 2, 2), 7000}, r0->now());
    if (!conn) die("connect");
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!(ha.connected && hb.accepted)) {
        if (std::chrono::steady_clock::now() > until) die("no handshake");
        if (!r0->run_once(std::chrono::milliseconds(10))) die("run_once");
    }
    db.detach(*r0);

    std::atomic<bool> sender_done{false};
    double b_cpu = 0;
    std::thread reader([&] {
        auto rb = Reactor::create();
        if (!rb || !db.attach(*rb)) die("attach B");
        const double t0 = thread_cpu_seconds();
        uint64_t last = 0;
        auto quiet_since = std::chrono::steady_clock::now();
        for (;;) {
            if (!rb->run_once(std::chrono::milliseconds(5))) die("run_once B");
            const uint64_t got = hb.datagrams.load(std::memory_order_relaxed);
            const auto now = std::chrono::steady_clock::now();
            if (got != last) {
                last = got;
                quiet_since = now;
            } else if (sender_done && now - quiet_since > std::chrono::milliseconds(200)) {
                break;
            }
        }
        b_cpu = thread_cpu_seconds() - t0;
        db.detach(*rb);
    });

    std::vector<uint8_t> payload(size, 0xab);
    const size_t batch = mode == "gro" ? 64 : 1;
    const auto wall0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < count; ++i) {
        payload[0] = uint8_t(i);
        if (da.send(*conn, ByteView(payload.data(), size), r0->now()) != Errc::ok) die("send");
        if ((i + 1) % batch == 0) {
            da.flush();
            // Pace a little: a full TUN queue at B drops, which is not what is measured.
            if ((i + 1) % 1024 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }
    da.flush();
    sender_done = true;
    reader.join();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    const uint64_t got = hb.datagrams.load();
    const auto& ob = db.offload_stats();
    std::printf("rx %-7s %zu x %zu B: B delivered %llu (gro reads %llu, segments %llu); B thread CPU %.3f s = %.3f "
                "us/datagram; wall %.2f s\n",
                mode.c_str(), count, size, static_cast<unsigned long long>(got),
                static_cast<unsigned long long>(ob.gro_reads), static_cast<unsigned long long>(ob.gro_segments),
                b_cpu, got ? b_cpu / double(got) * 1e6 : 0.0, wall);
    return got == 0 ? 1 : 0;
}
