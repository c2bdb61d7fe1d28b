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
// Layers: wire (bytes <-> structs) and the connection state
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

struct epoll_event;

namespace faketcp {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

enum class [[nodiscard]] Errc {
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
    window_full,        // linux profile: the datagram would pass the peer's advertised window (dropped, counted)
    system,             // a system call failed; the message says which and why
};

const char* to_string(Errc);

// The outcome of an operation that can fail for a reason a person must act on.
// `explicit operator bool` is true on success.
class [[nodiscard]] Status {
public:
    Status() = default;
    // The one way to make an error: a code a program can act on and a message
    // a person can.
    static Status error(Errc code, std::string message, int sys_errno = 0);
    // A failed system call, Errc::system: "<what>: strerror(errno)[ — hint]".
    // The hint is the caller's, who alone knows what the errno means there.
    static Status from_errno(std::string what, int sys_errno, std::string_view hint = {});

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
    peer_dead,          // the peer went silent on a path it answers on (see StackConfig keepalive)
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
    reply_rate_limited,     // RST, challenge ACK or keepalive answer suppressed by a rate limit
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
    // idle_acks_sent: pure ACKs the stack sent on its own for received data:
    // the phantun profile's idle ACK, the linux profile's ACK cadence.
    uint64_t challenge_acks_sent = 0, idle_acks_sent = 0;
    uint64_t window_full_drops = 0;  // datagrams send() refused: beyond the peer's window (linux profile)
    uint64_t syn_retransmits = 0;  // every SYN / SYN-ACK sent after the first of its connection
    uint64_t pure_acks_in = 0;  // segments without payload on an established connection (not drops)
    uint64_t checksum_trusted = 0;  // packets handed to on_packet() as RxChecksum::kernel_verified
    uint64_t handshakes_completed = 0, handshakes_failed = 0;
    uint64_t open_connections = 0;       // established
    uint64_t half_open_connections = 0;  // syn_sent + syn_received
    // Liveness (StackConfig::keepalive_interval): probes we sent, the
    // payload-less answers that came back while one was outstanding, the
    // peer's probes we answered, and connections closed as peer_dead.
    uint64_t keepalive_probes_sent = 0, keepalive_probes_answered = 0;
    uint64_t keepalive_answers_sent = 0, peer_dead_closes = 0;
    // Drop events by reason. An input packet counts once, for the reason it was
    // dropped; a reply suppressed by the rate limit (reply_rate_limited) or a
    // full transmit queue (tx_queue_full) counts in addition, so total_drops()
    // may exceed packets_in.
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

// Who checks an input packet's TCP checksum (Stack::on_packet).
enum class RxChecksum : uint8_t {
    // The Stack sums every byte and drops a mismatch (bad_tcp_checksum). The
    // only safe choice for bytes whose origin nothing vouches for.
    verify,
    // The Stack trusts the TCP checksum and does not read it; everything else
    // (IP header checksum, lengths, data offset, addresses, flags) is still
    // checked. Only for packets the kernel vouched for in their virtio-net
    // header, as StackDriver reads them from an offload TUN:
    //  - DATA_VALID: tun sets it only for a CHECKSUM_UNNECESSARY skb, one whose
    //    checksum the kernel or the NIC already verified (and that the kernel
    //    would deliver to its own sockets without summing again);
    //  - NEEDS_CSUM: a CHECKSUM_PARTIAL skb, made by a sender on this host (or a
    //    VM guest) that left the sum to the device: there is nothing to verify;
    //  - segments split from a GSO/GRO super-packet: GRO merges only segments
    //    whose checksum it verified, and a local TSO skb is CHECKSUM_PARTIAL.
    //    The per-segment sums were never on any wire; computing them only to
    //    check them again proves nothing.
    // Counted in Stats::checksum_trusted.
    kernel_verified,
};

// What an output packet's TCP checksum field holds (Stack::tx_checksum_partial,
// TunBatch::add_tx).
enum class TxChecksum : uint8_t {
    complete,  // the full sum: correct on any wire
    partial,   // the folded pseudo-header sum only (CHECKSUM_PARTIAL): the device completes it
};

// What the stack's segments look like on the wire (README, "Wire format").
enum class Profile : uint8_t {
    // phantun's fake-tcp: ISN 0, SYN options NOP + window scale 14, window
    // 65535, no options after the handshake, an idle ACK after 1 s. The default.
    phantun,
    // Linux's own TCP, as the kernel of the host writes it: RFC 6528 ISN,
    // MSS/SACK-permitted/timestamps/window-scale SYN options in the kernel's
    // order, its initial windows, per-connection IPv4 IDs, timestamps on every
    // segment, a growing receive window, an ACK at most every second full-sized
    // segment or after 40 ms, SYN retransmissions 1 s doubling, and a sender
    // that never passes the peer's window. Costs 12 bytes per segment.
    // (Not named `linux`: GNU C++ predefines that as a macro.)
    linux_tcp,
};
const char* to_string(Profile);  // "phantun", "linux"

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
    // The wire profile of connections this stack opens (connect()) and of its
    // RSTs to unknown segments. A server answers every SYN in its sender's
    // style whatever this says: a SYN with an MSS option (a Linux-profile
    // faketcp, or any real TCP) gets a linux_tcp SYN-ACK and connection, any
    // other SYN (phantun, a phantun-profile faketcp) a phantun one.
    Profile profile = Profile::phantun;
    // linux_tcp: the window scale offered in SYN and SYN-ACK. The kernel picks
    // ilog2(max(net.ipv4.tcp_rmem[2], net.core.rmem_max)) - 15, clamped to
    // 0..14 (tcp_select_initial_window); 7 is its default tcp_rmem (6 MiB).
    // The CLI reads the host's sysctls (linux_window_scale_from_sysctls()).
    uint8_t linux_window_scale = 7;
    // linux_tcp: the key of the ISN hash (RFC 6528: ISN = keyed hash of the
    // 4-tuple + a 64 ns clock), the timestamp offsets and IPv6 flow labels.
    // All zero: derived from `seed`. Fill it from getrandom() in production.
    std::array<uint64_t, 2> secret{};
    // Port sharding, for one Stack per TUN queue (Tun::steer_by_ports sends
    // a TCP packet to queue (sport + dport) % queues): connect() then picks
    // only local ports p with (p + remote port) % shard_count == shard_index,
    // still from 32768-60999, so the replies to this Stack's connections
    // arrive on queue shard_index. Accepting needs nothing: each SYN arrives
    // on the queue of its port sum, and the Stack reading that queue accepts
    // it. shard_count 1: no sharding. See validate(const StackConfig&).
    uint32_t shard_count = 1;
    uint32_t shard_index = 0;
    // Liveness of established connections. Zero interval: no probes and no
    // peer_dead (probes from the peer are still answered). See "Liveness".
    Duration keepalive_interval = std::chrono::seconds(5);
    uint32_t keepalive_probes = 3;  // unanswered probes before peer_dead (0 counts as 1)
    LogFn log;
};

// Liveness: keepalive probes and peer_dead.
//
// Probe: when nothing has arrived from the peer for keepalive_interval, the
// stack sends a segment without payload, ACK only, seq = SND.UNA - 1 (the
// highest ack the peer sent us, minus one: Linux's own keepalive), and again
// every interval while nothing arrives. A TCP receiver sees a sequence number
// it already acknowledged and answers with a pure ACK; so does this Stack
// (every payload-less segment with seq before RCV.NXT, at most one answer per
// connection per 200 ms, counted in reply_rate_limited beyond that). Neither
// probes nor answers are datagrams: payload-less segments never are, here
// and in phantun. One probe also goes out one interval after the handshake
// even while data flows, to learn whether the peer answers probes at all.
// The accepting side runs its schedule a quarter interval later, so between
// two faketcp ends usually only the client probes an idle connection.
//
// Any segment from the peer (data, ACK, probe, answer) is proof of life and
// restarts the schedule. The connection closes with peer_dead (one closed
// event; a best-effort RST goes out) when, with D = interval * (probes + 1):
//  (a) the peer has answered a probe on this connection, and nothing arrived
//      for D (the accepting side: D + interval / 4): the probes went
//      unanswered; or
//  (b) the peer has sent data on this connection, and we have been sending
//      datagrams for D, no two more than one interval apart, while nothing
//      came back.
// phantun ignores payload-less segments and never answers probes, so (a)
// never applies to it, and a phantun peer that is silent, or that receives a
// one-way stream without ever sending, is never torn down: that path cannot
// be checked from this side, only kept warm (the probes still refresh NAT
// mappings on the way). (b) finds a dead path under an application that
// echoes or answers within D; toward a peer application that sent once and
// then only listens while we stream for longer than D it costs one
// reconnect (the new connection's peer has sent nothing, so (b) cannot
// fire again there).


// The largest StackConfig::shard_count: the size of the ephemeral port
// range 32768-60999, so every shard has at least one port.
constexpr uint32_t kMaxShards = 60999 - 32768 + 1;

// The window scale the host's kernel offers in its SYNs, from
// /proc/sys/net/ipv4/tcp_rmem and /proc/sys/net/core/rmem_max (see
// StackConfig::linux_window_scale); 7 when they cannot be read. Reads files:
// for applications, never called by the Stack.
uint8_t linux_window_scale_from_sysctls();

// Checks the fields the Stack cannot silently clamp: 1 <= shard_count <=
// kMaxShards and shard_index < shard_count. The Stack accepts any config;
// with a bad shard setting its connect() fails with this Status.
Status validate(const StackConfig& config);

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

    [[nodiscard]] std::optional<ConnInfo> info(ConnId conn) const;
    Errc set_user_data(ConnId conn, uint64_t value);

    // Input: one IP packet read from the TUN. Datagram events point into
    // `packet`, which must stay untouched until those events are drained.
    // Every byte is checked, the TCP checksum included (RxChecksum::verify).
    void on_packet(ByteView packet, TimePoint now);
    // The same, with the TCP checksum left to `checksum`: kernel_verified only
    // for a packet the kernel vouched for (see RxChecksum).
    void on_packet(ByteView packet, TimePoint now, RxChecksum checksum);
    // Input: time has passed. Fires retransmissions, timeouts and idle ACKs.
    void on_timer(TimePoint now);
    // The earliest time on_timer() has work to do, if any.
    [[nodiscard]] std::optional<TimePoint> next_deadline() const;

    // Output: packets to write to the TUN, oldest first. Each has kTxHeadroom
    // writable bytes in front of data. Valid until tx_clear().
    size_t tx_count() const;
    ByteView tx_packet(size_t i) const;
    uint8_t* tx_packet_mutable(size_t i);  // data pointer; headroom lies before it
    bool tx_full() const;
    void tx_clear();
    // For a device that completes TCP checksums (a TUN with offload, which
    // StackDriver sets up): data segments are then emitted with the checksum
    // field holding only the folded pseudo-header sum (CHECKSUM_PARTIAL), and
    // tx_checksum_partial(i) is true for them. Control segments always carry
    // a full checksum. Off by default: every checksum is complete.
    void set_tx_checksum_offload(bool on);
    bool tx_checksum_partial(size_t i) const;

    // Output: events for the application, oldest first.
    [[nodiscard]] bool poll_event(Event& out);

    const Stats& stats() const;
    const StackConfig& config() const;
    // Bytes the stack allocated up front for its tables and queues.
    size_t memory_footprint() const;

private:
    struct Impl;  // defined in faketcp.cpp only
    std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------
// The Stack's queues (internal, not API)
// ---------------------------------------------------------------------------
//
// The three queues a Stack is built from, declared here only so the unit
// tests (test/test_queues.cpp) check their invariants on their own, as they
// do offload's functions. Applications use Stack; these may change.
namespace detail {

// Packets made and not yet written to the device, oldest first: `capacity`
// buffers of one stride, allocated once. Invariants: size() <= capacity();
// every packet has kTxHeadroom writable bytes in front of it and room for
// mtu() bytes; a packet stays where it is, unchanged, until clear(); a full
// queue takes nothing (the caller counts the drop).
class TxQueue {
public:
    void init(size_t capacity, size_t mtu);
    size_t size() const { return n_; }
    size_t capacity() const { return meta_.size(); }
    size_t mtu() const { return mtu_; }
    bool full() const { return n_ >= capacity(); }
    // Where the next packet goes (mtu() bytes, headroom before them);
    // nullptr when full. Nothing is queued until commit().
    uint8_t* next();
    // Queue the packet written at next(): `len` bytes (at most mtu(), else
    // nothing is queued); `checksum_partial`: the device completes its TCP
    // checksum.
    void commit(size_t len, bool checksum_partial);
    ByteView packet(size_t i) const;              // empty past size()
    uint8_t* packet_mutable(size_t i);            // nullptr past size()
    bool checksum_partial(size_t i) const;        // false past size()
    void clear() { n_ = 0; }
    size_t memory_footprint() const;

private:
    struct Meta {
        uint32_t len = 0;
        bool checksum_partial = false;
    };
    std::vector<uint8_t> buf_;  // capacity() buffers of stride_ bytes, headroom first
    std::vector<Meta> meta_;    // one per buffer
    size_t stride_ = 0;
    size_t mtu_ = 0;
    size_t n_ = 0;
};

// Events for the application, oldest first; the application pulls them.
// Invariants: at most datagram_capacity undrained datagram events (push
// refuses more, so input the application does not drain cannot grow it
// without bound); the storage is reused: once pop() finds the queue drained
// it starts over at the front, and it never shrinks.
class EventQueue {
public:
    void init(size_t datagram_capacity);
    // False, and nothing queued, for a datagram beyond the capacity.
    [[nodiscard]] bool push(const Event& ev);
    // The oldest undrained event; false once none is left.
    [[nodiscard]] bool pop(Event& out);
    size_t size() const { return events_.size() - head_; }
    size_t datagrams() const { return datagrams_; }
    size_t memory_footprint() const { return events_.capacity() * sizeof(Event); }

private:
    std::vector<Event> events_;
    size_t head_ = 0;
    size_t datagrams_ = 0;
    size_t datagram_capacity_ = 0;
};

// Connection deadlines in one min-heap, invalidated lazily: an entry stays
// when its connection's timer moves or the connection goes, and the owner
// recognises such a stale entry when it surfaces (the heap never looks at
// connections). Invariant: earliest() is an entry with the smallest time;
// entries with equal times surface in an unspecified order.
class TimerHeap {
public:
    struct Entry {
        TimePoint when;
        ConnId conn;
    };
    void reserve(size_t n) { heap_.reserve(n); }
    bool empty() const { return heap_.empty(); }
    size_t size() const { return heap_.size(); }
    std::optional<Entry> earliest() const;
    void push(TimePoint when, ConnId conn);
    void pop();  // the earliest entry; nothing when empty
    // Replace every entry by those `collect` hands to the function it is
    // given, `add(when, conn)`, and order them once (linear time).
    template <class Collect>
    void rebuild(Collect&& collect) {
        heap_.clear();
        collect([this](TimePoint when, ConnId conn) { heap_.push_back(Entry{when, conn}); });
        order();
    }
    size_t memory_footprint() const { return heap_.capacity() * sizeof(Entry); }

private:
    void order();
    std::vector<Entry> heap_;
};

}  // namespace detail

// ---------------------------------------------------------------------------
// Device offload: virtio-net headers, GSO coalesce (tx), GRO split (rx)
// ---------------------------------------------------------------------------
//
// With TUN offloads on (TunConfig::offload), one write may carry a TCP
// "super-packet" that the kernel cuts into segments of gso_size payload bytes,
// each seq advancing by gso_size: exactly fake TCP's rule. One read may
// likewise carry many segments the kernel coalesced (GRO). These are pure
// functions over buffers (faketcp.cpp, "device offload" section): no fd, no
// clock, no allocation; table-tested and fuzzed without a device.
namespace offload {

// struct virtio_net_hdr (linux/virtio_net.h). The 16-bit fields are in the
// host's byte order: legacy virtio, as TUN uses it without TUNSETVNETLE/BE.
constexpr size_t kVnetHdrLen = 10;
constexpr uint8_t kNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from csum_start on is partial
constexpr uint8_t kDataValid = 2;  // VIRTIO_NET_HDR_F_DATA_VALID: the kernel verified the checksum
constexpr uint8_t kGsoNone = 0;    // VIRTIO_NET_HDR_GSO_NONE
constexpr uint8_t kGsoTcpv4 = 1;   // VIRTIO_NET_HDR_GSO_TCPV4
constexpr uint8_t kGsoTcpv6 = 4;   // VIRTIO_NET_HDR_GSO_TCPV6
constexpr uint8_t kGsoEcn = 0x80;  // VIRTIO_NET_HDR_GSO_ECN, or'ed into gso_type

struct VnetHdr {
    uint8_t flags = 0;         // kNeedsCsum, kDataValid
    uint8_t gso_type = kGsoNone;
    uint16_t hdr_len = 0;      // IP + TCP header bytes (tx); only a hint on rx, never trusted
    uint16_t gso_size = 0;     // payload bytes per segment
    uint16_t csum_start = 0;   // offset of the TCP header from the IP header
    uint16_t csum_offset = 0;  // offset of the checksum field from csum_start (16 for TCP)
};
void encode(const VnetHdr& hdr, uint8_t* out);  // writes kVnetHdrLen bytes
VnetHdr decode(const uint8_t* in);              // reads kVnetHdrLen bytes

// --- transmit: coalesce the Stack's queued packets ------------------------

constexpr size_t kMaxGsoPacket = 65535;  // a super-packet's IP length, headers included
constexpr size_t kMaxGsoSegments = 64;   // segments per super-packet (also bounds writev parts)
constexpr size_t kMaxGsoHeader = kVnetHdrLen + 40 + 60;  // vnet + IPv6 + TCP with options

// How many packets from packets[0] on form one GSO run: IPv4 (IHL 5, no
// fragment bits) or IPv6 (no extension headers) with a TCP header of any
// length (options are copied into every segment), flags ACK or PSH|ACK (the
// kernel keeps PSH on the last segment only), payload > 0; every packet with
// the first one's IP header (lengths, checksum and IPv4 ID aside) and TCP
// header, options included (seq and checksum aside); IPv4 IDs all equal or
// counting up by one per packet (the kernel writes first ID + i);
// seq of each = previous seq + previous payload; every payload as long as the
// first but the last, which may be shorter; at most kMaxGsoSegments packets
// and kMaxGsoPacket bytes together. Returns 1..count (1: send it alone), 0 for
// count 0. Checksums are not read: the kernel recomputes them per segment.
size_t gso_run(const ByteView* packets, size_t count);

// The vnet header and IP + TCP header of the super-packet made of the run
// packets[0..run): the first packet's headers with the IP length of the whole
// (IPv4 header checksum recomputed) and, in the TCP checksum field, the
// pseudo-header partial sum that CHECKSUM_PARTIAL expects; vnet header
// {kNeedsCsum, TCPV4/TCPV6, hdr_len, gso_size = first payload, csum_start =
// IP header length, csum_offset = 16}. Writes at most kMaxGsoHeader bytes and
// returns how many; 0 when run < 2 or gso_run(packets, run) < run. The
// super-packet is these bytes followed by each packet's payload, i.e. its
// bytes from (returned length - kVnetHdrLen) on: a gather write needs no copy.
size_t gso_header(const ByteView* packets, size_t run, uint8_t* out);

// The vnet header (kVnetHdrLen bytes into `out`) of `packet` written alone:
// all zero, or for a partial TCP checksum {kNeedsCsum, csum_start = IP header
// length, csum_offset = 16} so that the kernel completes it.
void plain_header(ByteView packet, TxChecksum checksum, uint8_t* out);

// gso_header() and the payloads, contiguous in `out`. Returns the size, or 0
// when gso_header() refuses or `cap` is too small.
size_t coalesce(const ByteView* packets, size_t run, uint8_t* out, size_t cap);

// Puts each TCP flow's packets next to each other before gso_run() looks for
// runs: an application that sends to many flows in turn (16 UDP peers, one
// datagram each, round robin) otherwise leaves runs of one. Flows keep their
// first-appearance order and each flow its own packet order; only packets of
// different flows trade places, which fake TCP, like UDP, never promised to
// keep. A flow is the IP addresses and TCP ports (IPv4 with a 20-byte header,
// IPv6 without extension headers); any other packet is a group of its own.
// Buffers are sized at construction and grow only for a larger batch.
class FlowGrouper {
public:
    explicit FlowGrouper(size_t capacity = 0) { reserve(capacity); }
    // order[0..count) = a permutation of 0..count-1: packets[order[k]] is the
    // k-th packet to send. O(count); allocates only past the capacity.
    void group(const ByteView* packets, size_t count, uint32_t* order);

private:
    void reserve(size_t count);
    std::vector<uint32_t> next_;   // per packet: the next packet of its flow
    std::vector<uint32_t> tail_;   // per flow head: its flow's last packet so far
    std::vector<uint32_t> heads_;  // flow heads in first-appearance order
    std::vector<uint32_t> slots_;  // open-addressing table of flow heads
};

// --- receive: check the vnet header, split super-packets --------------------

// Why a read was dropped before reaching the Stack. The header is never
// trusted: lengths are derived from the packet and every field is checked.
enum class RxDrop : uint8_t {
    vnet_truncated,       // shorter than the virtio-net header
    vnet_bad_flags,       // flag bits other than NEEDS_CSUM and DATA_VALID
    vnet_bad_gso_type,    // GSO type other than TCPv4 / TCPv6 (UDP was never enabled)
    vnet_bad_gso_size,    // GSO with gso_size 0
    vnet_bad_csum,        // NEEDS_CSUM whose csum_start/csum_offset are not the TCP checksum
    gso_family_mismatch,  // GSO TCPv4 on an IPv6 packet or the reverse
    bad_ip_header,        // truncated, not IPv4/6, IPv4 options, fragment or bad header checksum, IPv6 extension header
    length_mismatch,      // the IP length field disagrees with the read size
    not_tcp,              // offload metadata on a packet that is not TCP
    bad_tcp_header,       // TCP header truncated, data offset below 5 or past the end
    no_room,              // split() only: the output cannot hold every segment
    count_,               // not a reason: the number of reasons
};
constexpr size_t kRxDropCount = static_cast<size_t>(RxDrop::count_);
const char* to_string(RxDrop);  // "vnet_bad_csum"

// One read from an offload TUN, checked.
struct RxPacket {
    enum class Kind : uint8_t {
        plain,     // `packet` is one IP packet for Stack::on_packet
        segments,  // `packet` is a super-packet of `count` segments: use rx_segment()
        drop,      // `drop` says why
    };
    Kind kind = Kind::drop;
    RxDrop drop = RxDrop::vnet_truncated;
    ByteView packet;        // points into the read buffer, after the vnet header
    size_t header_len = 0;  // segments: IP + TCP header bytes
    size_t gso_size = 0;    // segments: payload bytes per segment (the last may be shorter)
    size_t count = 0;       // segments: how many (>= 2)
    // plain: the TCP checksum was partial (NEEDS_CSUM, or GSO within one
    // segment); parse_rx() computed it in full unless told to leave it.
    bool checksummed = false;
    // plain and segments: what Stack::on_packet() should do with the TCP
    // checksum. kernel_verified when the vnet header has DATA_VALID or
    // NEEDS_CSUM, and for every segment of a super-packet; verify otherwise
    // (no offload metadata: nothing vouches for the bytes).
    RxChecksum checksum = RxChecksum::verify;
    // Bytes of segment i (< count).
    size_t segment_size(size_t i) const;
};

// What parse_rx() and rx_segment() do with the TCP checksum field of a
// packet the kernel vouched for (RxPacket::checksum == kernel_verified).
enum class TcpChecksumFill : uint8_t {
    // Compute it in full: the packet is correct for any reader (split(), a
    // capture, Stack::on_packet with RxChecksum::verify).
    complete,
    // Leave the field as read, not summed: the packet is only fit for
    // Stack::on_packet(..., RxChecksum::kernel_verified). StackDriver's choice.
    leave,
};

// Checks a read (`buf` starts with the vnet header). No vnet flags and no GSO:
// the packet goes to the Stack untouched (it validates everything itself).
// NEEDS_CSUM without GSO, or GSO that fits one segment: with `fill` complete
// (the default) the TCP checksum is computed in place, in full, so `buf` must
// be writable. GSO: `segments`.
RxPacket parse_rx(uint8_t* buf, size_t len, TcpChecksumFill fill = TcpChecksumFill::complete);

// Writes segment i of a `segments` RxPacket to `out` (segment_size(i) bytes):
// the super-packet's headers with seq + i * gso_size, the IP length of the
// segment, the IPv4 header checksum and, with `fill` complete (the default),
// the TCP checksum computed in full; FIN and PSH only on the last segment, CWR
// only on the first (as the kernel's tcp_gso_segment). The IPv4 ID is copied
// unchanged (the stack sends ID 0 with DF; the kernel's GRO keeps such fixed
// IDs). Returns the size.
size_t rx_segment(const RxPacket& rx, size_t i, uint8_t* out,
                  TcpChecksumFill fill = TcpChecksumFill::complete);

// parse_rx() and every segment into `out` (cap bytes), one view per segment
// in `segs` (max_segs). `count` is 0 when dropped (`drop` says why), 1 for a
// plain packet (segs[0] views it in `buf`).
struct SplitResult {
    size_t count = 0;
    RxDrop drop = RxDrop::vnet_truncated;
};
SplitResult split(uint8_t* buf, size_t len, uint8_t* out, size_t cap, ByteView* segs,
                  size_t max_segs);

}  // namespace offload

// ---------------------------------------------------------------------------
// Tun: the device (tun.cpp)
// ---------------------------------------------------------------------------

struct TunConfig {
    std::string name;          // empty: the kernel picks "tunN"
    uint32_t queues = 1;       // >1 opens a multi-queue device, one fd per queue
    uint32_t mtu = 1500;
    // Packets the kernel may queue for the reader (txqueuelen); 0 leaves the
    // kernel's default (500), which a burst from many flows overflows.
    uint32_t tx_queue_len = 4096;
    // The host side of the point-to-point link ("local") and the side the
    // Stack owns ("peer"); unset ones are not configured.
    std::optional<IpAddr> local_v4, peer_v4;
    std::optional<IpAddr> local_v6, peer_v6;
    bool up = true;
    // Open with IFF_VNET_HDR and ask the kernel for checksum and TCP
    // segmentation offloads (TUNSETOFFLOAD TUN_F_CSUM|TSO4|TSO6), so one
    // write or read carries many equal-size segments (see offload::). If the
    // kernel refuses, the device opens without; Tun::offload_note() says why.
    // false forces plain packets (the fallback path).
    bool offload = true;
};

class TunBatch;

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

    // --- Batches: what a Stack's driver uses (StackDriver, or your own loop) ---
    //
    // Reads what `queue` holds into `batch` (one TunBatch per thread), at most
    // `max_reads` reads and what the batch has room for; the batch's previous
    // packets are gone. With offload the virtio-net header never reaches the
    // caller: a super-packet arrives as its segments (split by
    // offload::rx_segment, chunk by chunk if it fills the batch), reads with
    // bad offload metadata are dropped and counted (TunStats::rx_drops), and
    // rx_checksum(i) says what the kernel vouched for. Returns the reads made;
    // batch.rx_more() says whether to call again before waiting for the fd.
    // Non-blocking.
    size_t read(size_t queue, TunBatch& batch, size_t max_reads) const;
    // Writes every packet added to `batch` (TunBatch::add_tx) on `queue`, in
    // order within each flow, and empties it. With offload, runs of one flow's
    // equal-size segments go out as one GSO super-packet (offload::gso_run,
    // FlowGrouper), gathered from where the packets lie; the rest alone behind
    // a vnet header written into their headroom. Nothing is copied. A failed
    // write loses its packets, as with UDP (TunStats::write_errors).
    void write(size_t queue, TunBatch& batch) const;

    // --- Single packets, the raw device ---------------------------------------
    //
    // One packet per call; non-blocking. Returns the byte count, or -errno
    // (-EAGAIN when nothing is ready / the queue is full). With offload(),
    // every packet read starts with a virtio-net header (vnet_hdr_len() bytes)
    // and may be a super-packet of up to 64 KiB (offload::parse_rx), and every
    // write must start with one (all zero for a plain packet).
    long read(size_t queue, uint8_t* buf, size_t cap) const;
    long write(size_t queue, const uint8_t* data, size_t len) const;
    // One packet gathered from `count` parts (at most kMaxWriteParts).
    static constexpr size_t kMaxWriteParts = 128;
    long writev(size_t queue, const ByteView* parts, size_t count) const;

    // Packets carry a virtio-net header and the kernel may hand over and
    // accept TCP super-packets (TunConfig::offload, or an adopted fd opened
    // with IFF_VNET_HDR).
    bool offload() const { return vnet_hdr_len_ != 0; }
    size_t vnet_hdr_len() const { return vnet_hdr_len_; }  // 0 or offload::kVnetHdrLen
    // Why offload is off although TunConfig::offload asked for it, e.g.
    // "TUNSETOFFLOAD on tun0: Invalid argument", or why it is partial (the
    // kernel refused tx-tcp-mangleid-segmentation, so GRO bursts with a fixed
    // IPv4 ID arrive segmented); empty otherwise.
    const std::string& offload_note() const { return offload_note_; }

    // --- Queue steering: one thread per queue ------------------------------
    //
    // Which queue the kernel hands a packet to. With no program installed,
    // the TUN driver's "automq" means to send a flow to the queue userspace
    // last wrote it on, learnt per flow hash on every write, and forgets a
    // flow idle for 3 s (TUN_FLOW_EXPIRE); an unknown flow goes to queue
    // hash * queues >> 32. A connection quiet for 3 s can thus come back on
    // another queue, whose Stack does not know it and answers with an RST.
    // (On Linux 6.18 even fresh replies followed the written queue only at
    // chance rate.)
    //
    // steer_by_ports() installs a small eBPF program (TUNSETSTEERINGEBPF,
    // Linux 4.16) that sends every IPv4 or IPv6 TCP packet to queue
    // (source port + destination port) % shards, always, and anything else
    // (not TCP, IPv6 extension headers, too short) to queue 0. The sum is the
    // same in both directions, and a Stack with StackConfig::shard_count =
    // shards and shard_index = q picks its client ports so that its flows
    // land on queue q. `shards` 0 means queue_count(); it must equal the
    // device's number of queues (the kernel reduces the result modulo that
    // number), at most 256. The program is device-wide, set through any
    // queue, and stays until clear_steering() or the device goes away.
    // Queue q is the q-th queue opened: closing one makes the kernel move its
    // last queue into that index, so keep every queue open.
    //
    // On failure nothing changed and sys_errno() says why: EPERM (loading
    // eBPF needs CAP_BPF or CAP_SYS_ADMIN), ENOSYS (no bpf(2): a kernel
    // without CONFIG_BPF_SYSCALL), EINVAL or ENOTTY (a kernel before 4.16).
    // Fall back to one StackDriver over every queue (StackDriver::attach) in
    // one thread.
    Status steer_by_ports(uint32_t shards = 0);
    // Back to the kernel's automq.
    Status clear_steering();

    // Threads: read(), write() and writev() touch only the queue's fd (and the
    // caller's batch), so threads may call them at once on different queues
    // (one StackDriver per queue, StackDriver::attach_queue). Anything else,
    // and moving or destroying the Tun, must wait until those threads are done
    // with it.

private:
    std::string name_;
    int ifindex_ = 0;
    std::vector<int> fds_;
    size_t vnet_hdr_len_ = 0;
    std::string offload_note_;
    void close_all();
};

// What one TunBatch's reads and writes did (the offload counters stay zero
// on a Tun without offload). Nothing but uint64_t, so that counters of
// several threads add up field by field.
struct TunStats {
    uint64_t gso_writes = 0;         // super-packets written
    uint64_t gso_segments = 0;       // segments they carried
    uint64_t gso_rejected = 0;       // super-packets the kernel refused (EINVAL): GSO is then
                                     // turned off for this batch and the run sent one by one
    uint64_t gro_reads = 0;          // super-packets read
    uint64_t gro_segments = 0;       // segments split from them
    uint64_t partial_csum_reads = 0;  // NEEDS_CSUM reads without GSO (a local sender's partial
                                      // sum, nothing to verify); counted in csum_trusted too
    uint64_t csum_trusted = 0;       // packets and segments handed over as
                                     // RxChecksum::kernel_verified (DATA_VALID, NEEDS_CSUM, GRO)
    std::array<uint64_t, offload::kRxDropCount> rx_drops{};  // reads dropped, by reason
    uint64_t read_errors = 0;        // reads that failed other than with EAGAIN/EINTR
    uint64_t write_errors = 0;       // packets lost to failed writes (ENOBUFS, EAGAIN, ...)
    uint64_t dropped(offload::RxDrop r) const { return rx_drops[static_cast<size_t>(r)]; }
};

// One thread's batches on a Tun: where Tun::read() leaves packets and where
// Tun::write() takes them from, with the buffers, the GSO state and the
// counters that go with them (wireguard-go's tun.Device Read(bufs)/Write(bufs)
// in one object). Everything is sized at construction: no allocation per
// packet. Received packets point into the batch until the next read with it.
class TunBatch {
public:
    // Reads per Tun::read() at most (and plain packets a batch holds).
    static constexpr size_t kMaxReads = 64;
    // How reads and writes are framed: plain IP packets, or behind a
    // virtio-net header (an offload Tun).
    enum class Framing : uint8_t { plain, vnet };

    // For `tun`, packets of up to `mtu` bytes (without offload; with it, up to
    // 64 KiB super-packets), `tx_capacity` packets per write (more grow it).
    TunBatch(const Tun& tun, uint32_t mtu, size_t tx_capacity);
    TunBatch(Framing framing, uint32_t mtu, size_t tx_capacity);
    Framing framing() const { return framing_; }

    // --- Received by the last Tun::read(), valid until the next one.
    size_t rx_count() const { return rx_count_; }
    ByteView rx_packet(size_t i) const { return rx_[i].packet; }
    RxChecksum rx_checksum(size_t i) const { return rx_[i].checksum; }  // for Stack::on_packet
    // Call Tun::read() again now (with what is left of the budget): the batch
    // filled up before the queue ran empty or `max_reads` were made, or a
    // super-packet is half split (finished by the next calls even with a
    // budget of 0, so that no segment waits for the next wakeup).
    bool rx_more() const;

    // --- To send with the next Tun::write(). `data` has kTxHeadroom writable
    // bytes in front of it (Stack::tx_packet_mutable) and stays put until then.
    void add_tx(uint8_t* data, size_t size, TxChecksum checksum);
    size_t tx_count() const { return tx_.size(); }

    const TunStats& stats() const { return stats_; }

    // --- Device plumbing. Tun::read()/write() drive these around their
    // syscalls; they are pure, so tests and fuzzers drive them with bytes.
    //
    // Receive: rx_begin(), then while rx_slot() gives room, read into it and
    // rx_commit() the size (or rx_stop() on an error or EAGAIN).
    void rx_begin(size_t max_reads);  // also splits more of a half-split super-packet
    uint8_t* rx_slot(size_t& cap);    // nullptr: this batch takes no more reads
    void rx_commit(size_t n);         // n bytes were read into the slot
    void rx_stop(long err);           // the read failed with -err: EAGAIN/EINTR or counted
    size_t rx_reads() const { return rx_reads_; }
    // Transmit: tx_plan(), then for each tx_next() with parts, write them as
    // one packet and hand the result to tx_done(); tx_clear() at the end.
    struct Write {
        const ByteView* parts = nullptr;  // gathered into one packet, vnet header first with offload
        size_t count = 0;                 // 0: nothing left to write
    };
    void tx_plan();
    Write tx_next();
    void tx_done(long result);  // bytes written, or -errno
    void tx_clear();

private:
    struct RxEntry {
        ByteView packet;
        RxChecksum checksum = RxChecksum::verify;
    };
    struct TxEntry {
        uint8_t* data = nullptr;
        size_t size = 0;
        TxChecksum checksum = TxChecksum::complete;
    };
    void rx_add(ByteView packet, RxChecksum checksum) { rx_[rx_count_++] = RxEntry{packet, checksum}; }
    void rx_accept(uint8_t* read, size_t n);
    void split_pending();
    Write tx_plain(size_t k);

    Framing framing_ = Framing::plain;
    TunStats stats_;
    // Receive. Plain: kMaxReads slots of rx_stride_ bytes. Vnet: reads packed
    // one after another, each with room for a 64 KiB super-packet, and the
    // segments split from super-packets in seg_buf_.
    std::vector<uint8_t> rx_buf_, seg_buf_;
    size_t rx_stride_ = 0;
    std::vector<RxEntry> rx_;
    size_t rx_count_ = 0, rx_used_ = 0, seg_used_ = 0;
    size_t rx_reads_ = 0, rx_max_reads_ = 0;
    bool rx_drained_ = false;
    offload::RxPacket pending_;  // a super-packet being split (kind segments)
    size_t pending_next_ = 0;    // its next segment
    // Transmit: the packets, the order to send them in (flows grouped), the
    // views gso_run() looks at, and the write being made.
    std::vector<TxEntry> tx_;
    std::vector<uint32_t> tx_order_;
    std::vector<ByteView> tx_views_;
    offload::FlowGrouper grouper_;
    bool gso_ = false;  // coalesce runs (vnet framing, not refused by the kernel)
    size_t tx_pos_ = 0, tx_run_ = 0;  // the write tx_next() made: tx_order_[tx_pos_ .. + tx_run_)
    bool tx_super_ = false;           // ... as a super-packet
    std::array<uint8_t, offload::kMaxGsoHeader> gso_hdr_{};
    std::array<ByteView, offload::kMaxGsoSegments + 1> parts_{};
};

// ---------------------------------------------------------------------------
// Reactor: a small epoll loop (faketcp.cpp)
// ---------------------------------------------------------------------------

// AdaptivePoll: when a Reactor polls instead of sleeping. Pure (time is an
// input), so its decisions are unit-tested as timelines.
//
// Waking a sleeping thread costs tens of µs on a VM, most of what a tunnel
// adds to a round trip; polling (epoll_wait with timeout 0) hides it but
// burns the CPU it waits on. The policy polls only while packets keep
// arriving closer together than the budget: when either of the last two
// gaps between arrivals was at most `budget`, the reactor polls until
// `budget` after the last arrival, then sleeps. Two gaps, not one: a tunnel
// end in a ping-pong sees alternating gaps (the request comes right after the
// reply it answers, the next reply a whole round later), and the short one
// must not be lost behind the long one. Two long gaps in a row (a quiet
// spell) mean sleeping at once until arrivals come close together again. So
// an idle tunnel never polls, at most one budget is spent after the last
// packet of a burst, and a busy tunnel (steady traffic, a ping-pong faster
// than the budget) never sleeps between packets. A budget of zero never polls.
class AdaptivePoll {
public:
    static constexpr Duration kDefaultBudget = std::chrono::microseconds(50);
    explicit AdaptivePoll(Duration budget = kDefaultBudget) : budget_(budget) {}
    // The reactor found input at `now`.
    void on_arrival(TimePoint now);
    // About to wait at `now`: poll without sleeping until the returned time;
    // a time <= now means sleep at once.
    [[nodiscard]] TimePoint poll_until(TimePoint now) const;
    [[nodiscard]] Duration budget() const { return budget_; }

private:
    Duration budget_;
    bool seen_ = false;        // an arrival happened
    bool last_close_ = false;  // the last gap was at most budget_
    bool prev_close_ = false;  // the gap before it was
    TimePoint last_{};         // the last arrival
};

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
    // Contract: on_deadline and on_batch_end run in the order handlers were
    // first registered, so a StackDriver attached before an application's own
    // handler has dispatched its last events when the application flushes.
    void add_handler(Handler& handler);
    void remove_handler(Handler& handler);

    // Loop until stop(), or until an epoll error (returned).
    Status run();
    // Run one iteration, waiting at most `max_wait`.
    Status run_once(Duration max_wait);
    void stop() { stopping_ = true; }  // safe from handlers; not from signal handlers
    TimePoint now() const;

    // Before each blocking wait, poll (epoll_wait with timeout 0) for up to
    // `spin` first. Waking a sleeping thread costs tens of µs on a VM (the
    // idle vCPU halts), which is most of what a tunnel adds to a round trip;
    // spinning hides it at the price of CPU: up to `spin` per wake-up, and a
    // whole core once packets come closer together than `spin`. Zero (the
    // default) never spins. Deadlines still fire on time: the spin ends at
    // the earliest one.
    // A fixed spin before every sleep: replaces the adaptive policy while
    // non-zero.
    void set_busy_poll(Duration spin) { busy_poll_ = spin; }
    // The default wait: AdaptivePoll with `budget` (AdaptivePoll::kDefaultBudget
    // unless set; zero: always sleep at once). While it polls it also yields
    // the CPU (sched_yield) between polls, so on a busy host a polling thread
    // gives way to runnable threads instead of delaying them.
    void set_poll_budget(Duration budget) { adaptive_ = AdaptivePoll(budget); }
    // How many waits ended during a poll (input found without sleeping), how
    // many slept, and how many polls found nothing: what the policy did and
    // what it cost, for statistics.
    uint64_t polled_wakeups() const { return polled_wakeups_; }
    uint64_t sleeps() const { return sleeps_; }
    uint64_t empty_polls() const { return empty_polls_; }

private:
    int wait(epoll_event* events, int max_events, TimePoint start, TimePoint wake);
    int epfd_ = -1;
    bool stopping_ = false;
    Duration busy_poll_{0};
    AdaptivePoll adaptive_;
    uint64_t polled_wakeups_ = 0;
    uint64_t sleeps_ = 0;
    uint64_t empty_polls_ = 0;
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
    // Reads per queue per batch (TunBatch::kMaxReads); a wakeup reads at most
    // four batches' worth, then yields to the reactor's other fds.
    static constexpr size_t kReadBatch = TunBatch::kMaxReads;

    StackDriver(Stack& stack, Tun& tun, StackHandler& handler);
    // Register every TUN queue with the reactor; packets are written on
    // queue 0.
    Status attach(Reactor& reactor);
    // Instead of attach(): serve queue `queue` alone, reading only its fd and
    // writing on it. One thread per queue, each with its own Reactor, Stack
    // (StackConfig::shard_count = tun.queue_count(), shard_index = queue) and
    // StackDriver over the same Tun, after Tun::steer_by_ports().
    // invalid_argument if the Tun has no such queue.
    Status attach_queue(Reactor& reactor, size_t queue);
    // Undoes attach() or attach_queue().
    void detach(Reactor& reactor);

    // Convenience wrappers that flush the transmit queue when needed.
    Errc send(ConnId conn, ByteView datagram, TimePoint now);
    Errc close(ConnId conn, TimePoint now);
    Result<ConnId> connect(const Endpoint& remote, TimePoint now);
    // Write every queued packet to the TUN now.
    void flush();

    Stack& stack() { return stack_; }
    uint64_t tun_write_errors() const { return io_.stats().write_errors; }
    uint64_t tun_read_errors() const { return io_.stats().read_errors; }

    // What the device offloads did (all zero when the Tun has no offload):
    // the driver's TunBatch counters.
    using OffloadStats = TunStats;
    const OffloadStats& offload_stats() const { return io_.stats(); }

    void on_readable(int fd, TimePoint now) override;
    std::optional<TimePoint> next_deadline() const override;
    void on_deadline(TimePoint now) override;
    void on_batch_end(TimePoint now) override;

private:
    static constexpr size_t kReadsPerWakeup = 4 * kReadBatch;
    static constexpr size_t kAllQueues = SIZE_MAX;
    static constexpr size_t kNoQueue = SIZE_MAX;
    size_t queue_of(int fd) const;  // kNoQueue: not a queue this driver reads
    void dispatch_events();
    Stack& stack_;
    Tun& tun_;
    StackHandler& handler_;
    TunBatch io_;  // reads land here; the Stack's tx queue is written through it
    size_t next_tx_queue_ = 0;
    size_t own_queue_ = kAllQueues;  // attach_queue(): the only queue read and written
};

}  // namespace faketcp
