// demo/server.cpp — the server tunnel: fake-TCP connections accepted on
// --local's port, one connected UDP socket to --remote per connection.
//
// A flow is indexed by its connection's ConnId.index, and found from its
// socket through fd_to_flow_. UDP errors never close a connection (its peer
// did nothing wrong): they are counted, and each kind logged once per
// connection.
#include "demo/server.h"

#include <cinttypes>
#include <cstring>
#include <string>
#include <vector>

#include "demo/log.h"

namespace demo {

using faketcp::ByteView;
using faketcp::CloseReason;
using faketcp::ConnId;
using faketcp::ConnInfo;
using faketcp::Endpoint;
using faketcp::TimePoint;

namespace {

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
    ServerTunnel(const TunnelSetup& setup, const WorkerParts& parts)
        : TunnelBase(setup, parts), flows_(parts.stack.config().max_connections) {}

    void log_ready(size_t threads) const override {
        const std::string tun = tun_description(threads);
        LOG_INFO("server ready: listening on TCP port %u, TUN %s, remote UDP %s", unsigned(options().local_port),
                 tun.c_str(), ep_str(remote()).c_str());
    }

    // --- StackHandler ------------------------------------------------------

    void on_accepted(ConnId conn, const ConnInfo& info) override;
    void on_closed(ConnId conn, CloseReason reason) override {
        ServerFlow* fl = flow_of(conn);
        if (fl == nullptr) return;  // closed by us: already torn down
        ++counts_.peer_closed;
        LOG_INFO("server: connection %s -> port %u %s: closing its UDP socket", ep_str(fl->client).c_str(),
                 unsigned(options().local_port), describe(reason));
        teardown(*fl);
    }
    void on_datagram(ConnId conn, ByteView data) override {
        ServerFlow* fl = flow_of(conn);
        if (fl == nullptr) {
            count_stale_datagram();
            return;
        }
        fl->last_activity = coarse_now();
        queue_udp(conn.index, data);
    }

protected:
    const char* mode_name() const override { return "server"; }
    bool start_mode() override {
        if (faketcp::Status st = listen(options().local_port); !st) {
            LOG_ERROR("cannot listen on port %u: %s", unsigned(options().local_port), st.message().c_str());
            return false;
        }
        return true;
    }
    void on_udp_readable(int fd, TimePoint now) override;
    void send_queued_udp() override;
    size_t sweep_idle(TimePoint now) override;
    size_t close_all(TimePoint now) override;
    void fill_mode_counters(TunnelCounters& c) const override { add_counters(c, counts_); }

private:
    ServerFlow* flow_of(ConnId conn) {
        if (conn.index >= flows_.size()) return nullptr;
        ServerFlow& fl = flows_[conn.index];
        return fl.in_use && fl.conn == conn ? &fl : nullptr;
    }
    ServerFlow* flow_of_socket(int fd);
    Fd open_flow_socket(const ConnInfo& info, TimePoint now);
    void count_overflows(ServerFlow& fl, uint32_t overflow);
    void log_udp_error(ServerFlow& fl, int err, const char* op);
    void teardown(ServerFlow& fl);

    std::vector<ServerFlow> flows_;     // by ConnId.index
    std::vector<uint32_t> fd_to_flow_;  // UDP fd -> ConnId.index
    UdpRxBatch rx_;
    // The server's own counters (TunnelBase counts the shared ones).
    TunnelCounters counts_;
    RateLimit socket_warn_{kWarnInterval};
};

// ---------------------------------------------------------------------------
// The stack's events
// ---------------------------------------------------------------------------

void ServerTunnel::on_accepted(ConnId conn, const ConnInfo& info) {
    const TimePoint t = now();
    if (conn.index >= flows_.size()) {
        reset_connection(conn, t);
        return;
    }
    Fd udp = open_flow_socket(info, t);
    if (!udp.valid()) {
        reset_connection(conn, t);
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
    fl.last_activity = t;
    fl.limit = static_cast<uint32_t>(max_datagram(conn));
    fl.overflows_seen = 0;
    ++counts_.accepted;
    LOG_INFO("server: connection %s -> %s accepted; UDP %s -> %s", ep_str(info.remote).c_str(),
             ep_str(info.local).c_str(), local_address(fd).c_str(), ep_str(remote()).c_str());
    send_handshake_packet(conn, fl.limit, t);
}

// The accepted connection's UDP socket to --remote, connected and watched;
// invalid (counted, warned about at most every kWarnInterval) if it cannot be had.
Fd ServerTunnel::open_flow_socket(const ConnInfo& info, TimePoint now) {
    std::string error;
    Fd udp = open_udp_connected(remote(), error);
    if (udp.valid()) {
        enable_gro(udp.get());
        if (faketcp::Status st = watch(udp.get()); !st) {
            error = st.message();
            udp.reset();
        }
    }
    if (udp.valid()) return udp;
    ++counts_.socket_errors;
    if (socket_warn_.allow(now))
        LOG_WARN("server: connection %s -> %s: no UDP socket towards %s: %s; resetting it (%" PRIu64 " such errors)",
                 ep_str(info.remote).c_str(), ep_str(info.local).c_str(), ep_str(remote()).c_str(), error.c_str(),
                 counts_.socket_errors);
    return udp;
}

// ---------------------------------------------------------------------------
// UDP -> TCP
// ---------------------------------------------------------------------------

ServerFlow* ServerTunnel::flow_of_socket(int fd) {
    if (fd < 0 || static_cast<size_t>(fd) >= fd_to_flow_.size()) return nullptr;
    uint32_t idx = fd_to_flow_[fd];
    if (idx == kNone || !flows_[idx].in_use || flows_[idx].udp.get() != fd) return nullptr;
    return &flows_[idx];
}

void ServerTunnel::on_udp_readable(int fd, TimePoint now) {
    ServerFlow* found = flow_of_socket(fd);
    if (found == nullptr) return;
    ServerFlow& fl = *found;
    int n = rx_.receive(fd);
    if (n < 0) {
        // ECONNREFUSED: an ICMP port unreachable for an earlier send (the service restarts).
        if (n != -EAGAIN) {
            count_udp_error(-n);
            log_udp_error(fl, -n, "receive from");
        }
        return;
    }
    fl.last_activity = now;
    for (int i = 0; i < n; ++i) {
        const RxMeta meta = rx_.meta(size_t(i));
        count_overflows(fl, meta.overflow);
        forward_receive(rx_, size_t(i), meta.gro_size, Sender{fl.limit, "the UDP service", nullptr}, now,
                        [&](ByteView d) {
                            // A failed send is counted; the next datagram may still go.
                            send_datagram(fl.conn, d, fl.limit, "the UDP service", now);
                            return true;
                        });
    }
}

// SO_RXQ_OVFL is cumulative for the socket: add what is new.
void ServerTunnel::count_overflows(ServerFlow& fl, uint32_t overflow) {
    if (overflow <= fl.overflows_seen) return;
    counts_.rx_overflows += overflow - fl.overflows_seen;
    fl.overflows_seen = overflow;
}

// ---------------------------------------------------------------------------
// TCP -> UDP, errors, closing flows
// ---------------------------------------------------------------------------

// Each flow's queued datagrams in one sendmmsg on its socket.
void ServerTunnel::send_queued_udp() {
    for_each_queued_flow([&](uint32_t f) {
        ServerFlow& fl = flows_[f];
        if (!fl.in_use) return;  // not reachable: teardown sends first
        batch_flow(f, nullptr, nullptr);
        const UdpSendBatch::Outcome out = send_batch(fl.udp.get());
        if (out.failed > 0) log_udp_error(fl, out.last_errno, "send to");
    });
}

// Transient UDP errors (counted by the caller) never close the
// connection: its peer did nothing wrong. Each kind is logged once per
// connection.
void ServerTunnel::log_udp_error(ServerFlow& fl, int err, const char* op) {
    UdpErrorKind kind = error_kind(err);
    if (fl.logged_errors & kind) return;
    fl.logged_errors |= kind;
    LOG_WARN("server: connection %s: UDP %s %s: %s (counted, not logged again for this connection)",
             ep_str(fl.client).c_str(), op, ep_str(remote()).c_str(), std::strerror(err));
}

size_t ServerTunnel::sweep_idle(TimePoint now) {
    size_t closed = 0;
    for (ServerFlow& fl : flows_) {
        if (!fl.in_use || !idle_since(fl.last_activity, now)) continue;
        LOG_INFO("server: connection %s -> port %u idle for %s: closing it and its UDP socket",
                 ep_str(fl.client).c_str(), unsigned(options().local_port), idle_timeout_text().c_str());
        reset_connection(fl.conn, now);
        teardown(fl);
        ++closed;
    }
    return closed;
}

size_t ServerTunnel::close_all(TimePoint now) {
    size_t closed = 0;
    for (ServerFlow& fl : flows_) {
        if (!fl.in_use) continue;
        reset_connection(fl.conn, now);
        teardown(fl);
        ++closed;
    }
    return closed;
}

void ServerTunnel::teardown(ServerFlow& fl) {
    // Its queued datagrams arrived before whatever ends it: they still go.
    if (fl.conn.valid() && udp_queued(fl.conn.index)) flush_udp();
    if (fl.udp.valid()) {
        const int fd = fl.udp.get();
        unwatch(fd);  // before close: the number may be reused at once
        if (static_cast<size_t>(fd) < fd_to_flow_.size()) fd_to_flow_[fd] = kNone;
        fl.udp.reset();
    }
    fl.in_use = false;
    fl.conn = ConnId{};
}

}  // namespace

std::unique_ptr<TunnelBase> make_server_tunnel(const TunnelSetup& setup, const WorkerParts& parts) {
    return std::make_unique<ServerTunnel>(setup, parts);
}

}  // namespace demo
