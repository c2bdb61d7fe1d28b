// demo/tunnel.cpp — the client and server tunnels.
//
// One worker thread per TUN queue (--queues, default one per CPU), each with
// its own Reactor, Stack, StackDriver and tunnel; they share nothing but the
// Tun, whose per-queue reads and writes are thread-safe. An eBPF program on
// the TUN (Tun::steer_by_ports) sends every packet of a connection to queue
// (sport + dport) % queues, and each worker's Stack picks client ports in its
// own class (StackConfig::shard_index), so a connection lives on one worker
// from its first SYN to its last RST. UDP peers meet workers through an
// SO_REUSEPORT group on the client (the kernel hashes the peer's address to
// one socket) and through per-connection sockets on the server. Without
// steering (no eBPF) one worker serves every queue.
//
// The main thread owns the signals and the stats timer; it talks to workers
// through WorkerLink (an eventfd plus atomics) and sums their snapshots into
// one stats dump. In a worker, the StackDriver owns the TUN side; TunnelBase
// is the Reactor handler for everything else (UDP sockets, the wake eventfd,
// the idle sweep) and the StackHandler for stack events.
//
// Per-datagram paths allocate nothing and never log above debug:
//   UDP -> TCP: recvmmsg batch, each receive one datagram or (UDP_GRO) a run
//               from one sender, split -> flow (client: hash of the UDP peer,
//               once per receive; server: fd -> flow index) -> StackDriver::send
//   TCP -> UDP: datagram event -> flow by ConnId.index -> copied into the
//               UdpTxQueue, per flow; at on_batch_end each flow's datagrams
//               leave as UDP_SEGMENT runs (or one message each), in one
//               sendmmsg per socket: the client's one socket for all its
//               peers, the server's connected socket of each connection.
// Flow state lives in vectors allocated at start-up; only creating a client
// flow inserts into a hash map.
#include "demo/tunnel.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>

#include "demo/log.h"
#include "demo/notify.h"
#include "demo/rules.h"
#include "demo/metrics.h"
#include "demo/stats.h"
#include "demo/udp.h"

namespace demo {

using faketcp::ByteView;
using faketcp::CloseReason;
using faketcp::ConnId;
using faketcp::ConnInfo;
using faketcp::Duration;
using faketcp::Endpoint;
using faketcp::Errc;
using faketcp::Reactor;
using faketcp::Stack;
using faketcp::StackDriver;
using faketcp::TimePoint;
using faketcp::Tun;

namespace {

constexpr uint32_t kNone = UINT32_MAX;
constexpr Duration kSweepInterval = std::chrono::seconds(1);
// Rate limit for warnings that traffic can trigger repeatedly.
constexpr Duration kWarnInterval = std::chrono::seconds(10);
// Datagrams waiting for a handshake: per flow, and in all.
constexpr uint32_t kPendingPerFlow = 64;
constexpr uint32_t kPendingTotal = 1024;

const char* describe(CloseReason r) {
    switch (r) {
        case CloseReason::peer_reset: return "reset by the peer";
        case CloseReason::local_close: return "closed locally";
        case CloseReason::handshake_timeout: return "no answer to the handshake";
        case CloseReason::peer_dead: return "the peer went silent (keepalive)";
    }
    return "?";
}

// Datagrams that arrive while their flow's handshake runs: FIFO lists of
// fixed-size slots from one pool allocated at start-up.
class PendingPool {
public:
    struct List {
        uint32_t head = kNone, tail = kNone, count = 0;
    };

    PendingPool(uint32_t slots, uint32_t slot_size)
        : slot_size_(slot_size), data_(size_t(slots) * slot_size), len_(slots), next_(slots) {
        for (uint32_t i = 0; i < slots; ++i) next_[i] = i + 1 < slots ? i + 1 : kNone;
        free_ = slots > 0 ? 0 : kNone;
    }
    // False if the pool is exhausted or the datagram does not fit a slot.
    bool push(List& list, ByteView d) {
        if (free_ == kNone || d.size > slot_size_) return false;
        uint32_t s = free_;
        free_ = next_[s];
        std::memcpy(&data_[size_t(s) * slot_size_], d.data, d.size);
        len_[s] = static_cast<uint32_t>(d.size);
        next_[s] = kNone;
        if (list.tail == kNone)
            list.head = s;
        else
            next_[list.tail] = s;
        list.tail = s;
        ++list.count;
        return true;
    }
    ByteView front(const List& list) const {
        return {&data_[size_t(list.head) * slot_size_], len_[list.head]};
    }
    void pop(List& list) {
        uint32_t s = list.head;
        list.head = next_[s];
        if (list.head == kNone) list.tail = kNone;
        --list.count;
        next_[s] = free_;
        free_ = s;
    }
    void clear(List& list) {
        while (list.count > 0) pop(list);
    }

private:
    uint32_t slot_size_;
    std::vector<uint8_t> data_;
    std::vector<uint32_t> len_;
    std::vector<uint32_t> next_;
    uint32_t free_ = kNone;
};

// What a UDP peer is known by on the client: its socket address.
struct PeerKey {
    uint8_t addr[16] = {};
    uint16_t port = 0;
    uint16_t family = 0;
    friend bool operator==(const PeerKey& a, const PeerKey& b) {
        return a.port == b.port && a.family == b.family && std::memcmp(a.addr, b.addr, 16) == 0;
    }
};

PeerKey peer_key(const SockAddr& sa) {
    PeerKey k;
    k.family = sa.ss.ss_family;
    if (sa.ss.ss_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, &sa.ss, sizeof sin);
        std::memcpy(k.addr, &sin.sin_addr, 4);
        k.port = sin.sin_port;
    } else if (sa.ss.ss_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, &sa.ss, sizeof sin6);
        std::memcpy(k.addr, &sin6.sin6_addr, 16);
        k.port = sin6.sin6_port;
    }
    return k;
}

// Seeded, so local peers cannot aim at one bucket.
struct PeerKeyHash {
    uint64_t seed = 0;
    size_t operator()(const PeerKey& k) const {
        uint64_t a, b;
        std::memcpy(&a, k.addr, 8);
        std::memcpy(&b, k.addr + 8, 8);
        uint64_t h = seed ^ (uint64_t(k.port) << 16 | k.family);
        for (uint64_t v : {a, b}) {
            h ^= v;
            h *= 0x9e3779b97f4a7c15ull;
            h ^= h >> 32;
        }
        h *= 0xbf58476d1ce4e5b9ull;
        return static_cast<size_t>(h ^ (h >> 31));
    }
};

uint64_t random_seed() {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof seed)) {
        struct timespec ts {};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = uint64_t(ts.tv_nsec) * 0x9e3779b97f4a7c15ull ^ uint64_t(getpid());
    }
    return seed;
}

std::string ep_str(const Endpoint& ep) { return faketcp::to_string(ep); }

std::string seconds_str(Duration d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count()) + " s";
}

// ---------------------------------------------------------------------------
// Statistics: each worker's snapshot, summed into one dump
// ---------------------------------------------------------------------------

// Adds `b` to `a` field by field. T must hold nothing but uint64_t counters
// (arrays of them included). The assert catches most other fields: a
// narrower integer or a bool leaves padding, and the size stops being a
// multiple of 8 or the representation stops being unique.
template <typename T>
void add_counters(T& a, const T& b) {
    static_assert(std::is_trivially_copyable_v<T> && std::has_unique_object_representations_v<T> &&
                      sizeof(T) % sizeof(uint64_t) == 0,
                  "add_counters sums uint64_t counters only");
    constexpr size_t n = sizeof(T) / sizeof(uint64_t);
    uint64_t x[n], y[n];
    std::memcpy(x, &a, sizeof a);
    std::memcpy(y, &b, sizeof b);
    for (size_t i = 0; i < n; ++i) x[i] += y[i];
    std::memcpy(&a, x, sizeof a);
}

void add_snapshot(Snapshot& sum, const Snapshot& s) {
    add_counters(sum.stack, s.stack);
    add_counters(sum.offload, s.offload);
    sum.tun_read_errors += s.tun_read_errors;
    sum.tun_write_errors += s.tun_write_errors;
    add_counters(sum.tunnel, s.tunnel);
}

std::string udp_offload_text(const UdpOffloadStats& u) {
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  ", UDP GSO: sends %" PRIu64 " datagrams %" PRIu64 " refused %" PRIu64 ", UDP GRO: receives %" PRIu64
                  " datagrams %" PRIu64,
                  u.gso_sends, u.gso_datagrams, u.gso_refused, u.gro_receives, u.gro_datagrams);
    return buf;
}

// "stats: queues: ..." with each worker's share, when there are several.
void add_queue_line(LogBlock& block, const std::vector<Snapshot>& per_worker, const char* when) {
    std::string in, out, open;
    for (const Snapshot& w : per_worker) {
        const char* sep = in.empty() ? "" : " / ";
        in += sep + std::to_string(w.stack.datagrams_in);
        out += sep + std::to_string(w.stack.datagrams_out);
        open += sep + std::to_string(w.stack.open_connections);
    }
    block.add("stats%s: queues: %zu, one thread each; per queue: datagrams in %s, out %s, connections open %s", when,
              per_worker.size(), in.c_str(), out.c_str(), open.c_str());
}

// Statistics at info, summed over the workers, as one write so readers never
// see half a dump: the stack's, the TUN's, the tunnel's own, then (with
// several workers) each one's share.
void log_stats(Mode mode, const std::vector<Snapshot>& per_worker, bool tun_offload, const char* when) {
    Snapshot snap;
    for (const Snapshot& w : per_worker) add_snapshot(snap, w);
    const faketcp::Stats& s = snap.stack;
    std::string drops;
    for (size_t i = 0; i < faketcp::kDropReasonCount; ++i) {
        if (s.drops[i] == 0) continue;
        drops += drops.empty() ? " (" : ", ";
        drops += faketcp::to_string(static_cast<faketcp::DropReason>(i));
        drops += "=" + std::to_string(s.drops[i]);
    }
    if (!drops.empty()) drops += ")";
    LogBlock block(faketcp::LogLevel::info);
    block.add("stats%s: stack: packets in %" PRIu64 " (%" PRIu64 " B) out %" PRIu64 " (%" PRIu64
              " B), datagrams in %" PRIu64 " (%" PRIu64 " B) out %" PRIu64 " (%" PRIu64
              " B), connections open %" PRIu64 " half-open %" PRIu64 ", handshakes ok %" PRIu64 " failed %" PRIu64
              ", RST sent %" PRIu64 " received %" PRIu64 ", challenge ACKs %" PRIu64 ", idle ACKs %" PRIu64
              ", SYN retransmits %" PRIu64 ", pure ACKs in %" PRIu64 ", keepalive probes %" PRIu64
              " answered %" PRIu64 ", probe answers %" PRIu64 ", peer-dead %" PRIu64 ", TUN read errors %" PRIu64
              " write errors %" PRIu64 ", drops %" PRIu64 "%s",
              when, s.packets_in, s.bytes_in, s.packets_out, s.bytes_out, s.datagrams_in, s.datagram_bytes_in,
              s.datagrams_out, s.datagram_bytes_out, s.open_connections, s.half_open_connections,
              s.handshakes_completed, s.handshakes_failed, s.rst_sent, s.rst_received, s.challenge_acks_sent,
              s.idle_acks_sent, s.syn_retransmits, s.pure_acks_in, s.keepalive_probes_sent,
              s.keepalive_probes_answered, s.keepalive_answers_sent, s.peer_dead_closes, snap.tun_read_errors,
              snap.tun_write_errors,
              s.total_drops(), drops.c_str());
    if (tun_offload) {
        const StackDriver::OffloadStats& os = snap.offload;
        uint64_t rx_drops = 0;
        for (uint64_t d : os.rx_drops) rx_drops += d;
        block.add("stats%s: TUN offload: GSO writes %" PRIu64 " (%" PRIu64 " segments, %" PRIu64
                  " rejected), GRO reads %" PRIu64 " (%" PRIu64 " segments), partial-checksum reads %" PRIu64
                  ", checksums trusted %" PRIu64 ", reads dropped %" PRIu64,
                  when, os.gso_writes, os.gso_segments, os.gso_rejected, os.gro_reads, os.gro_segments,
                  os.partial_csum_reads, os.csum_trusted, rx_drops);
    }
    const TunnelCounters& c = snap.tunnel;
    if (mode == Mode::client) {
        block.add("stats%s: client: UDP peers %" PRIu64 ", connections opened %" PRIu64 " established %" PRIu64
                  " failed/reset %" PRIu64 " reconnects %" PRIu64 ", idle-closed %" PRIu64 ", UDP in %" PRIu64 " out %" PRIu64
                  ", dropped: oversized %" PRIu64 " empty %" PRIu64 " handshake-queue-full %" PRIu64
                  " queued-then-lost %" PRIu64 " no-connection %" PRIu64 " tx-queue-full %" PRIu64
                  " window-full %" PRIu64 " send-errors %" PRIu64 " flow-table-full %" PRIu64 " stale %" PRIu64
                  " receive-buffer-overflow %" PRIu64 ", UDP errors: refused %" PRIu64 " no-buffers %" PRIu64
                  " would-block %" PRIu64 " other %" PRIu64 "%s",
                  when, c.peers, c.connects_started, c.connects_ok, c.connects_lost, c.reconnects, c.idle_closed, c.udp_in,
                  c.udp_out, c.oversize_drops, c.empty_drops, c.pending_full_drops, c.pending_lost, c.no_conn_drops,
                  c.tx_full_drops, c.window_full_drops, c.send_errors, c.table_full_drops, c.stale_datagrams,
                  c.rx_overflows,
                  c.udp_refused, c.udp_no_buffers, c.udp_would_block, c.udp_other,
                  udp_offload_text(c.udp_offload).c_str());
    } else {
        block.add("stats%s: server: connections accepted %" PRIu64 " closed-by-peer %" PRIu64 " idle-closed %" PRIu64
                  " no-socket %" PRIu64 ", UDP in %" PRIu64 " out %" PRIu64 ", dropped: oversized %" PRIu64
                  " empty %" PRIu64 " tx-queue-full %" PRIu64 " window-full %" PRIu64 " send-errors %" PRIu64
                  " stale %" PRIu64
                  " receive-buffer-overflow %" PRIu64 ", UDP errors: refused %" PRIu64 " no-buffers %" PRIu64
                  " would-block %" PRIu64 " other %" PRIu64 "%s",
                  when, c.accepted, c.peer_closed, c.idle_closed, c.socket_errors, c.udp_in, c.udp_out,
                  c.oversize_drops, c.empty_drops, c.tx_full_drops, c.window_full_drops, c.send_errors,
                  c.stale_datagrams, c.rx_overflows,
                  c.udp_refused, c.udp_no_buffers, c.udp_would_block, c.udp_other,
                  udp_offload_text(c.udp_offload).c_str());
    }
    if (per_worker.size() > 1) add_queue_line(block, per_worker, when);
}

void add_udp_errors(TunnelCounters& c, const UdpErrors& e) {
    c.udp_refused += e.conn_refused;
    c.udp_no_buffers += e.no_buffers;
    c.udp_would_block += e.would_block;
    c.udp_other += e.other;
}

// ---------------------------------------------------------------------------
// WorkerLink: the main thread and one worker
// ---------------------------------------------------------------------------

// Where workers answer stats requests; one for all of them.
struct StatsExchange {
    std::mutex mu;
    std::condition_variable answered;
};

// The main thread sets a request, then writes `wake`; the worker's reactor
// sees `wake` readable and acts on every request set.
struct WorkerLink {
    Fd wake;                               // eventfd
    std::atomic<int> stop_signal{0};       // nonzero: reset every connection and stop
    std::atomic<uint64_t> stats_wanted{0};  // the latest stats request's number
    StatsExchange* exchange = nullptr;
    // Guarded by exchange->mu:
    uint64_t stats_answered = 0;
    Snapshot snapshot;

    void poke() const {
        const uint64_t one = 1;
        ssize_t n = ::write(wake.get(), &one, sizeof one);
        (void)n;  // only fails when the counter is about to overflow: the worker is woken anyway
    }
};

// ---------------------------------------------------------------------------
// TunnelBase: what the client and the server share
// ---------------------------------------------------------------------------

class TunnelBase : public faketcp::StackHandler, public Reactor::Handler {
public:
    // `queue`: the one TUN queue this worker serves; nullopt: all of them.
    TunnelBase(const TunnelSetup& setup, Reactor& reactor, Stack& stack, Tun& tun, std::optional<size_t> queue,
               WorkerLink& link)
        : setup_(setup),
          opt_(setup.options),
          reactor_(reactor),
          stack_(stack),
          tun_(tun),
          driver_(stack, tun, *this),
          txq_(stack.config().max_connections),
          queue_(queue),
          link_(link),
          idle_timeout_(std::chrono::seconds(setup.options.idle_timeout_s)) {}
    ~TunnelBase() override = default;

    // Registers with the reactor; false after logging why not.
    bool start() {
        const TimePoint now = reactor_.now();
        coarse_now_ = now;
        next_sweep_ = now + kSweepInterval;
        setup_udp_offload();
        // The driver first: the reactor calls on_batch_end in registration
        // order, so the driver has dispatched an iteration's last datagram
        // events before our on_batch_end sends them on.
        faketcp::Status st = queue_ ? driver_.attach_queue(reactor_, *queue_) : driver_.attach(reactor_);
        if (!st) {
            LOG_ERROR("cannot watch the TUN device: %s", st.message().c_str());
            return false;
        }
        if (st = reactor_.add_fd(link_.wake.get(), *this); !st) {
            LOG_ERROR("cannot watch the worker's eventfd: %s", st.message().c_str());
            return false;
        }
        return start_mode();
    }

    // Unregisters from the reactor (which outlives us).
    void stop() {
        driver_.detach(reactor_);
        reactor_.remove_handler(*this);
    }

    // "ready" at info, once for the process. `threads`: how many workers.
    virtual void log_ready(size_t threads) const = 0;

    // This worker's counters. Only from the worker's own thread, or once it
    // has ended.
    Snapshot snapshot() const {
        Snapshot s;
        s.stack = stack_.stats();
        s.offload = driver_.offload_stats();
        s.tun_read_errors = driver_.tun_read_errors();
        s.tun_write_errors = driver_.tun_write_errors();
        s.tunnel = counters_;
        fill_mode_counters(s.tunnel);
        return s;
    }

    // Connections reset by the stop request.
    size_t reset_on_stop() const { return reset_on_stop_; }

    // --- Reactor::Handler -------------------------------------------------

    void on_readable(int fd, TimePoint now) override {
        coarse_now_ = now;
        if (fd == link_.wake.get()) {
            on_wake(now);
            return;
        }
        on_udp_readable(fd, now);
    }

    std::optional<TimePoint> next_deadline() const override {
        if (stopping_ || idle_timeout_.count() == 0) return std::nullopt;
        return next_sweep_;
    }

    void on_deadline(TimePoint now) override {
        coarse_now_ = now;
        if (stopping_ || idle_timeout_.count() == 0 || now < next_sweep_) return;
        next_sweep_ = now + kSweepInterval;
        // Closing queues RSTs; the driver may have flushed already this round.
        if (sweep_idle(now) > 0) driver_.flush();
    }

    void on_batch_end(TimePoint now) override {
        coarse_now_ = now;
        flush_udp();
    }

protected:
    virtual bool start_mode() = 0;
    virtual void on_udp_readable(int fd, TimePoint now) = 0;
    virtual void flush_udp() {}
    // Closes flows idle since `now - idle_timeout_`; returns how many.
    virtual size_t sweep_idle(TimePoint now) = 0;
    // Resets every connection; returns how many.
    virtual size_t close_all(TimePoint now) = 0;
    // What snapshot() cannot copy from counters_: derived state and the UDP error tallies.
    virtual void fill_mode_counters(TunnelCounters& c) const = 0;
    virtual const char* mode_name() const = 0;

    // "tun0 (10.0.0.1 <-> 10.0.0.2) with 2 queues, one thread each", for log_ready.
    std::string tun_description(size_t threads) const {
        std::string tun = tun_.name() + " (" + faketcp::to_string(opt_.tun_local) + " <-> " +
                          faketcp::to_string(opt_.tun_peer);
        if (opt_.tun_local6)
            tun += ", " + faketcp::to_string(*opt_.tun_local6) + " <-> " + faketcp::to_string(*opt_.tun_peer6);
        tun += ")";
        if (tun_.queue_count() > 1) {
            tun += " with " + std::to_string(tun_.queue_count()) + " queues";
            tun += threads > 1 ? ", one thread each" : ", one thread for all";
        }
        return tun;
    }

    // A datagram that one segment cannot carry: counted, and a warning at
    // most every kWarnInterval.
    // `from_addr`, if given, names the sender instead of `from`; it is only
    // formatted when the warning is logged.
    void drop_oversize(size_t size, bool truncated, size_t limit, const char* from, TimePoint now,
                       const SockAddr* from_addr = nullptr) {
        ++counters_.oversize_drops;
        if (!oversize_warn_.allow(now)) return;
        oversize_warn_.take_suppressed();
        std::string sender = from_addr ? "UDP peer " + to_string(*from_addr) : std::string(from);
        LOG_WARN("%s: dropped a %s%zu-byte datagram from %s: one segment carries at most %zu bytes with MTU %u "
                 "(%" PRIu64 " oversized dropped so far; warning at most every %s)",
                 mode_name(), truncated ? "more than " : "", size, sender.c_str(), limit, kMtu, counters_.oversize_drops,
                 seconds_str(kWarnInterval).c_str());
    }

    // --- UDP offloads ---------------------------------------------------------

    void setup_udp_offload() {
        if (!opt_.udp_offload) {
            LOG_DEBUG("%s: UDP offloads off (--no-udp-offload)", mode_name());
            return;
        }
        std::string why;
        udp_gso_ = probe_udp_gso(why);
        if (!udp_gso_) LOG_INFO("%s: UDP sends without segmentation offload (slower): %s", mode_name(), why.c_str());
        udp_gro_ = true;  // asked for on each receiving socket
    }

    // Lets `fd` receive coalesced runs; the first refusal turns it off for
    // every later socket (the kernel would say the same).
    void enable_gro(int fd) {
        if (!udp_gro_) return;
        std::string why;
        if (enable_udp_gro(fd, why)) return;
        udp_gro_ = false;
        LOG_INFO("%s: UDP receives without GRO (slower): %s", mode_name(), why.c_str());
    }

    // How many datagrams receive i of rx holds (split with gro_segment), counted.
    size_t received_count(const UdpRxBatch& rx, size_t i, size_t gro_size) {
        const size_t n = gro_segment_count(rx.size(i), gro_size);
        counters_.udp_in += n;
        if (n > 1) {
            ++counters_.udp_offload.gro_receives;
            counters_.udp_offload.gro_datagrams += n;
        }
        return n;
    }

    // Queues a datagram for `flow`, sent at the end of this reactor iteration.
    // Flows are below max_connections (the queue's size) and a datagram is
    // smaller than the MTU, so once the queue is emptied the add succeeds.
    void queue_udp(uint32_t flow, ByteView data) {
        static_assert(UdpTxQueue::kBytes >= kMtu, "a datagram must fit an empty queue");
        if (txq_.add(flow, data)) return;
        flush_udp();  // full: make room
        (void)txq_.add(flow, data);
    }

    // Sends what send_batch_ holds on `fd`. The first refused UDP_SEGMENT run
    // turns GSO off for good: the batch resent it one datagram at a time.
    UdpSendBatch::Outcome send_batch(int fd, UdpErrors& errors) {
        UdpSendBatch::Outcome out = send_batch_.send(fd, errors, counters_.udp_offload);
        counters_.udp_out += out.sent;
        if (out.gso_refused_errno != 0 && udp_gso_) {
            udp_gso_ = false;
            LOG_WARN("%s: the kernel refused a UDP segmentation offload send (%s): one datagram per message from "
                     "now on",
                     mode_name(), std::strerror(out.gso_refused_errno));
        }
        return out;
    }


    // StackDriver::send with the outcome counted; never logs above debug
    // except the rate-limited oversize warning.
    bool send_datagram(ConnId conn, ByteView data, size_t limit, const char* from, TimePoint now) {
        Errc e = driver_.send(conn, data, now);
        switch (e) {
            case Errc::ok: return true;
            case Errc::too_big: drop_oversize(data.size, false, limit, from, now); return false;
            case Errc::tx_queue_full: ++counters_.tx_full_drops; break;
            case Errc::window_full: ++counters_.window_full_drops; break;
            case Errc::empty_datagram: ++counters_.empty_drops; break;
            default: ++counters_.send_errors; break;
        }
        LOG_DEBUG("%s: send on connection %u failed: %s", mode_name(), conn.index, faketcp::to_string(e));
        return false;
    }

    // Resets a connection (RST on the wire). The only failure is a handle
    // already gone (stale_handle), and then there is nothing left to reset.
    void reset_connection(ConnId conn, TimePoint now) {
        const Errc e = driver_.close(conn, now);
        if (e != Errc::ok)
            LOG_DEBUG("%s: close of connection %u: %s", mode_name(), conn.index, faketcp::to_string(e));
    }

    const TunnelSetup& setup_;
    const Options& opt_;
    Reactor& reactor_;
    Stack& stack_;
    Tun& tun_;
    StackDriver driver_;
    // TCP -> UDP datagrams of this iteration, by flow (client: flow index,
    // server: ConnId.index), and the messages that send them.
    UdpTxQueue txq_;
    UdpSendBatch send_batch_;
    bool udp_gso_ = false;  // UDP_SEGMENT runs (probed; off once the kernel refuses one)
    bool udp_gro_ = false;  // UDP_GRO on receiving sockets (off once the kernel refuses)
    // Everything counted on this worker's data path; snapshot() adds the rest.
    TunnelCounters counters_;
    std::optional<size_t> queue_;
    WorkerLink& link_;
    Duration idle_timeout_;
    TimePoint coarse_now_{};  // the last time the reactor gave us; for idle stamps
    TimePoint next_sweep_{};
    bool stopping_ = false;
    size_t reset_on_stop_ = 0;

    RateLimit oversize_warn_{kWarnInterval};

private:
    // The main thread asked for something: see WorkerLink.
    void on_wake(TimePoint now) {
        uint64_t count = 0;
        ssize_t n = ::read(link_.wake.get(), &count, sizeof count);
        (void)n;  // EAGAIN: a spurious wake-up; the requests below are checked anyway
        if (link_.stop_signal.load() != 0 && !stopping_) {
            stopping_ = true;
            reset_on_stop_ = close_all(now);
            driver_.flush();  // the RSTs reach the TUN before it goes away
            reactor_.stop();
        }
        const uint64_t wanted = link_.stats_wanted.load();
        if (wanted != 0) answer_stats(wanted);
    }

    void answer_stats(uint64_t wanted) {
        Snapshot s = snapshot();
        {
            std::lock_guard<std::mutex> lock(link_.exchange->mu);
            if (link_.stats_answered >= wanted) return;
            link_.snapshot = s;
            link_.stats_answered = wanted;
        }
        link_.exchange->answered.notify_all();
    }
};

// ---------------------------------------------------------------------------
// Client: one UDP socket, one fake-TCP connection per UDP peer
// ---------------------------------------------------------------------------

struct ClientFlow {
    enum class State : uint8_t {
        free,          // slot unused
        disconnected,  // no connection: never opened, failed or reset; opened on the next datagram
        connecting,
        established,
    };
    State state = State::free;
    bool failure_logged = false;  // a failure was logged since the last success
    bool had_connection = false;  // its next connection is a reconnect (counted)
    ConnId conn;
    PeerKey key;
    SockAddr peer;
    PktInfo local;  // the address the peer last sent to; replies come from it
    TimePoint last_activity{};
    PendingPool::List pending;
    uint32_t next_free = kNone;
};

class ClientTunnel final : public TunnelBase {
public:
    ClientTunnel(const TunnelSetup& setup, Reactor& reactor, Stack& stack, Tun& tun, std::optional<size_t> queue,
                 WorkerLink& link, Fd udp)
        : TunnelBase(setup, reactor, stack, tun, queue, link),
          udp_(std::move(udp)),
          max_flows_(stack.config().max_connections),
          by_conn_(stack.config().max_connections, kNone),
          by_peer_(0, PeerKeyHash{random_seed()}),
          pending_(kPendingTotal, max_payload(faketcp::Family::v4)),
          limit_(max_payload(setup.remote.addr.family)) {
        flows_.reserve(max_flows_);  // no reallocation: Flow references stay valid
        by_peer_.reserve(max_flows_);
    }

    void log_ready(size_t threads) const override {
        const std::string tun = tun_description(threads);
        LOG_INFO("client ready: listening on UDP %s, TUN %s, remote %s", local_address(udp_.get()).c_str(),
                 tun.c_str(), ep_str(setup_.remote).c_str());
    }

    // --- StackHandler ------------------------------------------------------

    void on_connected(ConnId conn, const ConnInfo& info) override {
        uint32_t f = flow_of(conn);
        if (f == kNone) {  // not ours any more: do not leave it open
            reset_connection(conn, reactor_.now());
            return;
        }
        ClientFlow& fl = flows_[f];
        fl.state = ClientFlow::State::established;
        fl.failure_logged = false;
        ++counters_.connects_ok;
        const std::string peer = to_string(fl.peer);
        LOG_INFO("client: connection %s -> %s established for UDP peer %s", ep_str(info.local).c_str(),
                 ep_str(info.remote).c_str(), peer.c_str());
        const TimePoint now = reactor_.now();
        const size_t limit = stack_.max_datagram(conn);
        if (!setup_.handshake.empty())
            send_datagram(conn, {setup_.handshake.data(), setup_.handshake.size()}, limit, "--handshake-packet", now);
        while (fl.pending.count > 0) {
            send_datagram(conn, pending_.front(fl.pending), limit, peer.c_str(), now);
            pending_.pop(fl.pending);
        }
    }

    void on_connect_failed(ConnId conn, CloseReason reason) override {
        if (reason == CloseReason::peer_reset && driver_.stack().config().profile == faketcp::Profile::linux_tcp)
            explain_refused_linux_handshake();
        lost(conn, reason, "could not connect");
    }

    // phantun's server answers a SYN whose sequence number is not 0 with an
    // RST (measured with phantun 0.8.1), and so does a host where nothing
    // listens: say once which flag fixes the first case.
    void explain_refused_linux_handshake() {
        if (refused_linux_explained_) return;
        refused_linux_explained_ = true;
        LOG_ERROR("client: --profile linux: %s refused the handshake with an RST. A phantun server accepts only "
                  "SYNs with sequence number 0: use --profile phantun towards it (or nothing listens on that port)",
                  ep_str(setup_.remote).c_str());
    }
    bool refused_linux_explained_ = false;

    void on_closed(ConnId conn, CloseReason reason) override { lost(conn, reason, "lost"); }

    void on_datagram(ConnId conn, ByteView data) override {
        uint32_t f = flow_of(conn);
        if (f == kNone) {
            ++counters_.stale_datagrams;
            return;
        }
        flows_[f].last_activity = coarse_now_;
        queue_udp(f, data);
    }

protected:
    const char* mode_name() const override { return "client"; }

    bool start_mode() override {
        if (faketcp::Status st = reactor_.add_fd(udp_.get(), *this); !st) {
            LOG_ERROR("cannot watch the UDP socket: %s", st.message().c_str());
            return false;
        }
        LOG_DEBUG("client: UDP receive buffer %d bytes", receive_buffer(udp_.get()));
        enable_gro(udp_.get());
        return true;
    }

    // Every queued reply in one sendmmsg: per peer, its runs from the address
    // the peer last sent to.
    void flush_udp() override {
        if (txq_.empty()) return;
        for (size_t k = 0; k < txq_.flow_count(); ++k) {
            const uint32_t f = txq_.flow(k);
            const ClientFlow& fl = flows_[f];
            send_batch_.add_flow(txq_, f, &fl.peer, &fl.local, udp_gso_);
        }
        send_batch(udp_.get(), udp_errors_);
        txq_.clear();
    }

    void on_udp_readable(int /*fd*/, TimePoint now) override {
        int n = rx_.receive(udp_.get());
        if (n <= 0) {
            if (n < 0 && n != -EAGAIN) note_rx_error(-n, now);
            return;
        }
        for (int i = 0; i < n; ++i) {
            const RxMeta meta = rx_.meta(static_cast<size_t>(i));
            // Cumulative for the socket.
            if (meta.overflow > counters_.rx_overflows) counters_.rx_overflows = meta.overflow;
            on_udp_receive(static_cast<size_t>(i), meta, now);
        }
    }

    size_t sweep_idle(TimePoint now) override {
        size_t closed = 0;
        for (uint32_t f = 0; f < flows_.size(); ++f) {
            ClientFlow& fl = flows_[f];
            if (fl.state == ClientFlow::State::free || now - fl.last_activity < idle_timeout_) continue;
            if (fl.conn.valid()) {
                std::optional<ConnInfo> info = stack_.info(fl.conn);
                LOG_INFO("client: UDP peer %s idle for %s: closing connection %s -> %s", to_string(fl.peer).c_str(),
                         seconds_str(idle_timeout_).c_str(), info ? ep_str(info->local).c_str() : "?",
                         info ? ep_str(info->remote).c_str() : "?");
            } else {
                LOG_INFO("client: UDP peer %s idle for %s: forgetting it", to_string(fl.peer).c_str(),
                         seconds_str(idle_timeout_).c_str());
            }
            close_flow(f, now);
            ++counters_.idle_closed;
            ++closed;
        }
        return closed;
    }

    size_t close_all(TimePoint now) override {
        size_t closed = 0;
        for (uint32_t f = 0; f < flows_.size(); ++f) {
            if (flows_[f].state == ClientFlow::State::free) continue;
            if (flows_[f].conn.valid()) ++closed;
            close_flow(f, now);
        }
        flush_udp();
        return closed;
    }

    void fill_mode_counters(TunnelCounters& c) const override {
        c.peers = by_peer_.size();
        add_udp_errors(c, udp_errors_);
    }

private:
    uint32_t flow_of(ConnId conn) const {
        if (conn.index >= by_conn_.size()) return kNone;
        uint32_t f = by_conn_[conn.index];
        if (f == kNone || flows_[f].conn != conn) return kNone;  // a stale handle
        return f;
    }

    // Receive i: one datagram, or a run from one peer (UDP_GRO). The peer's
    // flow is looked up once, at its first datagram worth forwarding.
    void on_udp_receive(size_t i, const RxMeta& meta, TimePoint now) {
        const size_t n = received_count(rx_, i, meta.gro_size);
        if (rx_.truncated(i)) {  // not expected: a slot holds the largest receive
            drop_oversize(rx_.size(i), true, limit_, "a UDP peer", now, &rx_.peer(i));
            return;
        }
        uint32_t f = kNone;
        for (size_t k = 0; k < n; ++k) {
            const ByteView d = gro_segment(rx_.data(i), meta.gro_size, k);
            if (d.size > limit_) {
                drop_oversize(d.size, false, limit_, "a UDP peer", now, &rx_.peer(i));
                continue;
            }
            if (d.size == 0) {  // a zero-length segment would read as a pure ACK
                ++counters_.empty_drops;
                continue;
            }
            if (f == kNone) {
                f = peer_flow(rx_.peer(i), meta.local, now);
                if (f == kNone) return;
            }
            forward(f, d, now);
        }
    }

    // The flow of UDP peer `peer` (made if new), stamped; kNone if the table is full.
    uint32_t peer_flow(const SockAddr& peer, const PktInfo& local, TimePoint now) {
        const PeerKey key = peer_key(peer);
        uint32_t f;
        auto it = by_peer_.find(key);
        if (it != by_peer_.end()) {
            f = it->second;
        } else {
            f = new_flow(key, peer, now);
            if (f == kNone) return kNone;
        }
        ClientFlow& fl = flows_[f];
        fl.last_activity = now;
        fl.local = local;
        return f;
    }

    // One datagram from flow f's peer: over its connection, or queued for
    // the handshake (started if there is none).
    void forward(uint32_t f, ByteView d, TimePoint now) {
        ClientFlow& fl = flows_[f];
        switch (fl.state) {
            case ClientFlow::State::established:
                send_datagram(fl.conn, d, limit_, "a UDP peer", now);
                return;
            case ClientFlow::State::disconnected:
                if (!open_connection(f, now)) {
                    ++counters_.no_conn_drops;
                    return;
                }
                queue_pending(fl, d);
                return;
            case ClientFlow::State::connecting:
                queue_pending(fl, d);
                return;
            case ClientFlow::State::free:
                return;  // not reachable: a mapped flow is never free
        }
    }

    void queue_pending(ClientFlow& fl, ByteView d) {
        if (fl.pending.count >= kPendingPerFlow || !pending_.push(fl.pending, d)) ++counters_.pending_full_drops;
    }

    uint32_t new_flow(const PeerKey& key, const SockAddr& peer, TimePoint now) {
        uint32_t f;
        if (free_head_ != kNone) {
            f = free_head_;
            free_head_ = flows_[f].next_free;
        } else if (flows_.size() < max_flows_) {
            f = static_cast<uint32_t>(flows_.size());
            flows_.emplace_back();
        } else {
            ++counters_.table_full_drops;
            if (table_full_warn_.allow(now))
                LOG_WARN("client: %u UDP peers already: dropping datagrams from new peer %s (%" PRIu64 " so far)",
                         max_flows_, to_string(peer).c_str(), counters_.table_full_drops);
            return kNone;
        }
        ClientFlow& fl = flows_[f];
        fl = ClientFlow{};
        fl.state = ClientFlow::State::disconnected;
        fl.key = key;
        fl.peer = peer;
        fl.last_activity = now;
        by_peer_.emplace(key, f);
        LOG_INFO("client: new UDP peer %s", to_string(peer).c_str());
        return f;
    }

    bool open_connection(uint32_t f, TimePoint now) {
        ClientFlow& fl = flows_[f];
        faketcp::Result<ConnId> r = driver_.connect(setup_.remote, now);
        if (!r) {
            ++connect_errors_;
            if (connect_warn_.allow(now))
                LOG_WARN("client: cannot open a connection to %s for UDP peer %s: %s (%" PRIu64 " such errors)",
                         ep_str(setup_.remote).c_str(), to_string(fl.peer).c_str(), r.status().message().c_str(),
                         connect_errors_);
            return false;
        }
        if (r.value().index >= by_conn_.size()) {  // outside the documented range: refuse it
            reset_connection(r.value(), now);
            ++connect_errors_;
            return false;
        }
        ++counters_.connects_started;
        if (fl.had_connection) ++counters_.reconnects;
        fl.had_connection = true;
        fl.conn = r.value();
        fl.state = ClientFlow::State::connecting;
        by_conn_[fl.conn.index] = f;
        LOG_DEBUG("client: connecting to %s for UDP peer %s", ep_str(setup_.remote).c_str(), to_string(fl.peer).c_str());
        return true;
    }

    // The connection of a flow ended without us closing it.
    void lost(ConnId conn, CloseReason reason, const char* what) {
        uint32_t f = flow_of(conn);
        if (f == kNone) return;  // closed by us: already forgotten
        ClientFlow& fl = flows_[f];
        ++counters_.connects_lost;
        by_conn_[conn.index] = kNone;
        fl.conn = ConnId{};
        fl.state = ClientFlow::State::disconnected;
        if (reason == CloseReason::peer_dead) {
            // The path died, not the flow: the stack sent its best-effort RST;
            // a new connection (a new source port, so a new NAT mapping) takes
            // over the flow, at once if datagrams wait for it.
            LOG_WARN("client: connection to %s for UDP peer %s lost: %s; it is opened again from a new port on "
                     "the peer's next datagram",
                     ep_str(setup_.remote).c_str(), to_string(fl.peer).c_str(), describe(reason));
            fl.failure_logged = true;
            if (fl.pending.count > 0 && !open_connection(f, reactor_.now())) {
                counters_.pending_lost += fl.pending.count;
                pending_.clear(fl.pending);
            }
            return;
        }
        counters_.pending_lost += fl.pending.count;
        pending_.clear(fl.pending);
        if (!fl.failure_logged) {
            fl.failure_logged = true;
            LOG_WARN("client: connection to %s for UDP peer %s %s: %s; it is opened again on the peer's next datagram",
                     ep_str(setup_.remote).c_str(), to_string(fl.peer).c_str(), what, describe(reason));
        } else {
            LOG_DEBUG("client: connection to %s for UDP peer %s %s again: %s", ep_str(setup_.remote).c_str(),
                      to_string(fl.peer).c_str(), what, describe(reason));
        }
    }

    // Resets the flow's connection (if any) and forgets the flow.
    void close_flow(uint32_t f, TimePoint now) {
        if (txq_.has(f)) flush_udp();  // its queued replies still go to its peer, not the slot's next one
        ClientFlow& fl = flows_[f];
        if (fl.conn.valid()) {
            by_conn_[fl.conn.index] = kNone;
            reset_connection(fl.conn, now);
        }
        counters_.pending_lost += fl.pending.count;
        pending_.clear(fl.pending);
        by_peer_.erase(fl.key);
        fl.conn = ConnId{};
        fl.state = ClientFlow::State::free;
        fl.next_free = free_head_;
        free_head_ = f;
    }

    void note_rx_error(int err, TimePoint now) {
        udp_errors_.count(err);
        if (rx_error_warn_.allow(now))
            LOG_WARN("client: UDP receive on %s: %s (counted)", local_address(udp_.get()).c_str(), std::strerror(err));
    }

    Fd udp_;
    uint32_t max_flows_;
    std::vector<ClientFlow> flows_;
    uint32_t free_head_ = kNone;
    std::vector<uint32_t> by_conn_;  // ConnId.index -> flow
    std::unordered_map<PeerKey, uint32_t, PeerKeyHash> by_peer_;
    PendingPool pending_;
    size_t limit_;  // largest datagram one segment to --remote carries
    UdpRxBatch rx_;
    UdpErrors udp_errors_;
    RateLimit table_full_warn_{kWarnInterval}, connect_warn_{kWarnInterval}, rx_error_warn_{kWarnInterval};
    uint64_t connect_errors_ = 0;  // for the warning's running count
};

// ---------------------------------------------------------------------------
// Server: one UDP socket per accepted connection
// ---------------------------------------------------------------------------

struct ServerFlow {
    bool in_use = false;
    uint8_t logged_errors = 0;  // bit per UdpErrorKind already logged
    ConnId conn;
    Fd udp;
    Endpoint client;  // the connection's remote, for logs
    TimePoint last_activity{};
    uint32_t limit = 0;  // largest datagram one segment carries
    uint32_t overflows_seen = 0;  // the socket's SO_RXQ_OVFL count already added up
};

enum UdpErrorKind : uint8_t { kRefused = 1, kNoBuffers = 2, kWouldBlock = 4, kOther = 8 };

UdpErrorKind error_kind(int err) {
    switch (err) {
        case ECONNREFUSED: return kRefused;
        case ENOBUFS:
        case ENOMEM: return kNoBuffers;
        case EAGAIN: return kWouldBlock;
        default: return kOther;
    }
}

class ServerTunnel final : public TunnelBase {
public:
    ServerTunnel(const TunnelSetup& setup, Reactor& reactor, Stack& stack, Tun& tun, std::optional<size_t> queue,
                 WorkerLink& link)
        : TunnelBase(setup, reactor, stack, tun, queue, link), flows_(stack.config().max_connections) {}

    void log_ready(size_t threads) const override {
        const std::string tun = tun_description(threads);
        LOG_INFO("server ready: listening on TCP port %u, TUN %s, remote UDP %s", unsigned(opt_.local_port),
                 tun.c_str(), ep_str(setup_.remote).c_str());
    }

    // --- StackHandler ------------------------------------------------------

    void on_accepted(ConnId conn, const ConnInfo& info) override {
        const TimePoint now = reactor_.now();
        if (conn.index >= flows_.size()) {
            reset_connection(conn, now);
            return;
        }
        std::string error;
        Fd udp = open_udp_connected(setup_.remote, error);
        if (udp.valid()) {
            enable_gro(udp.get());
            if (faketcp::Status st = reactor_.add_fd(udp.get(), *this); !st) {
                error = st.message();
                udp.reset();
            }
        }
        if (!udp.valid()) {
            ++counters_.socket_errors;
            if (socket_warn_.allow(now))
                LOG_WARN("server: connection %s -> %s: no UDP socket towards %s: %s; resetting it (%" PRIu64
                         " such errors)",
                         ep_str(info.remote).c_str(), ep_str(info.local).c_str(), ep_str(setup_.remote).c_str(),
                         error.c_str(), counters_.socket_errors);
            reset_connection(conn, now);
            return;
        }
        const int fd = udp.get();
        if (static_cast<size_t>(fd) >= fd_to_flow_.size()) fd_to_flow_.resize(size_t(fd) + 64, kNone);
        fd_to_flow_[fd] = conn.index;
        ServerFlow& fl = flows_[conn.index];
        fl.in_use = true;
        fl.logged_errors = 0;
        fl.conn = conn;
        fl.udp = std::move(udp);
        fl.client = info.remote;
        fl.last_activity = now;
        fl.limit = static_cast<uint32_t>(stack_.max_datagram(conn));
        fl.overflows_seen = 0;
        ++counters_.accepted;
        LOG_INFO("server: connection %s -> %s accepted; UDP %s -> %s", ep_str(info.remote).c_str(),
                 ep_str(info.local).c_str(), local_address(fd).c_str(), ep_str(setup_.remote).c_str());
        if (!setup_.handshake.empty())
            send_datagram(conn, {setup_.handshake.data(), setup_.handshake.size()}, fl.limit, "--handshake-packet", now);
    }

    void on_closed(ConnId conn, CloseReason reason) override {
        ServerFlow* fl = flow_of(conn);
        if (fl == nullptr) return;  // closed by us: already torn down
        ++counters_.peer_closed;
        LOG_INFO("server: connection %s -> port %u %s: closing its UDP socket", ep_str(fl->client).c_str(),
                 unsigned(opt_.local_port), describe(reason));
        teardown(*fl);
    }

    void on_datagram(ConnId conn, ByteView data) override {
        ServerFlow* fl = flow_of(conn);
        if (fl == nullptr) {
            ++counters_.stale_datagrams;
            return;
        }
        fl->last_activity = coarse_now_;
        queue_udp(conn.index, data);
    }

protected:
    const char* mode_name() const override { return "server"; }

    bool start_mode() override {
        if (faketcp::Status st = stack_.listen(opt_.local_port); !st) {
            LOG_ERROR("cannot listen on port %u: %s", unsigned(opt_.local_port), st.message().c_str());
            return false;
        }
        return true;
    }

    void on_udp_readable(int fd, TimePoint now) override {
        if (fd < 0 || static_cast<size_t>(fd) >= fd_to_flow_.size()) return;
        uint32_t idx = fd_to_flow_[fd];
        if (idx == kNone || !flows_[idx].in_use || flows_[idx].udp.get() != fd) return;
        ServerFlow& fl = flows_[idx];
        int n = rx_.receive(fd);
        if (n < 0) {
            // ECONNREFUSED: an ICMP port unreachable for an earlier send (the service restarts).
            if (n != -EAGAIN) {
                udp_errors_.count(-n);
                log_udp_error(fl, -n, "receive from");
            }
            return;
        }
        fl.last_activity = now;
        for (int i = 0; i < n; ++i) {
            const RxMeta meta = rx_.meta(size_t(i));
            // Cumulative for the socket: add what is new.
            if (meta.overflow > fl.overflows_seen) {
                counters_.rx_overflows += meta.overflow - fl.overflows_seen;
                fl.overflows_seen = meta.overflow;
            }
            forward_receive(fl, size_t(i), meta.gro_size, now);
        }
    }

    // Each flow's queued datagrams in one sendmmsg on its socket.
    void flush_udp() override {
        if (txq_.empty()) return;
        for (size_t k = 0; k < txq_.flow_count(); ++k) {
            ServerFlow& fl = flows_[txq_.flow(k)];
            if (!fl.in_use) continue;  // not reachable: teardown sends first
            send_batch_.add_flow(txq_, txq_.flow(k), nullptr, nullptr, udp_gso_);
            const UdpSendBatch::Outcome out = send_batch(fl.udp.get(), udp_errors_);
            if (out.failed > 0) log_udp_error(fl, out.last_errno, "send to");
        }
        txq_.clear();
    }

    // Receive i of the flow's socket: one datagram or a run (UDP_GRO).
    void forward_receive(ServerFlow& fl, size_t i, size_t gro_size, TimePoint now) {
        const size_t n = received_count(rx_, i, gro_size);
        if (rx_.truncated(i)) {  // not expected: a slot holds the largest receive
            drop_oversize(rx_.size(i), true, fl.limit, "the UDP service", now);
            return;
        }
        for (size_t k = 0; k < n; ++k) {
            const ByteView d = gro_segment(rx_.data(i), gro_size, k);
            if (d.size > fl.limit) {
                drop_oversize(d.size, false, fl.limit, "the UDP service", now);
                continue;
            }
            if (d.size == 0) {
                ++counters_.empty_drops;
                continue;
            }
            send_datagram(fl.conn, d, fl.limit, "the UDP service", now);
        }
    }

    size_t sweep_idle(TimePoint now) override {
        size_t closed = 0;
        for (ServerFlow& fl : flows_) {
            if (!fl.in_use || now - fl.last_activity < idle_timeout_) continue;
            LOG_INFO("server: connection %s -> port %u idle for %s: closing it and its UDP socket",
                     ep_str(fl.client).c_str(), unsigned(opt_.local_port), seconds_str(idle_timeout_).c_str());
            reset_connection(fl.conn, now);
            teardown(fl);
            ++counters_.idle_closed;
            ++closed;
        }
        return closed;
    }

    size_t close_all(TimePoint now) override {
        size_t closed = 0;
        for (ServerFlow& fl : flows_) {
            if (!fl.in_use) continue;
            reset_connection(fl.conn, now);
            teardown(fl);
            ++closed;
        }
        return closed;
    }

    void fill_mode_counters(TunnelCounters& c) const override { add_udp_errors(c, udp_errors_); }

private:
    ServerFlow* flow_of(ConnId conn) {
        if (conn.index >= flows_.size()) return nullptr;
        ServerFlow& fl = flows_[conn.index];
        return fl.in_use && fl.conn == conn ? &fl : nullptr;
    }

    // Transient UDP errors (counted by the caller) never close the
    // connection: its peer did nothing wrong. Each kind is logged once per
    // connection.
    void log_udp_error(ServerFlow& fl, int err, const char* op) {
        UdpErrorKind kind = error_kind(err);
        if (fl.logged_errors & kind) return;
        fl.logged_errors |= kind;
        LOG_WARN("server: connection %s: UDP %s %s: %s (counted, not logged again for this connection)",
                 ep_str(fl.client).c_str(), op, ep_str(setup_.remote).c_str(), std::strerror(err));
    }

    void teardown(ServerFlow& fl) {
        // Its queued datagrams arrived before whatever ends it: they still go.
        if (fl.conn.valid() && txq_.has(fl.conn.index)) flush_udp();
        if (fl.udp.valid()) {
            const int fd = fl.udp.get();
            // Unwatch before close: the number may be reused at once.
            faketcp::Status st = reactor_.remove_fd(fd);
            (void)st;  // nothing to do about it: the fd is closed next anyway
            if (static_cast<size_t>(fd) < fd_to_flow_.size()) fd_to_flow_[fd] = kNone;
            fl.udp.reset();
        }
        fl.in_use = false;
        fl.conn = ConnId{};
    }

    std::vector<ServerFlow> flows_;    // by ConnId.index
    std::vector<uint32_t> fd_to_flow_;  // UDP fd -> ConnId.index
    UdpRxBatch rx_;
    UdpErrors udp_errors_;
    RateLimit socket_warn_{kWarnInterval};
};

// ---------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------

// One fd per server flow: lift the soft limit to the hard one (no privilege needed).
void raise_fd_limit() {
    struct rlimit rl {};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) LOG_DEBUG("setrlimit(RLIMIT_NOFILE): %s", std::strerror(errno));
    }
}

void forward_library_log(faketcp::LogLevel level, std::string_view message) {
    if (log_enabled(level)) log_line(level, "stack: %.*s", static_cast<int>(message.size()), message.data());
}

// The CPUs this process may run on: the default number of queues.
uint32_t usable_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    long n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
    return static_cast<uint32_t>(std::clamp(n, 1L, long(kMaxQueues)));
}

// `total` split over `parts` workers, rounded up, so the parts add up to at
// least the total the user asked for.
uint32_t share(uint32_t total, uint32_t parts) { return total / parts + (total % parts != 0 ? 1 : 0); }

faketcp::StackConfig stack_config(const Options& o, uint32_t shards, uint32_t index) {
    faketcp::StackConfig sc;
    sc.local_v4 = o.tun_peer;
    sc.local_v6 = o.tun_peer6;
    sc.mtu = kMtu;
    sc.max_connections = share(o.max_connections, shards);
    sc.max_half_open = share(o.max_half_open, shards);
    sc.reply_rate_per_sec = share(o.reply_rate, shards);
    sc.seed = random_seed();
    sc.secret = {random_seed(), random_seed()};
    sc.profile = o.profile;
    sc.linux_window_scale = faketcp::linux_window_scale_from_sysctls();
    sc.log = forward_library_log;
    sc.shard_count = shards;
    sc.shard_index = index;
    sc.keepalive_interval = std::chrono::seconds(o.keepalive_s);
    sc.keepalive_probes = o.keepalive_probes;
    return sc;
}

// The client's UDP sockets on --local: one per worker, in one SO_REUSEPORT
// group when there are several. Opened before the TUN, so a taken port fails
// first. Empty after logging why not.
std::vector<Fd> open_client_sockets(const Options& o, uint32_t count) {
    std::vector<Fd> sockets;
    for (uint32_t i = 0; i < count; ++i) {
        std::string error;
        Fd fd = open_udp_listener(o.local, error, count > 1);
        if (!fd.valid()) {
            LOG_ERROR("client: %s", error.c_str());
            return {};
        }
        sockets.push_back(std::move(fd));
    }
    return sockets;
}

std::optional<Tun> open_tun(const Options& o, uint32_t queues) {
    faketcp::TunConfig tc;
    tc.name = o.tun_name;
    tc.queues = queues;
    tc.mtu = kMtu;
    tc.local_v4 = o.tun_local;
    tc.peer_v4 = o.tun_peer;
    tc.local_v6 = o.tun_local6;
    tc.peer_v6 = o.tun_peer6;
    tc.up = true;
    tc.offload = o.offload;
    faketcp::Result<Tun> tun_r = Tun::open(tc);
    if (!tun_r) {
        const faketcp::Status& st = tun_r.status();
        LOG_ERROR("cannot create the TUN device: %s", st.message().c_str());
        if (st.sys_errno() == EPERM || st.sys_errno() == EACCES)
            LOG_ERROR("creating a TUN device needs CAP_NET_ADMIN: run as root, or grant it once with "
                      "`sudo setcap cap_net_admin+ep /path/to/faketcp`");
        return std::nullopt;
    }
    Tun tun = std::move(tun_r.value());
    LOG_DEBUG("TUN %s up (ifindex %d, %zu queue%s, offload %s)", tun.name().c_str(), tun.ifindex(),
              tun.queue_count(), tun.queue_count() == 1 ? "" : "s", tun.offload() ? "on" : "off");
    if (o.offload && !tun.offload_note().empty())
        LOG_INFO("TUN %s without offloads (slower): %s", tun.name().c_str(), tun.offload_note().c_str());
    return tun;
}

// How many workers the TUN can feed: one per queue once every connection's
// packets are steered to one queue, else one for all.
uint32_t steer_queues(Tun& tun) {
    if (tun.queue_count() <= 1) return 1;
    faketcp::Status st = tun.steer_by_ports();
    if (st) return static_cast<uint32_t>(tun.queue_count());
    LOG_WARN("TUN %s: cannot steer connections to queues (%s): one thread serves all %zu queues", tun.name().c_str(),
             st.message().c_str(), tun.queue_count());
    return 1;
}

// One thread's share of the tunnel. The thread only runs the reactor; the
// main thread builds and destroys everything, before and after it.
struct Worker {
    std::unique_ptr<Reactor> reactor;
    std::unique_ptr<Stack> stack;
    WorkerLink link;
    std::unique_ptr<TunnelBase> tunnel;
    std::thread thread;
    bool loop_failed = false;  // written by the thread before it ends; read after join
};

using Workers = std::vector<std::unique_ptr<Worker>>;

// Builds and registers worker `index` of `count`; null after logging why not.
std::unique_ptr<Worker> make_worker(const TunnelSetup& setup, Tun& tun, uint32_t index, uint32_t count, Fd udp,
                                    StatsExchange& exchange) {
    auto w = std::make_unique<Worker>();
    faketcp::Result<Reactor> reactor_r = Reactor::create();
    if (!reactor_r) {
        LOG_ERROR("cannot create the event loop: %s", reactor_r.status().message().c_str());
        return nullptr;
    }
    w->reactor = std::make_unique<Reactor>(std::move(reactor_r.value()));
    w->reactor->set_busy_poll(std::chrono::microseconds(setup.options.busy_poll_us));
    w->reactor->set_poll_budget(std::chrono::microseconds(setup.options.poll_budget_us));
    w->link.wake = Fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!w->link.wake.valid()) {
        LOG_ERROR("eventfd: %s", std::strerror(errno));
        return nullptr;
    }
    w->link.exchange = &exchange;
    w->stack = std::make_unique<Stack>(stack_config(setup.options, count, index));
    // One worker over a multi-queue TUN (no steering) serves every queue.
    const std::optional<size_t> queue = count > 1 ? std::optional<size_t>(index) : std::nullopt;
    if (setup.options.mode == Mode::client)
        w->tunnel = std::make_unique<ClientTunnel>(setup, *w->reactor, *w->stack, tun, queue, w->link, std::move(udp));
    else
        w->tunnel = std::make_unique<ServerTunnel>(setup, *w->reactor, *w->stack, tun, queue, w->link);
    if (!w->tunnel->start()) return nullptr;
    return w;
}

// Each worker's current counters. A worker that does not answer in 2 s (it
// never blocks, so it should) contributes its previous answer.
std::vector<Snapshot> gather_stats(Workers& workers, StatsExchange& exchange, uint64_t request) {
    for (auto& w : workers) {
        w->link.stats_wanted.store(request);
        w->link.poke();
    }
    std::unique_lock<std::mutex> lock(exchange.mu);
    auto all_answered = [&] {
        for (auto& w : workers)
            if (w->link.stats_answered < request) return false;
        return true;
    };
    if (!exchange.answered.wait_for(lock, std::chrono::seconds(2), all_answered))
        LOG_WARN("stats: a worker thread did not answer within 2 s; its counters below are older");
    std::vector<Snapshot> snapshots;
    for (auto& w : workers) snapshots.push_back(w->link.snapshot);
    return snapshots;
}

// Milliseconds from now to `t` for poll(), rounded up, at least 0.
int poll_timeout_until(std::chrono::steady_clock::time_point t) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(t - std::chrono::steady_clock::now());
    return static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT32_MAX));
}

// Waits for SIGINT/SIGTERM or the end of a worker's loop, logging summed
// stats every `interval` (0: never) and serving `metrics` (if any). Returns
// the signal, or 0 if a worker ended first (its loop failed: it logged why).
// `request` numbers the stats requests to the workers, these and the metrics'.
int supervise(Workers& workers, StatsExchange& exchange, uint64_t& request, int signal_fd, int exited_fd,
              std::chrono::seconds interval, Mode mode, bool tun_offload, MetricsServer* metrics) {
    using Clock = std::chrono::steady_clock;
    Clock::time_point next_stats = Clock::now() + interval;
    for (;;) {
        int timeout_ms = -1;
        if (interval.count() > 0) timeout_ms = poll_timeout_until(next_stats);
        if (std::optional<faketcp::TimePoint> next = metrics ? metrics->next_deadline() : std::nullopt) {
            const int until = poll_timeout_until(*next);
            timeout_ms = timeout_ms < 0 ? until : std::min(timeout_ms, until);
        }
        // poll() ignores a negative fd: no metrics, no third entry.
        pollfd fds[3] = {{signal_fd, POLLIN, 0}, {exited_fd, POLLIN, 0}, {metrics ? metrics->fd() : -1, POLLIN, 0}};
        const int n = ::poll(fds, 3, timeout_ms);
        if (n < 0 && errno != EINTR) {
            LOG_ERROR("poll: %s", std::strerror(errno));
            return 0;
        }
        if (n > 0 && (fds[0].revents & POLLIN)) {
            signalfd_siginfo si{};
            if (::read(signal_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) return static_cast<int>(si.ssi_signo);
        }
        if (n > 0 && (fds[1].revents & POLLIN)) return 0;
        if (metrics) metrics->process(Clock::now());  // ready sockets and deadlines; never blocks
        if (interval.count() > 0 && Clock::now() >= next_stats) {
            next_stats = Clock::now() + interval;
            log_stats(mode, gather_stats(workers, exchange, ++request), tun_offload, "");
        }
    }
}

// Asks every running worker to reset its connections and stop, then joins them.
void stop_workers(Workers& workers, int signal) {
    for (auto& w : workers) {
        w->link.stop_signal.store(signal);
        w->link.poke();
    }
    for (auto& w : workers)
        if (w->thread.joinable()) w->thread.join();
}

// Starts a thread per worker; false after logging why not (the started ones
// still run: stop_workers ends them).
bool start_threads(Workers& workers, int exited_fd) {
    for (auto& w : workers) {
        Worker* worker = w.get();
        try {
            worker->thread = std::thread([worker, exited_fd] {
                faketcp::Status st = worker->reactor->run();
                if (!st) {
                    LOG_ERROR("event loop failed: %s", st.message().c_str());
                    worker->loop_failed = true;
                }
                const uint64_t one = 1;
                ssize_t n = ::write(exited_fd, &one, sizeof one);
                (void)n;  // an eventfd write of 1 does not fail
            });
        } catch (const std::system_error& e) {
            LOG_ERROR("cannot start a worker thread: %s", e.what());
            return false;
        }
    }
    return true;
}

// --auto-rules: the spec from the flags, the TUN's name and (client) the
// interfaces the kernel routes --remote through.
std::optional<AutoRules> install_rules(const TunnelSetup& setup, const std::string& tun_name) {
    const Options& o = setup.options;
    RuleSpec spec;
    spec.mode = o.mode;
    spec.tun = tun_name;
    spec.peer4 = o.tun_peer;
    spec.peer6 = o.tun_peer6;
    spec.local_port = o.local_port;
    if (o.mode == Mode::client) {
        std::string error;
        spec.out_ifaces = route_interfaces(setup.remote.addr, error);
        if (spec.out_ifaces.empty()) {
            LOG_ERROR("auto-rules: %s", error.c_str());
            return std::nullopt;
        }
    }
    return AutoRules::install(spec);
}

const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal"; }

}  // namespace

int run_tunnel(const TunnelSetup& setup) {
    const Options& o = setup.options;
    const char* mode = o.mode == Mode::client ? "client" : "server";
    raise_fd_limit();

    // The main thread owns the signals: blocked before any worker thread
    // exists (they inherit the mask) and read from a signalfd.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &signals, nullptr) != 0) {
        LOG_ERROR("sigprocmask: %s", std::strerror(errno));
        return 1;
    }
    Fd signal_fd(signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC));
    Fd exited_fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!signal_fd.valid() || !exited_fd.valid()) {
        LOG_ERROR("%s: %s", signal_fd.valid() ? "eventfd" : "signalfd", std::strerror(errno));
        return 1;
    }

    const uint32_t queues = o.queues != 0 ? o.queues : usable_cpus();
    std::vector<Fd> sockets;
    if (o.mode == Mode::client) {
        sockets = open_client_sockets(o, queues);
        if (sockets.empty()) return 1;
    }
    // The metrics listener before the TUN, so a taken port fails first. It
    // renders from the workers' snapshots, like the stats dump; it only runs
    // inside supervise(), once the workers and the TUN exist.
    StatsExchange exchange;
    Workers workers;
    uint64_t stats_request = 0;
    std::optional<Tun> tun;
    std::unique_ptr<MetricsServer> metrics;
    if (o.metrics) {
        std::string error;
        metrics = MetricsServer::open(
            *o.metrics,
            [&](const MetricsServerStats& server) {
                return format_metrics(o.mode, gather_stats(workers, exchange, ++stats_request), tun->offload(), server);
            },
            MetricsLimits{}, error);
        if (!metrics) {
            LOG_ERROR("%s", error.c_str());
            return 1;
        }
    }
    tun = open_tun(o, queues);
    if (!tun) return 1;
    // Declared after the TUN: every return below removes the rules.
    std::optional<AutoRules> rules = o.auto_rules ? install_rules(setup, tun->name()) : std::nullopt;
    if (o.auto_rules && !rules) return 1;
    const uint32_t threads = steer_queues(*tun);
    sockets.resize(o.mode == Mode::client ? threads : 0);  // the group shrinks with the sockets closed

    for (uint32_t i = 0; i < threads; ++i) {
        std::unique_ptr<Worker> w =
            make_worker(setup, *tun, i, threads, o.mode == Mode::client ? std::move(sockets[i]) : Fd(), exchange);
        if (!w) return 1;
        workers.push_back(std::move(w));
    }
    workers.front()->tunnel->log_ready(threads);
    if (metrics)
        LOG_INFO("%s: metrics at http://%s/metrics", mode, ep_str(metrics->local_address()).c_str());
    notify_systemd("READY=1");

    // 0 unless a signal ended the run; otherwise a thread or the loop failed (logged).
    int signal = 0;
    if (start_threads(workers, exited_fd.get()))
        signal = supervise(workers, exchange, stats_request, signal_fd.get(), exited_fd.get(),
                           std::chrono::seconds(o.stats_interval_s), o.mode, tun->offload(), metrics.get());
    notify_systemd("STOPPING=1");
    stop_workers(workers, signal != 0 ? signal : SIGTERM);

    std::vector<Snapshot> final_stats;
    size_t reset = 0;
    for (auto& w : workers) {
        final_stats.push_back(w->tunnel->snapshot());
        reset += w->tunnel->reset_on_stop();
    }
    if (signal != 0)
        LOG_INFO("%s: %s received: reset %zu connection%s, shutting down", mode, signal_name(signal), reset,
                 reset == 1 ? "" : "s");
    log_stats(o.mode, final_stats, tun->offload(), " at exit");
    metrics.reset();
    for (auto& w : workers) w->tunnel->stop();
    workers.clear();
    const std::string name = tun->name();
    tun.reset();  // closing the last queue removes the device
    LOG_INFO("TUN %s removed; exiting", name.c_str());
    return signal != 0 ? 0 : 1;
}

}  // namespace demo
