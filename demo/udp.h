// demo/udp.h — the UDP side of the tunnel: sockets, batched receive with the
// destination address of each datagram (IP_PKTINFO / IPV6_PKTINFO), and
// batched send from a chosen source address.
//
// Both directions use the kernel's UDP segmentation offloads when it has them:
// a receive may return a run of equal-size datagrams from one sender at once
// (UDP_GRO, Linux 5.0), split here; a send may carry a run of equal-size
// datagrams to one destination that the kernel cuts up (UDP_SEGMENT, Linux
// 4.18). Either way one system call and one pass through the network stack
// moves many datagrams. Without them, recvmmsg(2)/sendmmsg(2) still batch.
//
// All buffers are allocated once, when a batch object is made; receiving and
// sending datagrams allocates nothing.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "faketcp.h"

namespace demo {

// A move-only owned file descriptor.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() { reset(); }
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = o.release();
        }
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release() {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset();

private:
    int fd_ = -1;
};

// A socket address, sized for either family.
struct SockAddr {
    sockaddr_storage ss{};
    socklen_t len = 0;
};

SockAddr to_sockaddr(const faketcp::Endpoint& ep);
// IPv4-mapped IPv6 addresses come back as IPv4.
faketcp::Endpoint to_endpoint(const SockAddr& sa);
std::string to_string(const SockAddr& sa);

// Where a datagram arrived: its destination address and interface, to answer
// from. family 0: unknown (no control message), let the kernel choose.
struct PktInfo {
    sa_family_t family = 0;
    uint32_t ifindex = 0;
    uint8_t addr[16] = {};
};

// Socket buffer sizes asked for: the client's one socket serves every UDP
// peer; the server has one socket per connection. SO_RCVBUFFORCE (allowed by
// CAP_NET_ADMIN, which we hold anyway) is tried first so net.core.rmem_max
// does not cap it; SO_RCVBUF otherwise.
constexpr int kListenerBuffer = 4 << 20;
constexpr int kConnectedBuffer = 1 << 20;

// A non-blocking UDP socket bound to `local` that reports each datagram's
// destination address and the socket's overflow count (SO_RXQ_OVFL).
// [::]:port is dual-stack (IPV6_V6ONLY off), whatever net.ipv6.bindv6only
// says. `error` gets a one-line message on failure. `reuse_port`: join an
// SO_REUSEPORT group on the address (one socket per worker thread).
Fd open_udp_listener(const faketcp::Endpoint& local, std::string& error, bool reuse_port = false);
// A non-blocking UDP socket connected to `remote` from an ephemeral port,
// reporting its overflow count (SO_RXQ_OVFL).
Fd open_udp_connected(const faketcp::Endpoint& remote, std::string& error);
// Connects UDP socket `fd` to `peer`; false with a one-line message in `error`.
bool connect_udp(int fd, const SockAddr& peer, std::string& error);
// Whether `fd` is bound to the address `where` names (a datagram's
// destination); true when `where` is unknown (family 0).
bool bound_to(int fd, const PktInfo& where);
// The receive buffer the kernel granted, in bytes (for logs).
int receive_buffer(int fd);
// The address a socket is bound to ("0.0.0.0:40000"), for logs.
std::string local_address(int fd);

// ---------------------------------------------------------------------------
// UDP segmentation offloads: pure helpers and probes
// ---------------------------------------------------------------------------

// Limits of one UDP_SEGMENT send: Linux before 6.9 refuses more than 64
// segments (UDP_MAX_SEGMENTS), and the whole payload must fit one IP packet's
// 16-bit length with headers (65507 bytes over IPv4; kept below that).
constexpr size_t kGsoMaxSegments = 64;
constexpr size_t kGsoMaxBytes = 65000;

// How many datagrams from iov[0] on one UDP_SEGMENT send can carry: all as
// long as the first but the last, which may be shorter (the kernel cuts the
// payload every first-size bytes, so only the last cut can be short); none
// empty; at most `max_segments` and `max_bytes` together. Returns 1..count
// (1: send it alone), 0 for count 0.
size_t gso_run(const iovec* iov, size_t count, size_t max_segments = kGsoMaxSegments,
               size_t max_bytes = kGsoMaxBytes);

// A receive of `len` bytes that the kernel coalesced (UDP_GRO control
// message, `gso_size` > 0) holds datagrams of gso_size bytes each, the last
// possibly shorter. gso_size 0 (no control message) or >= len: one datagram.
// Never trusts gso_size to fit: segments end at `len`.
size_t gro_segment_count(size_t len, size_t gso_size);
// Datagram i (< gro_segment_count) of such a receive; empty past the end.
faketcp::ByteView gro_segment(faketcp::ByteView whole, size_t gso_size, size_t i);

// Whether this kernel knows UDP_SEGMENT (probed once, on a throw-away socket:
// setting it on a real one would make it the socket's default). false with the
// reason in `why` otherwise.
bool probe_udp_gso(std::string& why);
// Lets `fd` receive coalesced runs (UDP_GRO). false with the reason in `why`
// when the kernel refuses; the socket then receives one datagram at a time.
bool enable_udp_gro(int fd, std::string& why);

// What the offloads did, for the stats line.
struct UdpOffloadStats {
    uint64_t gso_sends = 0;      // sends that carried a UDP_SEGMENT run
    uint64_t gso_datagrams = 0;  // datagrams in those runs
    uint64_t gso_refused = 0;    // runs the kernel refused (EIO/EINVAL): sent one by one, GSO then off
    uint64_t gro_receives = 0;   // receives that returned a coalesced run
    uint64_t gro_datagrams = 0;  // datagrams split from them
};

// ---------------------------------------------------------------------------
// Receive
// ---------------------------------------------------------------------------

// What the control messages of one receive say.
struct RxMeta {
    PktInfo local;          // where it was sent to (family 0: not reported)
    uint32_t overflow = 0;  // SO_RXQ_OVFL: the socket's drop count so far; 0 if not reported
    size_t gro_size = 0;    // UDP_GRO: size of each coalesced datagram; 0: one datagram
};

// Up to kBatch receives per recvmmsg(2); with UDP_GRO each may be a run.
class UdpRxBatch {
public:
    static constexpr size_t kBatch = 32;
    // Room for the largest coalesced run (64 KiB) or UDP datagram, so nothing
    // is ever cut (MSG_TRUNC). Only the bytes received touch memory.
    static constexpr size_t kSlot = 65536;

    UdpRxBatch();
    // Returns the number of receives, or -errno (-EAGAIN: none).
    int receive(int fd);

    faketcp::ByteView data(size_t i) const { return {slot(i), msgs_[i].msg_len}; }
    size_t size(size_t i) const { return msgs_[i].msg_len; }
    bool truncated(size_t i) const { return (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0; }
    const SockAddr& peer(size_t i) const { return peers_[i]; }
    RxMeta meta(size_t i) const;  // parses the control messages

private:
    uint8_t* slot(size_t i) const { return slots_.get() + i * kSlot; }
    std::unique_ptr<uint8_t[]> slots_;  // not zeroed: untouched slot pages stay unmapped
    std::vector<uint8_t> control_;
    std::vector<SockAddr> peers_;
    std::vector<iovec> iov_;
    std::vector<mmsghdr> msgs_;
};

// Counters for the errno values a UDP send or receive can hit.
struct UdpErrors {
    uint64_t conn_refused = 0;  // ECONNREFUSED: an ICMP port unreachable came back
    uint64_t no_buffers = 0;    // ENOBUFS / ENOMEM
    uint64_t would_block = 0;   // EAGAIN: the socket buffer is full
    uint64_t other = 0;
    int last_other_errno = 0;
    // Counts `n` datagrams lost to `err` (an errno); returns the counter's value after it.
    uint64_t count(int err, uint64_t n = 1);
    uint64_t total() const { return conn_refused + no_buffers + would_block + other; }
};

// ---------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------

// Datagrams queued during one reactor iteration, to be sent at its end, kept
// in arrival order per flow so that each flow's datagrams leave together: as
// UDP_SEGMENT runs, and in one sendmmsg(2) per socket. Each datagram is copied
// in: the stack reuses the buffers its events point into before the iteration
// ends. Nothing is allocated after construction.
class UdpTxQueue {
public:
    static constexpr size_t kBytes = 256 * 1024;  // datagram bytes held at once
    static constexpr size_t kEntries = 512;       // datagrams held at once
    static constexpr uint32_t kNone = UINT32_MAX;

    // Flow ids are below `max_flows`.
    explicit UdpTxQueue(uint32_t max_flows);
    // Queues a copy of `data` for `flow`. false when the queue is full (send
    // what it holds, clear it, add again) or `flow` is out of range.
    bool add(uint32_t flow, faketcp::ByteView data);
    bool empty() const { return entry_count_ == 0; }
    bool has(uint32_t flow) const { return flow < heads_.size() && heads_[flow].first != kNone; }
    // The flows with datagrams queued, in the order of their first one.
    size_t flow_count() const { return flow_count_; }
    uint32_t flow(size_t k) const { return flows_[k]; }
    // A flow's datagrams in order: first(flow), then next(entry) until kNone.
    uint32_t first(uint32_t flow) const { return heads_[flow].first; }
    uint32_t next(uint32_t entry) const { return entries_[entry].next; }
    faketcp::ByteView data(uint32_t entry) const {
        return {bytes_.data() + entries_[entry].offset, entries_[entry].size};
    }
    // Forgets everything queued.
    void clear();

private:
    struct Entry {
        uint32_t offset = 0, size = 0, next = kNone;
    };
    struct Head {
        uint32_t first = kNone, last = kNone;
    };
    std::vector<uint8_t> bytes_;
    size_t byte_count_ = 0;
    std::vector<Entry> entries_;
    size_t entry_count_ = 0;
    std::vector<Head> heads_;     // by flow
    std::vector<uint32_t> flows_;  // flows with datagrams, kEntries at most
    size_t flow_count_ = 0;
};

// The sendmmsg(2) messages for queued datagrams: one per datagram, or with
// GSO one per run (gso_run), pointing into the queue (no copy). Holds as
// many messages as UdpTxQueue holds datagrams.
class UdpSendBatch {
public:
    UdpSendBatch();
    // Appends messages for `flow`'s datagrams in `q`: to `to` (nullptr on a
    // connected socket), from the source address `from` (nullptr or family
    // 0: the kernel chooses), runs as UDP_SEGMENT sends if `gso`. The queue
    // must stay untouched until send().
    void add_flow(const UdpTxQueue& q, uint32_t flow, const SockAddr* to, const PktInfo* from, bool gso);
    bool empty() const { return count_ == 0; }

    struct Outcome {
        size_t sent = 0;    // datagrams the kernel took
        size_t failed = 0;  // datagrams lost to an error (counted in UdpErrors)
        int last_errno = 0;
        int gso_refused_errno = 0;  // != 0: the kernel refused UDP_SEGMENT (EIO/EINVAL); turn GSO off
    };
    // Sends every message, then forgets them. A failed message is counted in
    // `errors` (per datagram) and dropped; the rest still go. A run the
    // kernel refuses as such (EIO: no checksum offload on the route; EINVAL:
    // a segment larger than the route's MTU) is sent again one datagram at a
    // time, and so is every later run of this batch.
    Outcome send(int fd, UdpErrors& errors, UdpOffloadStats& stats);

private:
    struct MsgInfo {
        uint32_t datagrams = 0;
        uint32_t plain_control = 0;  // control bytes without the UDP_SEGMENT message (it comes last)
        bool gso = false;
    };
    void send_each(int fd, size_t m, Outcome& out, UdpErrors& errors);
    void count_failure(int err, size_t datagrams, Outcome& out, UdpErrors& errors);
    size_t count_ = 0;      // messages
    size_t iov_count_ = 0;  // datagrams
    std::vector<uint8_t> control_;
    std::vector<SockAddr> dests_;
    std::vector<iovec> iov_;
    std::vector<mmsghdr> msgs_;
    std::vector<MsgInfo> info_;
};

}  // namespace demo
