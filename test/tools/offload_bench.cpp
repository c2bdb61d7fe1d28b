// offload_bench: CPU per datagram of writing fake-TCP segments to a TUN, with
// and without GSO (a benchmark tool, not a test; root; run it inside a
// throw-away network namespace whose route to 10.98.0.0/24 leads somewhere
// that drops the packets, see offload_bench.sh).
//
//   offload_bench PATH MODE COUNT SIZE
//     PATH  device: prebuilt segments written the way StackDriver::flush does
//           driver: Stack::send + StackDriver::flush every 64 datagrams (the
//                   whole transmit path, checksums included)
//     MODE  plain: TUN without offload, one write per segment
//           vnet:  TUN with offload, one write per segment (zero vnet header)
//           gso:   TUN with offload, runs coalesced (one writev per <= 64 KiB)
//   Prints user + system CPU from getrusage() per datagram (this process,
//   including the softirq work the kernel ran in its context), the busy time of
//   all CPUs from /proc/stat per datagram (also catches ksoftirqd and other
//   CPUs, but also anything else running), and wall time.
//
// Build: g++ -std=c++17 -O2 -I. test/tools/offload_bench.cpp faketcp.cpp tun.cpp
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "faketcp.h"

using namespace faketcp;
namespace ofl = faketcp::offload;

namespace {

constexpr size_t kBatch = 64;  // datagrams per flush, as one reactor wakeup would queue

// Busy jiffies of all CPUs (user nice system irq softirq steal).
double system_busy_seconds() {
    FILE* f = std::fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[8] = {};
    const int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                              &v[4], &v[5], &v[6], &v[7]);
    std::fclose(f);
    if (n != 8) return 0;
    return double(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / double(sysconf(_SC_CLK_TCK));
}

struct Times {
    double user = 0, sys = 0;
};
Times usage() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return {double(ru.ru_utime.tv_sec) + double(ru.ru_utime.tv_usec) / 1e6,
            double(ru.ru_stime.tv_sec) + double(ru.ru_stime.tv_usec) / 1e6};
}

Result<Tun> open_tun(bool offload) {
    TunConfig c;
    c.name = "ofb0";
    c.local_v4 = IpAddr::v4(10, 99, 0, 1);
    c.peer_v4 = IpAddr::v4(10, 99, 0, 2);
    c.offload = offload;
    return Tun::open(c);
}

// Two in-memory stacks shake hands; `a` ends up established towards b.
struct Pair {
    Stack a, b;
    ConnId conn;
    static StackConfig cfg(IpAddr local) {
        StackConfig c;
        c.local_v4 = local;
        c.tx_queue_capacity = 256;
        return c;
    }
    Pair() : a(cfg(IpAddr::v4(10, 99, 0, 2))), b(cfg(IpAddr::v4(10, 98, 0, 2))) {
        const TimePoint now = Clock::now();
        if (!b.listen(7777)) std::abort();
        auto c = a.connect(Endpoint{IpAddr::v4(10, 98, 0, 2), 7777}, now);
        if (!c) std::abort();
        conn = *c;
        std::vector<uint8_t> buf;
        for (int round = 0; round < 4; ++round) {  // SYN, SYN-ACK, ACK
            for (Stack* from : {&a, &b}) {
                Stack* to = from == &a ? &b : &a;
                for (size_t i = 0; i < from->tx_count(); ++i) {
                    buf.assign(from->tx_packet(i).begin(), from->tx_packet(i).end());
                    to->on_packet(ByteView(buf.data(), buf.size()), now);
                }
                from->tx_clear();
            }
        }
        Event ev;
        bool up = false;
        while (a.poll_event(ev)) up |= ev.type == EventType::connected;
        if (!up) std::abort();
    }
};

struct Null : StackHandler {};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: offload_bench device|driver plain|vnet|gso COUNT SIZE\n");
        return 2;
    }
    const std::string path = argv[1], mode = argv[2];
    const size_t count = size_t(std::atol(argv[3])), size = size_t(std::atol(argv[4]));
    auto tun = open_tun(mode != "plain");
    if (!tun) {
        std::fprintf(stderr, "%s\n", tun.status().message().c_str());
        return 1;
    }
    if ((mode != "plain") != tun->offload()) {
        std::fprintf(stderr, "offload unavailable: %s\n", tun->offload_note().c_str());
        return 1;
    }
    std::vector<uint8_t> payload(size, 0xab);
    uint64_t write_errors = 0, gso_writes = 0;
    const auto wall0 = std::chrono::steady_clock::now();
    const Times t0 = usage();
    const double busy0 = system_busy_seconds();

    if (path == "driver") {
        Pair pair;
        Null null;
        StackDriver driver(pair.a, *tun, null);
        if (mode == "vnet") {
            // Offload on, coalescing off: what the driver does after a kernel refused GSO.
            std::fprintf(stderr, "driver path has no vnet-only mode\n");
            return 2;
        }
        const TimePoint now = Clock::now();
        for (size_t i = 0; i < count; ++i) {
            payload[0] = uint8_t(i);
            if (driver.send(pair.conn, ByteView(payload.data(), size), now) != Errc::ok) std::abort();
            if ((i + 1) % kBatch == 0) driver.flush();
        }
        driver.flush();
        write_errors = driver.tun_write_errors();
        gso_writes = driver.offload_stats().gso_writes;
    } else {
        // kBatch segments laid out as the Stack queues them: headroom first.
        Pair pair;
        for (size_t i = 0; i < kBatch; ++i)
            if (pair.a.send(pair.conn, ByteView(payload.data(), size), Clock::now()) != Errc::ok) std::abort();
        std::vector<ByteView> views(kBatch);
        std::vector<uint8_t*> mut(kBatch);
        for (size_t i = 0; i < kBatch; ++i) {
            views[i] = pair.a.tx_packet(i);
            mut[i] = pair.a.tx_packet_mutable(i);
        }
        std::vector<uint8_t> hdr(ofl::kMaxGsoHeader);
        std::vector<ByteView> parts(ofl::kMaxGsoSegments + 1);
        size_t sent = 0;
        while (sent < count) {
            const size_t n = std::min(kBatch, count - sent);
            size_t i = 0;
            while (i < n) {
                size_t run = 1;
                if (mode == "gso") run = ofl::gso_run(&views[i], n - i);
                const size_t hl = run >= 2 ? ofl::gso_header(&views[i], run, hdr.data()) : 0;
                long r;
                if (hl == 0) {
                    run = 1;
                    if (mode == "plain") {
                        r = tun->write(0, views[i].data, views[i].size);
                    } else {
                        uint8_t* h = mut[i] - ofl::kVnetHdrLen;
                        std::memset(h, 0, ofl::kVnetHdrLen);
                        r = tun->write(0, h, ofl::kVnetHdrLen + views[i].size);
                    }
                } else {
                    const size_t skip = hl - ofl::kVnetHdrLen;
                    parts[0] = ByteView(hdr.data(), hl);
                    for (size_t k = 0; k < run; ++k)
                        parts[k + 1] = ByteView(views[i + k].data + skip, views[i + k].size - skip);
                    r = tun->writev(0, parts.data(), run + 1);
                    ++gso_writes;
                }
                if (r < 0) ++write_errors;
                i += run;
            }
            sent += n;
        }
    }
    const Times t1 = usage();
    const double busy = system_busy_seconds() - busy0;
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    const double user = t1.user - t0.user, sys = t1.sys - t0.sys;
    std::printf("%-6s %-5s %zu x %zu B: user %.3f s, sys %.3f s = %.2f us/datagram; all CPUs busy %.2f s = %.2f "
                "us/datagram; wall %.3f s; %llu GSO writes, %llu write errors\n",
                path.c_str(), mode.c_str(), count, size, user, sys, (user + sys) / double(count) * 1e6, busy,
                busy / double(count) * 1e6, wall,
                static_cast<unsigned long long>(gso_writes), static_cast<unsigned long long>(write_errors));
    return 0;
}
