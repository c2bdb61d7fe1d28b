// demo/tunnel.cpp — run_tunnel: the main thread's side of the tunnel.
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
// steering (no eBPF) one worker serves every queue. The hash spreads a few
// peers unevenly, so the client's workers place new flows by load
// (FlowBalance, demo/balance.h): a worker 2 flows ahead of the least-loaded
// one hands a new peer over with a socket connect()ed to it; the server's
// side follows, since a connection's ports follow the worker that opened it.
//
// The main thread owns the signals and the stats timer; it talks to workers
// through WorkerLink (an eventfd plus atomics, demo/worker.h; client workers
// also mail each other through FlowBalance, waking the same eventfd) and sums their
// snapshots into one stats dump (demo/stats.cpp). In a worker, the
// StackDriver owns the TUN side; the tunnel (TunnelBase, demo/worker.cpp, and
// its role, demo/client.cpp or demo/server.cpp) is the Reactor handler for
// everything else (UDP sockets, the wake eventfd, the idle sweep) and the
// StackHandler for stack events.
//
// Per-datagram paths allocate nothing and never log above debug:
//   UDP -> TCP: recvmmsg batch, each receive one datagram or (UDP_GRO) a run
//               from one sender, split -> flow (client: hash of the UDP peer,
//               once per receive; server: fd -> flow index) -> StackDriver::send
//   TCP -> UDP: datagram event -> flow by ConnId.index -> copied into the
//               UdpTxQueue, per flow; at on_batch_end each flow's datagrams
//               leave as UDP_SEGMENT runs (or one message each), in one
//               sendmmsg per socket: the client's group socket for its
//               peers (and a handed-over flow's own connected socket), the
//               server's connected socket of each connection.
// Flow state lives in vectors allocated at start-up; only creating a client
// flow inserts into a hash map.
#include "demo/tunnel.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "demo/client.h"
#include "demo/log.h"
#include "demo/metrics.h"
#include "demo/notify.h"
#include "demo/rules.h"
#include "demo/server.h"
#include "demo/stats.h"
#include "demo/udp.h"
#include "demo/worker.h"

namespace demo {

using faketcp::Reactor;
using faketcp::Stack;
using faketcp::Tun;

namespace {

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

// ---------------------------------------------------------------------------
// The workers
// ---------------------------------------------------------------------------

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

// Builds and registers worker `index` of `count`; null after logging why not.
std::unique_ptr<Worker> make_worker(const TunnelSetup& setup, Tun& tun, uint32_t index, uint32_t count, Fd udp,
                                    StatsExchange& exchange, FlowBalance* balance) {
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
    if (balance) balance->set_wake(index, w->link.wake.get());
    const WorkerParts parts{*w->reactor, *w->stack, tun, queue, w->link, index, balance};
    if (setup.options.mode == Mode::client)
        w->tunnel = make_client_tunnel(setup, parts, std::move(udp));
    else
        w->tunnel = make_server_tunnel(setup, parts);
    if (!w->tunnel->start()) return nullptr;
    return w;
}

// The main thread's side of the workers: builds them, runs their threads,
// asks them for their counters and to stop.
class WorkerPool {
public:
    // Builds `count` workers, the client's with sockets[i]; false after logging why not.
    bool build(const TunnelSetup& setup, Tun& tun, uint32_t count, std::vector<Fd>& sockets) {
        if (setup.options.mode == Mode::client && count > 1)
            balance_ = std::make_unique<FlowBalance>(count, random_seed());
        for (uint32_t i = 0; i < count; ++i) {
            std::unique_ptr<Worker> w = make_worker(setup, tun, i, count, i < sockets.size() ? std::move(sockets[i]) : Fd(),
                                                    exchange_, balance_.get());
            if (!w) return false;
            workers_.push_back(std::move(w));
        }
        return true;
    }

    TunnelBase& first_tunnel() { return *workers_.front()->tunnel; }

    // Starts a thread per worker, each writing `exited_fd` when its loop
    // ends; false after logging why not (the started ones still run: stop()
    // ends them).
    bool start(int exited_fd) {
        for (auto& w : workers_) {
            Worker* worker = w.get();
            try {
                worker->thread = std::thread([worker, exited_fd] { run_loop(*worker, exited_fd); });
            } catch (const std::system_error& e) {
                LOG_ERROR("cannot start a worker thread: %s", e.what());
                return false;
            }
        }
        return true;
    }

    // Each worker's current counters. A worker that does not answer in 2 s
    // (it never blocks, so it should) contributes its previous answer.
    std::vector<Snapshot> gather_stats() {
        const uint64_t request = ++request_;
        for (auto& w : workers_) {
            w->link.stats_wanted.store(request);
            w->link.poke();
        }
        std::unique_lock<std::mutex> lock(exchange_.mu);
        auto all_answered = [&] {
            for (auto& w : workers_)
                if (w->link.stats_answered < request) return false;
            return true;
        };
        if (!exchange_.answered.wait_for(lock, std::chrono::seconds(2), all_answered))
            LOG_WARN("stats: a worker thread did not answer within 2 s; its counters below are older");
        std::vector<Snapshot> snapshots;
        for (auto& w : workers_) snapshots.push_back(w->link.snapshot);
        return snapshots;
    }

    // Asks every running worker to reset its connections and stop, then joins them.
    void stop(int signal) {
        for (auto& w : workers_) {
            w->link.stop_signal.store(signal);
            w->link.poke();
        }
        for (auto& w : workers_)
            if (w->thread.joinable()) w->thread.join();
    }

    // Once stopped: each worker's last counters; `reset`: the connections
    // the stop request reset, in all.
    std::vector<Snapshot> final_stats(size_t& reset) const {
        std::vector<Snapshot> snapshots;
        reset = 0;
        for (auto& w : workers_) {
            snapshots.push_back(w->tunnel->snapshot());
            reset += w->tunnel->reset_on_stop();
        }
        return snapshots;
    }

    // Once stopped: unregisters the tunnels and destroys every worker.
    void clear() {
        for (auto& w : workers_) w->tunnel->stop();
        workers_.clear();
    }

private:
    static void run_loop(Worker& worker, int exited_fd) {
        faketcp::Status st = worker.reactor->run();
        if (!st) {
            LOG_ERROR("event loop failed: %s", st.message().c_str());
            worker.loop_failed = true;
        }
        const uint64_t one = 1;
        ssize_t n = ::write(exited_fd, &one, sizeof one);
        (void)n;  // an eventfd write of 1 does not fail
    }

    StatsExchange exchange_;
    // The client's flow placement and mailboxes (several workers only);
    // declared first, so it outlives the workers whose mail it holds.
    std::unique_ptr<FlowBalance> balance_;
    std::vector<std::unique_ptr<Worker>> workers_;
    uint64_t request_ = 0;  // numbers the stats requests, the dump's and the metrics'
};

// ---------------------------------------------------------------------------
// The main thread's loop
// ---------------------------------------------------------------------------

// Milliseconds from now to `t` for poll(), rounded up, at least 0.
int poll_timeout_until(std::chrono::steady_clock::time_point t) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(t - std::chrono::steady_clock::now());
    return static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT32_MAX));
}

// The main thread's file descriptors, for supervise().
struct MainFds {
    int signal;              // signalfd for SIGINT/SIGTERM
    int exited;              // eventfd a worker writes when its loop ends
    MetricsServer* metrics;  // null without --metrics
};

// How long supervise() may sleep: until the next stats dump (if any) or the
// metrics server's next deadline (if any); -1: no limit.
int supervise_timeout(std::chrono::steady_clock::time_point next_stats, bool stats_timer,
                      const MetricsServer* metrics) {
    int timeout_ms = stats_timer ? poll_timeout_until(next_stats) : -1;
    if (std::optional<faketcp::TimePoint> next = metrics ? metrics->next_deadline() : std::nullopt) {
        const int until = poll_timeout_until(*next);
        timeout_ms = timeout_ms < 0 ? until : std::min(timeout_ms, until);
    }
    return timeout_ms;
}

// Waits for SIGINT/SIGTERM or the end of a worker's loop, logging summed
// stats every --stats-interval (0: never) and serving the metrics (if any).
// Returns the signal, or 0 if a worker ended first (its loop failed: it
// logged why).
int supervise(WorkerPool& pool, const MainFds& fds, const Options& o, bool tun_offload) {
    using Clock = std::chrono::steady_clock;
    const std::chrono::seconds interval(o.stats_interval_s);
    Clock::time_point next_stats = Clock::now() + interval;
    for (;;) {
        const int timeout_ms = supervise_timeout(next_stats, interval.count() > 0, fds.metrics);
        // poll() ignores a negative fd: no metrics, no third entry.
        pollfd pfds[3] = {
            {fds.signal, POLLIN, 0}, {fds.exited, POLLIN, 0}, {fds.metrics ? fds.metrics->fd() : -1, POLLIN, 0}};
        const int n = ::poll(pfds, 3, timeout_ms);
        if (n < 0 && errno != EINTR) {
            LOG_ERROR("poll: %s", std::strerror(errno));
            return 0;
        }
        if (n > 0 && (pfds[0].revents & POLLIN)) {
            signalfd_siginfo si{};
            if (::read(fds.signal, &si, sizeof si) == static_cast<ssize_t>(sizeof si))
                return static_cast<int>(si.ssi_signo);
        }
        if (n > 0 && (pfds[1].revents & POLLIN)) return 0;
        if (fds.metrics) fds.metrics->process(Clock::now());  // ready sockets and deadlines; never blocks
        if (interval.count() > 0 && Clock::now() >= next_stats) {
            next_stats = Clock::now() + interval;
            log_stats(o.mode, pool.gather_stats(), tun_offload, "");
        }
    }
}

const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal"; }

// The main thread's two descriptors: a signalfd for SIGINT and SIGTERM,
// blocked first (before any worker thread exists: they inherit the mask),
// and the eventfd a worker writes when its loop ends. False after logging why not.
bool open_main_fds(Fd& signal_fd, Fd& exited_fd) {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &signals, nullptr) != 0) {
        LOG_ERROR("sigprocmask: %s", std::strerror(errno));
        return false;
    }
    signal_fd = Fd(signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!signal_fd.valid()) {
        LOG_ERROR("signalfd: %s", std::strerror(errno));
        return false;
    }
    exited_fd = Fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!exited_fd.valid()) {
        LOG_ERROR("eventfd: %s", std::strerror(errno));
        return false;
    }
    return true;
}

// --metrics: the listener, rendering from the workers' snapshots like the
// stats dump; null after logging why not.
std::unique_ptr<MetricsServer> open_metrics(const Options& o, WorkerPool& pool, const std::optional<Tun>& tun) {
    std::string error;
    std::unique_ptr<MetricsServer> metrics = MetricsServer::open(
        *o.metrics,
        [&o, &pool, &tun](const MetricsServerStats& server) {
            return format_metrics(o.mode, pool.gather_stats(), tun->offload(), server);
        },
        MetricsLimits{}, error);
    if (!metrics) LOG_ERROR("%s", error.c_str());
    return metrics;
}

// Runs the built workers until a signal (returns it) or a failure (0,
// logged), then stops them and logs the final stats.
int run_workers(WorkerPool& pool, const MainFds& fds, const Options& o, bool tun_offload) {
    const char* mode = o.mode == Mode::client ? "client" : "server";
    // 0 unless a signal ended the run; otherwise a thread or the loop failed (logged).
    int signal = 0;
    if (pool.start(fds.exited)) signal = supervise(pool, fds, o, tun_offload);
    notify_systemd("STOPPING=1");
    pool.stop(signal != 0 ? signal : SIGTERM);

    size_t reset = 0;
    const std::vector<Snapshot> final_stats = pool.final_stats(reset);
    if (signal != 0)
        LOG_INFO("%s: %s received: reset %zu connection%s, shutting down", mode, signal_name(signal), reset,
                 reset == 1 ? "" : "s");
    log_stats(o.mode, final_stats, tun_offload, " at exit");
    return signal;
}

}  // namespace

int run_tunnel(const TunnelSetup& setup) {
    const Options& o = setup.options;
    const char* mode = o.mode == Mode::client ? "client" : "server";
    raise_fd_limit();

    // The main thread owns the signals.
    Fd signal_fd, exited_fd;
    if (!open_main_fds(signal_fd, exited_fd)) return 1;

    const uint32_t queues = o.queues != 0 ? o.queues : usable_cpus();
    std::vector<Fd> sockets;
    if (o.mode == Mode::client) {
        sockets = open_client_sockets(o, queues);
        if (sockets.empty()) return 1;
    }
    // The metrics listener before the TUN, so a taken port fails first. It
    // only runs inside supervise(), once the workers and the TUN exist.
    WorkerPool pool;
    std::optional<Tun> tun;
    std::unique_ptr<MetricsServer> metrics;
    if (o.metrics) {
        metrics = open_metrics(o, pool, tun);
        if (!metrics) return 1;
    }
    tun = open_tun(o, queues);
    if (!tun) return 1;
    // Declared after the TUN: every return below removes the rules.
    std::optional<AutoRules> rules = o.auto_rules ? install_rules(setup, tun->name()) : std::nullopt;
    if (o.auto_rules && !rules) return 1;
    const uint32_t threads = steer_queues(*tun);
    sockets.resize(o.mode == Mode::client ? threads : 0);  // the group shrinks with the sockets closed
    if (!pool.build(setup, *tun, threads, sockets)) return 1;

    pool.first_tunnel().log_ready(threads);
    if (metrics) LOG_INFO("%s: metrics at http://%s/metrics", mode, ep_str(metrics->local_address()).c_str());
    notify_systemd("READY=1");
    const int signal = run_workers(pool, MainFds{signal_fd.get(), exited_fd.get(), metrics.get()}, o, tun->offload());
    metrics.reset();
    pool.clear();
    const std::string name = tun->name();
    tun.reset();  // closing the last queue removes the device
    LOG_INFO("TUN %s removed; exiting", name.c_str());
    return signal != 0 ? 0 : 1;
}

}  // namespace demo
