// demo/udp.cpp — see udp.h.
#include "demo/udp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/udp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace demo {

using faketcp::Endpoint;
using faketcp::Family;
using faketcp::IpAddr;

namespace {

// Receive: room for one IPV6_PKTINFO or IP_PKTINFO, one SO_RXQ_OVFL and one
// UDP_GRO control message.
constexpr size_t kControl = 128;
static_assert(CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(uint32_t)) + CMSG_SPACE(sizeof(int)) <= kControl,
              "receive control buffer too small");
// Send: one IPV6_PKTINFO or IP_PKTINFO, then one UDP_SEGMENT.
constexpr size_t kTxControl = 64;
static_assert(CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(uint16_t)) <= kTxControl,
              "send control buffer too small");

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

Fd open_udp_listener(const Endpoint& local, std::string& error, bool reuse_port) {
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
    // One socket per worker thread: the kernel spreads UDP peers over the
    // group by a hash of their addresses, so each peer stays with one worker.
    if (reuse_port && set_int(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1) != 0) {
        error = errno_text("setsockopt(SO_REUSEPORT)", errno);
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

bool connect_udp(int fd, const SockAddr& peer, std::string& error) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&peer.ss), peer.len) == 0) return true;
    error = "connect UDP to " + to_string(peer) + ": " + std::strerror(errno);
    return false;
}

bool bound_to(int fd, const PktInfo& where) {
    if (where.family == 0) return true;
    SockAddr sa;
    sa.len = sizeof sa.ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa.ss), &sa.len) != 0) return false;
    if (sa.ss.ss_family != where.family) return false;
    if (where.family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, &sa.ss, sizeof sin);
        return std::memcmp(&sin.sin_addr, where.addr, 4) == 0;
    }
    sockaddr_in6 sin6;
    std::memcpy(&sin6, &sa.ss, sizeof sin6);
    return std::memcmp(&sin6.sin6_addr, where.addr, 16) == 0;
}

std::string local_address(int fd) {
    SockAddr sa;
    sa.len = sizeof sa.ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa.ss), &sa.len) != 0) return "?";
    return to_string(sa);
}

// ---------------------------------------------------------------------------

size_t gso_run(const iovec* iov, size_t count, size_t max_segments, size_t max_bytes) {
    if (count == 0) return 0;
    const size_t seg = iov[0].iov_len;
    size_t n = 1;
    size_t bytes = seg;
    if (seg == 0) return 1;
    while (n < count && n < max_segments) {
        const size_t s = iov[n].iov_len;
        if (s == 0 || s > seg || bytes + s > max_bytes) break;
        bytes += s;
        ++n;
        if (s < seg) break;  // only the last cut may be short
    }
    return n;
}

size_t gro_segment_count(size_t len, size_t gso_size) {
    if (gso_size == 0 || len <= gso_size) return 1;
    return (len + gso_size - 1) / gso_size;
}

faketcp::ByteView gro_segment(faketcp::ByteView whole, size_t gso_size, size_t i) {
    if (gso_size == 0 || whole.size <= gso_size) return i == 0 ? whole : faketcp::ByteView(whole.data, 0);
    if (i >= gro_segment_count(whole.size, gso_size)) return {whole.data, 0};
    const size_t off = i * gso_size;
    return {whole.data + off, std::min(gso_size, whole.size - off)};
}

bool probe_udp_gso(std::string& why) {
    Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        why = errno_text("socket(UDP)", errno);
        return false;
    }
    if (set_int(fd.get(), SOL_UDP, UDP_SEGMENT, 1400) != 0) {
        why = errno_text("setsockopt(UDP_SEGMENT)", errno);
        return false;
    }
    return true;
}

bool enable_udp_gro(int fd, std::string& why) {
    if (set_int(fd, SOL_UDP, UDP_GRO, 1) != 0) {
        why = errno_text("setsockopt(UDP_GRO)", errno);
        return false;
    }
    return true;
}

// ---------------------------------------------------------------------------

UdpRxBatch::UdpRxBatch()
    : slots_(new uint8_t[kBatch * kSlot]), control_(kBatch * kControl), peers_(kBatch), iov_(kBatch), msgs_(kBatch) {}

int UdpRxBatch::receive(int fd) {
    for (size_t i = 0; i < kBatch; ++i) {
        iov_[i].iov_base = slot(i);
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

namespace {

// The address a datagram was sent to, as a source to answer from; family 0
// for multicast and broadcast (let the kernel pick).
PktInfo parse_pktinfo(const cmsghdr* c) {
    PktInfo info;
    if (c->cmsg_level == IPPROTO_IPV6) {
        in6_pktinfo pi;
        std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
        const auto* a = reinterpret_cast<const uint8_t*>(&pi.ipi6_addr);
        if (is_v4_mapped(a) ? !usable_source_v4(a + 12) : a[0] == 0xff) return PktInfo{};
        info.family = AF_INET6;
        info.ifindex = pi.ipi6_ifindex;
        std::memcpy(info.addr, a, 16);
        return info;
    }
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

}  // namespace

RxMeta UdpRxBatch::meta(size_t i) const {
    RxMeta m;
    // CMSG_* take a non-const msghdr; we only read through them.
    msghdr* h = const_cast<msghdr*>(&msgs_[i].msg_hdr);
    for (cmsghdr* c = CMSG_FIRSTHDR(h); c != nullptr; c = CMSG_NXTHDR(h, c)) {
        if ((c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
             c->cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))) ||
            (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof(in_pktinfo)))) {
            m.local = parse_pktinfo(c);
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL &&
                   c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
            std::memcpy(&m.overflow, CMSG_DATA(c), sizeof m.overflow);
        } else if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int v;
            std::memcpy(&v, CMSG_DATA(c), sizeof v);
            m.gro_size = v > 0 ? static_cast<size_t>(v) : 0;
        }
    }
    return m;
}

// ---------------------------------------------------------------------------

uint64_t UdpErrors::count(int err, uint64_t n) {
    switch (err) {
        case ECONNREFUSED: return conn_refused += n;
        case ENOBUFS:
        case ENOMEM: return no_buffers += n;
        case EAGAIN: return would_block += n;
        default:
            last_other_errno = err;
            return other += n;
    }
}

UdpTxQueue::UdpTxQueue(uint32_t max_flows)
    : bytes_(kBytes), entries_(kEntries), heads_(max_flows), flows_(kEntries) {}

bool UdpTxQueue::add(uint32_t flow, faketcp::ByteView data) {
    if (flow >= heads_.size() || entry_count_ == kEntries || kBytes - byte_count_ < data.size) return false;
    const auto e = static_cast<uint32_t>(entry_count_++);
    if (data.size > 0) std::memcpy(bytes_.data() + byte_count_, data.data, data.size);
    entries_[e] = Entry{static_cast<uint32_t>(byte_count_), static_cast<uint32_t>(data.size), kNone};
    byte_count_ += data.size;
    Head& h = heads_[flow];
    if (h.first == kNone) {
        h.first = e;
        flows_[flow_count_++] = flow;  // at most one per entry: fits
    } else {
        entries_[h.last].next = e;
    }
    h.last = e;
    return true;
}

void UdpTxQueue::clear() {
    for (size_t k = 0; k < flow_count_; ++k) heads_[flows_[k]] = Head{};
    flow_count_ = 0;
    entry_count_ = 0;
    byte_count_ = 0;
}

UdpSendBatch::UdpSendBatch()
    : control_(UdpTxQueue::kEntries * kTxControl),
      dests_(UdpTxQueue::kEntries),
      iov_(UdpTxQueue::kEntries),
      msgs_(UdpTxQueue::kEntries),
      info_(UdpTxQueue::kEntries) {}

namespace {

// Writes one control message of `len` data bytes at `control`; returns its space.
size_t put_cmsg(uint8_t* control, int level, int type, const void* data, size_t len) {
    msghdr h{};
    h.msg_control = control;
    h.msg_controllen = CMSG_SPACE(len);
    std::memset(control, 0, h.msg_controllen);
    cmsghdr* c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = level;
    c->cmsg_type = type;
    c->cmsg_len = CMSG_LEN(len);
    std::memcpy(CMSG_DATA(c), data, len);
    return h.msg_controllen;
}

// Writes the source-address control message for `from` at `control`;
// returns its space (0 when the kernel is to choose).
size_t put_pktinfo(uint8_t* control, const PktInfo& from) {
    if (from.family == AF_INET6) {
        // On a dual-stack socket a mapped address selects the IPv4 source.
        in6_pktinfo pi{};
        std::memcpy(&pi.ipi6_addr, from.addr, 16);
        // The interface matters for link-local addresses only; elsewhere let
        // the routing table choose, as it would for an unbound reply.
        const bool link_local = from.addr[0] == 0xfe && (from.addr[1] & 0xc0) == 0x80;
        pi.ipi6_ifindex = link_local ? from.ifindex : 0;
        return put_cmsg(control, IPPROTO_IPV6, IPV6_PKTINFO, &pi, sizeof pi);
    }
    if (from.family == AF_INET) {
        in_pktinfo pi{};
        std::memcpy(&pi.ipi_spec_dst, from.addr, 4);
        return put_cmsg(control, IPPROTO_IP, IP_PKTINFO, &pi, sizeof pi);
    }
    return 0;
}

// Writes a UDP_SEGMENT control message at `control`; returns its space.
size_t put_gso_size(uint8_t* control, uint16_t gso_size) {
    return put_cmsg(control, SOL_UDP, UDP_SEGMENT, &gso_size, sizeof gso_size);
}

}  // namespace

void UdpSendBatch::add_flow(const UdpTxQueue& q, uint32_t flow, const SockAddr* to, const PktInfo* from, bool gso) {
    // The flow's datagrams as iovecs, in order; then cut into messages.
    const size_t first_iov = iov_count_;
    for (uint32_t e = q.first(flow); e != UdpTxQueue::kNone && iov_count_ < iov_.size(); e = q.next(e)) {
        const faketcp::ByteView d = q.data(e);
        iov_[iov_count_++] = iovec{const_cast<uint8_t*>(d.data), d.size};  // sendmsg only reads it
    }
    size_t i = first_iov;
    while (i < iov_count_ && count_ < msgs_.size()) {
        const size_t run = gso ? gso_run(&iov_[i], iov_count_ - i) : 1;
        const size_t m = count_++;
        msghdr& h = msgs_[m].msg_hdr;
        h = msghdr{};
        if (to != nullptr) {
            dests_[m] = *to;
            h.msg_name = &dests_[m].ss;
            h.msg_namelen = dests_[m].len;
        }
        h.msg_iov = &iov_[i];
        h.msg_iovlen = run;
        uint8_t* control = control_.data() + m * kTxControl;
        size_t used = from != nullptr ? put_pktinfo(control, *from) : 0;
        info_[m] = MsgInfo{static_cast<uint32_t>(run), static_cast<uint32_t>(used), run > 1};
        if (run > 1) used += put_gso_size(control + used, static_cast<uint16_t>(iov_[i].iov_len));
        h.msg_control = used > 0 ? control : nullptr;
        h.msg_controllen = used;
        msgs_[m].msg_len = 0;
        i += run;
    }
}

void UdpSendBatch::count_failure(int err, size_t datagrams, Outcome& out, UdpErrors& errors) {
    errors.count(err, datagrams);
    out.failed += datagrams;
    out.last_errno = err;
}

// Message m without UDP_SEGMENT: one sendmsg(2) per datagram.
void UdpSendBatch::send_each(int fd, size_t m, Outcome& out, UdpErrors& errors) {
    const msghdr& run = msgs_[m].msg_hdr;
    for (size_t k = 0; k < run.msg_iovlen; ++k) {
        msghdr h = run;
        h.msg_iov = run.msg_iov + k;
        h.msg_iovlen = 1;
        h.msg_controllen = info_[m].plain_control;
        if (h.msg_controllen == 0) h.msg_control = nullptr;
        ssize_t r;
        do {
            r = ::sendmsg(fd, &h, MSG_DONTWAIT);
        } while (r < 0 && errno == EINTR);
        if (r < 0)
            count_failure(errno, 1, out, errors);
        else
            ++out.sent;
    }
}

UdpSendBatch::Outcome UdpSendBatch::send(int fd, UdpErrors& errors, UdpOffloadStats& stats) {
    Outcome out;
    size_t start = 0;
    while (start < count_) {
        if (out.gso_refused_errno != 0 && info_[start].gso) {  // refused earlier in this batch
            send_each(fd, start++, out, errors);
            continue;
        }
        const int n = ::sendmmsg(fd, msgs_.data() + start, static_cast<unsigned>(count_ - start), MSG_DONTWAIT);
        if (n < 0) {
            const int err = errno;
            if (err == EINTR) continue;
            // The message at `start` failed; the ones after it were not tried.
            if (info_[start].gso && (err == EIO || err == EINVAL)) {
                const size_t failed_before = out.failed;
                send_each(fd, start, out, errors);
                // Refused because of UDP_SEGMENT only if one by one does better.
                if (out.failed - failed_before < info_[start].datagrams || out.last_errno != err) {
                    out.gso_refused_errno = err;
                    ++stats.gso_refused;
                }
            } else {
                count_failure(err, info_[start].datagrams, out, errors);
            }
            ++start;
            continue;
        }
        if (n == 0) break;  // not expected; do not spin
        for (size_t m = start; m < start + static_cast<size_t>(n); ++m) {
            out.sent += info_[m].datagrams;
            if (info_[m].gso) {
                ++stats.gso_sends;
                stats.gso_datagrams += info_[m].datagrams;
            }
        }
        start += static_cast<size_t>(n);
    }
    count_ = 0;
    iov_count_ = 0;
    return out;
}

}  // namespace demo
