// demo/worker.h — what one worker thread's tunnel is made of, whichever its
// role: the link to the main thread (WorkerLink), and TunnelBase, the part
// of the client and the server tunnels (demo/client.cpp, demo/server.cpp)
// that is the same for both.
//
// TunnelBase owns the worker's StackDriver, its UDP transmit queue and
// offload state, the shared counters and the idle sweep; a role reaches them
// only through the named operations below (send a datagram, queue a reply,
// forward a receive, ...), so what is counted where stays in one file.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "demo/balance.h"
#include "demo/log.h"
#include "demo/options.h"
#include "demo/stats.h"
#include "demo/tunnel.h"
#include "demo/udp.h"
#include "faketcp.h"

namespace demo {

// "No flow", in the index tables of both roles.
constexpr uint32_t kNone = UINT32_MAX;
// Rate limit for warnings that traffic can trigger repeatedly.
constexpr faketcp::Duration kWarnInterval = std::chrono::seconds(10);

const char* describe(faketcp::CloseReason r);
std::string ep_str(const faketcp::Endpoint& ep);
std::string seconds_str(faketcp::Duration d);  // "10 s"
// From getrandom, or the clock and the pid when that fails: never blocks.
uint64_t random_seed();

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
    Fd wake;                                // eventfd
    std::atomic<int> stop_signal{0};        // nonzero: reset every connection and stop
    std::atomic<uint64_t> stats_wanted{0};  // the latest stats request's number
    StatsExchange* exchange = nullptr;
    // Guarded by exchange->mu:
    uint64_t stats_answered = 0;
    Snapshot snapshot;

    void poke() const;
};

// The parts of one worker that its tunnel drives; the main thread builds
// them before the tunnel and destroys them after it.
struct WorkerParts {
    faketcp::Reactor& reactor;
    faketcp::Stack& stack;
    faketcp::Tun& tun;
    std::optional<size_t> queue;  // the one TUN queue this worker serves; nullopt: all of them
    WorkerLink& link;
    uint32_t index = 0;              // this worker's number, 0 .. workers - 1
    FlowBalance* balance = nullptr;  // client with several workers: where new flows go (demo/balance.h)
};

// ---------------------------------------------------------------------------
// TunnelBase: what the client and the server share
// ---------------------------------------------------------------------------

class TunnelBase : public faketcp::StackHandler, public faketcp::Reactor::Handler {
public:
    TunnelBase(const TunnelSetup& setup, const WorkerParts& parts);
    ~TunnelBase() override = default;
    TunnelBase(const TunnelBase&) = delete;
    TunnelBase& operator=(const TunnelBase&) = delete;

    // Registers with the reactor; false after logging why not.
    bool start();
    // Unregisters from the reactor (which outlives us).
    void stop();

    // "ready" at info, once for the process. `threads`: how many workers.
    virtual void log_ready(size_t threads) const = 0;

    // This worker's counters. Only from the worker's own thread, or once it
    // has ended.
    Snapshot snapshot() const;

    // Connections reset by the stop request.
    size_t reset_on_stop() const { return reset_on_stop_; }

    // --- Reactor::Handler -------------------------------------------------

    void on_readable(int fd, faketcp::TimePoint now) override;
    std::optional<faketcp::TimePoint> next_deadline() const override;
    void on_deadline(faketcp::TimePoint now) override;
    void on_batch_end(faketcp::TimePoint now) override;

protected:
    // --- What each role implements ---------------------------------------

    virtual const char* mode_name() const = 0;
    // The role's own registrations, at the end of start(); false after logging why not.
    virtual bool start_mode() = 0;
    // A UDP socket of the role's (never the wake eventfd) is readable.
    virtual void on_udp_readable(int fd, faketcp::TimePoint now) = 0;
    // Puts every flow with queued datagrams into batches (for_each_queued_flow,
    // batch_flow) and sends them (send_batch); flush_udp() clears the queue after.
    virtual void send_queued_udp() = 0;
    // Closes flows idle since `now - idle timeout`; returns how many (counted as idle-closed).
    virtual size_t sweep_idle(faketcp::TimePoint now) = 0;
    // Resets every connection; returns how many.
    virtual size_t close_all(faketcp::TimePoint now) = 0;
    // Adds what the role counts itself (and derived state) to `c`.
    virtual void fill_mode_counters(TunnelCounters& c) const = 0;
    // The wake eventfd fired: besides the main thread's requests, the role's
    // own mail (the client's FlowBalance mailbox) may wait.
    virtual void on_wake_mode(faketcp::TimePoint /*now*/) {}

    // --- The setup and the clock -------------------------------------------

    const Options& options() const { return opt_; }
    const faketcp::Endpoint& remote() const { return setup_.remote; }
    // "tun0 (10.0.0.1 <-> 10.0.0.2) with 2 queues, one thread each", for log_ready.
    std::string tun_description(size_t threads) const;
    faketcp::TimePoint now() const { return reactor_.now(); }
    // The last time the reactor gave us: cheap, for activity stamps.
    faketcp::TimePoint coarse_now() const { return coarse_now_; }
    // Whether a flow last active at `last_activity` has been idle too long.
    bool idle_since(faketcp::TimePoint last_activity, faketcp::TimePoint now) const {
        return now - last_activity >= idle_timeout_;
    }
    std::string idle_timeout_text() const { return seconds_str(idle_timeout_); }

    // --- The stack ----------------------------------------------------------

    // Opens a connection to --remote.
    faketcp::Result<faketcp::ConnId> connect(faketcp::TimePoint now);
    // StackDriver::send with the outcome counted; never logs above debug
    // except the rate-limited oversize warning. `from` names the sender.
    bool send_datagram(faketcp::ConnId conn, faketcp::ByteView data, size_t limit, const char* from,
                       faketcp::TimePoint now);
    // The --handshake-packet (if any), the first datagram on a new connection.
    void send_handshake_packet(faketcp::ConnId conn, size_t limit, faketcp::TimePoint now);
    // Resets a connection (RST on the wire). The only failure is a handle
    // already gone (stale_handle), and then there is nothing left to reset.
    void reset_connection(faketcp::ConnId conn, faketcp::TimePoint now);
    size_t max_datagram(faketcp::ConnId conn) const { return stack_.max_datagram(conn); }
    std::optional<faketcp::ConnInfo> connection_info(faketcp::ConnId conn) const { return stack_.info(conn); }
    faketcp::Status listen(uint16_t port) { return stack_.listen(port); }

    // --- UDP sockets and receives -----------------------------------------

    // Watches a UDP socket of the role's: on_udp_readable when it is readable.
    faketcp::Status watch(int fd) { return reactor_.add_fd(fd, *this); }
    // Unwatches `fd`; before closing it, since the number may be reused at once.
    void unwatch(int fd);
    // Lets `fd` receive coalesced runs; the first refusal turns it off for
    // every later socket (the kernel would say the same).
    void enable_gro(int fd);
    void count_udp_error(int err) { udp_errors_.count(err); }
    // A datagram event for a connection no flow holds any more.
    void count_stale_datagram() { ++counters_.stale_datagrams; }

    // Where a receive came from, for the size checks and the oversize warning.
    struct Sender {
        size_t limit;           // largest datagram one segment carries
        const char* name;       // "a UDP peer", "the UDP service"
        const SockAddr* addr;   // if set, named instead of `name`; only formatted when logged
    };
    // Receive i of `rx`: one datagram, or a run from one sender (UDP_GRO,
    // `gro_size`), counted. Oversized and empty datagrams are dropped and
    // counted here; every other one goes to `forward(ByteView)`, which
    // returns false to drop the rest of the receive.
    template <typename Forward>
    void forward_receive(const UdpRxBatch& rx, size_t i, size_t gro_size, const Sender& from, faketcp::TimePoint now,
                         Forward&& forward) {
        const size_t n = received_count(rx, i, gro_size);
        if (rx.truncated(i)) {  // not expected: a slot holds the largest receive
            drop_oversize(rx.size(i), true, from.limit, from.name, now, from.addr);
            return;
        }
        for (size_t k = 0; k < n; ++k) {
            const faketcp::ByteView d = gro_segment(rx.data(i), gro_size, k);
            if (d.size > from.limit) {
                drop_oversize(d.size, false, from.limit, from.name, now, from.addr);
                continue;
            }
            if (d.size == 0) {  // a zero-length segment would read as a pure ACK
                ++counters_.empty_drops;
                continue;
            }
            if (!forward(d)) return;
        }
    }

    // --- UDP sends -----------------------------------------------------------

    // Queues a datagram for `flow`, sent at the end of this reactor iteration.
    void queue_udp(uint32_t flow, faketcp::ByteView data);
    bool udp_queued(uint32_t flow) const { return txq_.has(flow); }
    // Sends everything queued now (send_queued_udp) and empties the queue.
    void flush_udp();
    // Calls visit(flow) for each flow with queued datagrams, in queue order.
    template <typename Visit>
    void for_each_queued_flow(Visit&& visit) const {
        for (size_t k = 0; k < txq_.flow_count(); ++k) visit(txq_.flow(k));
    }
    // Adds `flow`'s queued datagrams to the batch: to `to` from `from`
    // (UdpSendBatch::add_flow), as UDP_SEGMENT runs while the kernel takes them.
    void batch_flow(uint32_t flow, const SockAddr* to, const PktInfo* from);
    // Sends the batch on `fd`. The first refused UDP_SEGMENT run turns GSO off
    // for good: the batch resent it one datagram at a time.
    UdpSendBatch::Outcome send_batch(int fd);

private:
    void setup_udp_offload();
    // How many datagrams receive i of rx holds (split with gro_segment), counted.
    size_t received_count(const UdpRxBatch& rx, size_t i, size_t gro_size);
    // A datagram that one segment cannot carry: counted, and a warning at
    // most every kWarnInterval. `from_addr`, if given, names the sender
    // instead of `from`; it is only formatted when the warning is logged.
    void drop_oversize(size_t size, bool truncated, size_t limit, const char* from, faketcp::TimePoint now,
                       const SockAddr* from_addr = nullptr);
    // The main thread asked for something: see WorkerLink.
    void on_wake(faketcp::TimePoint now);
    void answer_stats(uint64_t wanted);

    const TunnelSetup& setup_;
    const Options& opt_;
    faketcp::Reactor& reactor_;
    faketcp::Stack& stack_;
    faketcp::Tun& tun_;
    faketcp::StackDriver driver_;
    // TCP -> UDP datagrams of this iteration, by flow (client: flow index,
    // server: ConnId.index), and the messages that send them.
    UdpTxQueue txq_;
    UdpSendBatch send_batch_;
    bool udp_gso_ = false;  // UDP_SEGMENT runs (probed; off once the kernel refuses one)
    bool udp_gro_ = false;  // UDP_GRO on receiving sockets (off once the kernel refuses)
    // What both roles count on the data path; snapshot() adds the role's own.
    TunnelCounters counters_;
    UdpErrors udp_errors_;  // the UDP sends' and receives' errors, every socket of this worker
    std::optional<size_t> queue_;
    WorkerLink& link_;
    faketcp::Duration idle_timeout_;
    faketcp::TimePoint coarse_now_{};
    faketcp::TimePoint next_sweep_{};
    bool stopping_ = false;
    size_t reset_on_stop_ = 0;
    RateLimit oversize_warn_{kWarnInterval};
};

}  // namespace demo
