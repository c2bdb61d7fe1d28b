// faketcp — a user-space "fake TCP" datagram stack over a Linux TUN device.
//
// Two peers perform a real TCP three-way handshake so that NATs and stateful
// firewalls track the flow as an established TCP connection; afterwards every
// datagram travels as exactly one TCP segment, with no retransmission,
// congestion or flow control. Loss and reordering pass through as with UDP.
//
// Vendoring: copy faketcp.h, faketcp.cpp and tun.cpp into your project and
// compile them with -std=c++17. No dependencies beyond libc, the C++ standard
// library and the Linux headers.
//
// Layers (see DESIGN.md): wire (bytes <-> structs) and the connection state
// machine live behind `Stack`, a sans-IO core that takes "bytes arrived at
// time t" and "time is now t", and produces packets to transmit, events for
// the application and its next deadline. `Tun` is the device, `Reactor` a
// small epoll loop, and `StackDriver` glues the three together.
//
// Threading: none of these objects is thread-safe; use one per thread.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace faketcp {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

enum class Errc {
    ok,
    invalid_argument,   // a parameter is out of range or malformed
    not_established,    // send() on a connection that has not finished its handshake
    too_big,            // the datagram does not fit the MTU
    empty_datagram,     // a zero-length datagram cannot be told apart from a pure ACK
    stale_handle,       // the ConnId refers to a connection that no longer exists
    already_listening,  // listen() twice on the same port
    not_listening,      // unlisten() on a port that is not listened on
    no_local_address,   // connect() to a family the stack has no local address for
    ports_exhausted,    // every ephemeral port towards this remote is in use
    table_full,         // max_connections reached
    tx_queue_full,      // drain the transmit queue (StackDriver does) and retry
    system,             // a system call failed; the message says which and why
};

const char* to_string(Errc);

// The outcome of an operation that can fail for a reason a person must act on.
// `explicit operator bool` is true on success.
class [[nodiscard]] Status {
public:
    Status() = default;
    static Status error(Errc code, std::string message, int sys_errno = 0);
    // "<what> failed: strerror(errno)" plus a hint for the common errnos.
    static Status from_errno(std::string what, int sys_errno);

    bool ok() const { return code_ == Errc::ok; }
    explicit operator bool() const { return ok(); }
    Errc code() const { return code_; }
    int sys_errno() const { return errno_; }
    const std::string& message() const { return message_; }

private:
    Errc code_ = Errc::ok;
    int errno_ = 0;
    std::string message_;
};

// A value or the Status explaining why there is none.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
    Result(Status status) : status_(std::move(status)) {}  // NOLINT
    bool ok() const { return value_.has_value(); }
    explicit operator bool() const { return ok(); }
    T& value() { return *value_; }
    const T& value() const { return *value_; }
    T& operator*() { return *value_; }
    T* operator->() { return &*value_; }
    const Status& status() const { return status_; }

private:
    std::optional<T> value_;
    Status status_;
};

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

enum class Family : uint8_t { v4, v6 };

struct IpAddr {
    Family family = Family::v4;
    std::array<uint8_t, 16> bytes{};  // v4 uses bytes[0..3], the rest stay zero

    static IpAddr v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);
    static IpAddr v6(const std::array<uint8_t, 16>& b);
    size_t size() const { return family == Family::v4 ? 4 : 16; }
    bool is_unspecified() const;
    friend bool operator==(const IpAddr& a, const IpAddr& b) {
        return a.family == b.family && a.bytes == b.bytes;
    }
    friend bool operator!=(const IpAddr& a, const IpAddr& b) { return !(a == b); }
};

struct Endpoint {
    IpAddr addr;
    uint16_t port = 0;
    friend bool operator==(const Endpoint& a, const Endpoint& b) {
        return a.addr == b.addr && a.port == b.port;
    }
    friend bool operator!=(const Endpoint& a, const Endpoint& b) { return !(a == b); }
};

// "1.2.3.4", "2001:db8::1" (no brackets).
std::optional<IpAddr> parse_ip(std::string_view text);
// "1.2.3.4:80", "[2001:db8::1]:80". Port 0 is accepted; callers that need a
// real port check it themselves.
std::optional<Endpoint> parse_endpoint(std::string_view text);
std::string to_string(const IpAddr&);
std::string to_string(const Endpoint&);  // "1.2.3.4:80", "[2001:db8::1]:80"

// ---------------------------------------------------------------------------
// Byte views
// ---------------------------------------------------------------------------

// A non-owning view of bytes. Never outlives the buffer it points into.
struct ByteView {
    const uint8_t* data = nullptr;
    size_t size = 0;
    ByteView() = default;
    ByteView(const uint8_t* d, size_t n) : data(d), size(n) {}
    ByteView(const void* d, size_t n) : data(static_cast<const uint8_t*>(d)), size(n) {}
    const uint8_t* begin() const { return data; }
    const uint8_t* end() const { return data + size; }
    bool empty() const { return size == 0; }
};

// ---------------------------------------------------------------------------
// Connections, events, statistics
// ---------------------------------------------------------------------------

// A connection handle. `index` is dense (< StackConfig::max_connections), so
// applications can keep per-connection state in a vector; `generation` makes
// a handle to a closed connection fail instead of reaching a reused slot.
struct ConnId {
    uint32_t index = UINT32_MAX;
    uint32_t generation = 0;
    bool valid() const { return index != UINT32_MAX; }
    friend bool operator==(ConnId a, ConnId b) {
        return a.index == b.index && a.generation == b.generation;
    }
    friend bool operator!=(ConnId a, ConnId b) { return !(a == b); }
};

enum class ConnState : uint8_t {
    syn_sent,      // connect() called, waiting for SYN-ACK
    syn_received,  // SYN seen on a listening port, SYN-ACK sent, waiting for ACK
    established,
};
const char* to_string(ConnState);

enum class CloseReason : uint8_t {
    peer_reset,         // the peer sent an acceptable RST
    local_close,        // close() was called
    handshake_timeout,  // no answer after the last SYN / SYN-ACK retransmission
};
const char* to_string(CloseReason);

struct ConnInfo {
    Endpoint local;
    Endpoint remote;
    ConnState state = ConnState::syn_sent;
    uint64_t user_data = 0;
};

enum class EventType : uint8_t {
    accepted,        // a peer completed the handshake on a listening port
    connected,       // connect() completed its handshake
    connect_failed,  // connect() gave up; `reason` says why (peer_reset, handshake_timeout)
    datagram,        // `data` holds one datagram
    closed,          // an established connection ended; `reason` says why
};
const char* to_string(EventType);

struct Event {
    EventType type = EventType::datagram;
    ConnId conn;
    CloseReason reason = CloseReason::local_close;  // connect_failed and closed only
    uint64_t user_data = 0;  // the connection's user data when the event was queued
    // datagram only: points into the buffer given to Stack::on_packet(); valid
    // until that buffer is reused. Drain events before reusing rx buffers.
    ByteView data;
};

// Every reason an input packet is dropped. Each has a counter in Stats.
enum class DropReason : uint8_t {
    truncated,              // shorter than the headers it announces
    bad_ip_version,         // IP version is neither 4 nor 6
    ipv4_options,           // IPv4 header carries options (IHL != 5)
    ipv4_bad_checksum,      // IPv4 header checksum is wrong
    ipv4_fragment,          // IPv4 fragment (MF set or offset != 0)
    ipv6_extension_headers, // IPv6 next header is not TCP (extension headers)
    length_mismatch,        // IP length field disagrees with the packet size
    not_tcp,                // IP protocol is not TCP
    bad_data_offset,        // TCP data offset is below 5 or past the end
    bad_tcp_checksum,       // TCP checksum is wrong
    bad_address,            // source or destination address is not unicast
    bad_port,               // source or destination port is 0
    bad_flags,              // flag combination not acceptable in this state
    syn_with_payload,       // SYN carries payload
    no_listener,            // segment for an unknown connection (answered with RST)
    unknown_rst,            // RST for an unknown connection
    rst_not_exact,          // RST whose sequence number is not the exact one expected
    bad_ack,                // ACK that does not acknowledge our SYN
    unexpected_syn,         // SYN on an existing connection
    half_open_limit,        // SYN refused: too many half-open connections
    table_full,             // SYN refused: connection table full
    reply_rate_limited,     // RST or challenge ACK suppressed by the rate limit
    tx_queue_full,          // reply not queued: transmit queue full
    event_queue_full,       // datagram dropped: application is not draining events
    count_,  // not a reason: the number of reasons
};
constexpr size_t kDropReasonCount = static_cast<size_t>(DropReason::count_);
const char* to_string(DropReason);  // "bad_tcp_checksum"
const char* describe(DropReason);   // "TCP checksum is wrong"

struct Stats {
    uint64_t packets_in = 0, bytes_in = 0;    // everything handed to on_packet()
    uint64_t packets_out = 0, bytes_out = 0;  // everything queued for transmission
    uint64_t datagrams_in = 0, datagrams_out = 0;
    uint64_t datagram_bytes_in = 0, datagram_bytes_out = 0;
    uint64_t rst_sent = 0, rst_received = 0;
    uint64_t challenge_acks_sent = 0, idle_acks_sent = 0;
    uint64_t syn_retransmits = 0;
    uint64_t pure_acks_in = 0;  // segments without payload on an established connection (not drops)
    uint64_t handshakes_completed = 0, handshakes_failed = 0;
    uint64_t open_connections = 0;       // established
    uint64_t half_open_connections = 0;  // syn_sent + syn_received
    std::array<uint64_t, kDropReasonCount> drops{};

    uint64_t dropped(DropReason r) const { return drops[static_cast<size_t>(r)]; }
    uint64_t total_drops() const;
};

enum class LogLevel : uint8_t { error, warn, info, debug };
const char* to_string(LogLevel);
// Optional log sink. The library never writes to stderr on its own. Messages
// about network input are rate-limited by the stack.
using LogFn = std::function<void(LogLevel, std::string_view)>;

// ---------------------------------------------------------------------------
// Stack: the sans-IO core
// ---------------------------------------------------------------------------

struct StackConfig {
    // The stack's own addresses (the TUN's *peer* addresses). connect() uses
    // the one of the remote's family; a missing one makes connect() fail.
    std::optional<IpAddr> local_v4;
    std::optional<IpAddr> local_v6;
    // IP-level MTU: the largest packet the stack emits.
    uint32_t mtu = 1500;
    uint32_t max_connections = 16384;  // preallocated slots (all states)
    uint32_t max_half_open = 1024;     // syn_sent + syn_received at once
    // Handshake: SYN / SYN-ACK sent up to `handshake_attempts` times,
    // `handshake_interval` apart; failure one interval after the last.
    uint32_t handshake_attempts = 6;
    Duration handshake_interval = std::chrono::seconds(1);
    // A pure ACK is sent when received data went unacknowledged this long ...
    Duration idle_ack_interval = std::chrono::seconds(1);
    // ... or when the peer's data advanced this many bytes past our last ACK.
    uint32_t ack_every_bytes = 128u << 20;
    // An RST closes a connection only with the exact next sequence number; one
    // within this distance of it is answered with a challenge ACK.
    uint32_t rst_window = 1u << 30;
    // Replies the stack makes on its own (RSTs to unknown segments, challenge
    // ACKs): at most this many per second, with a burst of the same size.
    uint32_t reply_rate_per_sec = 1000;
    // Capacity of the transmit queue (packets); the driver drains it.
    uint32_t tx_queue_capacity = 256;
    // Datagram events beyond this many undrained ones are dropped (counted).
    uint32_t event_queue_capacity = 4096;
    // Client ISN: 0 is phantun's wire format; random_isn draws it from `seed`.
    bool random_isn = false;
    uint64_t seed = 0;  // randomness for ephemeral ports, ISNs and hashing
    LogFn log;
};

// Room reserved in front of every transmit packet, so a device layer can
// prepend its own header (e.g. a virtio-net header) without copying.
constexpr size_t kTxHeadroom = 16;

class Stack {
public:
    explicit Stack(const StackConfig& config);
    ~Stack();
    Stack(Stack&&) noexcept;
    Stack& operator=(Stack&&) noexcept;
    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;

    // Accept connections to `port` on any local address.
    Status listen(uint16_t port);
    Status unlisten(uint16_t port);

    // Start a handshake towards `remote`; completion is reported by a
    // connected or connect_failed event. Non-blocking.
    Result<ConnId> connect(const Endpoint& remote, TimePoint now);

    // Send one datagram as one segment. Errc::ok, not_established, too_big,
    // empty_datagram, stale_handle or tx_queue_full.
    Errc send(ConnId conn, ByteView datagram, TimePoint now);
    // Largest datagram send() accepts on this connection (MTU - headers).
    size_t max_datagram(ConnId conn) const;

    // Send RST and forget the connection. A closed event (local_close) or, for
    // a connection still in its handshake, connect_failed follows.
    Errc close(ConnId conn, TimePoint now);

    std::optional<ConnInfo> info(ConnId conn) const;
    Errc set_user_data(ConnId conn, uint64_t value);

    // Input: one IP packet read from the TUN. Datagram events point into
    // `packet`, which must stay untouched until those events are drained.
    void on_packet(ByteView packet, TimePoint now);
    // Input: time has passed. Fires retransmissions, timeouts and idle ACKs.
    void on_timer(TimePoint now);
    // The earliest time on_timer() has work to do, if any.
    std::optional<TimePoint> next_deadline() const;

    // Output: packets to write to the TUN, oldest first. Each has kTxHeadroom
    // writable bytes in front of data. Valid until tx_clear().
    size_t tx_count() const;
    ByteView tx_packet(size_t i) const;
    uint8_t* tx_packet_mutable(size_t i);  // data pointer; headroom lies before it
    bool tx_full() const;
    void tx_clear();

    // Output: events for the application, oldest first.
    bool poll_event(Event& out);

    const Stats& stats() const;
    const StackConfig& config() const;
    // Bytes the stack allocated up front for its tables and queues.
    size_t memory_footprint() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------
// Tun: the device (tun.cpp)
// ---------------------------------------------------------------------------

struct TunConfig {
    std::string name;          // empty: the kernel picks "tunN"
    uint32_t queues = 1;       // >1 opens a multi-queue device, one fd per queue
    uint32_t mtu = 1500;
    // The host side of the point-to-point link ("local") and the side the
    // Stack owns ("peer"); unset ones are not configured.
    std::optional<IpAddr> local_v4, peer_v4;
    std::optional<IpAddr> local_v6, peer_v6;
    bool up = true;
};

class Tun {
public:
    Tun() = default;
    ~Tun();
    Tun(Tun&&) noexcept;
    Tun& operator=(Tun&&) noexcept;
    Tun(const Tun&) = delete;
    Tun& operator=(const Tun&) = delete;

    // Create the device, configure addresses and MTU, bring it up. Errors
    // name the step that failed and the fix (missing /dev/net/tun, missing
    // CAP_NET_ADMIN, name taken).
    static Result<Tun> open(const TunConfig& config);
    // Take ownership of an already-open TUN fd (IFF_TUN | IFF_NO_PI), e.g.
    // one passed by a privileged parent. It is made non-blocking.
    static Result<Tun> adopt(int fd);

    const std::string& name() const { return name_; }
    int ifindex() const { return ifindex_; }
    size_t queue_count() const { return fds_.size(); }
    int fd(size_t queue) const { return fds_[queue]; }

    // One packet per call; non-blocking. Returns the byte count, or -errno
    // (-EAGAIN when nothing is ready / the queue is full).
    long read(size_t queue, uint8_t* buf, size_t cap) const;
    long write(size_t queue, const uint8_t* data, size_t len) const;

private:
    std::string name_;
    int ifindex_ = 0;
    std::vector<int> fds_;
    void close_all();
};

// ---------------------------------------------------------------------------
// Reactor: a small epoll loop (faketcp.cpp)
// ---------------------------------------------------------------------------

class Reactor {
public:
    // What the reactor drives. One handler may watch several fds.
    class Handler {
    public:
        virtual ~Handler() = default;
        // `fd` is readable (EPOLLIN) or has an error / hang-up.
        virtual void on_readable(int fd, TimePoint now) = 0;
        // The earliest time on_deadline() should run, if any. Asked before
        // every wait, so it may change freely.
        virtual std::optional<TimePoint> next_deadline() const { return std::nullopt; }
        virtual void on_deadline(TimePoint /*now*/) {}
        // Called once per loop iteration after all readable fds were handled:
        // the place to flush batched output.
        virtual void on_batch_end(TimePoint /*now*/) {}
    };

    static Result<Reactor> create();
    Reactor() = default;
    ~Reactor();
    Reactor(Reactor&&) noexcept;
    Reactor& operator=(Reactor&&) noexcept;
    Reactor(const Reactor&) = delete;
    Reactor& operator=(const Reactor&) = delete;

    // Watch `fd` for readability (level-triggered) on behalf of `handler`.
    Status add_fd(int fd, Handler& handler);
    Status remove_fd(int fd);
    // Deadline-only handlers (no fd) and fd handlers both get deadlines and
    // batch-end calls once registered here (add_fd registers implicitly).
    void add_handler(Handler& handler);
    void remove_handler(Handler& handler);

    // Loop until stop(), or until an epoll error (returned).
    Status run();
    // Run one iteration, waiting at most `max_wait`.
    Status run_once(Duration max_wait);
    void stop() { stopping_ = true; }  // safe from handlers; not from signal handlers
    TimePoint now() const;

private:
    int epfd_ = -1;
    bool stopping_ = false;
    struct Watch {  // indexed by fd
        Handler* handler = nullptr;
        uint32_t generation = 0;  // bumped on removal: stale epoll events are ignored
    };
    std::vector<Watch> watches_;
    std::vector<Handler*> handlers_;
};

// ---------------------------------------------------------------------------
// StackDriver: a Stack over a Tun inside a Reactor
// ---------------------------------------------------------------------------

// What an application implements to use StackDriver. Events arrive in order;
// no event arrives for a connection after its closed / connect_failed event.
class StackHandler {
public:
    virtual ~StackHandler() = default;
    virtual void on_accepted(ConnId, const ConnInfo&) {}
    virtual void on_connected(ConnId, const ConnInfo&) {}
    virtual void on_connect_failed(ConnId, CloseReason) {}
    virtual void on_datagram(ConnId, ByteView) {}
    virtual void on_closed(ConnId, CloseReason) {}
};

class StackDriver : public Reactor::Handler {
public:
    // Packets read per queue per wakeup (each buffer holds one MTU).
    static constexpr size_t kReadBatch = 64;

    StackDriver(Stack& stack, Tun& tun, StackHandler& handler);
    // Register every TUN queue with the reactor.
    Status attach(Reactor& reactor);
    void detach(Reactor& reactor);

    // Convenience wrappers that flush the transmit queue when needed.
    Errc send(ConnId conn, ByteView datagram, TimePoint now);
    Errc close(ConnId conn, TimePoint now);
    Result<ConnId> connect(const Endpoint& remote, TimePoint now);
    // Write every queued packet to the TUN now.
    void flush();

    Stack& stack() { return stack_; }
    uint64_t tun_write_errors() const { return tun_write_errors_; }
    uint64_t tun_read_errors() const { return tun_read_errors_; }

    void on_readable(int fd, TimePoint now) override;
    std::optional<TimePoint> next_deadline() const override;
    void on_deadline(TimePoint now) override;
    void on_batch_end(TimePoint now) override;

private:
    void dispatch_events();
    Stack& stack_;
    Tun& tun_;
    StackHandler& handler_;
    std::vector<uint8_t> rx_;  // kReadBatch buffers of rx_stride_ bytes
    size_t rx_stride_ = 0;
    size_t next_tx_queue_ = 0;
    uint64_t tun_write_errors_ = 0;
    uint64_t tun_read_errors_ = 0;
};

}  // namespace faketcp
