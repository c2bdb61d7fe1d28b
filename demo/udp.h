// demo/udp.h — the UDP side of the tunnel: sockets, batched receive with the
// destination address of each datagram (IP_PKTINFO / IPV6_PKTINFO), and
// batched send from a chosen source address.
//
// All buffers are allocated once, when a batch object is made; receiving and
// sending datagrams allocates nothing.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
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
// says. `error` gets a one-line message on failure.
Fd open_udp_listener(const faketcp::Endpoint& local, std::string& error);
// A non-blocking UDP socket connected to `remote` from an ephemeral port,
// reporting its overflow count (SO_RXQ_OVFL).
Fd open_udp_connected(const faketcp::Endpoint& remote, std::string& error);
// The receive buffer the kernel granted, in bytes (for logs).
int receive_buffer(int fd);
// The address a socket is bound to ("0.0.0.0:40000"), for logs.
std::string local_address(int fd);

// Up to kBatch datagrams per recvmmsg(2).
class UdpRxBatch {
public:
    static constexpr size_t kBatch = 32;
    // Larger than any datagram we can forward, so an oversized one is seen
    // whole (its real size is reported, MSG_TRUNC beyond this).
    static constexpr size_t kSlot = 2048;

    UdpRxBatch();
    // Returns the number of datagrams read, or -errno (-EAGAIN: none).
    int receive(int fd);

    faketcp::ByteView data(size_t i) const { return {slots_.data() + i * kSlot, msgs_[i].msg_len}; }
    size_t size(size_t i) const { return msgs_[i].msg_len; }
    bool truncated(size_t i) const { return (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0; }
    const SockAddr& peer(size_t i) const { return peers_[i]; }
    PktInfo pktinfo(size_t i) const;  // parses the control message
    // Datagrams the kernel dropped on this socket for want of buffer space,
    // since it was opened (SO_RXQ_OVFL), as of datagram i; 0 if not reported.
    uint32_t overflow_count(size_t i) const;

private:
    std::vector<uint8_t> slots_;
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
    // Counts `err` (an errno); returns the counter's value after it.
    uint64_t count(int err);
    uint64_t total() const { return conn_refused + no_buffers + would_block + other; }
};

// Datagrams to many destinations from one socket, copied in and sent with
// one sendmmsg(2) per kBatch. Each carries the source address to use.
class UdpTxBatch {
public:
    static constexpr size_t kBatch = 32;
    static constexpr size_t kSlot = 2048;

    UdpTxBatch();
    bool full() const { return count_ == kBatch; }
    bool empty() const { return count_ == 0; }
    // Copies `data` (at most kSlot bytes); false if the batch is full or the
    // datagram too large.
    bool add(const SockAddr& to, const PktInfo& from, faketcp::ByteView data);
    // Sends everything queued; failed datagrams are counted in `errors` and
    // dropped. Returns the number sent.
    size_t flush(int fd, UdpErrors& errors);

private:
    size_t count_ = 0;
    std::vector<uint8_t> slots_;
    std::vector<uint8_t> control_;
    std::vector<SockAddr> dests_;
    std::vector<iovec> iov_;
    std::vector<mmsghdr> msgs_;
};

}  // namespace demo
