// demo/client.cpp — the client tunnel: one UDP socket, one fake-TCP
// connection per UDP peer.
//
// A peer is known by its socket address (PeerKey); its flow holds the
// connection, the address it last sent to (replies come from it) and the
// datagrams that wait for the handshake (PendingPool). A flow outlives its
// connection: a reset or lost connection is opened again on the peer's next
// datagram; only the idle sweep forgets a flow.
#include "demo/client.h"

#include <cinttypes>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "demo/log.h"

namespace demo {

using faketcp::ByteView;
using faketcp::CloseReason;
using faketcp::ConnId;
using faketcp::ConnInfo;
using faketcp::TimePoint;

namespace {

// Datagrams waiting for a handshake: per flow, and in all.
constexpr uint32_t kPendingPerFlow = 64;
constexpr uint32_t kPendingTotal = 1024;

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
    ClientTunnel(const TunnelSetup& setup, const WorkerParts& parts, Fd udp)
        : TunnelBase(setup, parts),
          udp_(std::move(udp)),
          max_flows_(parts.stack.config().max_connections),
          by_conn_(parts.stack.config().max_connections, kNone),
          by_peer_(0, PeerKeyHash{random_seed()}),
          pending_(kPendingTotal, max_payload(faketcp::Family::v4)),
          limit_(max_payload(setup.remote.addr.family)) {
        flows_.reserve(max_flows_);  // no reallocation: Flow references stay valid
        by_peer_.reserve(max_flows_);
    }

    void log_ready(size_t threads) const override {
        const std::string tun = tun_description(threads);
        LOG_INFO("client ready: listening on UDP %s, TUN %s, remote %s", local_address(udp_.get()).c_str(),
                 tun.c_str(), ep_str(remote()).c_str());
    }

    // --- StackHandler ------------------------------------------------------

    void on_connected(ConnId conn, const ConnInfo& info) override;
    void on_connect_failed(ConnId conn, CloseReason reason) override {
        if (reason == CloseReason::peer_reset && options().profile == faketcp::Profile::linux_tcp)
            explain_refused_linux_handshake();
        lost(conn, reason, "could not connect");
    }
    void on_closed(ConnId conn, CloseReason reason) override { lost(conn, reason, "lost"); }
    void on_datagram(ConnId conn, ByteView data) override {
        uint32_t f = flow_of(conn);
        if (f == kNone) {
            count_stale_datagram();
            return;
        }
        flows_[f].last_activity = coarse_now();
        queue_udp(f, data);
    }

protected:
    const char* mode_name() const override { return "client"; }
    bool start_mode() override;
    void on_udp_readable(int fd, TimePoint now) override;
    void send_queued_udp() override;
    size_t sweep_idle(TimePoint now) override;
    size_t close_all(TimePoint now) override;
    void fill_mode_counters(TunnelCounters& c) const override {
        add_counters(c, counts_);
        c.peers = by_peer_.size();
    }

private:
    uint32_t flow_of(ConnId conn) const {
        if (conn.index >= by_conn_.size()) return kNone;
        uint32_t f = by_conn_[conn.index];
        if (f == kNone || flows_[f].conn != conn) return kNone;  // a stale handle
        return f;
    }
    void explain_refused_linux_handshake();
    void on_udp_receive(size_t i, const RxMeta& meta, TimePoint now);
    uint32_t peer_flow(const SockAddr& peer, const PktInfo& local, TimePoint now);
    void forward(uint32_t f, ByteView d, TimePoint now);
    void queue_pending(ClientFlow& fl, ByteView d) {
        if (fl.pending.count >= kPendingPerFlow || !pending_.push(fl.pending, d)) ++counts_.pending_full_drops;
    }
    void drop_pending(ClientFlow& fl) {
        counts_.pending_lost += fl.pending.count;
        pending_.clear(fl.pending);
    }
    uint32_t new_flow(const PeerKey& key, const SockAddr& peer, TimePoint now);
    uint32_t take_free_slot(const SockAddr& peer, TimePoint now);
    bool open_connection(uint32_t f, TimePoint now);
    bool refuse_connect(const ClientFlow& fl, const faketcp::Status& st, TimePoint now);
    void lost(ConnId conn, CloseReason reason, const char* what);
    void log_lost(ClientFlow& fl, CloseReason reason, const char* what);
    void close_flow(uint32_t f, TimePoint now);
    void note_rx_error(int err, TimePoint now);

    Fd udp_;
    uint32_t max_flows_;
    std::vector<ClientFlow> flows_;
    uint32_t free_head_ = kNone;
    std::vector<uint32_t> by_conn_;  // ConnId.index -> flow
    std::unordered_map<PeerKey, uint32_t, PeerKeyHash> by_peer_;
    PendingPool pending_;
    size_t limit_;  // largest datagram one segment to --remote carries
    UdpRxBatch rx_;
    // The client's own counters (TunnelBase counts the shared ones).
    TunnelCounters counts_;
    RateLimit table_full_warn_{kWarnInterval}, connect_warn_{kWarnInterval}, rx_error_warn_{kWarnInterval};
    uint64_t connect_errors_ = 0;  // for the warning's running count
    bool refused_linux_explained_ = false;
};

// ---------------------------------------------------------------------------
// Start-up and the stack's events
// ---------------------------------------------------------------------------

bool ClientTunnel::start_mode() {
    if (faketcp::Status st = watch(udp_.get()); !st) {
        LOG_ERROR("cannot watch the UDP socket: %s", st.message().c_str());
        return false;
    }
    LOG_DEBUG("client: UDP receive buffer %d bytes", receive_buffer(udp_.get()));
    enable_gro(udp_.get());
    return true;
}

void ClientTunnel::on_connected(ConnId conn, const ConnInfo& info) {
    uint32_t f = flow_of(conn);
    if (f == kNone) {  // not ours any more: do not leave it open
        reset_connection(conn, now());
        return;
    }
    ClientFlow& fl = flows_[f];
    fl.state = ClientFlow::State::established;
    fl.failure_logged = false;
    ++counts_.connects_ok;
    const std::string peer = to_string(fl.peer);
    LOG_INFO("client: connection %s -> %s established for UDP peer %s", ep_str(info.local).c_str(),
             ep_str(info.remote).c_str(), peer.c_str());
    const TimePoint t = now();
    const size_t limit = max_datagram(conn);
    send_handshake_packet(conn, limit, t);
    while (fl.pending.count > 0) {
        send_datagram(conn, pending_.front(fl.pending), limit, peer.c_str(), t);
        pending_.pop(fl.pending);
    }
}

// phantun's server answers a SYN whose sequence number is not 0 with an
// RST (measured with phantun 0.8.1), and so does a host where nothing
// listens: say once which flag fixes the first case.
void ClientTunnel::explain_refused_linux_handshake() {
    if (refused_linux_explained_) return;
    refused_linux_explained_ = true;
    LOG_ERROR("client: --profile linux: %s refused the handshake with an RST. A phantun server accepts only "
              "SYNs with sequence number 0: use --profile phantun towards it (or nothing listens on that port)",
              ep_str(remote()).c_str());
}

// The connection of a flow ended without us closing it.
void ClientTunnel::lost(ConnId conn, CloseReason reason, const char* what) {
    uint32_t f = flow_of(conn);
    if (f == kNone) return;  // closed by us: already forgotten
    ClientFlow& fl = flows_[f];
    ++counts_.connects_lost;
    by_conn_[conn.index] = kNone;
    fl.conn = ConnId{};
    fl.state = ClientFlow::State::disconnected;
    log_lost(fl, reason, what);
    // peer_dead: the path died, not the flow: the stack sent its best-effort
    // RST; a new connection (a new source port, so a new NAT mapping) takes
    // over the flow, at once if datagrams wait for it.
    if (reason == CloseReason::peer_dead && fl.pending.count > 0 && open_connection(f, now())) return;
    drop_pending(fl);
}

void ClientTunnel::log_lost(ClientFlow& fl, CloseReason reason, const char* what) {
    if (reason == CloseReason::peer_dead) {
        LOG_WARN("client: connection to %s for UDP peer %s lost: %s; it is opened again from a new port on "
                 "the peer's next datagram",
                 ep_str(remote()).c_str(), to_string(fl.peer).c_str(), describe(reason));
    } else if (!fl.failure_logged) {
        LOG_WARN("client: connection to %s for UDP peer %s %s: %s; it is opened again on the peer's next datagram",
                 ep_str(remote()).c_str(), to_string(fl.peer).c_str(), what, describe(reason));
    } else {
        LOG_DEBUG("client: connection to %s for UDP peer %s %s again: %s", ep_str(remote()).c_str(),
                  to_string(fl.peer).c_str(), what, describe(reason));
    }
    fl.failure_logged = true;
}

// ---------------------------------------------------------------------------
// UDP -> TCP
// ---------------------------------------------------------------------------

void ClientTunnel::on_udp_readable(int /*fd*/, TimePoint now) {
    int n = rx_.receive(udp_.get());
    if (n <= 0) {
        if (n < 0 && n != -EAGAIN) note_rx_error(-n, now);
        return;
    }
    for (int i = 0; i < n; ++i) {
        const RxMeta meta = rx_.meta(static_cast<size_t>(i));
        // Cumulative for the socket.
        if (meta.overflow > counts_.rx_overflows) counts_.rx_overflows = meta.overflow;
        on_udp_receive(static_cast<size_t>(i), meta, now);
    }
}

// Receive i: one datagram, or a run from one peer (UDP_GRO). The peer's
// flow is looked up once, at its first datagram worth forwarding.
void ClientTunnel::on_udp_receive(size_t i, const RxMeta& meta, TimePoint now) {
    uint32_t f = kNone;
    forward_receive(rx_, i, meta.gro_size, Sender{limit_, "a UDP peer", &rx_.peer(i)}, now, [&](ByteView d) {
        if (f == kNone) f = peer_flow(rx_.peer(i), meta.local, now);
        if (f == kNone) return false;
        forward(f, d, now);
        return true;
    });
}

// The flow of UDP peer `peer` (made if new), stamped; kNone if the table is full.
uint32_t ClientTunnel::peer_flow(const SockAddr& peer, const PktInfo& local, TimePoint now) {
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
void ClientTunnel::forward(uint32_t f, ByteView d, TimePoint now) {
    ClientFlow& fl = flows_[f];
    switch (fl.state) {
        case ClientFlow::State::established:
            send_datagram(fl.conn, d, limit_, "a UDP peer", now);
            return;
        case ClientFlow::State::disconnected:
            if (!open_connection(f, now)) {
                ++counts_.no_conn_drops;
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

uint32_t ClientTunnel::new_flow(const PeerKey& key, const SockAddr& peer, TimePoint now) {
    const uint32_t f = take_free_slot(peer, now);
    if (f == kNone) return kNone;
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

// A flow slot for new peer `peer`: a freed one, or a new one below
// max_flows_; kNone (counted, warned about) when the table is full.
uint32_t ClientTunnel::take_free_slot(const SockAddr& peer, TimePoint now) {
    if (free_head_ != kNone) {
        const uint32_t f = free_head_;
        free_head_ = flows_[f].next_free;
        return f;
    }
    if (flows_.size() < max_flows_) {
        flows_.emplace_back();
        return static_cast<uint32_t>(flows_.size() - 1);
    }
    ++counts_.table_full_drops;
    if (table_full_warn_.allow(now))
        LOG_WARN("client: %u UDP peers already: dropping datagrams from new peer %s (%" PRIu64 " so far)", max_flows_,
                 to_string(peer).c_str(), counts_.table_full_drops);
    return kNone;
}

bool ClientTunnel::open_connection(uint32_t f, TimePoint now) {
    ClientFlow& fl = flows_[f];
    faketcp::Result<ConnId> r = connect(now);
    if (!r) return refuse_connect(fl, r.status(), now);
    if (r.value().index >= by_conn_.size()) {  // outside the documented range: refuse it
        reset_connection(r.value(), now);
        ++connect_errors_;
        return false;
    }
    ++counts_.connects_started;
    if (fl.had_connection) ++counts_.reconnects;
    fl.had_connection = true;
    fl.conn = r.value();
    fl.state = ClientFlow::State::connecting;
    by_conn_[fl.conn.index] = f;
    LOG_DEBUG("client: connecting to %s for UDP peer %s", ep_str(remote()).c_str(), to_string(fl.peer).c_str());
    return true;
}

// The stack would not open a connection: counted, warned about at most
// every kWarnInterval. Returns false, open_connection's answer.
bool ClientTunnel::refuse_connect(const ClientFlow& fl, const faketcp::Status& st, TimePoint now) {
    ++connect_errors_;
    if (connect_warn_.allow(now))
        LOG_WARN("client: cannot open a connection to %s for UDP peer %s: %s (%" PRIu64 " such errors)",
                 ep_str(remote()).c_str(), to_string(fl.peer).c_str(), st.message().c_str(), connect_errors_);
    return false;
}

void ClientTunnel::note_rx_error(int err, TimePoint now) {
    count_udp_error(err);
    if (rx_error_warn_.allow(now))
        LOG_WARN("client: UDP receive on %s: %s (counted)", local_address(udp_.get()).c_str(), std::strerror(err));
}

// ---------------------------------------------------------------------------
// TCP -> UDP, and closing flows
// ---------------------------------------------------------------------------

// Every queued reply in one sendmmsg: per peer, its runs from the address
// the peer last sent to.
void ClientTunnel::send_queued_udp() {
    for_each_queued_flow([&](uint32_t f) { batch_flow(f, &flows_[f].peer, &flows_[f].local); });
    send_batch(udp_.get());
}

size_t ClientTunnel::sweep_idle(TimePoint now) {
    size_t closed = 0;
    for (uint32_t f = 0; f < flows_.size(); ++f) {
        ClientFlow& fl = flows_[f];
        if (fl.state == ClientFlow::State::free || !idle_since(fl.last_activity, now)) continue;
        if (fl.conn.valid()) {
            std::optional<ConnInfo> info = connection_info(fl.conn);
            LOG_INFO("client: UDP peer %s idle for %s: closing connection %s -> %s", to_string(fl.peer).c_str(),
                     idle_timeout_text().c_str(), info ? ep_str(info->local).c_str() : "?",
                     info ? ep_str(info->remote).c_str() : "?");
        } else {
            LOG_INFO("client: UDP peer %s idle for %s: forgetting it", to_string(fl.peer).c_str(),
                     idle_timeout_text().c_str());
        }
        close_flow(f, now);
        ++closed;
    }
    return closed;
}

size_t ClientTunnel::close_all(TimePoint now) {
    size_t closed = 0;
    for (uint32_t f = 0; f < flows_.size(); ++f) {
        if (flows_[f].state == ClientFlow::State::free) continue;
        if (flows_[f].conn.valid()) ++closed;
        close_flow(f, now);
    }
    flush_udp();
    return closed;
}

// Resets the flow's connection (if any) and forgets the flow.
void ClientTunnel::close_flow(uint32_t f, TimePoint now) {
    if (udp_queued(f)) flush_udp();  // its queued replies still go to its peer, not the slot's next one
    ClientFlow& fl = flows_[f];
    if (fl.conn.valid()) {
        by_conn_[fl.conn.index] = kNone;
        reset_connection(fl.conn, now);
    }
    drop_pending(fl);
    by_peer_.erase(fl.key);
    fl.conn = ConnId{};
    fl.state = ClientFlow::State::free;
    fl.next_free = free_head_;
    free_head_ = f;
}

}  // namespace

std::unique_ptr<TunnelBase> make_client_tunnel(const TunnelSetup& setup, const WorkerParts& parts, Fd udp) {
    return std::make_unique<ClientTunnel>(setup, parts, std::move(udp));
}

}  // namespace demo
