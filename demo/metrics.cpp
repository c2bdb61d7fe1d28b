// demo/metrics.cpp — see metrics.h.
#include "demo/metrics.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "demo/http.h"
#include "demo/log.h"

namespace demo {

using faketcp::Duration;
using faketcp::TimePoint;
using Type = Exposition::Type;

// ---------------------------------------------------------------------------
// The exposition format
// ---------------------------------------------------------------------------

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string escape_help(std::string_view help) {
    std::string out;
    out.reserve(help.size());
    for (char c : help) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

void Exposition::family(std::string_view name, Type type, std::string_view help) {
    name_ = std::string(name);
    text_ += "# HELP ";
    text_ += name_;
    text_ += ' ';
    text_ += escape_help(help);
    text_ += "\n# TYPE ";
    text_ += name_;
    text_ += type == Type::counter ? " counter\n" : " gauge\n";
}

void Exposition::sample(std::initializer_list<Label> labels, uint64_t value) {
    text_ += name_;
    if (labels.size() != 0) {
        char sep = '{';
        for (const Label& l : labels) {
            text_ += sep;
            text_ += l.name;
            text_ += "=\"";
            text_ += escape_label_value(l.value);
            text_ += '"';
            sep = ',';
        }
        text_ += '}';
    }
    text_ += ' ';
    text_ += std::to_string(value);
    text_ += '\n';
}

void MetricsServerStats::count_response(int status) {
    for (size_t i = 0; i < kStatuses.size(); ++i)
        if (kStatuses[i] == status) ++responses[i];
}

namespace {

// One value per worker, for a family with the worker label only.
struct Field {
    const char* name;
    Type type;
    const char* help;
    uint64_t (*get)(const Snapshot&);
};

// clang-format off
#define STACK(member) [](const Snapshot& s) { return s.stack.member; }
#define OFFLOAD(member) [](const Snapshot& s) { return s.offload.member; }
#define TUNNEL(member) [](const Snapshot& s) { return s.tunnel.member; }
#define UDPOFF(member) [](const Snapshot& s) { return s.tunnel.udp_offload.member; }

const Field kStackFields[] = {
    {"faketcp_stack_receive_packets_total", Type::counter, "Packets read from the TUN and handed to the stack.", STACK(packets_in)},
    {"faketcp_stack_receive_bytes_total", Type::counter, "Bytes of the packets handed to the stack.", STACK(bytes_in)},
    {"faketcp_stack_transmit_packets_total", Type::counter, "Packets the stack queued for the TUN.", STACK(packets_out)},
    {"faketcp_stack_transmit_bytes_total", Type::counter, "Bytes of the packets the stack queued for the TUN.", STACK(bytes_out)},
    {"faketcp_stack_receive_datagrams_total", Type::counter, "Datagrams received over fake-TCP connections.", STACK(datagrams_in)},
    {"faketcp_stack_receive_datagram_bytes_total", Type::counter, "Payload bytes of the datagrams received over fake-TCP connections.", STACK(datagram_bytes_in)},
    {"faketcp_stack_transmit_datagrams_total", Type::counter, "Datagrams sent over fake-TCP connections.", STACK(datagrams_out)},
    {"faketcp_stack_transmit_datagram_bytes_total", Type::counter, "Payload bytes of the datagrams sent over fake-TCP connections.", STACK(datagram_bytes_out)},
    {"faketcp_stack_rst_sent_total", Type::counter, "RST segments sent.", STACK(rst_sent)},
    {"faketcp_stack_rst_received_total", Type::counter, "RST segments accepted.", STACK(rst_received)},
    {"faketcp_stack_challenge_acks_sent_total", Type::counter, "Challenge ACKs sent (RFC 5961).", STACK(challenge_acks_sent)},
    {"faketcp_stack_idle_acks_sent_total", Type::counter, "Keep-alive ACKs sent on idle connections.", STACK(idle_acks_sent)},
    {"faketcp_stack_syn_retransmits_total", Type::counter, "SYN and SYN-ACK segments sent after the first of their connection.", STACK(syn_retransmits)},
    {"faketcp_stack_keepalive_probes_sent_total", Type::counter, "Keepalive probes sent (nothing heard from the peer for the keepalive interval).", STACK(keepalive_probes_sent)},
    {"faketcp_stack_keepalive_probes_answered_total", Type::counter, "Keepalive probes the peer answered.", STACK(keepalive_probes_answered)},
    {"faketcp_stack_keepalive_answers_sent_total", Type::counter, "Pure ACKs sent in answer to the peer's keepalive probes.", STACK(keepalive_answers_sent)},
    {"faketcp_stack_peer_dead_closes_total", Type::counter, "Connections closed because the peer or the path was found dead (CloseReason::peer_dead).", STACK(peer_dead_closes)},
    {"faketcp_stack_pure_acks_received_total", Type::counter, "Segments without payload on established connections.", STACK(pure_acks_in)},
    {"faketcp_stack_checksum_trusted_packets_total", Type::counter, "Packets whose TCP checksum the kernel had verified.", STACK(checksum_trusted)},
    {"faketcp_stack_handshakes_completed_total", Type::counter, "Three-way handshakes completed.", STACK(handshakes_completed)},
    {"faketcp_stack_handshakes_failed_total", Type::counter, "Handshakes that timed out or were reset.", STACK(handshakes_failed)},
    {"faketcp_stack_open_connections", Type::gauge, "Established connections now.", STACK(open_connections)},
    {"faketcp_stack_half_open_connections", Type::gauge, "Connections in their handshake now.", STACK(half_open_connections)},
    {"faketcp_tun_read_errors_total", Type::counter, "Failed reads from the TUN device.", [](const Snapshot& s) { return s.tun_read_errors; }},
    {"faketcp_tun_write_errors_total", Type::counter, "Failed writes to the TUN device.", [](const Snapshot& s) { return s.tun_write_errors; }},
};

const Field kOffloadFields[] = {
    {"faketcp_tun_gso_writes_total", Type::counter, "TUN writes of a GSO super-packet.", OFFLOAD(gso_writes)},
    {"faketcp_tun_gso_segments_total", Type::counter, "Segments carried by GSO super-packets written.", OFFLOAD(gso_segments)},
    {"faketcp_tun_gso_rejected_total", Type::counter, "GSO super-packets the kernel refused (then sent one by one).", OFFLOAD(gso_rejected)},
    {"faketcp_tun_gro_reads_total", Type::counter, "TUN reads of a GRO super-packet.", OFFLOAD(gro_reads)},
    {"faketcp_tun_gro_segments_total", Type::counter, "Segments split from GRO super-packets read.", OFFLOAD(gro_segments)},
    {"faketcp_tun_partial_checksum_reads_total", Type::counter, "TUN reads of a local sender's partial checksum (NEEDS_CSUM) without GSO.", OFFLOAD(partial_csum_reads)},
    {"faketcp_tun_checksum_trusted_total", Type::counter, "Packets and segments handed to the stack with the kernel's checksum verdict.", OFFLOAD(csum_trusted)},
};

const Field kTunnelFields[] = {
    {"faketcp_tunnel_udp_receive_datagrams_total", Type::counter, "Datagrams received on the UDP side.", TUNNEL(udp_in)},
    {"faketcp_tunnel_udp_transmit_datagrams_total", Type::counter, "Datagrams sent on the UDP side.", TUNNEL(udp_out)},
    {"faketcp_tunnel_idle_closed_total", Type::counter, "Flows closed after --idle-timeout without traffic.", TUNNEL(idle_closed)},
    {"faketcp_tunnel_udp_gso_sends_total", Type::counter, "UDP sends that carried a UDP_SEGMENT run.", UDPOFF(gso_sends)},
    {"faketcp_tunnel_udp_gso_datagrams_total", Type::counter, "Datagrams in UDP_SEGMENT runs.", UDPOFF(gso_datagrams)},
    {"faketcp_tunnel_udp_gso_refused_total", Type::counter, "UDP_SEGMENT runs the kernel refused (then sent one by one).", UDPOFF(gso_refused)},
    {"faketcp_tunnel_udp_gro_receives_total", Type::counter, "UDP receives that returned a coalesced (GRO) run.", UDPOFF(gro_receives)},
    {"faketcp_tunnel_udp_gro_datagrams_total", Type::counter, "Datagrams split from coalesced UDP receives.", UDPOFF(gro_datagrams)},
    {"faketcp_loop_polled_wakeups_total", Type::counter, "Event-loop waits that found input while polling (--poll-budget, --busy-poll).", TUNNEL(loop_polled_wakeups)},
    {"faketcp_loop_sleeps_total", Type::counter, "Event-loop waits that slept in epoll_wait.", TUNNEL(loop_sleeps)},
    {"faketcp_loop_empty_polls_total", Type::counter, "Polls of the event loop that found no input: the CPU polling cost.", TUNNEL(loop_empty_polls)},
};

const Field kClientFields[] = {
    {"faketcp_tunnel_udp_peers", Type::gauge, "UDP peers (flows) known now.", TUNNEL(peers)},
    {"faketcp_tunnel_connects_started_total", Type::counter, "Fake-TCP connections opened for UDP peers.", TUNNEL(connects_started)},
    {"faketcp_tunnel_connects_established_total", Type::counter, "Fake-TCP connections established.", TUNNEL(connects_ok)},
    {"faketcp_tunnel_connects_lost_total", Type::counter, "Fake-TCP connections that failed or were reset.", TUNNEL(connects_lost)},
    {"faketcp_tunnel_reconnects_total", Type::counter, "Client connections opened again after peer_dead, keeping the UDP flow.", TUNNEL(reconnects)},
    {"faketcp_tunnel_flows_rebalanced_total", Type::counter, "New UDP flows this worker handed to a worker with fewer flows.", TUNNEL(flows_rebalanced)},
    {"faketcp_tunnel_datagrams_passed_on_total", Type::counter, "Datagrams this worker received for another worker's flow and passed on to it.", TUNNEL(handoff_datagrams)},
};

const Field kServerFields[] = {
    {"faketcp_tunnel_connections_accepted_total", Type::counter, "Fake-TCP connections accepted.", TUNNEL(accepted)},
    {"faketcp_tunnel_connections_closed_by_peer_total", Type::counter, "Fake-TCP connections the client reset.", TUNNEL(peer_closed)},
    {"faketcp_tunnel_udp_socket_errors_total", Type::counter, "Accepted connections reset for want of a UDP socket.", TUNNEL(socket_errors)},
};

// A family with a second label, one sample per (worker, value of the label).
struct Reason {
    const char* value;
    uint64_t (*get)(const Snapshot&);
};

const Reason kTunnelDrops[] = {
    {"oversized", TUNNEL(oversize_drops)},
    {"empty", TUNNEL(empty_drops)},
    {"tx_queue_full", TUNNEL(tx_full_drops)},
    {"window_full", TUNNEL(window_full_drops)},
    {"send_error", TUNNEL(send_errors)},
    {"stale", TUNNEL(stale_datagrams)},
    {"receive_buffer_overflow", TUNNEL(rx_overflows)},
};

const Reason kClientDrops[] = {
    {"handshake_queue_full", TUNNEL(pending_full_drops)},
    {"queued_then_lost", TUNNEL(pending_lost)},
    {"no_connection", TUNNEL(no_conn_drops)},
    {"flow_table_full", TUNNEL(table_full_drops)},
    {"handoff_lost", TUNNEL(handoff_drops)},
};

const Reason kUdpErrors[] = {
    {"refused", TUNNEL(udp_refused)},
    {"no_buffers", TUNNEL(udp_no_buffers)},
    {"would_block", TUNNEL(udp_would_block)},
    {"other", TUNNEL(udp_other)},
};

#undef STACK
#undef OFFLOAD
#undef TUNNEL
#undef UDPOFF
// clang-format on

class Formatter {
public:
    explicit Formatter(const std::vector<Snapshot>& workers) : workers_(workers) {
        for (size_t i = 0; i < workers.size(); ++i) ids_.push_back(std::to_string(i));
    }

    template <size_t N>
    void fields(const Field (&table)[N]) {
        for (const Field& f : table) {
            out.family(f.name, f.type, f.help);
            for (size_t w = 0; w < workers_.size(); ++w) out.sample({{"worker", ids_[w]}}, f.get(workers_[w]));
        }
    }

    // Samples of the family begun last, one per worker and `label` value.
    template <size_t N>
    void by(const char* label, const Reason (&table)[N]) {
        for (size_t w = 0; w < workers_.size(); ++w)
            for (const Reason& r : table) out.sample({{"worker", ids_[w]}, {label, r.value}}, r.get(workers_[w]));
    }

    // Each worker's array of counters by reason, named by `name_of(index)`.
    template <size_t N, typename NameOf>
    void array_by(const char* label, std::array<uint64_t, N> (*get)(const Snapshot&), NameOf name_of) {
        for (size_t w = 0; w < workers_.size(); ++w) {
            const std::array<uint64_t, N> values = get(workers_[w]);
            for (size_t i = 0; i < N; ++i) out.sample({{"worker", ids_[w]}, {label, name_of(i)}}, values[i]);
        }
    }

    Exposition out;

private:
    const std::vector<Snapshot>& workers_;
    std::vector<std::string> ids_;
};

void format_server(Exposition& out, const MetricsServerStats& s) {
    out.family("faketcp_metrics_connections_accepted_total", Type::counter,
               "Connections to the metrics endpoint, including those turned away.");
    out.sample({}, s.connections_accepted);
    out.family("faketcp_metrics_connections_rejected_total", Type::counter,
               "Connections to the metrics endpoint over its limit (answered 503 and closed).");
    out.sample({}, s.connections_rejected);
    out.family("faketcp_metrics_timeouts_total", Type::counter,
               "Connections to the metrics endpoint closed at their deadline.");
    out.sample({}, s.timeouts);
    out.family("faketcp_metrics_responses_total", Type::counter, "Responses of the metrics endpoint, by status code.");
    for (size_t i = 0; i < s.kStatuses.size(); ++i)
        out.sample({{"code", std::to_string(s.kStatuses[i])}}, s.responses[i]);
}

}  // namespace

std::string format_metrics(Mode mode, const std::vector<Snapshot>& workers, bool tun_offload,
                           const MetricsServerStats& server) {
    Formatter f(workers);
    Exposition& out = f.out;
    out.family("faketcp_build_info", Type::gauge, "Always 1; the labels say which faketcp runs, as which role.");
    out.sample({{"version", kVersion}, {"mode", mode == Mode::client ? "client" : "server"}}, 1);
    out.family("faketcp_workers", Type::gauge, "Worker threads (one per TUN queue when connections are steered).");
    out.sample({}, workers.size());
    out.family("faketcp_tun_offload_enabled", Type::gauge, "1 if the TUN device uses GSO/GRO offloads, else 0.");
    out.sample({}, tun_offload ? 1 : 0);

    f.fields(kStackFields);
    out.family("faketcp_stack_drops_total", Type::counter,
               "Packets the stack dropped, and replies it suppressed, by reason.");
    f.array_by<faketcp::kDropReasonCount>(
        "reason", [](const Snapshot& s) { return s.stack.drops; },
        [](size_t i) { return faketcp::to_string(static_cast<faketcp::DropReason>(i)); });

    f.fields(kOffloadFields);
    out.family("faketcp_tun_read_drops_total", Type::counter,
               "TUN reads dropped before the stack for bad offload metadata, by reason.");
    f.array_by<faketcp::offload::kRxDropCount>(
        "reason", [](const Snapshot& s) { return s.offload.rx_drops; },
        [](size_t i) { return faketcp::offload::to_string(static_cast<faketcp::offload::RxDrop>(i)); });

    f.fields(kTunnelFields);
    out.family("faketcp_tunnel_drops_total", Type::counter, "Datagrams the tunnel dropped, by reason.");
    f.by("reason", kTunnelDrops);
    if (mode == Mode::client) f.by("reason", kClientDrops);
    out.family("faketcp_tunnel_udp_errors_total", Type::counter, "Failed UDP sends and receives, by kind.");
    f.by("kind", kUdpErrors);
    if (mode == Mode::client)
        f.fields(kClientFields);
    else
        f.fields(kServerFields);

    format_server(out, server);
    return out.text();
}

// ---------------------------------------------------------------------------
// The HTTP endpoint
// ---------------------------------------------------------------------------

namespace {

constexpr std::string_view kPath = "/metrics";
constexpr uint64_t kListenerKey = 0;  // epoll key; connection slot i is i + 1
constexpr int kBacklog = 128;
constexpr size_t kAcceptsPerCall = 256;  // then back to the main loop (signals)
// After the response: how long unread request bytes are read and discarded
// before closing (closing with them unread would send an RST that can
// destroy the response before the client reads it), and how many.
constexpr Duration kDrainTime = std::chrono::seconds(1);
constexpr size_t kDrainBytes = 64 * 1024;
// accept() out of fds: the listener rests this long instead of spinning.
constexpr Duration kListenerRest = std::chrono::milliseconds(100);
constexpr Duration kWarnInterval = std::chrono::seconds(10);

// One best-effort send on a socket about to close (503, 408).
void send_and_forget(int fd, const std::string& text) {
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;  // the connection closes either way
}

}  // namespace

struct MetricsServer::Conn {
    enum class Phase : uint8_t { reading, writing, draining };
    Fd fd;
    Phase phase = Phase::reading;
    std::string in;  // the request head so far (at most max_request bytes)
    std::string out;  // the response
    size_t sent = 0;
    size_t drained = 0;
    TimePoint deadline{};
};

namespace {
RateLimit g_accept_warn{kWarnInterval};
}

MetricsServer::MetricsServer(Fd listener, Fd epoll, Render render, const MetricsLimits& limits)
    : listener_(std::move(listener)),
      epoll_(std::move(epoll)),
      render_(std::move(render)),
      limits_(limits),
      conns_(std::max<size_t>(limits.max_connections, 1)) {}

MetricsServer::~MetricsServer() = default;

std::unique_ptr<MetricsServer> MetricsServer::open(const faketcp::Endpoint& address, Render render,
                                                   const MetricsLimits& limits, std::string& error) {
    const std::string where = "--metrics " + faketcp::to_string(address);
    const SockAddr sa = to_sockaddr(address);
    Fd listener(::socket(sa.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener.valid()) {
        error = where + ": socket: " + std::strerror(errno);
        return nullptr;
    }
    const int one = 1;
    if (::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
        error = where + ": SO_REUSEADDR: " + std::strerror(errno);
        return nullptr;
    }
    if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&sa.ss), sa.len) != 0) {
        error = where + ": cannot listen there: " + std::strerror(errno);
        return nullptr;
    }
    if (::listen(listener.get(), kBacklog) != 0) {
        error = where + ": listen: " + std::strerror(errno);
        return nullptr;
    }
    SockAddr bound;
    bound.len = sizeof bound.ss;
    if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&bound.ss), &bound.len) != 0) {
        error = where + ": getsockname: " + std::strerror(errno);
        return nullptr;
    }
    Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll.valid()) {
        error = where + ": epoll_create1: " + std::strerror(errno);
        return nullptr;
    }
    std::unique_ptr<MetricsServer> server(
        new MetricsServer(std::move(listener), std::move(epoll), std::move(render), limits));
    server->local_ = to_endpoint(bound);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerKey;
    if (::epoll_ctl(server->epoll_.get(), EPOLL_CTL_ADD, server->listener_.get(), &ev) != 0) {
        error = where + ": epoll_ctl: " + std::strerror(errno);
        return nullptr;
    }
    return server;
}

size_t MetricsServer::open_connections() const {
    return static_cast<size_t>(std::count_if(conns_.begin(), conns_.end(), [](const Conn& c) { return c.fd.valid(); }));
}

std::optional<TimePoint> MetricsServer::next_deadline() const {
    std::optional<TimePoint> next = listener_paused_until_;
    for (const Conn& c : conns_)
        if (c.fd.valid() && (!next || c.deadline < *next)) next = c.deadline;
    return next;
}

void MetricsServer::watch(int fd, uint32_t events, uint64_t key, bool modify) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = key;
    if (::epoll_ctl(epoll_.get(), modify ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0)
        LOG_DEBUG("metrics: epoll_ctl: %s", std::strerror(errno));
}

void MetricsServer::process(TimePoint now) {
    if (listener_paused_until_ && now >= *listener_paused_until_) {
        listener_paused_until_.reset();
        watch(listener_.get(), EPOLLIN, kListenerKey, false);
    }
    epoll_event events[64];
    const int n = ::epoll_wait(epoll_.get(), events, 64, 0);
    for (int i = 0; i < n; ++i) {
        if (events[i].data.u64 == kListenerKey)
            accept_all(now);
        else
            on_event(static_cast<size_t>(events[i].data.u64 - 1), events[i].events, now);
    }
    for (Conn& c : conns_) {
        if (!c.fd.valid() || c.deadline > now) continue;
        if (c.phase == Conn::Phase::reading) {
            send_and_forget(c.fd.get(), http::error_response(408, kPath, false));
            stats_.count_response(408);
        }
        if (c.phase != Conn::Phase::draining) ++stats_.timeouts;
        close_conn(c);
    }
}

void MetricsServer::accept_all(TimePoint now) {
    for (size_t i = 0; i < kAcceptsPerCall; ++i) {
        Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd.valid()) {
            const int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK) return;
            if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
            // Out of fds or memory: the pending connection stays queued and
            // the listener readable, so stop watching it for a moment
            // rather than spin.
            if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_.get(), nullptr) == 0)
                listener_paused_until_ = now + kListenerRest;
            if (g_accept_warn.allow(now))
                LOG_WARN("metrics: accept: %s (pausing %lld ms; warning at most every 10 s)", std::strerror(err),
                         static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(kListenerRest).count()));
            return;
        }
        ++stats_.connections_accepted;
        auto free_slot = std::find_if(conns_.begin(), conns_.end(), [](const Conn& c) { return !c.fd.valid(); });
        if (free_slot == conns_.end()) {
            ++stats_.connections_rejected;
            stats_.count_response(503);
            send_and_forget(fd.get(), http::error_response(503, kPath, false));
            continue;  // `fd` closes here
        }
        Conn& c = *free_slot;
        c = Conn{};
        c.fd = std::move(fd);
        c.deadline = now + limits_.timeout;
        watch(c.fd.get(), EPOLLIN | EPOLLRDHUP, static_cast<uint64_t>(free_slot - conns_.begin()) + 1, false);
    }
}

void MetricsServer::on_event(size_t slot, uint32_t events, TimePoint now) {
    if (slot >= conns_.size()) return;
    Conn& c = conns_[slot];
    if (!c.fd.valid()) return;  // closed earlier in this batch
    if (c.phase == Conn::Phase::writing) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) write_some(c, now);
    } else if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
        on_readable(c, now);
    }
}

void MetricsServer::on_readable(Conn& c, TimePoint now) {
    char buf[4096];
    for (;;) {
        size_t want = sizeof buf;
        if (c.phase == Conn::Phase::reading) want = std::min(want, limits_.max_request - c.in.size());
        if (want == 0) want = 1;  // cannot happen: a full head is answered 431 at once
        const ssize_t n = ::recv(c.fd.get(), buf, want, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) close_conn(c);
            return;
        }
        if (n == 0) {  // the client is done sending
            if (c.phase == Conn::Phase::reading && !c.in.empty()) {
                start_response(c, http::error_response(400, kPath, false), 400, now);
            } else {
                close_conn(c);
            }
            return;
        }
        if (c.phase == Conn::Phase::draining) {
            c.drained += static_cast<size_t>(n);
            if (c.drained > kDrainBytes) {
                close_conn(c);
                return;
            }
            continue;
        }
        c.in.append(buf, static_cast<size_t>(n));
        const http::Parsed p = http::parse_request(c.in, limits_.max_request, kPath);
        if (p.state == http::Parsed::incomplete) continue;
        if (p.status == 200)
            start_response(c, http::response(200, http::kMetricsContentType, rendered(now), p.head_only), 200, now);
        else
            start_response(c, http::error_response(p.status, kPath, p.head_only), p.status, now);
        return;
    }
}

void MetricsServer::start_response(Conn& c, std::string text, int status, TimePoint now) {
    stats_.count_response(status);
    c.phase = Conn::Phase::writing;
    c.out = std::move(text);
    c.sent = 0;
    std::string().swap(c.in);
    watch(c.fd.get(), EPOLLOUT, static_cast<uint64_t>(&c - conns_.data()) + 1, true);
    write_some(c, now);
}

void MetricsServer::write_some(Conn& c, TimePoint now) {
    while (c.sent < c.out.size()) {
        const ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) close_conn(c);
            return;  // EAGAIN: EPOLLOUT brings us back
        }
        c.sent += static_cast<size_t>(n);
    }
    // All sent: FIN, then read what the client still sends until it closes.
    ::shutdown(c.fd.get(), SHUT_WR);
    std::string().swap(c.out);
    c.phase = Conn::Phase::draining;
    c.deadline = std::min(c.deadline, now + kDrainTime);
    watch(c.fd.get(), EPOLLIN | EPOLLRDHUP, static_cast<uint64_t>(&c - conns_.data()) + 1, true);
}

void MetricsServer::close_conn(Conn& c) {
    c.fd.reset();  // closing removes it from the epoll set
    std::string().swap(c.in);
    std::string().swap(c.out);
}

const std::string& MetricsServer::rendered(TimePoint now) {
    if (!cached_at_ || limits_.render_reuse.count() == 0 || now - *cached_at_ >= limits_.render_reuse) {
        cached_ = render_(stats_);
        cached_at_ = now;
    }
    return cached_;
}

}  // namespace demo
