// demo/udp.cpp — see udp.h.
#include "demo/udp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace demo {

using faketcp::Endpoint;
using faketcp::Family;
using faketcp::IpAddr;

namespace {

// Room for one IPV6_PKTINFO or IP_PKTINFO and one SO_RXQ_OVFL control message.
constexpr size_t kControl = 128;
static_assert(CMSG_SPACE(sizeof(in6_pktinfo)) <= kControl, "control buffer too small");
static_assert(CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(uint32_t)) <= kControl, "control buffer too small");

bool is_v4_mapped(const uint8_t* a) {
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(a, prefix, 12) == 0;
}

// A source address we may send from: unicast only.
bool usable_source_v4(const uint8_t* a) { return a[0] != 0 && a[0] < 224; }

std::string errno_text(const char* what, int err) { return std::string(what) + ": " + std::strerror(err); }

int set_int(int fd, int level, int name, int value) { return setsockopt(fd, level, name, &value, sizeof value); }

// Best effort: a smaller buffer still works, it just overflows sooner.
void set_buffers(int fd, int bytes) {
    if (set_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, bytes) != 0) (void)set_int(fd, SOL_SOCKET, SO_RCVBUF, bytes);
    if (set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, bytes) != 0) (void)set_int(fd, SOL_SOCKET, SO_SNDBUF, bytes);
    (void)set_int(fd, SOL_SOCKET, SO_RXQ_OVFL, 1);
}

}  // namespace

void Fd::reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

SockAddr to_sockaddr(const Endpoint& ep) {
    SockAddr sa;
    if (ep.addr.family == Family::v4) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(ep.port);
        std::memcpy(&sin.sin_addr, ep.addr.bytes.data(), 4);
        std::memcpy(&sa.ss, &sin, sizeof sin);
        sa.len = sizeof sin;
    } else {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(ep.port);
        std::memcpy(&sin6.sin6_addr, ep.addr.bytes.data(), 16);
        std::memcpy(&sa.ss, &sin6, sizeof sin6);
        sa.len = sizeof sin6;
    }
    return sa;
}

Endpoint to_endpoint(const SockAddr& sa) {
    Endpoint ep;
    if (sa.ss.ss_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, &sa.ss, sizeof sin);
        const auto* b = reinterpret_cast<const uint8_t*>(&sin.sin_addr);
        ep.addr = IpAddr::v4(b[0], b[1], b[2], b[3]);
        ep.port = ntohs(sin.sin_port);
    } else if (sa.ss.ss_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, &sa.ss, sizeof sin6);
        const auto* b = reinterpret_cast<const uint8_t*>(&sin6.sin6_addr);
        if (is_v4_mapped(b)) {
            ep.addr = IpAddr::v4(b[12], b[13], b[14], b[15]);
        } else {
            std::array<uint8_t, 16> a{};
            std::memcpy(a.data(), b, 16);
            ep.addr = IpAddr::v6(a);
        }
        ep.port = ntohs(sin6.sin6_port);
    }
    return ep;
}

std::string to_string(const SockAddr& sa) {
    if (sa.ss.ss_family != AF_INET && sa.ss.ss_family != AF_INET6) return "?";
    return faketcp::to_string(to_endpoint(sa));
}

Fd open_udp_listener(const Endpoint& local, std::string& error) {
    const bool v6 = local.addr.family == Family::v6;
    Fd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        error = errno_text("socket(UDP)", errno);
        return Fd();
    }
    if (v6) {
        // [::] serves IPv4 peers too (as ::ffff:a.b.c.d); a specific address only itself.
        if (local.addr.is_unspecified() && set_int(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0) != 0) {
            error = errno_text("setsockopt(IPV6_V6ONLY=0)", errno);
            return Fd();
        }
        // Also reported for IPv4 datagrams on a dual-stack socket, as a mapped address.
        if (set_int(fd.get(), IPPROTO_IPV6, IPV6_RECVPKTINFO, 1) != 0) {
            error = errno_text("setsockopt(IPV6_RECVPKTINFO)", errno);
            return Fd();
        }
    } else if (set_int(fd.get(), IPPROTO_IP, IP_PKTINFO, 1) != 0) {
        error = errno_text("setsockopt(IP_PKTINFO)", errno);
        return Fd();
    }
    set_buffers(fd.get(), kListenerBuffer);
    SockAddr sa = to_sockaddr(local);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&sa.ss), sa.len) != 0) {
        int e = errno;
        error = "bind UDP " + faketcp::to_string(local) + ": " + std::strerror(e);
        if (e == EACCES && local.port < 1024) error += " (ports below 1024 need CAP_NET_BIND_SERVICE)";
        if (e == EADDRNOTAVAIL) error += " (no interface has this address)";
        return Fd();
    }
    return fd;
}

Fd open_udp_connected(const Endpoint& remote, std::string& error) {
    const bool v6 = remote.addr.family == Family::v6;
    Fd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        error = errno_text("socket(UDP)", errno);
        return Fd();
    }
    set_buffers(fd.get(), kConnectedBuffer);
    SockAddr sa = to_sockaddr(remote);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa.ss), sa.len) != 0) {
        error = "connect UDP " + faketcp::to_string(remote) + ": " + std::strerror(errno);
        return Fd();
    }
    return fd;
}

int receive_buffer(int fd) {
    int v = 0;
    socklen_t len = sizeof v;
    return getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len) == 0 ? v : -1;
}

std::string local_address(int fd) {
    SockAddr sa;
    sa.len = sizeof sa.ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa.ss), &sa.len) != 0) return "?";
    return to_string(sa);
}

// ---------------------------------------------------------------------------

UdpRxBatch::UdpRxBatch()
    : slots_(kBatch * kSlot), control_(kBatch * kControl), peers_(kBatch), iov_(kBatch), msgs_(kBatch) {}

int UdpRxBatch::receive(int fd) {
    for (size_t i = 0; i < kBatch; ++i) {
        iov_[i].iov_base = slots_.data() + i * kSlot;
        iov_[i].iov_len = kSlot;
        msghdr& h = msgs_[i].msg_hdr;
        h.msg_name = &peers_[i].ss;
        h.msg_namelen = sizeof peers_[i].ss;
        h.msg_iov = &iov_[i];
        h.msg_iovlen = 1;
        h.msg_control = control_.data() + i * kControl;
        h.msg_controllen = kControl;
        h.msg_flags = 0;
        msgs_[i].msg_len = 0;
    }
    int n;
    do {
        n = ::recvmmsg(fd, msgs_.data(), kBatch, MSG_DONTWAIT, nullptr);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (int i = 0; i < n; ++i) peers_[i].len = msgs_[i].msg_hdr.msg_namelen;
    return n;
}

PktInfo UdpRxBatch::pktinfo(size_t i) const {
    PktInfo info;
    // CMSG_* take a non-const msghdr; we only read through them.
    msghdr* h = const_cast<msghdr*>(&msgs_[i].msg_hdr);
    for (cmsghdr* c = CMSG_FIRSTHDR(h); c != nullptr; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
            c->cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))) {
            in6_pktinfo pi;
            std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
            const auto* a = reinterpret_cast<const uint8_t*>(&pi.ipi6_addr);
            if (is_v4_mapped(a) ? !usable_source_v4(a + 12) : a[0] == 0xff)
                return PktInfo{};  // multicast / broadcast: let the kernel pick
            info.family = AF_INET6;
            info.ifindex = pi.ipi6_ifindex;
            std::memcpy(info.addr, a, 16);
            return info;
        }
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
            c->cmsg_len >= CMSG_LEN(sizeof(in_pktinfo))) {
            in_pktinfo pi;
            std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
            // ipi_spec_dst is the local address (for a broadcast, the interface's own).
            const auto* a = reinterpret_cast<const uint8_t*>(&pi.ipi_spec_dst);
            if (!usable_source_v4(a)) return PktInfo{};
            info.family = AF_INET;
            info.ifindex = static_cast<uint32_t>(pi.ipi_ifindex);
            std::memcpy(info.addr, a, 4);
            return info;
        }
    }
    return info;
}

uint32_t UdpRxBatch::overflow_count(size_t i) const {
    msghdr* h = const_cast<msghdr*>(&msgs_[i].msg_hdr);
    for (cmsghdr* c = CMSG_FIRSTHDR(h); c != nullptr; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL && c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
            uint32_t v;
            std::memcpy(&v, CMSG_DATA(c), sizeof v);
            return v;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------

uint64_t UdpErrors::count(int err) {
    switch (err) {
        case ECONNREFUSED: return ++conn_refused;
        case ENOBUFS:
        case ENOMEM: return ++no_buffers;
        case EAGAIN: return ++would_block;
        default:
            last_other_errno = err;
            return ++other;
    }
}

UdpTxBatch::UdpTxBatch()
    : slots_(kBatch * kSlot), control_(kBatch * kControl), dests_(kBatch), iov_(kBatch), msgs_(kBatch) {}

bool UdpTxBatch::add(const SockAddr& to, const PktInfo& from, faketcp::ByteView data) {
    if (count_ == kBatch || data.size > kSlot) return false;
    const size_t i = count_;
    uint8_t* slot = slots_.data() + i * kSlot;
    std::memcpy(slot, data.data, data.size);
    dests_[i] = to;
    iov_[i].iov_base = slot;
    iov_[i].iov_len = data.size;
    msghdr& h = msgs_[i].msg_hdr;
    h = msghdr{};
    h.msg_name = &dests_[i].ss;
    h.msg_namelen = dests_[i].len;
    h.msg_iov = &iov_[i];
    h.msg_iovlen = 1;
    uint8_t* control = control_.data() + i * kControl;
    if (from.family == AF_INET6) {
        // On a dual-stack socket a mapped address selects the IPv4 source.
        h.msg_control = control;
        h.msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo));
        std::memset(control, 0, h.msg_controllen);
        cmsghdr* c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = IPPROTO_IPV6;
        c->cmsg_type = IPV6_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
        in6_pktinfo pi{};
        std::memcpy(&pi.ipi6_addr, from.addr, 16);
        // The interface matters for link-local addresses only; elsewhere let
        // the routing table choose, as it would for an unbound reply.
        const bool link_local = from.addr[0] == 0xfe && (from.addr[1] & 0xc0) == 0x80;
        pi.ipi6_ifindex = link_local ? from.ifindex : 0;
        std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
    } else if (from.family == AF_INET) {
        h.msg_control = control;
        h.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
        std::memset(control, 0, h.msg_controllen);
        cmsghdr* c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
        in_pktinfo pi{};
        std::memcpy(&pi.ipi_spec_dst, from.addr, 4);
        std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
    }
    msgs_[i].msg_len = 0;
    ++count_;
    return true;
}

size_t UdpTxBatch::flush(int fd, UdpErrors& errors) {
    size_t sent = 0;
    size_t start = 0;
    while (start < count_) {
        int n = ::sendmmsg(fd, msgs_.data() + start, static_cast<unsigned>(count_ - start), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            // The message at `start` failed: count it, drop it, go on.
            errors.count(errno);
            ++start;
            continue;
        }
        if (n == 0) break;  // not expected; do not spin
        sent += static_cast<size_t>(n);
        start += static_cast<size_t>(n);
    }
    count_ = 0;
    return sent;
}

}  // namespace demo
