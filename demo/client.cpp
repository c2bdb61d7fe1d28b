// demo/client.cpp — the client tunnel: one UDP socket per worker, one fake-TCP
// connection per UDP peer.
//
// A peer is known by its socket address (PeerKey); its flow holds the
// connection, the address it last sent to (replies come from it) and the
// datagrams that wait for the handshake (PendingPool). A flow outlives its
// connection: a reset or lost connection is opened again on the peer's next
// datagram; only the idle sweep forgets a flow.
//
// With several workers each owns one socket of an SO_REUSEPORT group on
// --local, and a new peer's flow is placed by load (demo/balance.h): kept
// by the worker whose socket received it, or handed to the least-loaded
// worker with a socket connect()ed to the peer, which then receives that
// peer alone and carries its replies. Datagrams that reach a worker not
// owning their flow (queued on the group socket before the connect(), or
// hashed to a new socket between its bind() and connect()) are mailed to
// the owner, which the shared directory names. A flow never moves once
// made; closing it (idle sweep, shutdown) closes its socket.
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
    // A flow another worker handed us (demo/balance.h): the socket on --local
    // connected to the peer, which receives its datagrams and sends our
    // replies. Invalid: the flow uses this worker's group socket.
    Fd sock;
    uint32_t sock_overflow = 0;  // sock's SO_RXQ_OVFL count so far
};

class ClientTunnel final : public TunnelBase {
public:
    ClientTunnel(const TunnelSetup& setup, const WorkerParts& parts, Fd udp)
        : TunnelBase(setup, parts),
          udp_(std::move(udp)),
          balance_(parts.balance),
          self_(parts.index),
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
    void on_wake_mode(TimePoint now) override;
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
    // Where a receive's datagrams go: a flow of ours (flow), or another
    // worker's (worker); neither (both kNone) when the flow table is full.
    struct Route {
        uint32_t flow = kNone, worker = kNone;
    };
    void on_udp_receive(size_t i, const RxMeta& meta, TimePoint now);
    void on_flow_receive(uint32_t f, size_t i, const RxMeta& meta, TimePoint now);
    Route route(const SockAddr& peer, const PktInfo& local, TimePoint now);
    Route place_new_peer(const PeerKey& key, const SockAddr& peer, const PktInfo& local, TimePoint now);
    Fd open_peer_socket(const SockAddr& peer, const PktInfo& local);
    void pass_on(uint32_t worker, const SockAddr& peer, ByteView d);
    void adopt_flow(FlowMail& mail, TimePoint now);
    void on_passed_datagram(const FlowMail& mail, TimePoint now);
    void stamp(uint32_t f, const PktInfo& local, TimePoint now) {
        flows_[f].last_activity = now;
        flows_[f].local = local;
    }
    // Adds the growth of a socket's cumulative overflow count `now_value` (last seen: `seen`).
    void note_overflow(uint32_t& seen, uint32_t now_value) {
        if (now_value > seen) counts_.rx_overflows += now_value - seen;
        seen = now_value;
    }
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
    FlowBalance* balance_;  // null with one worker: every flow stays on the group socket
    uint32_t self_;         // this worker's number in balance_
    uint32_t max_flows_;
    std::vector<ClientFlow> flows_;
    uint32_t free_head_ = kNone;
    std::vector<uint32_t> by_conn_;  // ConnId.index -> flow
    std::unordered_map<PeerKey, uint32_t, PeerKeyHash> by_peer_;
    PendingPool pending_;
    size_t limit_;  // largest datagram one segment to --remote carries
    UdpRxBatch rx_;
    uint32_t group_overflow_ = 0;              // udp_'s SO_RXQ_OVFL count so far
    std::unordered_map<int, uint32_t> by_fd_;  // handed-over flows' sockets -> flow
    size_t connected_flows_ = 0;               // flows with their own socket (by_fd_.size())
    std::vector<FlowMail> mail_;               // this worker's mail, taken from balance_
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

// The group socket, or a handed-over flow's own socket. A datagram on the
// latter from another peer (it arrived between the socket's bind and its
// connect, when the kernel could hash any peer to it) goes where a group
// receive would.
void ClientTunnel::on_udp_readable(int fd, TimePoint now) {
    uint32_t owner = kNone;
    if (fd != udp_.get()) {
        auto it = by_fd_.find(fd);
        if (it == by_fd_.end()) return;  // not reachable: closed sockets are unwatched first
        owner = it->second;
    }
    int n = rx_.receive(fd);
    if (n <= 0) {
        if (n < 0 && n != -EAGAIN) note_rx_error(-n, now);
        return;
    }
    for (int i = 0; i < n; ++i) {
        const size_t k = static_cast<size_t>(i);
        const RxMeta meta = rx_.meta(k);
        note_overflow(owner == kNone ? group_overflow_ : flows_[owner].sock_overflow, meta.overflow);
        if (owner != kNone && peer_key(rx_.peer(k)) == flows_[owner].key)
            on_flow_receive(owner, k, meta, now);
        else
            on_udp_receive(k, meta, now);
    }
}

// Receive i: one datagram, or a run from one peer (UDP_GRO). The peer's
// flow is looked up once, at its first datagram worth forwarding.
void ClientTunnel::on_udp_receive(size_t i, const RxMeta& meta, TimePoint now) {
    Route r;
    bool routed = false;
    forward_receive(rx_, i, meta.gro_size, Sender{limit_, "a UDP peer", &rx_.peer(i)}, now, [&](ByteView d) {
        if (!routed) {
            r = route(rx_.peer(i), meta.local, now);
            routed = true;
        }
        if (r.flow != kNone)
            forward(r.flow, d, now);
        else if (r.worker != kNone)
            pass_on(r.worker, rx_.peer(i), d);
        else
            return false;
        return true;
    });
}

// Receive i on flow f's own socket, from its peer.
void ClientTunnel::on_flow_receive(uint32_t f, size_t i, const RxMeta& meta, TimePoint now) {
    flows_[f].last_activity = now;
    forward_receive(rx_, i, meta.gro_size, Sender{limit_, "a UDP peer", &rx_.peer(i)}, now, [&](ByteView d) {
        forward(f, d, now);
        return true;
    });
}

// The flow of UDP peer `peer`, stamped: known here, or new and placed here;
// or the worker that owns it (several workers only).
ClientTunnel::Route ClientTunnel::route(const SockAddr& peer, const PktInfo& local, TimePoint now) {
    const PeerKey key = peer_key(peer);
    auto it = by_peer_.find(key);
    if (it != by_peer_.end()) {
        stamp(it->second, local, now);
        return {it->second, kNone};
    }
    if (balance_) return place_new_peer(key, peer, local, now);
    const uint32_t f = new_flow(key, peer, now);
    if (f != kNone) stamp(f, local, now);
    return {f, kNone};
}

// A peer this worker does not know. Under the balance's lock: another
// worker may own it already (its datagrams still queued on our group socket
// from before that worker's socket was connected, or one that reached the
// wrong socket); else place_flow decides. A flow for another worker leaves
// as mail with its connected socket, posted in the same critical section
// that names its owner, so every datagram passed on after it finds the flow.
ClientTunnel::Route ClientTunnel::place_new_peer(const PeerKey& key, const SockAddr& peer, const PktInfo& local,
                                                 TimePoint now) {
    FlowBalance::Guard guard = balance_->lock();
    if (std::optional<uint32_t> owner = balance_->owner(guard, key)) return {kNone, *owner};
    const uint32_t target = balance_->choose(guard, self_);
    if (target != self_) {
        FlowMail mail;
        mail.kind = FlowMail::Kind::adopt;
        mail.sock = open_peer_socket(peer, local);
        mail.peer = peer;
        if (mail.sock.valid() && balance_->post(guard, target, std::move(mail))) {
            balance_->assign(guard, key, target);
            guard.unlock();
            ++counts_.flows_rebalanced;
            LOG_INFO("client: new UDP peer %s: handed from worker %u to worker %u, which carries at least %u "
                     "fewer flows",
                     to_string(peer).c_str(), self_, target, kRebalanceGap);
            return {kNone, target};
        }
        // No socket, or a full mailbox (the socket closed with the mail): the flow stays here.
    }
    const uint32_t f = new_flow(key, peer, now);
    if (f == kNone) return {};
    balance_->assign(guard, key, self_);
    stamp(f, local, now);
    return {f, kNone};
}

// A socket on --local connected to `peer`, or an invalid Fd (logged at
// debug). It joins the SO_REUSEPORT group; connected, it alone receives the
// peer's datagrams. It must answer from the address the peer sent to
// (`local`): if connect() chose another source, it is refused.
Fd ClientTunnel::open_peer_socket(const SockAddr& peer, const PktInfo& local) {
    std::string error;
    Fd sock = open_udp_listener(options().local, error, true);
    if (sock.valid() && !connect_udp(sock.get(), peer, error)) sock.reset();
    if (sock.valid() && !bound_to(sock.get(), local)) {
        error = "the kernel chose another source address than the one the peer sent to";
        sock.reset();
    }
    if (!sock.valid())
        LOG_DEBUG("client: no socket of its own for UDP peer %s: %s", to_string(peer).c_str(), error.c_str());
    return sock;
}

// A datagram from `peer`, whose flow another worker owns: mailed to it.
void ClientTunnel::pass_on(uint32_t worker, const SockAddr& peer, ByteView d) {
    FlowMail mail;
    mail.peer = peer;
    mail.data.assign(d.data, d.data + d.size);
    if (balance_->post(worker, std::move(mail)))
        ++counts_.handoff_datagrams;
    else
        ++counts_.handoff_drops;
}

void ClientTunnel::on_wake_mode(TimePoint now) {
    if (!balance_) return;
    balance_->take(self_, mail_);
    for (FlowMail& mail : mail_) {
        if (mail.kind == FlowMail::Kind::adopt)
            adopt_flow(mail, now);
        else
            on_passed_datagram(mail, now);
    }
    mail_.clear();  // closes the socket of any flow not adopted
}

// Another worker placed this peer's flow here: make it, on its socket.
void ClientTunnel::adopt_flow(FlowMail& mail, TimePoint now) {
    const PeerKey key = peer_key(mail.peer);
    if (by_peer_.count(key) != 0) return;  // not reachable: the directory named us its owner already
    const uint32_t f = new_flow(key, mail.peer, now);
    if (f == kNone) {
        balance_->release(key, self_);
        return;
    }
    const int fd = mail.sock.get();
    if (faketcp::Status st = watch(fd); !st) {
        LOG_WARN("client: cannot watch the socket of UDP peer %s: %s; its flow is closed",
                 to_string(mail.peer).c_str(), st.message().c_str());
        close_flow(f, now);
        return;
    }
    enable_gro(fd);
    flows_[f].sock = std::move(mail.sock);
    by_fd_[fd] = f;
    ++connected_flows_;
}

// A datagram that reached another worker, for our flow.
void ClientTunnel::on_passed_datagram(const FlowMail& mail, TimePoint now) {
    auto it = by_peer_.find(peer_key(mail.peer));
    if (it == by_peer_.end()) {  // closed since the directory named us
        ++counts_.handoff_drops;
        return;
    }
    flows_[it->second].last_activity = now;
    forward(it->second, ByteView{mail.data.data(), mail.data.size()}, now);
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
    if (connected_flows_ == 0) {
        for_each_queued_flow([&](uint32_t f) { batch_flow(f, &flows_[f].peer, &flows_[f].local); });
        send_batch(udp_.get());
        return;
    }
    // Handed-over flows answer on their own socket, one sendmmsg each.
    for_each_queued_flow([&](uint32_t f) {
        if (!flows_[f].sock.valid()) batch_flow(f, &flows_[f].peer, &flows_[f].local);
    });
    send_batch(udp_.get());
    for_each_queued_flow([&](uint32_t f) {
        if (!flows_[f].sock.valid()) return;
        batch_flow(f, nullptr, nullptr);
        send_batch(flows_[f].sock.get());
    });
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
    if (fl.sock.valid()) {  // unwatched before closing: the number may be reused at once
        unwatch(fl.sock.get());
        by_fd_.erase(fl.sock.get());
        fl.sock.reset();
        --connected_flows_;
    }
    if (balance_) balance_->release(fl.key, self_);
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
