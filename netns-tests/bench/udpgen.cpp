// netns-tests/bench/udpgen.cpp — the benchmark's UDP load generator, sink and echo.
//
// One binary, five modes (all print one JSON summary line on stdout, progress on stderr):
//
//   udpgen sink  --bind IP:PORT --ctl PATH [--ready FILE] [--rcvbuf BYTES] [--threads T]
//       Counts datagrams by the run id in their header; echoes those flagged ECHO
//       back to their source. --threads T: T receiver threads, each with its own
//       socket in one SO_REUSEPORT group (the kernel spreads the flows over them). Answers "run N" on the UNIX stream socket PATH with
//       "N RECEIVED BYTES" (pathname UNIX sockets work across network namespaces).
//   udpgen send  --target IP:PORT --size N [--rate PPS] [--flows N] [--sport-base P]
//                (--duration S | --count N) [--warm-s S] [--echo] [--sink-ctl PATH]
//                [--cpu-pids PID,PID] [--threads T]
//       Fixed-size datagrams, sendmmsg, token-bucket rate limit (0 = as fast as the
//       kernel takes them), N flows (one socket and source port each). Per-second
//       counters on stderr. With --sink-ctl it waits for the sink to settle and reports
//       received/loss; with --cpu-pids it reports each PID's user+sys CPU (all threads,
//       /proc/PID/stat), its own, and the whole machine's (/proc/stat) per datagram over
//       the measured phase (warm-up excluded, drain included). --threads T splits the
//       rate and the flows over T sender threads. --gso (send and knee) sends each
//       batch of a flow as one UDP_SEGMENT run instead of sendmmsg, as QUIC stacks and
//       wireguard-go do (a receiver with UDP_GRO gets the run whole).
//   udpgen knee  --target IP:PORT --size N [--flows N] [--sport-base P] --sink-ctl PATH
//                [--probe-s S] [--warm-s S] [--max-loss PCT] [--hint PPS] [--max-probes N]
//                [--threads T]
//       The highest offered rate with loss < --max-loss: one flat-out probe for the
//       ceiling (or start at --hint), bracket by x1.3 steps up / halving (x0.75 from a
//       hint) down, then geometric bisection to 8 %. Each probe: warm-up at the probe
//       rate (not counted), then --probe-s measured. The offered rate is what the
//       sender achieved; if it falls short of the asked rate without loss, the search
//       stops there and reports "sender_limited".
//   udpgen ping  --target IP:PORT [--count N] [--size N] [--timeout-ms MS] [--warmup N]
//       Sequential ping-pongs against a sink (ECHO flag): RTT p50/p90/p99/min/max/mean.
//   udpgen flows --target IP:PORT --flows N [--size N] [--window W] [--timeout-s S]
//       Opens N sockets (distinct source ports), sends one ECHO datagram on each with
//       at most W outstanding, resends after --retry-ms (at most --attempts times);
//       reports how many came back and flows per second.
//
// The generator never allocates per datagram, sends up to 64 datagrams per syscall
// and uses one buffer per flow, so the path under test is the bottleneck.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

// --- the datagram header ------------------------------------------------------
constexpr uint32_t kMagic = 0x47425446;  // "FTBG"
constexpr uint32_t kFlagEcho = 1;        // the sink sends it back
constexpr uint32_t kFlagWarm = 2;        // not counted
struct Hdr {
    uint32_t magic;
    uint32_t run;
    uint32_t flags;
    uint32_t flow;
    uint64_t seq;
};
static_assert(sizeof(Hdr) == 24, "header layout");
constexpr size_t kMinSize = sizeof(Hdr);
constexpr size_t kMaxSize = 65507;
constexpr unsigned kBatch = 64;

[[noreturn]] void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fputs("udpgen: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
    std::exit(2);
}

uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}
void sleep_until_ns(uint64_t t) {
    timespec ts{};
    ts.tv_sec = time_t(t / 1000000000ull);
    ts.tv_nsec = long(t % 1000000000ull);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}
void sleep_ms(double ms) { sleep_until_ns(now_ns() + uint64_t(ms * 1e6)); }

// --- flags --------------------------------------------------------------------
struct Args {
    std::map<std::string, std::string> kv;
    std::vector<std::string> flags;  // value-less
    bool has(const std::string& k) const {
        return kv.count(k) || std::find(flags.begin(), flags.end(), k) != flags.end();
    }
    std::string str(const std::string& k, const std::string& def = "") const {
        auto it = kv.find(k);
        return it == kv.end() ? def : it->second;
    }
    double num(const std::string& k, double def) const {
        auto it = kv.find(k);
        if (it == kv.end()) return def;
        char* end = nullptr;
        double v = std::strtod(it->second.c_str(), &end);
        if (end == it->second.c_str() || *end) die("--%s: not a number: %s", k.c_str(), it->second.c_str());
        return v;
    }
};
const char* const kBoolFlags[] = {"echo", "quiet", "gso"};

Args parse_args(int argc, char** argv, int from) {
    Args a;
    for (int i = from; i < argc; ++i) {
        std::string s = argv[i];
        if (s.rfind("--", 0) != 0) die("unexpected argument %s", s.c_str());
        s = s.substr(2);
        if (auto eq = s.find('='); eq != std::string::npos) {
            a.kv[s.substr(0, eq)] = s.substr(eq + 1);
            continue;
        }
        bool boolean = std::find(std::begin(kBoolFlags), std::end(kBoolFlags), s) != std::end(kBoolFlags);
        if (boolean) {
            a.flags.push_back(s);
        } else {
            if (i + 1 >= argc) die("--%s needs a value", s.c_str());
            a.kv[s] = argv[++i];
        }
    }
    return a;
}

// --- addresses ----------------------------------------------------------------
struct Addr {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family() const { return ss.ss_family; }
};
Addr parse_addr(const std::string& text) {
    Addr a;
    std::string host, port;
    if (!text.empty() && text[0] == '[') {
        auto close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
            die("bad address %s", text.c_str());
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string::npos) die("bad address %s (want IP:PORT)", text.c_str());
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    int p = std::atoi(port.c_str());
    if (p < 0 || p > 65535) die("bad port in %s", text.c_str());
    sockaddr_in sin{};
    sockaddr_in6 sin6{};
    if (inet_pton(AF_INET, host.c_str(), &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons(uint16_t(p));
        std::memcpy(&a.ss, &sin, sizeof sin);
        a.len = sizeof sin;
    } else if (inet_pton(AF_INET6, host.c_str(), &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(uint16_t(p));
        std::memcpy(&a.ss, &sin6, sizeof sin6);
        a.len = sizeof sin6;
    } else {
        die("bad IP address in %s", text.c_str());
    }
    return a;
}
Addr any_addr(int family, uint16_t port) {
    Addr a;
    if (family == AF_INET) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        std::memcpy(&a.ss, &sin, sizeof sin);
        a.len = sizeof sin;
    } else {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        std::memcpy(&a.ss, &sin6, sizeof sin6);
        a.len = sizeof sin6;
    }
    return a;
}

void raise_nofile() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

// A UDP socket bound to `sport` (0: any) and connected to `target`.
int flow_socket(const Addr& target, uint16_t sport, bool nonblock) {
    int fd = socket(target.family(), SOCK_DGRAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket: %s", std::strerror(errno));
    if (sport) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        Addr b = any_addr(target.family(), sport);
        if (bind(fd, reinterpret_cast<const sockaddr*>(&b.ss), b.len) != 0)
            die("bind to port %u: %s", unsigned(sport), std::strerror(errno));
    }
    if (connect(fd, reinterpret_cast<const sockaddr*>(&target.ss), target.len) != 0)
        die("connect: %s", std::strerror(errno));
    return fd;
}

uint32_t random_u32() {
    uint32_t v = 0;
    if (getrandom(&v, sizeof v, 0) != sizeof v) v = uint32_t(now_ns() ^ uint64_t(getpid()) << 16);
    return v;
}

// --- the sink's control socket (client side) -----------------------------------
struct Count {
    uint64_t n = 0, bytes = 0;
};
bool ctl_query(const std::string& path, uint32_t run, Count& out) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (path.size() >= sizeof sun.sun_path) die("--sink-ctl path too long");
    std::memcpy(sun.sun_path, path.c_str(), path.size());
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    bool ok = false;
    if (connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0) {
        char req[32];
        int n = std::snprintf(req, sizeof req, "run %u\n", run);
        if (write(fd, req, size_t(n)) == n) {
            char buf[128];
            size_t got = 0;
            for (;;) {
                ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
                if (r <= 0) break;
                got += size_t(r);
                if (got >= sizeof buf - 1 || std::memchr(buf, '\n', got)) break;
            }
            buf[got] = '\0';
            unsigned rr = 0;
            unsigned long long a = 0, b = 0;
            if (std::sscanf(buf, "%u %llu %llu", &rr, &a, &b) == 3 && rr == run) {
                out.n = a;
                out.bytes = b;
                ok = true;
            }
        }
    }
    close(fd);
    return ok;
}
// Waits until the sink's count for `run` stops moving (in flight drained): two equal
// reads 50 ms apart, at most `max_s`.
Count ctl_settle(const std::string& path, uint32_t run, double max_s = 2.0) {
    Count prev, cur;
    const uint64_t deadline = now_ns() + uint64_t(max_s * 1e9);
    sleep_ms(40);
    if (!ctl_query(path, run, prev)) die("no answer from the sink on %s", path.c_str());
    for (;;) {
        sleep_ms(50);
        if (!ctl_query(path, run, cur)) die("no answer from the sink on %s", path.c_str());
        if (cur.n == prev.n || now_ns() > deadline) return cur;
        prev = cur;
    }
}

// --- CPU accounting -------------------------------------------------------------
// user+sys of a process, all threads (/proc/PID/stat fields 14, 15), in µs.
double proc_cpu_us(int pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE* f = std::fopen(path, "r");
    if (!f) return -1;
    char buf[2048];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    const char* p = std::strrchr(buf, ')');  // comm may hold spaces
    if (!p) return -1;
    // after ") ": field 3 is state; utime is field 14, stime 15
    unsigned long long ut = 0, st = 0;
    int field = 2;
    const char* s = p + 1;
    while (*s && field < 13) {
        while (*s == ' ') ++s;
        ++field;
        while (*s && *s != ' ') ++s;
    }
    if (std::sscanf(s, " %llu %llu", &ut, &st) != 2) return -1;
    static const long tck = sysconf(_SC_CLK_TCK);
    return double(ut + st) * 1e6 / double(tck);
}
// Busy CPU time of the whole machine (all CPUs, /proc/stat: everything but idle and
// iowait), in µs.
double machine_busy_us() {
    FILE* f = std::fopen("/proc/stat", "r");
    if (!f) return -1;
    unsigned long long v[10] = {};
    int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                        &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    std::fclose(f);
    if (n < 8) return -1;
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    static const long tck = sysconf(_SC_CLK_TCK);
    return double(busy) * 1e6 / double(tck);
}

// --- the sender ----------------------------------------------------------------
// T threads (--threads), each with its own share of the rate and of the flows
// (thread t sends on flows t, t+T, ...; with fewer flows than threads they share
// sockets, which the kernel allows). One buffer per flow, one mmsghdr array per
// thread and flow: nothing is written per datagram.
struct Sender {
    Addr target;
    size_t size = 64;
    unsigned flows = 1;
    unsigned threads = 1;
    std::vector<int> fds;
    std::vector<std::vector<uint8_t>> bufs;
    std::vector<iovec> iovs;
    std::vector<std::vector<std::vector<mmsghdr>>> msgs;  // [thread][flow][kBatch]
    // --gso: each batch is one sendmsg whose UDP_SEGMENT run repeats the flow's buffer.
    bool gso = false;
    unsigned gso_max = 1;                      // datagrams per run: 64 and 65000 bytes at most
    std::vector<std::vector<iovec>> gso_iovs;  // [flow][kBatch], all the flow's buffer

    void open(const Addr& t, size_t sz, unsigned nflows, uint16_t sport_base, unsigned nthreads) {
        target = t;
        size = sz;
        flows = nflows;
        threads = std::max(1u, nthreads);
        bufs.assign(flows, std::vector<uint8_t>(size, 0));
        iovs.resize(flows);
        for (unsigned f = 0; f < flows; ++f) {
            fds.push_back(flow_socket(target, sport_base ? uint16_t(sport_base + f) : 0, false));
            for (size_t i = 0; i < size; ++i) bufs[f][i] = uint8_t(i * 7 + f);
            iovs[f] = {bufs[f].data(), size};
        }
        msgs.assign(threads, std::vector<std::vector<mmsghdr>>(flows, std::vector<mmsghdr>(kBatch)));
        gso_max = unsigned(std::clamp<size_t>(65000 / size, 1, std::min<size_t>(64, kBatch)));
        gso_iovs.resize(flows);
        for (unsigned f = 0; f < flows; ++f) gso_iovs[f].assign(kBatch, iovs[f]);
        for (auto& per_thread : msgs)
            for (unsigned f = 0; f < flows; ++f)
                for (auto& m : per_thread[f]) {
                    m = {};
                    m.msg_hdr.msg_iov = &iovs[f];
                    m.msg_hdr.msg_iovlen = 1;
                }
    }
    void stamp(uint32_t run, uint32_t flags) {
        for (unsigned f = 0; f < flows; ++f) {
            Hdr h{kMagic, run, flags, f, 0};
            std::memcpy(bufs[f].data(), &h, sizeof h);
        }
    }

    struct Result {
        uint64_t attempted = 0, sent = 0, errors = 0;
        double secs = 0;
    };
    // Sends for `secs` (or `count` datagrams if count > 0) at `rate` pps in all
    // (0: unlimited). progress: per-second counters on stderr, labelled.
    Result run(double rate, double secs, uint64_t count, const char* progress) {
        const uint64_t t0 = now_ns();
        const uint64_t end = secs > 0 ? t0 + uint64_t(secs * 1e9) : UINT64_MAX;
        std::vector<Result> parts(threads);
        std::atomic<uint64_t> sent_total{0};
        std::vector<std::thread> pool;
        for (unsigned t = 1; t < threads; ++t)
            pool.emplace_back([&, t] { parts[t] = run_part(t, rate, t0, end, count, sent_total, nullptr); });
        parts[0] = run_part(0, rate, t0, end, count, sent_total, progress);
        for (auto& th : pool) th.join();
        Result r;
        for (const Result& p : parts) {
            r.attempted += p.attempted;
            r.sent += p.sent;
            r.errors += p.errors;
        }
        r.secs = double(now_ns() - t0) / 1e9;
        return r;
    }

private:
    Result run_part(unsigned tid, double rate_all, uint64_t t0, uint64_t end, uint64_t count_all,
                    std::atomic<uint64_t>& sent_total, const char* progress) {
        Result r;
        const double rate = rate_all / threads;
        uint64_t count = count_all / threads + (tid < count_all % threads ? 1 : 0);
        if (count_all && count == 0) return r;
        std::vector<unsigned> mine;
        for (unsigned f = tid % flows; f < flows; f += threads) mine.push_back(f);
        if (flows < threads) mine.assign(1, tid % flows);
        const unsigned batch_max = rate > 0 ? unsigned(std::clamp(rate / 5000.0, 1.0, double(kBatch))) : kBatch;
        const double ns_per_pkt = rate > 0 ? 1e9 / rate : 0;
        uint64_t next_report = t0 + 1000000000ull, last_sent = 0;
        size_t cur = 0;
        for (;;) {
            uint64_t t = now_ns();
            if (t >= end || (count && r.attempted >= count)) break;
            if (progress && t >= next_report) {
                const uint64_t all = sent_total.load(std::memory_order_relaxed);
                std::fprintf(stderr, "%s t=%.0f sent=%" PRIu64 " pps=%" PRIu64 " errors=%" PRIu64 "\n", progress,
                             double(t - t0) / 1e9, all, all - last_sent, r.errors);
                last_sent = all;
                next_report += 1000000000ull;
            }
            uint64_t n = batch_max;
            if (rate > 0) {
                uint64_t allowed = uint64_t(double(t - t0) / ns_per_pkt) + 1;
                if (r.attempted >= allowed) {
                    uint64_t wake = t0 + uint64_t(double(r.attempted) * ns_per_pkt);
                    sleep_until_ns(std::min(wake, end));
                    continue;
                }
                n = std::min<uint64_t>(n, allowed - r.attempted);
            }
            if (count) n = std::min<uint64_t>(n, count - r.attempted);
            const unsigned f = mine[cur];
            cur = cur + 1 == mine.size() ? 0 : cur + 1;
            if (gso) n = std::min<uint64_t>(n, gso_max);
            int s = gso ? send_gso(f, unsigned(n)) : sendmmsg(fds[f], msgs[tid][f].data(), unsigned(n), 0);
            if (s < 0) {
                // ECONNREFUSED (an ICMP error came back), ENOBUFS: the datagrams are lost.
                ++r.errors;
                r.attempted += n;
                continue;
            }
            r.attempted += uint64_t(s) < n ? uint64_t(s) + 1 : n;  // a partial send: the next one failed
            if (uint64_t(s) < n) ++r.errors;
            r.sent += uint64_t(s);
            sent_total.fetch_add(uint64_t(s), std::memory_order_relaxed);
        }
        return r;
    }

    // n copies of flow f's datagram in one sendmsg: the kernel cuts the run (UDP_SEGMENT).
    // Returns n, or -1 (errno set) when the send failed.
    int send_gso(unsigned f, unsigned n) {
        msghdr h{};
        h.msg_iov = gso_iovs[f].data();
        h.msg_iovlen = n;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint16_t))] = {};
        if (n > 1) {
            h.msg_control = control;
            h.msg_controllen = sizeof control;
            cmsghdr* c = CMSG_FIRSTHDR(&h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            const uint16_t seg = uint16_t(size);
            std::memcpy(CMSG_DATA(c), &seg, sizeof seg);
        }
        return sendmsg(fds[f], &h, 0) < 0 ? -1 : int(n);
    }
};

struct ProbeResult {
    double rate = 0;  // offered (0 = unlimited)
    Sender::Result s;
    Count got;
    double offered_pps() const { return s.secs > 0 ? double(s.attempted) / s.secs : 0; }
    double recv_pps() const { return s.secs > 0 ? double(got.n) / s.secs : 0; }
    double loss_pct() const {
        return s.attempted ? 100.0 * (1.0 - double(got.n) / double(s.attempted)) : 100.0;
    }
};

ProbeResult probe(Sender& snd, const std::string& ctl, double rate, double secs, double warm_s, uint64_t count,
                  const char* progress, uint32_t flags = 0) {
    ProbeResult p;
    p.rate = rate;
    if (warm_s > 0) {
        snd.stamp(0, kFlagWarm);
        snd.run(rate, warm_s, 0, nullptr);
    }
    uint32_t run = random_u32() | 1;
    snd.stamp(run, flags);
    p.s = snd.run(rate, secs, count, progress);
    if (!ctl.empty()) p.got = ctl_settle(ctl, run);
    return p;
}

void print_probe_json_fields(const ProbeResult& p, size_t size) {
    std::printf("\"sent\":%" PRIu64 ",\"attempted\":%" PRIu64 ",\"send_errors\":%" PRIu64 ",\"received\":%" PRIu64
                ",\"loss_pct\":%.4f,\"secs\":%.4f,\"offered_pps\":%.1f,\"recv_pps\":%.1f,\"recv_mbps\":%.3f",
                p.s.sent, p.s.attempted, p.s.errors, p.got.n, p.loss_pct(), p.s.secs, p.offered_pps(), p.recv_pps(),
                p.recv_pps() * double(size) * 8 / 1e6);
}

Addr need_target(const Args& a) {
    if (!a.has("target")) die("--target IP:PORT is required");
    return parse_addr(a.str("target"));
}
size_t need_size(const Args& a) {
    double s = a.num("size", 64);
    if (s < double(kMinSize) || s > double(kMaxSize)) die("--size must be %zu..%zu", kMinSize, kMaxSize);
    return size_t(s);
}

// --- mode: send -------------------------------------------------------------------
std::vector<int> parse_pids(const std::string& s) {
    std::vector<int> v;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        if (j > i) v.push_back(std::atoi(s.substr(i, j - i).c_str()));
        i = j + 1;
    }
    return v;
}

int mode_send(const Args& a) {
    Sender snd;
    const size_t size = need_size(a);
    const unsigned flows = unsigned(std::max(1.0, a.num("flows", 1)));
    snd.open(need_target(a), size, flows, uint16_t(a.num("sport-base", 0)), unsigned(a.num("threads", 1)));
    snd.gso = a.has("gso");
    const double rate = a.num("rate", 0);
    const double dur = a.num("duration", 0);
    const uint64_t count = uint64_t(a.num("count", 0));
    if (dur <= 0 && count == 0) die("send: --duration S or --count N");
    const std::string ctl = a.str("sink-ctl");
    const double warm = a.num("warm-s", 0);
    const std::vector<int> pids = parse_pids(a.str("cpu-pids"));
    if (warm > 0) {
        snd.stamp(0, kFlagWarm | (a.has("echo") ? kFlagEcho : 0));
        snd.run(rate, warm, 0, nullptr);
    }
    std::vector<double> cpu0;
    for (int pid : pids) cpu0.push_back(proc_cpu_us(pid));
    const double m0 = machine_busy_us();
    const double self0 = proc_cpu_us(getpid());
    const uint32_t run = random_u32() | 1;
    snd.stamp(run, a.has("echo") ? kFlagEcho : 0);
    ProbeResult p;
    p.rate = rate;
    p.s = snd.run(rate, dur, count, a.has("quiet") ? nullptr : "send");
    if (!ctl.empty()) p.got = ctl_settle(ctl, run);
    const double m1 = machine_busy_us();
    const double self1 = proc_cpu_us(getpid());
    std::printf("{\"mode\":\"send\",\"size\":%zu,\"flows\":%u,\"rate\":%.1f,", size, flows, rate);
    print_probe_json_fields(p, size);
    const double dg = double(std::max<uint64_t>(p.s.sent, 1));
    std::printf(",\"machine_cpu_us_per_dgram\":%.4f,\"self_cpu_us_per_dgram\":%.4f", (m1 - m0) / dg,
                (self1 - self0) / dg);
    for (size_t i = 0; i < pids.size(); ++i) {
        double c1 = proc_cpu_us(pids[i]);
        std::printf(",\"cpu_us_per_dgram_%d\":%.4f,\"cpu_us_%d\":%.0f", pids[i], (c1 - cpu0[i]) / dg, pids[i],
                    c1 - cpu0[i]);
    }
    std::printf("}\n");
    return 0;
}

// --- mode: knee -------------------------------------------------------------------
int mode_knee(const Args& a) {
    Sender snd;
    const size_t size = need_size(a);
    const unsigned flows = unsigned(std::max(1.0, a.num("flows", 1)));
    snd.open(need_target(a), size, flows, uint16_t(a.num("sport-base", 0)), unsigned(a.num("threads", 1)));
    snd.gso = a.has("gso");
    const std::string ctl = a.str("sink-ctl");
    if (ctl.empty()) die("knee: --sink-ctl PATH is required");
    const double secs = a.num("probe-s", 1.0);
    const double warm = a.num("warm-s", 0.1);
    const double max_loss = a.num("max-loss", 1.0);
    const double hint = a.num("hint", 0);
    const int max_probes = int(a.num("max-probes", hint > 0 ? 4 : 6));
    const std::string label = a.str("label", "knee");

    std::vector<ProbeResult> probes;
    probes.reserve(size_t(max_probes) + 4);  // `best` points into it
    auto run_probe = [&](double rate) -> const ProbeResult& {
        probes.push_back(probe(snd, ctl, rate, secs, warm, 0, nullptr));
        const ProbeResult& p = probes.back();
        std::fprintf(stderr, "%s probe %zu: offered %.0f pps (asked %.0f), received %.0f pps, loss %.3f%%\n",
                     label.c_str(), probes.size(), p.offered_pps(), rate, p.recv_pps(), p.loss_pct());
        return p;
    };
    // The offered rate is what the sender achieved. A probe passes on loss alone;
    // one that could not reach the asked rate also caps the search there (asking
    // for more would not offer more): `sender_limited`.
    double lo = 0, hi = 0;  // highest passing offered rate / lowest failing (or unreachable) rate
    const ProbeResult* best = nullptr;
    bool sender_limited = false;
    auto record = [&](const ProbeResult& p) {
        const bool ok = p.loss_pct() < max_loss;
        const bool short_of = p.rate > 0 && p.offered_pps() < 0.97 * p.rate;
        if (ok) {
            if (!best || p.offered_pps() > best->offered_pps()) best = &p;
            lo = std::max(lo, p.offered_pps());
            if (short_of || p.rate == 0) {
                sender_limited = true;
                if (hi == 0 || p.offered_pps() * 1.001 < hi) hi = p.offered_pps() * 1.001;
            }
        } else {
            const double fail_at = p.rate > 0 ? std::min(p.rate, p.offered_pps()) : p.offered_pps();
            if (hi == 0 || fail_at < hi) hi = fail_at;
        }
        return ok;
    };
    double ceiling = 0;
    double r;
    if (hint > 0) {
        r = hint;
    } else {
        // Flat out: the delivered rate is a first estimate of the capacity.
        const ProbeResult& c = run_probe(0);
        ceiling = c.recv_pps();
        record(c);
        r = std::max(1000.0, ceiling * 0.9);
    }
    // Bracket: up by x1.3 while passing, down (by halves; from a hint by x0.75)
    // while failing.
    const double down = hint > 0 ? 0.75 : 0.5;
    // Until something passes, up to 3 probes more than --max-probes.
    while ((int(probes.size()) < max_probes || (lo == 0 && int(probes.size()) < max_probes + 3)) &&
           !(lo > 0 && hi > 0)) {
        if (hi > 0 && r >= hi) r = hi * down;
        const bool ok = record(run_probe(r));
        if (ok)
            r *= 1.3;
        else if ((r *= down) < 500)
            break;
    }
    // Geometric bisection down to 8 %.
    while (int(probes.size()) < max_probes && lo > 0 && hi > 0 && hi / lo > 1.08) record(run_probe(std::sqrt(lo * hi)));
    // In pps of what was actually offered in the best passing probe.
    const double knee = best ? best->offered_pps() : 0;
    std::printf("{\"mode\":\"knee\",\"label\":\"%s\",\"size\":%zu,\"flows\":%u,\"knee_pps\":%.1f,\"knee_mbps\":%.3f,"
                "\"knee_loss_pct\":%.4f,\"knee_recv_pps\":%.1f,\"ceiling_recv_pps\":%.1f,\"sender_limited\":%s,"
                "\"threads\":%u,\"bracket\":[%.0f,%.0f],\"probes\":[",
                label.c_str(), size, flows, knee, knee * double(size) * 8 / 1e6, best ? best->loss_pct() : 100.0,
                best ? best->recv_pps() : 0.0, ceiling, sender_limited && best && hi > 0 && hi / knee < 1.1 ? "true" : "false",
                snd.threads, lo, hi);
    for (size_t i = 0; i < probes.size(); ++i)
        std::printf("%s[%.0f,%.0f,%.0f,%.3f]", i ? "," : "", probes[i].rate, probes[i].offered_pps(),
                    probes[i].recv_pps(), probes[i].loss_pct());
    std::printf("]}\n");
    return 0;
}

// --- mode: ping -------------------------------------------------------------------
double pct(std::vector<double>& v, double q) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t i = size_t(std::ceil(q / 100.0 * double(v.size()))) ;
    i = i == 0 ? 0 : i - 1;
    return v[std::min(i, v.size() - 1)];
}

int mode_ping(const Args& a) {
    const Addr target = need_target(a);
    const size_t size = need_size(a);
    const int count = int(a.num("count", 2000));
    const int warmup = int(a.num("warmup", 20));
    const int timeout_ms = int(a.num("timeout-ms", 500));
    int fd = flow_socket(target, uint16_t(a.num("sport-base", 0)), false);
    std::vector<uint8_t> buf(size, 0x5a), rx(size + 64);
    const uint32_t run = random_u32() | 1;
    std::vector<double> rtt;
    rtt.reserve(size_t(count));
    int lost = 0;
    for (int i = -warmup; i < count; ++i) {
        Hdr h{kMagic, run, kFlagEcho | (i < 0 ? kFlagWarm : 0), 0, uint64_t(int64_t(i) + warmup)};
        std::memcpy(buf.data(), &h, sizeof h);
        const uint64_t t0 = now_ns();
        if (send(fd, buf.data(), size, 0) < 0) {
            if (i >= 0) ++lost;
            sleep_ms(1);
            continue;
        }
        const uint64_t deadline = t0 + uint64_t(timeout_ms) * 1000000ull;
        bool got = false;
        for (;;) {
            uint64_t t = now_ns();
            if (t >= deadline) break;
            pollfd pfd{fd, POLLIN, 0};
            int pr = poll(&pfd, 1, int((deadline - t) / 1000000ull) + 1);
            if (pr <= 0) continue;
            ssize_t n = recv(fd, rx.data(), rx.size(), MSG_DONTWAIT);
            if (n < ssize_t(sizeof(Hdr))) continue;
            Hdr r;
            std::memcpy(&r, rx.data(), sizeof r);
            if (r.magic == kMagic && r.run == run && r.seq == h.seq) {
                got = true;
                break;
            }
        }
        const uint64_t t1 = now_ns();
        if (i < 0) continue;
        if (got)
            rtt.push_back(double(t1 - t0) / 1e3);
        else
            ++lost;
    }
    double sum = 0;
    for (double v : rtt) sum += v;
    std::vector<double> s = rtt;
    const double p50 = pct(s, 50), p90 = pct(s, 90), p99 = pct(s, 99);
    std::printf("{\"mode\":\"ping\",\"size\":%zu,\"count\":%d,\"lost\":%d,\"p50_us\":%.2f,\"p90_us\":%.2f,"
                "\"p99_us\":%.2f,\"min_us\":%.2f,\"max_us\":%.2f,\"mean_us\":%.2f}\n",
                size, count, lost, p50, p90, p99, s.empty() ? 0.0 : s.front(), s.empty() ? 0.0 : s.back(),
                s.empty() ? 0.0 : sum / double(s.size()));
    close(fd);
    return 0;
}

// --- mode: flows ------------------------------------------------------------------
int mode_flows(const Args& a) {
    raise_nofile();
    const Addr target = need_target(a);
    const size_t size = need_size(a);
    const int nflows = int(a.num("flows", 10000));
    const int window = int(a.num("window", 256));
    const double timeout_s = a.num("timeout-s", 60);
    const uint64_t retry_ns = uint64_t(a.num("retry-ms", 1500) * 1e6);
    const int attempts = int(a.num("attempts", 3));
    struct Flow {
        int fd = -1;
        uint64_t sent_at = 0;
        uint64_t first_at = 0;
        int tries = 0;
        uint8_t state = 0;  // 0 idle, 1 outstanding, 2 done, 3 failed
    };
    std::vector<Flow> fl(static_cast<size_t>(nflows));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nflows; ++i) {
        fl[size_t(i)].fd = flow_socket(target, 0, true);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u32 = uint32_t(i);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fl[size_t(i)].fd, &ev) != 0) die("epoll_ctl: %s", std::strerror(errno));
    }
    const uint32_t run = random_u32() | 1;
    std::vector<uint8_t> buf(size, 0x33), rx(size + 64);
    auto send_flow = [&](int i, uint64_t t) {
        Hdr h{kMagic, run, kFlagEcho, uint32_t(i), 0};
        std::memcpy(buf.data(), &h, sizeof h);
        Flow& f = fl[size_t(i)];
        if (f.tries == 0) f.first_at = t;
        f.sent_at = t;
        ++f.tries;
        f.state = 1;
        (void)send(f.fd, buf.data(), size, 0);
    };
    std::vector<double> lat;
    lat.reserve(size_t(nflows));
    int next = 0, outstanding = 0, done = 0, failed = 0, retries = 0;
    const uint64_t t0 = now_ns();
    const uint64_t deadline = t0 + uint64_t(timeout_s * 1e9);
    uint64_t next_report = t0 + 1000000000ull, next_scan = t0 + 100000000ull;
    int last_done = 0;
    std::vector<epoll_event> evs(256);
    while (done + failed < nflows) {
        uint64_t t = now_ns();
        if (t > deadline) break;
        for (int k = 0; k < 32 && next < nflows && outstanding < window; ++k) {
            send_flow(next++, t);
            ++outstanding;
        }
        int n = epoll_wait(ep, evs.data(), int(evs.size()), 5);
        t = now_ns();
        for (int k = 0; k < n; ++k) {
            Flow& f = fl[evs[size_t(k)].data.u32];
            for (;;) {
                ssize_t r = recv(f.fd, rx.data(), rx.size(), MSG_DONTWAIT);
                if (r < 0) break;
                if (f.state == 1 && r >= ssize_t(sizeof(Hdr))) {
                    f.state = 2;
                    --outstanding;
                    ++done;
                    lat.push_back(double(t - f.first_at) / 1e3);
                }
            }
        }
        if (t >= next_scan) {
            next_scan = t + 100000000ull;
            for (int i = 0; i < next; ++i) {
                Flow& f = fl[size_t(i)];
                if (f.state != 1 || t - f.sent_at < retry_ns) continue;
                if (f.tries >= attempts) {
                    f.state = 3;
                    --outstanding;
                    ++failed;
                } else {
                    ++retries;
                    send_flow(i, t);
                }
            }
        }
        if (t >= next_report) {
            std::fprintf(stderr, "flows t=%.0f established=%d (+%d/s) outstanding=%d failed=%d retries=%d\n",
                         double(t - t0) / 1e9, done, done - last_done, outstanding, failed, retries);
            last_done = done;
            next_report += 1000000000ull;
        }
    }
    const double secs = double(now_ns() - t0) / 1e9;
    std::vector<double> s = lat;
    const double p50 = pct(s, 50), p99 = pct(s, 99);
    std::printf("{\"mode\":\"flows\",\"flows\":%d,\"established\":%d,\"failed\":%d,\"unfinished\":%d,\"retries\":%d,"
                "\"secs\":%.3f,\"flows_per_s\":%.1f,\"first_echo_p50_us\":%.0f,\"first_echo_p99_us\":%.0f}\n",
                nflows, done, failed, nflows - done - failed, retries, secs, double(done) / secs, p50, p99);
    // The sockets stay open until the caller stops us (so the tunnel's flows stay
    // up while it measures memory), when --hold-s is given.
    std::fflush(stdout);
    const double hold = a.num("hold-s", 0);
    if (hold > 0) sleep_ms(hold * 1000);
    return 0;
}

// --- mode: sink -------------------------------------------------------------------
// One sink receiver: a socket (in an SO_REUSEPORT group when there are several) and
// its thread's counters. Only the thread writes them; the main thread reads them for
// the control socket and the progress line, so each is an atomic (relaxed: a reader
// may see a count a few datagrams old, and the sender's query repeats until settled).
struct SinkRunSlot {
    std::atomic<uint32_t> run{0};
    std::atomic<uint64_t> n{0}, bytes{0};
};
struct SinkReceiver {
    int fd = -1;
    std::vector<SinkRunSlot> runs = std::vector<SinkRunSlot>(1024);
    std::atomic<uint64_t> total{0}, bytes{0}, echoed{0}, foreign{0};
};

int open_sink_socket(const Addr& bind_addr, const std::string& text, int rcvbuf, bool reuse_port) {
    int fd = socket(bind_addr.family(), SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket: %s", std::strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        die("SO_REUSEPORT: %s", std::strerror(errno));
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&bind_addr.ss), bind_addr.len) != 0)
        die("bind %s: %s", text.c_str(), std::strerror(errno));
    return fd;
}

// Counts one received datagram; true if it asks to be echoed.
bool sink_count(SinkReceiver& r, const uint8_t* data, size_t len) {
    r.total.fetch_add(1, std::memory_order_relaxed);
    r.bytes.fetch_add(len, std::memory_order_relaxed);
    Hdr h;
    if (len < sizeof h) {
        r.foreign.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    std::memcpy(&h, data, sizeof h);
    if (h.magic != kMagic) {
        r.foreign.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    if (!(h.flags & kFlagWarm)) {
        SinkRunSlot& rs = r.runs[h.run % r.runs.size()];
        if (rs.run.load(std::memory_order_relaxed) != h.run) {
            rs.n.store(0, std::memory_order_relaxed);
            rs.bytes.store(0, std::memory_order_relaxed);
            rs.run.store(h.run, std::memory_order_release);
        }
        rs.n.fetch_add(1, std::memory_order_relaxed);
        rs.bytes.fetch_add(len, std::memory_order_relaxed);
    }
    return (h.flags & kFlagEcho) != 0;
}

// A receiver thread: recvmmsg batches, counted, ECHO-flagged ones sent back.
void sink_receive_loop(SinkReceiver& r, const volatile sig_atomic_t& stop) {
    constexpr size_t kSlot = 65536;
    std::vector<uint8_t> slots(kBatch * kSlot);
    std::vector<iovec> iov(kBatch), echo_iov(kBatch);
    std::vector<sockaddr_storage> names(kBatch);
    std::vector<mmsghdr> msgs(kBatch), echo(kBatch);
    pollfd pfd{r.fd, POLLIN, 0};
    while (!stop) {
        if (poll(&pfd, 1, 200) <= 0) continue;
        for (int round = 0; round < 64; ++round) {
            for (unsigned i = 0; i < kBatch; ++i) {
                iov[i] = {&slots[i * kSlot], kSlot};
                msgs[i] = {};
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_hdr.msg_name = &names[i];
                msgs[i].msg_hdr.msg_namelen = sizeof names[i];
            }
            int n = recvmmsg(r.fd, msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
            if (n <= 0) break;
            unsigned ne = 0;
            for (int i = 0; i < n; ++i) {
                const size_t len = msgs[size_t(i)].msg_len;
                if (!sink_count(r, &slots[size_t(i) * kSlot], len)) continue;
                echo_iov[ne] = {&slots[size_t(i) * kSlot], len};
                echo[ne] = {};
                echo[ne].msg_hdr.msg_iov = &echo_iov[ne];
                echo[ne].msg_hdr.msg_iovlen = 1;
                echo[ne].msg_hdr.msg_name = &names[size_t(i)];
                echo[ne].msg_hdr.msg_namelen = msgs[size_t(i)].msg_hdr.msg_namelen;
                ++ne;
            }
            for (unsigned off = 0; off < ne;) {
                int sent = sendmmsg(r.fd, echo.data() + off, ne - off, MSG_DONTWAIT);
                if (sent <= 0) {
                    ++off;  // this one is lost (EAGAIN, or a refused peer): skip it
                    continue;
                }
                off += unsigned(sent);
                r.echoed.fetch_add(unsigned(sent), std::memory_order_relaxed);
            }
            if (n < int(kBatch)) break;
        }
    }
}

// "RUN RECEIVED BYTES\n" for a control request "run RUN", summed over the receivers.
void sink_answer(int c, const std::vector<std::unique_ptr<SinkReceiver>>& receivers) {
    pollfd cp{c, POLLIN, 0};
    char req[64] = {};
    if (poll(&cp, 1, 500) <= 0) return;
    ssize_t got = read(c, req, sizeof req - 1);
    unsigned run = 0;
    if (got <= 0 || std::sscanf(req, "run %u", &run) != 1) return;
    uint64_t n = 0, bytes = 0;
    for (const auto& r : receivers) {
        const SinkRunSlot& rs = r->runs[run % r->runs.size()];
        if (rs.run.load(std::memory_order_acquire) != run) continue;
        n += rs.n.load(std::memory_order_relaxed);
        bytes += rs.bytes.load(std::memory_order_relaxed);
    }
    char out[96];
    int m = std::snprintf(out, sizeof out, "%u %" PRIu64 " %" PRIu64 "\n", run, n, bytes);
    ssize_t w = write(c, out, size_t(m));
    (void)w;
}

uint64_t sink_sum(const std::vector<std::unique_ptr<SinkReceiver>>& receivers,
                  std::atomic<uint64_t> SinkReceiver::*field) {
    uint64_t sum = 0;
    for (const auto& r : receivers) sum += ((*r).*field).load(std::memory_order_relaxed);
    return sum;
}

int mode_sink(const Args& a) {
    if (!a.has("bind")) die("sink: --bind IP:PORT is required");
    const Addr bind_addr = parse_addr(a.str("bind"));
    const std::string ctl = a.str("ctl");
    if (ctl.empty()) die("sink: --ctl PATH is required");
    const int threads = int(a.num("threads", 1));
    if (threads < 1 || threads > 64) die("sink: --threads must be 1..64");
    const int rcvbuf = int(a.num("rcvbuf", 4 << 20));
    std::vector<std::unique_ptr<SinkReceiver>> receivers;
    for (int t = 0; t < threads; ++t) {
        receivers.push_back(std::make_unique<SinkReceiver>());
        receivers.back()->fd = open_sink_socket(bind_addr, a.str("bind"), rcvbuf, threads > 1);
    }

    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (ctl.size() >= sizeof sun.sun_path) die("--ctl path too long");
    std::memcpy(sun.sun_path, ctl.c_str(), ctl.size());
    unlink(ctl.c_str());
    if (bind(lfd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 || listen(lfd, 16) != 0)
        die("control socket %s: %s", ctl.c_str(), std::strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    // Stop cleanly on TERM/INT (the control socket file is removed).
    static volatile sig_atomic_t stop = 0;
    struct sigaction sa {};
    sa.sa_handler = [](int) { stop = 1; };
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    std::vector<std::thread> workers;
    for (auto& r : receivers) workers.emplace_back(sink_receive_loop, std::ref(*r), std::cref(stop));
    if (a.has("ready")) {
        FILE* f = std::fopen(a.str("ready").c_str(), "w");
        if (f) std::fclose(f);
    }

    const bool quiet = a.has("quiet");
    uint64_t last_total = 0, next_report = now_ns() + 1000000000ull;
    pollfd pfd{lfd, POLLIN, 0};
    while (!stop) {
        int pr = poll(&pfd, 1, 200);
        if (pr < 0 && errno != EINTR) die("poll: %s", std::strerror(errno));
        if (pr > 0 && (pfd.revents & POLLIN)) {
            int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
            if (c >= 0) {
                sink_answer(c, receivers);
                close(c);
            }
        }
        const uint64_t t = now_ns();
        if (t >= next_report) {
            const uint64_t total = sink_sum(receivers, &SinkReceiver::total);
            if (!quiet && total != last_total)
                std::fprintf(stderr, "sink: rx %" PRIu64 " pps, total %" PRIu64 " (%" PRIu64 " B), echoed %" PRIu64
                                     ", foreign %" PRIu64 "\n",
                             total - last_total, total, sink_sum(receivers, &SinkReceiver::bytes),
                             sink_sum(receivers, &SinkReceiver::echoed), sink_sum(receivers, &SinkReceiver::foreign));
            last_total = total;
            next_report = t + 1000000000ull;
        }
    }
    for (auto& w : workers) w.join();
    unlink(ctl.c_str());
    std::printf("{\"mode\":\"sink\",\"threads\":%d,\"received\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"echoed\":%" PRIu64
                ",\"foreign\":%" PRIu64 "}\n",
                threads, sink_sum(receivers, &SinkReceiver::total), sink_sum(receivers, &SinkReceiver::bytes),
                sink_sum(receivers, &SinkReceiver::echoed), sink_sum(receivers, &SinkReceiver::foreign));
    for (auto& r : receivers) close(r->fd);
    return 0;
}

const char kUsage[] =
    "usage: udpgen sink|send|knee|ping|flows [--flag value ...]\n"
    "  sink  --bind IP:PORT --ctl PATH [--ready FILE] [--rcvbuf BYTES] [--threads T] [--quiet]\n"
    "  send  --target IP:PORT --size N [--rate PPS] [--flows N] [--sport-base P]\n"
    "        (--duration S | --count N) [--warm-s S] [--echo] [--sink-ctl PATH] [--cpu-pids P,P]\n"
    "        [--threads T] [--gso]\n"
    "  knee  --target IP:PORT --size N --sink-ctl PATH [--flows N] [--sport-base P] [--probe-s S]\n"
    "        [--warm-s S] [--max-loss PCT] [--hint PPS] [--max-probes N] [--label TEXT] [--threads T] [--gso]\n"
    "  ping  --target IP:PORT [--count 2000] [--size 64] [--timeout-ms 500] [--warmup 20]\n"
    "  flows --target IP:PORT --flows N [--size 64] [--window 256] [--retry-ms 1500]\n"
    "        [--attempts 3] [--timeout-s 60] [--hold-s S]\n"
    "--gso sends each batch of a flow as one UDP_SEGMENT run (Linux 4.18), as QUIC stacks and\n"
    "wireguard-go do; the receiving socket gets it whole if it enabled UDP_GRO.\n"
    "Each mode prints one JSON line on stdout; progress goes to stderr.\n";

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
        std::fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const std::string mode = argv[1];
    const Args a = parse_args(argc, argv, 2);
    setvbuf(stdout, nullptr, _IOLBF, 0);
    if (mode == "sink") return mode_sink(a);
    if (mode == "send") return mode_send(a);
    if (mode == "knee") return mode_knee(a);
    if (mode == "ping") return mode_ping(a);
    if (mode == "flows") return mode_flows(a);
    die("unknown mode %s\n%s", mode.c_str(), kUsage);
}
