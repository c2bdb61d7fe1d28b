// demo/worker.cpp — TunnelBase and WorkerLink (demo/worker.h): the worker
// plumbing the client and the server tunnels share.
#include "demo/worker.h"

#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <ctime>

namespace demo {

using faketcp::ByteView;
using faketcp::CloseReason;
using faketcp::ConnId;
using faketcp::Duration;
using faketcp::Endpoint;
using faketcp::Errc;
using faketcp::TimePoint;

namespace {

constexpr Duration kSweepInterval = std::chrono::seconds(1);

void add_udp_errors(TunnelCounters& c, const UdpErrors& e) {
    c.udp_refused += e.conn_refused;
    c.udp_no_buffers += e.no_buffers;
    c.udp_would_block += e.would_block;
    c.udp_other += e.other;
}

}  // namespace

const char* describe(CloseReason r) {
    switch (r) {
        case CloseReason::peer_reset: return "reset by the peer";
        case CloseReason::local_close: return "closed locally";
        case CloseReason::handshake_timeout: return "no answer to the handshake";
        case CloseReason::peer_dead: return "the peer went silent (keepalive)";
    }
    return "?";
}

std::string ep_str(const Endpoint& ep) { return faketcp::to_string(ep); }

std::string seconds_str(Duration d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count()) + " s";
}

uint64_t random_seed() {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof seed)) {
        struct timespec ts {};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = uint64_t(ts.tv_nsec) * 0x9e3779b97f4a7c15ull ^ uint64_t(getpid());
    }
    return seed;
}

void WorkerLink::poke() const {
    const uint64_t one = 1;
    ssize_t n = ::write(wake.get(), &one, sizeof one);
    (void)n;  // only fails when the counter is about to overflow: the worker is woken anyway
}

// ---------------------------------------------------------------------------
// Life cycle and the reactor's calls
// ---------------------------------------------------------------------------

TunnelBase::TunnelBase(const TunnelSetup& setup, const WorkerParts& parts)
    : setup_(setup),
      opt_(setup.options),
      reactor_(parts.reactor),
      stack_(parts.stack),
      tun_(parts.tun),
      driver_(parts.stack, parts.tun, *this),
      txq_(parts.stack.config().max_connections),
      queue_(parts.queue),
      link_(parts.link),
      idle_timeout_(std::chrono::seconds(setup.options.idle_timeout_s)) {}

bool TunnelBase::start() {
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

void TunnelBase::stop() {
    driver_.detach(reactor_);
    reactor_.remove_handler(*this);
}

Snapshot TunnelBase::snapshot() const {
    Snapshot s;
    s.stack = stack_.stats();
    s.offload = driver_.offload_stats();
    s.tun_read_errors = driver_.tun_read_errors();
    s.tun_write_errors = driver_.tun_write_errors();
    s.tunnel = counters_;
    add_udp_errors(s.tunnel, udp_errors_);
    fill_mode_counters(s.tunnel);
    s.tunnel.loop_polled_wakeups = reactor_.polled_wakeups();
    s.tunnel.loop_sleeps = reactor_.sleeps();
    s.tunnel.loop_empty_polls = reactor_.empty_polls();
    return s;
}

void TunnelBase::on_readable(int fd, TimePoint now) {
    coarse_now_ = now;
    if (fd == link_.wake.get()) {
        on_wake(now);
        return;
    }
    on_udp_readable(fd, now);
}

std::optional<TimePoint> TunnelBase::next_deadline() const {
    if (stopping_ || idle_timeout_.count() == 0) return std::nullopt;
    return next_sweep_;
}

void TunnelBase::on_deadline(TimePoint now) {
    coarse_now_ = now;
    if (stopping_ || idle_timeout_.count() == 0 || now < next_sweep_) return;
    next_sweep_ = now + kSweepInterval;
    const size_t closed = sweep_idle(now);
    counters_.idle_closed += closed;
    // Closing queues RSTs; the driver may have flushed already this round.
    if (closed > 0) driver_.flush();
}

void TunnelBase::on_batch_end(TimePoint now) {
    coarse_now_ = now;
    flush_udp();
}

void TunnelBase::on_wake(TimePoint now) {
    uint64_t count = 0;
    ssize_t n = ::read(link_.wake.get(), &count, sizeof count);
    (void)n;  // EAGAIN: a spurious wake-up; the requests below are checked anyway
    if (!stopping_) on_wake_mode(now);
    if (link_.stop_signal.load() != 0 && !stopping_) {
        stopping_ = true;
        reset_on_stop_ = close_all(now);
        driver_.flush();  // the RSTs reach the TUN before it goes away
        reactor_.stop();
    }
    const uint64_t wanted = link_.stats_wanted.load();
    if (wanted != 0) answer_stats(wanted);
}

void TunnelBase::answer_stats(uint64_t wanted) {
    Snapshot s = snapshot();
    {
        std::lock_guard<std::mutex> lock(link_.exchange->mu);
        if (link_.stats_answered >= wanted) return;
        link_.snapshot = s;
        link_.stats_answered = wanted;
    }
    link_.exchange->answered.notify_all();
}

std::string TunnelBase::tun_description(size_t threads) const {
    std::string tun =
        tun_.name() + " (" + faketcp::to_string(opt_.tun_local) + " <-> " + faketcp::to_string(opt_.tun_peer);
    if (opt_.tun_local6)
        tun += ", " + faketcp::to_string(*opt_.tun_local6) + " <-> " + faketcp::to_string(*opt_.tun_peer6);
    tun += ")";
    if (tun_.queue_count() > 1) {
        tun += " with " + std::to_string(tun_.queue_count()) + " queues";
        tun += threads > 1 ? ", one thread each" : ", one thread for all";
    }
    return tun;
}

// ---------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------

faketcp::Result<ConnId> TunnelBase::connect(TimePoint now) { return driver_.connect(setup_.remote, now); }

bool TunnelBase::send_datagram(ConnId conn, ByteView data, size_t limit, const char* from, TimePoint now) {
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

void TunnelBase::send_handshake_packet(ConnId conn, size_t limit, TimePoint now) {
    if (!setup_.handshake.empty())
        send_datagram(conn, {setup_.handshake.data(), setup_.handshake.size()}, limit, "--handshake-packet", now);
}

void TunnelBase::reset_connection(ConnId conn, TimePoint now) {
    const Errc e = driver_.close(conn, now);
    if (e != Errc::ok) LOG_DEBUG("%s: close of connection %u: %s", mode_name(), conn.index, faketcp::to_string(e));
}

// ---------------------------------------------------------------------------
// UDP: sockets, offloads, receives
// ---------------------------------------------------------------------------

void TunnelBase::unwatch(int fd) {
    faketcp::Status st = reactor_.remove_fd(fd);
    (void)st;  // nothing to do about it: the fd is closed next anyway
}

void TunnelBase::setup_udp_offload() {
    if (!opt_.udp_offload) {
        LOG_DEBUG("%s: UDP offloads off (--no-udp-offload)", mode_name());
        return;
    }
    std::string why;
    udp_gso_ = probe_udp_gso(why);
    if (!udp_gso_) LOG_INFO("%s: UDP sends without segmentation offload (slower): %s", mode_name(), why.c_str());
    udp_gro_ = true;  // asked for on each receiving socket
}

void TunnelBase::enable_gro(int fd) {
    if (!udp_gro_) return;
    std::string why;
    if (enable_udp_gro(fd, why)) return;
    udp_gro_ = false;
    LOG_INFO("%s: UDP receives without GRO (slower): %s", mode_name(), why.c_str());
}

size_t TunnelBase::received_count(const UdpRxBatch& rx, size_t i, size_t gro_size) {
    const size_t n = gro_segment_count(rx.size(i), gro_size);
    counters_.udp_in += n;
    if (n > 1) {
        ++counters_.udp_offload.gro_receives;
        counters_.udp_offload.gro_datagrams += n;
    }
    return n;
}

void TunnelBase::drop_oversize(size_t size, bool truncated, size_t limit, const char* from, TimePoint now,
                               const SockAddr* from_addr) {
    ++counters_.oversize_drops;
    if (!oversize_warn_.allow(now)) return;
    oversize_warn_.take_suppressed();
    std::string sender = from_addr ? "UDP peer " + to_string(*from_addr) : std::string(from);
    LOG_WARN("%s: dropped a %s%zu-byte datagram from %s: one segment carries at most %zu bytes with MTU %u "
             "(%" PRIu64 " oversized dropped so far; warning at most every %s)",
             mode_name(), truncated ? "more than " : "", size, sender.c_str(), limit, kMtu, counters_.oversize_drops,
             seconds_str(kWarnInterval).c_str());
}

// ---------------------------------------------------------------------------
// UDP sends
// ---------------------------------------------------------------------------

// Flows are below max_connections (the queue's size) and a datagram is
// smaller than the MTU, so once the queue is emptied the add succeeds.
void TunnelBase::queue_udp(uint32_t flow, ByteView data) {
    static_assert(UdpTxQueue::kBytes >= kMtu, "a datagram must fit an empty queue");
    if (txq_.add(flow, data)) return;
    flush_udp();  // full: make room
    (void)txq_.add(flow, data);
}

void TunnelBase::flush_udp() {
    if (txq_.empty()) return;
    send_queued_udp();
    txq_.clear();
}

void TunnelBase::batch_flow(uint32_t flow, const SockAddr* to, const PktInfo* from) {
    send_batch_.add_flow(txq_, flow, to, from, udp_gso_);
}

UdpSendBatch::Outcome TunnelBase::send_batch(int fd) {
    UdpSendBatch::Outcome out = send_batch_.send(fd, udp_errors_, counters_.udp_offload);
    counters_.udp_out += out.sent;
    if (out.gso_refused_errno != 0 && udp_gso_) {
        udp_gso_ = false;
        LOG_WARN("%s: the kernel refused a UDP segmentation offload send (%s): one datagram per message from "
                 "now on",
                 mode_name(), std::strerror(out.gso_refused_errno));
    }
    return out;
}

}  // namespace demo
