// faketcp.cpp — the sans-IO core, the reactor and the driver.
//
// Sections, in data-flow order:
//   1. errors and addresses   — Status, Errc, IpAddr/Endpoint parsing and printing
//   2. wire                   — byte helpers, checksums, the checked IP/TCP view, decode, encode
//   2b. device offload        — virtio-net headers, GSO coalesce, GRO split (pure functions)
//   3. connection             — Conn and the state machine: functions over a Conn that return Reply values
//   4. table                  — slots, the 4-tuple index, the timers, keys and generators
//   5. stack                  — the queues, demux, the application's calls (on section 3's machine)
//   6. reactor                — epoll and deadlines
//   7. driver                 — a Stack over a Tun inside a Reactor

#include "faketcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace faketcp {

// ===========================================================================
// 1. Errors and addresses
// ===========================================================================

const char* to_string(Errc e) {
    switch (e) {
        case Errc::ok: return "ok";
        case Errc::invalid_argument: return "invalid argument";
        case Errc::not_established: return "connection not established";
        case Errc::too_big: return "datagram does not fit the MTU";
        case Errc::empty_datagram: return "empty datagram";
        case Errc::stale_handle: return "stale connection handle";
        case Errc::already_listening: return "already listening on that port";
        case Errc::not_listening: return "not listening on that port";
        case Errc::no_local_address: return "no local address of that family";
        case Errc::ports_exhausted: return "ephemeral ports exhausted";
        case Errc::table_full: return "connection table full";
        case Errc::tx_queue_full: return "transmit queue full";
        case Errc::window_full: return "beyond the peer's advertised window";
        case Errc::system: return "system error";
    }
    return "unknown error";
}

Status Status::error(Errc code, std::string message, int sys_errno) {
    Status s;
    s.code_ = code;
    s.errno_ = sys_errno;
    s.message_ = std::move(message);
    return s;
}

namespace {
// strerror_r is the XSI one (int) or the GNU one (char*) depending on the
// feature macros; both overloads make either compile.
[[maybe_unused]] const char* strerror_result(int /*xsi*/, const char* buf) { return buf; }
[[maybe_unused]] const char* strerror_result(const char* gnu, const char* /*buf*/) { return gnu; }
}  // namespace

Status Status::from_errno(std::string what, int sys_errno, std::string_view hint) {
    char buf[128] = {};
    std::string msg = std::move(what);
    msg += ": ";
    msg += strerror_result(strerror_r(sys_errno, buf, sizeof buf), buf);  // thread-safe, unlike strerror
    if (!hint.empty()) {
        msg += " \u2014 ";
        msg += hint;
    }
    return error(Errc::system, std::move(msg), sys_errno);
}

const char* to_string(Profile p) {
    switch (p) {
        case Profile::phantun: return "phantun";
        case Profile::linux_tcp: return "linux";
    }
    return "unknown";
}

const char* to_string(ConnState s) {
    switch (s) {
        case ConnState::syn_sent: return "syn_sent";
        case ConnState::syn_received: return "syn_received";
        case ConnState::established: return "established";
    }
    return "?";
}

const char* to_string(CloseReason r) {
    switch (r) {
        case CloseReason::peer_reset: return "peer_reset";
        case CloseReason::local_close: return "local_close";
        case CloseReason::handshake_timeout: return "handshake_timeout";
        case CloseReason::peer_dead: return "peer_dead";
    }
    return "?";
}

const char* to_string(EventType t) {
    switch (t) {
        case EventType::accepted: return "accepted";
        case EventType::connected: return "connected";
        case EventType::connect_failed: return "connect_failed";
        case EventType::datagram: return "datagram";
        case EventType::closed: return "closed";
    }
    return "?";
}

const char* to_string(LogLevel l) {
    switch (l) {
        case LogLevel::error: return "error";
        case LogLevel::warn: return "warn";
        case LogLevel::info: return "info";
        case LogLevel::debug: return "debug";
    }
    return "?";
}

const char* to_string(DropReason r) {
    switch (r) {
        case DropReason::truncated: return "truncated";
        case DropReason::bad_ip_version: return "bad_ip_version";
        case DropReason::ipv4_options: return "ipv4_options";
        case DropReason::ipv4_bad_checksum: return "ipv4_bad_checksum";
        case DropReason::ipv4_fragment: return "ipv4_fragment";
        case DropReason::ipv6_extension_headers: return "ipv6_extension_headers";
        case DropReason::length_mismatch: return "length_mismatch";
        case DropReason::not_tcp: return "not_tcp";
        case DropReason::bad_data_offset: return "bad_data_offset";
        case DropReason::bad_tcp_checksum: return "bad_tcp_checksum";
        case DropReason::bad_address: return "bad_address";
        case DropReason::bad_port: return "bad_port";
        case DropReason::bad_flags: return "bad_flags";
        case DropReason::syn_with_payload: return "syn_with_payload";
        case DropReason::no_listener: return "no_listener";
        case DropReason::unknown_rst: return "unknown_rst";
        case DropReason::rst_not_exact: return "rst_not_exact";
        case DropReason::bad_ack: return "bad_ack";
        case DropReason::unexpected_syn: return "unexpected_syn";
        case DropReason::half_open_limit: return "half_open_limit";
        case DropReason::table_full: return "table_full";
        case DropReason::reply_rate_limited: return "reply_rate_limited";
        case DropReason::tx_queue_full: return "tx_queue_full";
        case DropReason::event_queue_full: return "event_queue_full";
        case DropReason::count_: break;
    }
    return "?";
}

const char* describe(DropReason r) {
    switch (r) {
        case DropReason::truncated: return "shorter than the headers it announces";
        case DropReason::bad_ip_version: return "IP version is neither 4 nor 6";
        case DropReason::ipv4_options: return "IPv4 header carries options (IHL != 5)";
        case DropReason::ipv4_bad_checksum: return "IPv4 header checksum is wrong";
        case DropReason::ipv4_fragment: return "IPv4 fragment (MF set or offset != 0)";
        case DropReason::ipv6_extension_headers: return "IPv6 extension headers";
        case DropReason::length_mismatch: return "IP length field disagrees with the packet size";
        case DropReason::not_tcp: return "IP protocol is not TCP";
        case DropReason::bad_data_offset: return "TCP data offset is below 5 or past the end";
        case DropReason::bad_tcp_checksum: return "TCP checksum is wrong";
        case DropReason::bad_address: return "source or destination address is not unicast";
        case DropReason::bad_port: return "source or destination port is 0";
        case DropReason::bad_flags: return "flag combination not acceptable in this state";
        case DropReason::syn_with_payload: return "SYN carries payload";
        case DropReason::no_listener: return "segment for an unknown connection (answered with RST)";
        case DropReason::unknown_rst: return "RST for an unknown connection";
        case DropReason::rst_not_exact: return "RST whose sequence number is not the exact one expected";
        case DropReason::bad_ack: return "ACK that does not acknowledge our SYN";
        case DropReason::unexpected_syn: return "SYN on an existing connection";
        case DropReason::half_open_limit: return "SYN refused: too many half-open connections";
        case DropReason::table_full: return "SYN refused: connection table full";
        case DropReason::reply_rate_limited: return "RST or challenge ACK suppressed by the rate limit";
        case DropReason::tx_queue_full: return "reply not queued: transmit queue full";
        case DropReason::event_queue_full: return "datagram dropped: application is not draining events";
        case DropReason::count_: break;
    }
    return "?";
}

uint64_t Stats::total_drops() const {
    uint64_t n = 0;
    for (uint64_t d : drops) n += d;
    return n;
}

IpAddr IpAddr::v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    IpAddr ip;
    ip.family = Family::v4;
    ip.bytes[0] = a;
    ip.bytes[1] = b;
    ip.bytes[2] = c;
    ip.bytes[3] = d;
    return ip;
}

IpAddr IpAddr::v6(const std::array<uint8_t, 16>& b) {
    IpAddr ip;
    ip.family = Family::v6;
    ip.bytes = b;
    return ip;
}

bool IpAddr::is_unspecified() const {
    for (size_t i = 0; i < size(); ++i)
        if (bytes[i] != 0) return false;
    return true;
}

std::optional<IpAddr> parse_ip(std::string_view text) {
    // inet_pton needs a NUL-terminated string; addresses are short.
    char buf[INET6_ADDRSTRLEN + 1];
    if (text.empty() || text.size() >= sizeof buf) return std::nullopt;
    // inet_pton would stop at an embedded NUL and accept what follows it.
    if (std::memchr(text.data(), '\0', text.size())) return std::nullopt;
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    IpAddr ip;
    if (inet_pton(AF_INET, buf, ip.bytes.data()) == 1) {
        ip.family = Family::v4;
        return ip;
    }
    if (inet_pton(AF_INET6, buf, ip.bytes.data()) == 1) {
        ip.family = Family::v6;
        return ip;
    }
    return std::nullopt;
}

namespace {
std::optional<uint16_t> parse_port(std::string_view text) {
    if (text.empty() || text.size() > 5) return std::nullopt;
    uint32_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<uint32_t>(c - '0');
    }
    if (v > 65535) return std::nullopt;
    return static_cast<uint16_t>(v);
}
}  // namespace

std::optional<Endpoint> parse_endpoint(std::string_view text) {
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        size_t close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        auto ip = parse_ip(host);
        if (!ip || ip->family != Family::v6) return std::nullopt;
        auto p = parse_port(port);
        if (!p) return std::nullopt;
        return Endpoint{*ip, *p};
    }
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    auto ip = parse_ip(host);
    if (!ip || ip->family != Family::v4) return std::nullopt;  // bare IPv6 needs brackets
    auto p = parse_port(port);
    if (!p) return std::nullopt;
    return Endpoint{*ip, *p};
}

std::string to_string(const IpAddr& ip) {
    char buf[INET6_ADDRSTRLEN];
    int af = ip.family == Family::v4 ? AF_INET : AF_INET6;
    if (!inet_ntop(af, ip.bytes.data(), buf, sizeof buf)) return "?";
    return buf;
}

std::string to_string(const Endpoint& ep) {
    std::string s;
    if (ep.addr.family == Family::v6) {
        s = "[" + to_string(ep.addr) + "]";
    } else {
        s = to_string(ep.addr);
    }
    s += ":";
    s += std::to_string(ep.port);
    return s;
}

namespace {

// ===========================================================================
// 2. Wire: bytes <-> segments. Everything here is pure and bounds-checked.
// One checked view of an IP + TCP packet (check_tcp_packet) is what every
// parser starts from: the Stack's decoder here, and the device offload code
// (section 2b) on both directions. Checksums are summed and written by one
// function each.
// ===========================================================================

constexpr size_t kIpv4HeaderLen = 20;
constexpr size_t kIpv6HeaderLen = 40;
constexpr size_t kTcpHeaderLen = 20;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kTtl = 64;
constexpr uint16_t kWindow = 65535;
constexpr uint8_t kWindowScale = 14;
constexpr uint8_t kPhantunSynOptions[] = {1, 3, 3, kWindowScale};  // NOP, window scale 14
constexpr uint16_t kIpv4FlagDf = 0x4000;
constexpr uint16_t kIpv4FlagMf = 0x2000;
constexpr uint16_t kIpv4FragOffsetMask = 0x1fff;

// TCP option kinds (RFC 9293, RFC 7323, RFC 2018) and the lengths the kernel writes.
constexpr uint8_t kOptEnd = 0, kOptNop = 1, kOptMss = 2, kOptWscale = 3, kOptSackOk = 4,
                  kOptTimestamp = 8;
constexpr size_t kTsOptionLen = 12;  // NOP, NOP, kind 8, length 10, TSval, TSecr
constexpr size_t kMaxTcpOptionsLen = 40;
constexpr uint8_t kMaxWindowScale = 14;  // RFC 7323 §2.3

constexpr uint8_t kFin = 0x01;
constexpr uint8_t kSyn = 0x02;
constexpr uint8_t kRst = 0x04;
constexpr uint8_t kPsh = 0x08;
constexpr uint8_t kAck = 0x10;
constexpr uint8_t kCwr = 0x80;

// IPv4 header field offsets.
constexpr size_t kV4VerIhl = 0, kV4TotalLen = 2, kV4Id = 4, kV4Frag = 6, kV4Ttl = 8,
                 kV4Proto = 9, kV4Checksum = 10, kV4Src = 12, kV4Dst = 16;
// IPv6 header field offsets.
constexpr size_t kV6PayloadLen = 4, kV6NextHeader = 6, kV6HopLimit = 7, kV6Src = 8,
                 kV6Dst = 24;
// TCP header field offsets.
constexpr size_t kTcpSport = 0, kTcpDport = 2, kTcpSeq = 4, kTcpAck = 8, kTcpOffset = 12,
                 kTcpFlags = 13, kTcpWindow = 14, kTcpChecksum = 16, kTcpUrgent = 18;

inline uint16_t load16(const uint8_t* p) {
    return static_cast<uint16_t>((p[0] << 8) | p[1]);
}
inline uint32_t load32(const uint8_t* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline void store16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}
inline void store32(uint8_t* p, uint32_t v) {
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}

size_t ip_header_len(Family f) { return f == Family::v4 ? kIpv4HeaderLen : kIpv6HeaderLen; }

// --- checksums ---------------------------------------------------------------

// Internet checksum (RFC 1071). Sums native-endian 32-bit words in a 64-bit
// accumulator; the one's-complement sum is byte-order independent, so the
// folded result is stored back with memcpy, not store16. Blocks summed
// separately combine by addition as long as each but the last has even length.
uint64_t csum_add(uint64_t acc, const uint8_t* p, size_t n) {
    while (n >= 4) {
        uint32_t w;
        std::memcpy(&w, p, 4);
        acc += w;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t w;
        std::memcpy(&w, p, 2);
        acc += w;
        p += 2;
        n -= 2;
    }
    if (n == 1) {
        uint8_t last[2] = {p[0], 0};
        uint16_t w;
        std::memcpy(&w, last, 2);
        acc += w;
    }
    return acc;
}

uint16_t csum_fold(uint64_t acc) {
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return static_cast<uint16_t>(acc);
}

// Sum of the TCP pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1) for `tcp_len`
// bytes of TCP, the addresses read from the IP header at `ip` (`ip_len` 20:
// IPv4, else IPv6). Source and destination are adjacent in both headers.
uint64_t pseudo_header_sum(const uint8_t* ip, size_t ip_len, size_t tcp_len) {
    uint8_t tail[8];
    if (ip_len == kIpv4HeaderLen) {
        tail[0] = 0;
        tail[1] = kProtoTcp;
        store16(tail + 2, static_cast<uint16_t>(tcp_len));
        return csum_add(csum_add(0, ip + kV4Src, 8), tail, 4);
    }
    store32(tail, static_cast<uint32_t>(tcp_len));
    tail[4] = tail[5] = tail[6] = 0;
    tail[7] = kProtoTcp;
    return csum_add(csum_add(0, ip + kV6Src, 32), tail, 8);
}

bool ipv4_header_checksum_ok(const uint8_t* ip) {
    return csum_fold(csum_add(0, ip, kIpv4HeaderLen)) == 0xffff;
}

// The one IPv4 header checksum writer.
void write_ipv4_checksum(uint8_t* ip) {
    store16(ip + kV4Checksum, 0);
    const uint16_t sum = static_cast<uint16_t>(~csum_fold(csum_add(0, ip, kIpv4HeaderLen)));
    std::memcpy(ip + kV4Checksum, &sum, 2);
}

// True when the `tcp_len` bytes after the IP header at `ip` sum correctly.
bool tcp_checksum_ok(const uint8_t* ip, size_t ip_len, size_t tcp_len) {
    const uint64_t acc = pseudo_header_sum(ip, ip_len, tcp_len);
    return csum_fold(csum_add(acc, ip + ip_len, tcp_len)) == 0xffff;
}

// What goes into a TCP checksum field: the full sum, or (CHECKSUM_PARTIAL,
// for a device that completes it) the folded, not complemented, pseudo-header
// sum the device starts from.
enum class TcpSum : uint8_t { full, partial };

// The one TCP checksum writer, for the `tcp_len` bytes after the IP header at
// `ip`, whose addresses must already be in place.
void write_tcp_checksum(uint8_t* ip, size_t ip_len, size_t tcp_len, TcpSum how) {
    uint8_t* t = ip + ip_len;
    store16(t + kTcpChecksum, 0);
    const uint64_t acc = pseudo_header_sum(ip, ip_len, tcp_len);
    const uint16_t sum = how == TcpSum::partial ? csum_fold(acc)
                                                : static_cast<uint16_t>(~csum_fold(csum_add(acc, t, tcp_len)));
    std::memcpy(t + kTcpChecksum, &sum, 2);
}

// --- the checked view ----------------------------------------------------------

bool is_ipv6_extension_header(uint8_t nh) {
    switch (nh) {
        case 0: case 43: case 44: case 50: case 51: case 60:
        case 135: case 139: case 140: case 253: case 254:
            return true;
        default:
            return false;
    }
}

// Why bytes are not a packet check_tcp_packet() accepts. The Stack and the
// device offload code each count these under their own names
// (drop_reason(), offload::rx_drop()).
enum class HeaderFault : uint8_t {
    ip_truncated,            // empty, or shorter than its IP header
    bad_ip_version,          // neither 4 nor 6
    ipv4_options,            // IHL != 5
    ip_length_short,         // the IP length claims more bytes than there are
    ip_length_long,          // the IP length claims fewer bytes than there are
    ipv4_bad_checksum,
    ipv4_fragment,           // MF set or a fragment offset
    ipv6_extension_headers,
    not_tcp,
    tcp_truncated,           // shorter than a TCP header
    bad_data_offset,         // TCP data offset below 5 or past the end
};

// Whether check_tcp_packet() sums the IPv4 header: always for input; not for
// the Stack's own output, which the offload code only looks at.
enum class Ipv4Checksum : uint8_t { verify, ignore };

// One IPv4 (IHL 5, not a fragment) or IPv6 (no extension headers) packet
// carrying TCP, whose IP length field is the buffer's size and whose TCP
// header lies within it. Made only by check_tcp_packet(); every field access
// below is then in bounds. The TCP checksum is not looked at.
struct TcpPacketView {
    const uint8_t* ip = nullptr;
    size_t size = 0;     // the whole packet
    size_t ip_len = 0;   // 20 or 40
    size_t tcp_hdr = 0;  // TCP header with options, 20..60

    bool v4() const { return ip_len == kIpv4HeaderLen; }
    const uint8_t* tcp() const { return ip + ip_len; }
    size_t tcp_len() const { return size - ip_len; }
    size_t header_len() const { return ip_len + tcp_hdr; }
    size_t payload_len() const { return size - header_len(); }
    // Source and destination address then the two ports: the flow's name.
    ByteView flow_key() const {
        return v4() ? ByteView(ip + kV4Src, 8 + 4) : ByteView(ip + kV6Src, 32 + 4);
    }
    uint8_t flags() const { return tcp()[kTcpFlags]; }
    uint32_t seq() const { return load32(tcp() + kTcpSeq); }
};

bool reject(HeaderFault f, HeaderFault& why) {
    why = f;
    return false;
}

bool check_ipv4(ByteView pkt, Ipv4Checksum checksum, HeaderFault& why) {
    const uint8_t* p = pkt.data;
    if (pkt.size < kIpv4HeaderLen) return reject(HeaderFault::ip_truncated, why);
    if ((p[kV4VerIhl] & 0x0f) != 5) return reject(HeaderFault::ipv4_options, why);
    const size_t total = load16(p + kV4TotalLen);
    if (total > pkt.size) return reject(HeaderFault::ip_length_short, why);
    if (total < pkt.size || total < kIpv4HeaderLen) return reject(HeaderFault::ip_length_long, why);
    if (checksum == Ipv4Checksum::verify && !ipv4_header_checksum_ok(p))
        return reject(HeaderFault::ipv4_bad_checksum, why);
    if (load16(p + kV4Frag) & (kIpv4FlagMf | kIpv4FragOffsetMask)) return reject(HeaderFault::ipv4_fragment, why);
    if (p[kV4Proto] != kProtoTcp) return reject(HeaderFault::not_tcp, why);
    return true;
}

bool check_ipv6(ByteView pkt, HeaderFault& why) {
    const uint8_t* p = pkt.data;
    if (pkt.size < kIpv6HeaderLen) return reject(HeaderFault::ip_truncated, why);
    const size_t total = kIpv6HeaderLen + load16(p + kV6PayloadLen);
    if (total > pkt.size) return reject(HeaderFault::ip_length_short, why);
    if (total < pkt.size) return reject(HeaderFault::ip_length_long, why);
    if (is_ipv6_extension_header(p[kV6NextHeader])) return reject(HeaderFault::ipv6_extension_headers, why);
    if (p[kV6NextHeader] != kProtoTcp) return reject(HeaderFault::not_tcp, why);
    return true;
}

// The one header check: IP, then the TCP header's bounds.
bool check_tcp_packet(ByteView pkt, Ipv4Checksum checksum, TcpPacketView& view, HeaderFault& why) {
    if (pkt.size == 0 || pkt.data == nullptr) return reject(HeaderFault::ip_truncated, why);
    const uint8_t version = pkt.data[0] >> 4;
    if (version == 4) {
        if (!check_ipv4(pkt, checksum, why)) return false;
        view.ip_len = kIpv4HeaderLen;
    } else if (version == 6) {
        if (!check_ipv6(pkt, why)) return false;
        view.ip_len = kIpv6HeaderLen;
    } else {
        return reject(HeaderFault::bad_ip_version, why);
    }
    const size_t tcp_len = pkt.size - view.ip_len;
    if (tcp_len < kTcpHeaderLen) return reject(HeaderFault::tcp_truncated, why);
    const size_t offset = static_cast<size_t>(pkt.data[view.ip_len + kTcpOffset] >> 4) * 4;
    if (offset < kTcpHeaderLen || offset > tcp_len) return reject(HeaderFault::bad_data_offset, why);
    view.ip = pkt.data;
    view.size = pkt.size;
    view.tcp_hdr = offset;
    return true;
}

// --- decode: a checked packet into a Segment -----------------------------------

// The TCP options the stack reads: what a SYN offers, and timestamps.
struct TcpOptions {
    bool has_mss = false, has_wscale = false, sack_ok = false, has_ts = false;
    uint16_t mss = 0;
    uint8_t wscale = 0;
    uint32_t tsval = 0, tsecr = 0;
};

// Malformed options end the walk and leave what was read, as the kernel's
// tcp_parse_options does: options never make a segment drop.
void parse_tcp_options(ByteView o, TcpOptions& out) {
    size_t i = 0;
    while (i < o.size) {
        const uint8_t kind = o.data[i];
        if (kind == kOptEnd) return;
        if (kind == kOptNop) { ++i; continue; }
        if (i + 1 >= o.size) return;
        const size_t len = o.data[i + 1];
        if (len < 2 || i + len > o.size) return;
        const uint8_t* v = o.data + i + 2;
        if (kind == kOptMss && len == 4) {
            out.has_mss = true;
            out.mss = load16(v);
        } else if (kind == kOptWscale && len == 3) {
            out.has_wscale = true;
            out.wscale = std::min(v[0], kMaxWindowScale);
        } else if (kind == kOptSackOk && len == 2) {
            out.sack_ok = true;
        } else if (kind == kOptTimestamp && len == 10) {
            out.has_ts = true;
            out.tsval = load32(v);
            out.tsecr = load32(v + 4);
        }
        i += len;
    }
}

// A decoded, validated segment. Views point into the input buffer.
struct Segment {
    IpAddr src, dst;
    uint16_t sport = 0, dport = 0;
    uint32_t seq = 0, ack = 0;
    uint8_t flags = 0;
    uint16_t window = 0;  // as written (scaled by the sender's shift outside SYNs)
    TcpOptions opts;
    ByteView payload;

    bool has(uint8_t f) const { return (flags & f) != 0; }
    // Sequence space the segment occupies: payload plus SYN and FIN.
    uint32_t seq_len() const {
        return static_cast<uint32_t>(payload.size) + (has(kSyn) ? 1 : 0) + (has(kFin) ? 1 : 0);
    }
};

bool is_unicast(const IpAddr& ip) {
    if (ip.is_unspecified()) return false;
    if (ip.family == Family::v4) {
        if (ip.bytes[0] >= 224) return false;  // multicast, reserved and broadcast
        return true;
    }
    return ip.bytes[0] != 0xff;  // multicast
}

// The Stack's name for a header fault (its drop counters predate the view).
DropReason drop_reason(HeaderFault f) {
    switch (f) {
        case HeaderFault::ip_truncated: return DropReason::truncated;
        case HeaderFault::bad_ip_version: return DropReason::bad_ip_version;
        case HeaderFault::ipv4_options: return DropReason::ipv4_options;
        case HeaderFault::ip_length_short: return DropReason::truncated;
        case HeaderFault::ip_length_long: return DropReason::length_mismatch;
        case HeaderFault::ipv4_bad_checksum: return DropReason::ipv4_bad_checksum;
        case HeaderFault::ipv4_fragment: return DropReason::ipv4_fragment;
        case HeaderFault::ipv6_extension_headers: return DropReason::ipv6_extension_headers;
        case HeaderFault::not_tcp: return DropReason::not_tcp;
        case HeaderFault::tcp_truncated: return DropReason::truncated;
        case HeaderFault::bad_data_offset: return DropReason::bad_data_offset;
    }
    return DropReason::truncated;
}

IpAddr address_at(const uint8_t* p, Family f) {
    IpAddr a;
    a.family = f;
    std::memcpy(a.bytes.data(), p, f == Family::v4 ? 4 : 16);
    return a;
}

// The fields of a checked packet; kernel_verified skips only the TCP
// checksum (see RxChecksum in faketcp.h).
void decode_fields(const TcpPacketView& v, Segment& seg) {
    const Family f = v.v4() ? Family::v4 : Family::v6;
    seg.src = address_at(v.ip + (v.v4() ? kV4Src : kV6Src), f);
    seg.dst = address_at(v.ip + (v.v4() ? kV4Dst : kV6Dst), f);
    const uint8_t* t = v.tcp();
    seg.sport = load16(t + kTcpSport);
    seg.dport = load16(t + kTcpDport);
    seg.seq = load32(t + kTcpSeq);
    seg.ack = load32(t + kTcpAck);
    seg.flags = t[kTcpFlags];
    seg.window = load16(t + kTcpWindow);
    if (v.tcp_hdr > kTcpHeaderLen) parse_tcp_options(ByteView(t + kTcpHeaderLen, v.tcp_hdr - kTcpHeaderLen), seg.opts);
    seg.payload = ByteView(t + v.tcp_hdr, v.payload_len());
}

// Decode one IP packet into `seg`; false with `why` when it must be dropped.
bool parse_segment(ByteView pkt, Segment& seg, RxChecksum checksum, DropReason& why) {
    TcpPacketView v;
    HeaderFault fault;
    if (!check_tcp_packet(pkt, Ipv4Checksum::verify, v, fault)) {
        why = drop_reason(fault);
        return false;
    }
    if (checksum == RxChecksum::verify && !tcp_checksum_ok(v.ip, v.ip_len, v.tcp_len())) {
        why = DropReason::bad_tcp_checksum;
        return false;
    }
    decode_fields(v, seg);
    if (!is_unicast(seg.src) || !is_unicast(seg.dst)) { why = DropReason::bad_address; return false; }
    if (seg.sport == 0 || seg.dport == 0) { why = DropReason::bad_port; return false; }
    return true;
}

// --- encode: a SegmentSpec into bytes ------------------------------------------

// What to put on the wire for one segment.
struct SegmentSpec {
    SegmentSpec(const Endpoint* l, const Endpoint* r, uint32_t sq, uint32_t ak, uint8_t fl,
                ByteView data, bool partial = false)
        : local(l), remote(r), seq(sq), ack(ak), flags(fl), payload(data), checksum_partial(partial) {}
    const Endpoint* local;
    const Endpoint* remote;
    uint32_t seq;
    uint32_t ack;
    uint8_t flags;
    ByteView payload;
    bool checksum_partial = false;  // leave the TCP checksum for the device to complete
    uint16_t window = kWindow;
    ByteView options;  // TCP options, a multiple of 4 bytes, written verbatim
    uint16_t ip_id = 0;
    uint32_t flow_label = 0;  // IPv6, 20 bits
};

size_t segment_size(const SegmentSpec& s) {
    return ip_header_len(s.local->addr.family) + kTcpHeaderLen + s.options.size + s.payload.size;
}

void write_ipv4_header(uint8_t* p, const SegmentSpec& s, size_t total) {
    p[kV4VerIhl] = 0x45;
    p[1] = 0;  // TOS
    store16(p + kV4TotalLen, static_cast<uint16_t>(total));
    store16(p + kV4Id, s.ip_id);
    store16(p + kV4Frag, kIpv4FlagDf);
    p[kV4Ttl] = kTtl;
    p[kV4Proto] = kProtoTcp;
    std::memcpy(p + kV4Src, s.local->addr.bytes.data(), 4);
    std::memcpy(p + kV4Dst, s.remote->addr.bytes.data(), 4);
    write_ipv4_checksum(p);
}

void write_ipv6_header(uint8_t* p, const SegmentSpec& s, size_t tcp_len) {
    store32(p, 0x60000000u | (s.flow_label & 0xfffffu));  // version 6, traffic class 0
    store16(p + kV6PayloadLen, static_cast<uint16_t>(tcp_len));
    p[kV6NextHeader] = kProtoTcp;
    p[kV6HopLimit] = kTtl;
    std::memcpy(p + kV6Src, s.local->addr.bytes.data(), 16);
    std::memcpy(p + kV6Dst, s.remote->addr.bytes.data(), 16);
}

// Encode `s` into `out` (at least segment_size(s) bytes). Returns the size.
size_t write_segment(uint8_t* out, const SegmentSpec& s) {
    const size_t ip_len = ip_header_len(s.local->addr.family);
    const size_t tcp_hdr = kTcpHeaderLen + s.options.size;
    const size_t tcp_len = tcp_hdr + s.payload.size;
    const size_t total = ip_len + tcp_len;
    if (s.local->addr.family == Family::v4) {
        write_ipv4_header(out, s, total);
    } else {
        write_ipv6_header(out, s, tcp_len);
    }
    uint8_t* t = out + ip_len;
    store16(t + kTcpSport, s.local->port);
    store16(t + kTcpDport, s.remote->port);
    store32(t + kTcpSeq, s.seq);
    store32(t + kTcpAck, s.ack);
    t[kTcpOffset] = static_cast<uint8_t>((tcp_hdr / 4) << 4);
    t[kTcpFlags] = s.flags;
    store16(t + kTcpWindow, s.window);
    store16(t + kTcpUrgent, 0);
    if (s.options.size) std::memcpy(t + kTcpHeaderLen, s.options.data, s.options.size);
    if (s.payload.size) std::memcpy(t + tcp_hdr, s.payload.data, s.payload.size);
    write_tcp_checksum(out, ip_len, tcp_len, s.checksum_partial ? TcpSum::partial : TcpSum::full);
    return total;
}

}  // namespace

// ===========================================================================
// 2b. Device offload: virtio-net headers, GSO coalesce (tx), GRO split (rx).
// Pure functions over buffers, declared in faketcp.h (namespace offload),
// built on the wire section's checked view and checksum writers. tun.cpp's
// batched reads and writes (Tun::read/write with a TunBatch) use them.
// ===========================================================================
//
// Conventions, checked against Linux (include/linux/virtio_net.h,
// net/ipv4/tcp_offload.c, net/ipv4/af_inet.c) and wireguard-go's tun/:
//  - NEEDS_CSUM is CHECKSUM_PARTIAL: the device sums the bytes from
//    csum_start to the end, seeded with what the checksum field holds, and
//    stores the complement at csum_start + csum_offset. So the field holds
//    the folded, NOT complemented, pseudo-header sum (addresses, protocol 6,
//    TCP length). In a super-packet that length is the whole super-packet's
//    TCP length: tcp_gso_segment() shifts the partial sum of each segment by
//    (segment length - whole length), and the kernel's own TSO packets carry
//    the same value (~tcp_v4_check(skb->len, saddr, daddr, 0)).
//  - virtio_net_hdr_to_skb() needs csum_offset 16 for TCP GSO, and
//    tcp_gso_segment() refuses a GSO skb whose payload is <= gso_size, so a
//    run has at least two segments and always sets NEEDS_CSUM with
//    csum_start = the IP header length.
//  - IPv4 ID: inet_gso_segment() gives segment k the ID first + k unless the
//    skb is SKB_GSO_TCP_FIXEDID, which a virtio-net header cannot express.
//    So segments of a super-packet leave with IDs 0, 1, 2, ... instead of all
//    0. Harmless: with DF set the datagrams are atomic, RFC 6864 lets their ID
//    be any value, and phantun, conntrack and NAT ignore it. On receive every
//    segment keeps the super-packet's ID (GRO of fixed-ID DF traffic records
//    FIXEDID; the Stack ignores the ID).
//  - On receive, tun_put_user() (virtio_net_hdr_from_skb) sets NEEDS_CSUM for
//    a CHECKSUM_PARTIAL skb and DATA_VALID for a CHECKSUM_UNNECESSARY one;
//    GRO (tcp_gro_receive) merges only segments whose checksum it verified
//    and marks the result CHECKSUM_PARTIAL. So every read with a flag or GSO
//    carries a TCP checksum the kernel vouches for, and StackDriver neither
//    computes nor verifies it (TcpChecksumFill::leave, RxChecksum). A read
//    with neither is summed by the Stack as on a TUN without offload.

namespace offload {

namespace {

// What gso_run() needs to know of one packet; ip_len 0: it cannot be in a run.
struct TxShape {
    size_t ip_len = 0;
    size_t tcp_len = 0;  // TCP header with options
    size_t payload = 0;
    uint32_t seq = 0;
};

TxShape tx_shape(ByteView p) {
    TxShape s;
    TcpPacketView v;
    HeaderFault fault;
    // The Stack's own packets: their IPv4 header checksum is not read (the
    // kernel writes one per segment).
    if (!check_tcp_packet(p, Ipv4Checksum::ignore, v, fault)) return s;
    // Options are copied into every segment by the kernel (tcp_gso_segment),
    // so packets with equal options (the linux profile's timestamps within
    // one millisecond) coalesce like bare headers. PSH, set on each linux
    // profile datagram, is kept by the kernel on the last segment only.
    if ((v.tcp()[kTcpOffset] & 0x0f) != 0) return s;  // reserved bits
    if (v.flags() != kAck && v.flags() != (kAck | kPsh)) return s;
    if (v.payload_len() == 0) return s;
    s.ip_len = v.ip_len;
    s.tcp_len = v.tcp_hdr;
    s.payload = v.payload_len();
    s.seq = v.seq();
    return s;
}

// Every header byte equal but the IP lengths, the IPv4 header checksum and
// ID, the TCP seq and the TCP checksum (options included: tcp_len bytes).
bool same_headers(const uint8_t* a, const uint8_t* b, size_t ip_len, size_t tcp_len) {
    if (ip_len == kIpv4HeaderLen) {
        if (std::memcmp(a, b, kV4TotalLen) != 0 ||
            std::memcmp(a + kV4Frag, b + kV4Frag, kV4Checksum - kV4Frag) != 0 ||
            std::memcmp(a + kV4Src, b + kV4Src, 8) != 0)
            return false;
    } else {
        if (std::memcmp(a, b, kV6PayloadLen) != 0 ||
            std::memcmp(a + kV6NextHeader, b + kV6NextHeader, kIpv6HeaderLen - kV6NextHeader) != 0)
            return false;
    }
    const uint8_t* ta = a + ip_len;
    const uint8_t* tb = b + ip_len;
    return std::memcmp(ta, tb, kTcpSeq) == 0 &&
           std::memcmp(ta + kTcpAck, tb + kTcpAck, kTcpChecksum - kTcpAck) == 0 &&
           std::memcmp(ta + kTcpUrgent, tb + kTcpUrgent, tcp_len - kTcpUrgent) == 0;
}

// The kernel gives segment i of a TCPv4 super-packet the ID first + i
// (inet_gso_segment; SKB_GSO_TCP_FIXEDID is not set for a TUN write), which is
// the linux profile's per-packet counter; the phantun profile's fixed ID 0
// comes out as 0, 1, 2... either way, as before. A run takes packets whose ID
// is the first one's, or the first one's + i.
bool id_fits_run(const uint8_t* first, const uint8_t* p, size_t i, size_t ip_len, bool& counting) {
    if (ip_len != kIpv4HeaderLen) return true;
    const uint16_t id0 = load16(first + kV4Id);
    const uint16_t id = load16(p + kV4Id);
    if (i == 1) counting = id != id0;
    return id == (counting ? static_cast<uint16_t>(id0 + i) : id0);
}

}  // namespace

void encode(const VnetHdr& h, uint8_t* out) {
    out[0] = h.flags;
    out[1] = h.gso_type;
    std::memcpy(out + 2, &h.hdr_len, 2);
    std::memcpy(out + 4, &h.gso_size, 2);
    std::memcpy(out + 6, &h.csum_start, 2);
    std::memcpy(out + 8, &h.csum_offset, 2);
}

VnetHdr decode(const uint8_t* in) {
    VnetHdr h;
    h.flags = in[0];
    h.gso_type = in[1];
    std::memcpy(&h.hdr_len, in + 2, 2);
    std::memcpy(&h.gso_size, in + 4, 2);
    std::memcpy(&h.csum_start, in + 6, 2);
    std::memcpy(&h.csum_offset, in + 8, 2);
    return h;
}

size_t gso_run(const ByteView* packets, size_t count) {
    if (count == 0) return 0;
    const TxShape first = tx_shape(packets[0]);
    if (first.ip_len == 0) return 1;
    size_t total = packets[0].size;
    uint32_t next_seq = first.seq + static_cast<uint32_t>(first.payload);
    const size_t limit = std::min(count, kMaxGsoSegments);
    bool counting_ids = false;
    size_t n = 1;
    while (n < limit) {
        const TxShape s = tx_shape(packets[n]);
        if (s.ip_len != first.ip_len) break;       // not coalescable, or the other family
        if (s.tcp_len != first.tcp_len) break;
        if (s.payload > first.payload) break;      // segments are gso_size, the last may be shorter
        if (s.seq != next_seq) break;              // the kernel advances seq by gso_size
        if (total + s.payload > kMaxGsoPacket) break;
        if (!same_headers(packets[0].data, packets[n].data, first.ip_len, first.tcp_len)) break;
        if (!id_fits_run(packets[0].data, packets[n].data, n, first.ip_len, counting_ids)) break;
        total += s.payload;
        next_seq += static_cast<uint32_t>(s.payload);
        ++n;
        if (s.payload < first.payload) break;      // a shorter segment ends the run
    }
    return n;
}

void plain_header(ByteView packet, TxChecksum checksum, uint8_t* out) {
    VnetHdr v;
    TcpPacketView view;
    HeaderFault fault;
    // The check fails only for bytes the Stack never emits; those go out as they are.
    if (checksum == TxChecksum::partial && check_tcp_packet(packet, Ipv4Checksum::ignore, view, fault)) {
        v.flags = kNeedsCsum;  // the kernel (or the NIC) completes the sum
        v.csum_start = static_cast<uint16_t>(view.ip_len);
        v.csum_offset = static_cast<uint16_t>(kTcpChecksum);
    }
    encode(v, out);
}

size_t gso_header(const ByteView* packets, size_t run, uint8_t* out) {
    if (run < 2 || gso_run(packets, run) != run) return 0;
    const TxShape first = tx_shape(packets[0]);
    const size_t ip_len = first.ip_len;
    const size_t hdr = ip_len + first.tcp_len;
    size_t total = hdr;
    for (size_t i = 0; i < run; ++i) total += packets[i].size - hdr;

    VnetHdr v;
    v.flags = kNeedsCsum;
    v.gso_type = ip_len == kIpv4HeaderLen ? kGsoTcpv4 : kGsoTcpv6;
    v.hdr_len = static_cast<uint16_t>(hdr);
    v.gso_size = static_cast<uint16_t>(first.payload);
    v.csum_start = static_cast<uint16_t>(ip_len);
    v.csum_offset = static_cast<uint16_t>(kTcpChecksum);
    encode(v, out);

    uint8_t* ip = out + kVnetHdrLen;
    std::memcpy(ip, packets[0].data, hdr);
    const size_t tcp_len = total - ip_len;
    if (ip_len == kIpv4HeaderLen) {
        store16(ip + kV4TotalLen, static_cast<uint16_t>(total));
        write_ipv4_checksum(ip);
    } else {
        store16(ip + kV6PayloadLen, static_cast<uint16_t>(tcp_len));
    }
    write_tcp_checksum(ip, ip_len, tcp_len, TcpSum::partial);  // the payloads are not here: partial only
    return kVnetHdrLen + hdr;
}

namespace {

constexpr uint32_t kNoPacket = UINT32_MAX;

// The bytes naming a packet's TCP flow: addresses and ports, contiguous in
// a checked packet. Empty for anything else.
ByteView flow_key(ByteView p) {
    TcpPacketView v;
    HeaderFault fault;
    if (!check_tcp_packet(p, Ipv4Checksum::ignore, v, fault)) return {};
    return v.flow_key();
}

// Not seeded: the keys are our own outgoing flows, which a peer cannot
// choose freely, and a collision costs only a probe.
uint32_t flow_hash(ByteView key) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < key.size; ++i) h = (h ^ key.data[i]) * 16777619u;
    return h ^ (h >> 15);
}

}  // namespace

void FlowGrouper::reserve(size_t count) {
    if (next_.size() >= count && count > 0) return;
    next_.assign(count, kNoPacket);
    tail_.assign(count, kNoPacket);
    heads_.assign(count, kNoPacket);
    size_t table = 16;
    while (table < 2 * count) table <<= 1;
    slots_.assign(table, kNoPacket);
}

void FlowGrouper::group(const ByteView* packets, size_t count, uint32_t* order) {
    if (count > next_.size()) reserve(count);
    size_t mask = 16;
    while (mask < 2 * count) mask <<= 1;
    mask -= 1;  // a table of at least twice the packets: probes stay short
    std::fill(slots_.begin(), slots_.begin() + static_cast<std::ptrdiff_t>(mask + 1), kNoPacket);
    size_t flows = 0;
    for (uint32_t i = 0; i < count; ++i) {
        next_[i] = kNoPacket;
        const ByteView key = flow_key(packets[i]);
        if (key.size == 0) {  // not a flow we can name: a group of its own
            tail_[i] = i;
            heads_[flows++] = i;
            continue;
        }
        size_t h = flow_hash(key) & mask;
        for (;;) {
            const uint32_t head = slots_[h];
            if (head == kNoPacket) {
                slots_[h] = i;
                tail_[i] = i;
                heads_[flows++] = i;
                break;
            }
            const ByteView other = flow_key(packets[head]);
            if (other.size == key.size && std::memcmp(other.data, key.data, key.size) == 0) {
                next_[tail_[head]] = i;
                tail_[head] = i;
                break;
            }
            h = (h + 1) & mask;
        }
    }
    size_t k = 0;
    for (size_t f = 0; f < flows; ++f)
        for (uint32_t j = heads_[f]; j != kNoPacket; j = next_[j]) order[k++] = j;
}

size_t coalesce(const ByteView* packets, size_t run, uint8_t* out, size_t cap) {
    uint8_t hdr[kMaxGsoHeader];
    const size_t hl = gso_header(packets, run, hdr);
    if (hl == 0) return 0;
    const size_t skip = hl - kVnetHdrLen;
    size_t need = hl;
    for (size_t i = 0; i < run; ++i) need += packets[i].size - skip;
    if (need > cap) return 0;
    std::memcpy(out, hdr, hl);
    size_t pos = hl;
    for (size_t i = 0; i < run; ++i) {
        std::memcpy(out + pos, packets[i].data + skip, packets[i].size - skip);
        pos += packets[i].size - skip;
    }
    return pos;
}

namespace {

// The offload code's name for a header fault: coarser than the Stack's, as
// the counters of StackDriver::OffloadStats always were.
RxDrop rx_drop(HeaderFault f) {
    switch (f) {
        case HeaderFault::ip_truncated: return RxDrop::bad_ip_header;
        case HeaderFault::bad_ip_version: return RxDrop::bad_ip_header;
        case HeaderFault::ipv4_options: return RxDrop::bad_ip_header;
        case HeaderFault::ip_length_short: return RxDrop::length_mismatch;
        case HeaderFault::ip_length_long: return RxDrop::length_mismatch;
        case HeaderFault::ipv4_bad_checksum: return RxDrop::bad_ip_header;
        case HeaderFault::ipv4_fragment: return RxDrop::bad_ip_header;
        case HeaderFault::ipv6_extension_headers: return RxDrop::bad_ip_header;
        case HeaderFault::not_tcp: return RxDrop::not_tcp;
        case HeaderFault::tcp_truncated: return RxDrop::bad_tcp_header;
        case HeaderFault::bad_data_offset: return RxDrop::bad_tcp_header;
    }
    return RxDrop::bad_ip_header;
}

}  // namespace

const char* to_string(RxDrop r) {
    switch (r) {
        case RxDrop::vnet_truncated: return "vnet_truncated";
        case RxDrop::vnet_bad_flags: return "vnet_bad_flags";
        case RxDrop::vnet_bad_gso_type: return "vnet_bad_gso_type";
        case RxDrop::vnet_bad_gso_size: return "vnet_bad_gso_size";
        case RxDrop::vnet_bad_csum: return "vnet_bad_csum";
        case RxDrop::gso_family_mismatch: return "gso_family_mismatch";
        case RxDrop::bad_ip_header: return "bad_ip_header";
        case RxDrop::length_mismatch: return "length_mismatch";
        case RxDrop::not_tcp: return "not_tcp";
        case RxDrop::bad_tcp_header: return "bad_tcp_header";
        case RxDrop::no_room: return "no_room";
        case RxDrop::count_: break;
    }
    return "unknown";
}

size_t RxPacket::segment_size(size_t i) const {
    if (kind != Kind::segments || i >= count) return 0;
    const size_t payload = packet.size - header_len;
    return header_len + std::min(gso_size, payload - i * gso_size);
}

namespace {

bool rx_reject(RxDrop d, RxDrop& why) {
    why = d;
    return false;
}

// The vnet header's own fields, before the packet is looked at.
bool vnet_fields_ok(const VnetHdr& v, RxDrop& why) {
    if (v.flags & ~(kNeedsCsum | kDataValid)) return rx_reject(RxDrop::vnet_bad_flags, why);
    const uint8_t gso = v.gso_type & static_cast<uint8_t>(~kGsoEcn);
    if (v.gso_type != kGsoNone && gso != kGsoTcpv4 && gso != kGsoTcpv6)
        return rx_reject(RxDrop::vnet_bad_gso_type, why);
    if (v.gso_type != kGsoNone && v.gso_size == 0) return rx_reject(RxDrop::vnet_bad_gso_size, why);
    return true;
}

// A packet with offload metadata: its family must be the GSO type's, its
// headers pass the checked view, and a partial checksum must be the TCP one.
// Header lengths come from the packet; hdr_len is only the kernel's hint
// about its linear part (wireguard-go: "don't trust hdrLen").
bool offload_packet_ok(ByteView pkt, const VnetHdr& v, TcpPacketView& view, RxDrop& why) {
    if (pkt.size == 0) return rx_reject(RxDrop::bad_ip_header, why);
    const uint8_t gso = v.gso_type & static_cast<uint8_t>(~kGsoEcn);
    const uint8_t version = pkt.data[0] >> 4;
    if ((gso == kGsoTcpv4 && version != 4) || (gso == kGsoTcpv6 && version != 6))
        return rx_reject(RxDrop::gso_family_mismatch, why);
    HeaderFault fault;
    if (!check_tcp_packet(pkt, Ipv4Checksum::verify, view, fault)) return rx_reject(rx_drop(fault), why);
    if ((v.flags & kNeedsCsum) && (v.csum_start != view.ip_len || v.csum_offset != kTcpChecksum))
        return rx_reject(RxDrop::vnet_bad_csum, why);
    return true;
}

}  // namespace

RxPacket parse_rx(uint8_t* buf, size_t len, TcpChecksumFill fill) {
    RxPacket rx;
    auto drop = [&rx](RxDrop why) {
        rx.kind = RxPacket::Kind::drop;
        rx.drop = why;
        return rx;
    };
    if (buf == nullptr || len < kVnetHdrLen) return drop(RxDrop::vnet_truncated);
    const VnetHdr v = decode(buf);
    uint8_t* p = buf + kVnetHdrLen;
    rx.packet = ByteView(p, len - kVnetHdrLen);
    RxDrop why;
    if (!vnet_fields_ok(v, why)) return drop(why);
    // Whatever the kernel vouched for (faketcp.h, RxChecksum): its DATA_VALID,
    // a partial sum, or GSO (only made of segments it verified or summed itself).
    if ((v.flags & (kDataValid | kNeedsCsum)) != 0 || v.gso_type != kGsoNone)
        rx.checksum = RxChecksum::kernel_verified;
    if (v.gso_type == kGsoNone && (v.flags & kNeedsCsum) == 0) {
        rx.kind = RxPacket::Kind::plain;  // nothing to do: the Stack checks the rest
        return rx;
    }
    TcpPacketView view;
    if (!offload_packet_ok(rx.packet, v, view, why)) return drop(why);
    if (v.gso_type == kGsoNone || view.payload_len() <= v.gso_size) {
        // One segment: complete its checksum here, in full, unless told not to.
        if (fill == TcpChecksumFill::complete) write_tcp_checksum(p, view.ip_len, view.tcp_len(), TcpSum::full);
        rx.kind = RxPacket::Kind::plain;
        rx.checksummed = true;
        return rx;
    }
    rx.kind = RxPacket::Kind::segments;
    rx.header_len = view.header_len();
    rx.gso_size = v.gso_size;
    rx.count = (view.payload_len() + rx.gso_size - 1) / rx.gso_size;
    return rx;
}

size_t rx_segment(const RxPacket& rx, size_t i, uint8_t* out, TcpChecksumFill fill) {
    const size_t size = rx.segment_size(i);
    if (size == 0) return 0;
    const uint8_t* p = rx.packet.data;
    const bool v6 = (p[0] >> 4) == 6;
    const size_t ip_len = v6 ? kIpv6HeaderLen : kIpv4HeaderLen;
    const size_t offset = i * rx.gso_size;
    std::memcpy(out, p, rx.header_len);
    std::memcpy(out + rx.header_len, p + rx.header_len + offset, size - rx.header_len);
    const size_t tcp_len = size - ip_len;
    if (v6) {
        store16(out + kV6PayloadLen, static_cast<uint16_t>(tcp_len));
    } else {
        store16(out + kV4TotalLen, static_cast<uint16_t>(size));
        write_ipv4_checksum(out);
    }
    uint8_t* t = out + ip_len;
    store32(t + kTcpSeq, load32(p + ip_len + kTcpSeq) + static_cast<uint32_t>(offset));
    uint8_t flags = t[kTcpFlags];
    if (i + 1 < rx.count) flags = static_cast<uint8_t>(flags & ~(kFin | kPsh));
    if (i > 0) flags = static_cast<uint8_t>(flags & ~kCwr);
    t[kTcpFlags] = flags;
    // `leave`: the field keeps the super-packet's partial sum; the segment
    // goes only to a Stack told the kernel verified it (RxChecksum).
    if (fill == TcpChecksumFill::complete) write_tcp_checksum(out, ip_len, tcp_len, TcpSum::full);
    return size;
}

SplitResult split(uint8_t* buf, size_t len, uint8_t* out, size_t cap, ByteView* segs,
                  size_t max_segs) {
    SplitResult r;
    const RxPacket rx = parse_rx(buf, len);
    switch (rx.kind) {
        case RxPacket::Kind::drop:
            r.drop = rx.drop;
            return r;
        case RxPacket::Kind::plain:
            if (max_segs < 1) {
                r.drop = RxDrop::no_room;
                return r;
            }
            segs[0] = rx.packet;
            r.count = 1;
            return r;
        case RxPacket::Kind::segments: {
            if (rx.count > max_segs) {
                r.drop = RxDrop::no_room;
                return r;
            }
            size_t pos = 0;
            for (size_t i = 0; i < rx.count; ++i) {
                const size_t size = rx.segment_size(i);
                if (cap - pos < size) {
                    r.drop = RxDrop::no_room;
                    return r;
                }
                rx_segment(rx, i, out + pos);
                segs[i] = ByteView(out + pos, size);
                pos += size;
            }
            r.count = rx.count;
            return r;
        }
    }
    return r;
}

}  // namespace offload

namespace {

// ===========================================================================
// 3. Connection: one fake-TCP connection's state and its state machine.
//    Functions over a Conn: what they send (Reply values) and what the
//    application should hear go to a ConnOutput, and the stack decides where
//    that lands. No queue, no table, no clock of its own.
// ===========================================================================

// --- 3a. State ----------------------------------------------------------------

// RFC 1982 serial-number arithmetic on 32-bit sequence numbers: lengths add
// with wrap-around, and order holds within half the space.
struct SeqNum {
    uint32_t v = 0;
    SeqNum() = default;
    constexpr explicit SeqNum(uint32_t raw) : v(raw) {}
    friend SeqNum operator+(SeqNum a, uint32_t n) { return SeqNum(a.v + n); }
    friend SeqNum operator-(SeqNum a, uint32_t n) { return SeqNum(a.v - n); }
    // How far a lies ahead of b, modulo 2^32.
    friend uint32_t operator-(SeqNum a, SeqNum b) { return a.v - b.v; }
    SeqNum& operator+=(uint32_t n) {
        v += n;
        return *this;
    }
    friend bool operator==(SeqNum a, SeqNum b) { return a.v == b.v; }
    friend bool operator!=(SeqNum a, SeqNum b) { return a.v != b.v; }
    friend bool seq_before(SeqNum a, SeqNum b) { return static_cast<int32_t>(a.v - b.v) < 0; }
    friend bool seq_after(SeqNum a, SeqNum b) { return seq_before(b, a); }
    // Distance from b to a, ignoring direction.
    friend uint32_t seq_distance(SeqNum a, SeqNum b) {
        uint32_t d = a.v - b.v;
        return static_cast<int32_t>(d) < 0 ? (0u - d) : d;
    }
};

// A segment's sequence numbers as SeqNum (the wire section keeps raw fields).
SeqNum seq_of(const Segment& s) { return SeqNum(s.seq); }
SeqNum ack_of(const Segment& s) { return SeqNum(s.ack); }
// The end of the segment's payload: seq + payload length.
SeqNum payload_end(const Segment& s) { return seq_of(s) + static_cast<uint32_t>(s.payload.size); }

constexpr TimePoint kNever = TimePoint::max();

enum class SlotState : uint8_t {
    free,
    live,     // in the index, reachable by packets
    closing,  // ended without the app asking; held until the app drains its terminal event
};

// What a linux_tcp connection keeps beyond the phantun profile's state. The
// kernel names are in the comments: each field mirrors one of tcp_sock's.
struct LinuxState {
    uint32_t ts_offset = 0;   // tsoffset: TSval = millisecond clock + this
    uint32_t ts_recent = 0;   // rx_opt.ts_recent: the peer's TSval, echoed as TSecr
    SeqNum snd_una;           // the peer's highest acknowledgement
    uint32_t snd_wnd = 0;     // the peer's window in bytes, from snd_una on
    uint32_t rcv_wnd = 0;     // rcv_ssthresh: the window we advertise, in bytes
    uint32_t rcv_wnd_clamp = 0;  // window_clamp
    uint32_t rcv_mss = 0;     // icsk_ack.rcv_mss: the largest payload received
    uint32_t adv_mss = 0;     // advmss: our MSS less the timestamp option
    uint32_t flow_label = 0;  // IPv6 (net.ipv6.auto_flowlabels)
    uint16_t ip_id = 0;       // inet_id: the next IPv4 ID
    uint8_t snd_wscale = 0;   // rx_opt.snd_wscale: the peer's shift
    uint8_t rcv_wscale = 0;   // rx_opt.rcv_wscale: ours
    uint8_t quickacks = 0;    // icsk_ack.quick: segments still ACKed at once
    bool ts_ok = false;       // both sides sent the timestamp option
    bool sack_ok = false;     // the peer offered SACK (we never need to send blocks)
    bool wscale_ok = false;   // both sides sent window scale
};

struct Conn {
    Endpoint local;
    Endpoint remote;
    uint64_t user_data = 0;
    TimePoint handshake_deadline = kNever;  // next SYN / SYN-ACK retransmission
    TimePoint ack_due = kNever;             // idle-ACK time
    TimePoint timer_queued = kNever;        // earliest live timer-heap entry (the stack's)
    uint32_t generation = 1;
    SeqNum iss;
    SeqNum snd_nxt;
    SeqNum irs;
    SeqNum rcv_nxt;        // the highest sequence end received
    SeqNum last_ack_sent;
    uint8_t attempts = 0;  // SYN / SYN-ACK transmissions so far
    ConnState state = ConnState::syn_sent;
    SlotState slot = SlotState::free;
    bool is_client = false;
    Profile profile = Profile::phantun;
    LinuxState lx;  // linux_tcp only

    // Liveness (established only; see "Liveness" in faketcp.h).
    TimePoint keepalive_due = kNever;     // next probe or peer_dead check
    TimePoint last_rx = kNever;           // the last segment from the peer
    TimePoint discovery_probe = kNever;   // the one probe sent whatever arrives
    TimePoint send_run_start = kNever;    // first datagram sent since last_rx (rule b)
    TimePoint last_send = kNever;         // the last datagram sent
    TimePoint last_probe = kNever;        // the last probe sent
    TimePoint answer_allowed = TimePoint{};  // probe answers: rate limit
    SeqNum snd_una;                       // the highest ack the peer sent
    uint32_t probes_since_rx = 0;         // idle probes sent since last_rx
    bool awaiting_answer = false;         // a probe went out; no payload-less segment since
    bool peer_answers = false;            // the peer answered a probe: rule (a) applies
    bool peer_sent_data = false;          // rule (b) applies

    TimePoint timer() const { return std::min({handshake_deadline, ack_due, keepalive_due}); }
};

// One segment a connection wants sent, as a value: where it goes, and how
// the profile shapes it (options, window, IP ID), the stack decides. Its
// acknowledgement field is RCV.NXT when ACK is set.
struct Reply {
    SeqNum seq;
    uint8_t flags = 0;
    ByteView payload;
};

// Where the state machine's output goes. The stack implements it.
class ConnOutput {
public:
    // Queue `r` on `c` (the profile shapes it, at `now`); false when it was
    // not queued (a full queue is counted by the stack).
    virtual bool transmit(Conn& c, const Reply& r, TimePoint now) = 0;
    // Tell the application: accepted or connected.
    virtual void notify(const Conn& c, EventType type) = 0;
    // A datagram for the application (dropped and counted if it is not
    // draining its events).
    virtual void deliver(const Conn& c, ByteView payload) = 0;
    // `c` ended without the application asking: packets must no longer reach
    // it. Afterwards `c` is no longer live.
    virtual void ended(Conn& c, CloseReason why) = 0;
    // The budget of replies the stack makes unasked (challenge ACKs, answers
    // to retransmitted handshakes); false: the caller drops the reply and
    // counts it (reply_rate_limited).
    virtual bool reply_allowed(TimePoint now) = 0;

protected:
    ~ConnOutput() = default;
};

// What a state-machine step works with besides its Conn.
struct Context {
    const StackConfig& cfg;
    Stats& stats;
    ConnOutput& out;
    TimePoint now;  // the time of the call being served
};

void count_drop(Stats& s, DropReason r) { ++s.drops[static_cast<size_t>(r)]; }

size_t max_datagram_for(const StackConfig& cfg, Family f) {
    size_t headers = ip_header_len(f) + kTcpHeaderLen;
    return cfg.mtu > headers ? cfg.mtu - headers : 0;
}

// Less the timestamp option on a linux_tcp connection that carries it.
size_t max_datagram_of(const Conn& c, const StackConfig& cfg) {
    const size_t m = max_datagram_for(cfg, c.local.addr.family);
    const bool ts = c.profile == Profile::linux_tcp && c.lx.ts_ok;
    return ts ? (m > kTsOptionLen ? m - kTsOptionLen : 0) : m;
}

// --- 3b. The linux_tcp profile -------------------------------------------------
//
// Every value below is what Linux (6.x source and a 6.18 capture, see the
// README's wire table) writes; the kernel function is named where it helps.

constexpr Duration kDelayedAck = std::chrono::milliseconds(40);  // TCP_DELACK_MIN
constexpr uint8_t kQuickAcks = 16;         // TCP_MAX_QUICKACKS
constexpr uint32_t kGrowMinPayload = 128;  // tcp_grow_window ignores tinier segments

// What a linux_tcp connection takes from the stack's keys and generator.
struct LinuxIds {
    uint32_t ts_offset;   // secure_tcp_ts_off
    uint32_t flow_label;  // IPv6, 20 bits
    uint16_t ip_id;       // random: get_random_u16() in tcp_v4_connect / syn_recv_sock
};

// tcp_clock_ms() + tsoffset: a millisecond clock (RFC 7323 §5.4 wants
// 1 ms to 1 s per tick) offset per address pair.
uint32_t linux_tsval(const Conn& c, TimePoint now) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    return static_cast<uint32_t>(ms) + c.lx.ts_offset;
}

// The MSS option's value: the MTU less the IP and TCP headers (advmss).
uint32_t linux_mss_option(const StackConfig& cfg, Family f) {
    return std::min<uint32_t>(cfg.mtu - static_cast<uint32_t>(ip_header_len(f) + kTcpHeaderLen), 65535);
}

// tcp_select_initial_window: the SYN's window is 65535 rounded down to a
// multiple of the MSS (less the timestamp option on a SYN-ACK that
// negotiated it): 64240 and 65160 on a 1500-byte MTU.
uint32_t linux_initial_window(uint32_t mss) { return mss ? 65535 / mss * mss : 65535; }

// State a linux_tcp connection has from its first packet on.
void linux_init(Conn& c, const StackConfig& cfg, const LinuxIds& ids) {
    LinuxState& lx = c.lx;
    lx = LinuxState{};
    lx.ts_offset = ids.ts_offset;
    lx.flow_label = ids.flow_label;
    lx.ip_id = ids.ip_id;
    lx.rcv_wscale = std::min(cfg.linux_window_scale, kMaxWindowScale);
    lx.quickacks = kQuickAcks;
    lx.adv_mss = linux_mss_option(cfg, c.local.addr.family);
    lx.rcv_wnd = linux_initial_window(lx.adv_mss);
    lx.ts_ok = true;  // offered; the peer's SYN or SYN-ACK decides
    lx.sack_ok = true;
}

// What the peer's SYN or SYN-ACK negotiated (tcp_parse_options, RFC 7323:
// an option counts only if both sides sent it).
void linux_negotiate(Conn& c, const Segment& syn) {
    LinuxState& lx = c.lx;
    lx.ts_ok = lx.ts_ok && syn.opts.has_ts;
    lx.sack_ok = lx.sack_ok && syn.opts.sack_ok;
    if (lx.ts_ok) lx.ts_recent = syn.opts.tsval;
    lx.wscale_ok = syn.opts.has_wscale;
    if (lx.wscale_ok) {
        lx.snd_wscale = syn.opts.wscale;
        // About half of tcp_rmem[2] (the shift was derived from it), where
        // receive autotuning takes a bulk receiver's window.
        lx.rcv_wnd_clamp = std::max(65535u, 1u << (lx.rcv_wscale + 14));
    } else {
        lx.snd_wscale = lx.rcv_wscale = 0;
        lx.rcv_wnd_clamp = 65535;
    }
    lx.snd_una = c.iss + 1;
    lx.snd_wnd = syn.window;  // never scaled in a SYN (RFC 7323 §2.2)
    if (lx.ts_ok) lx.adv_mss -= kTsOptionLen;
}

// The options tcp_options_write would put on one segment.
struct LinuxOptions {
    uint32_t mss = 0;  // 0: none
    bool sack = false;
    bool ts = false;
    uint32_t tsval = 0, tsecr = 0;
    int wscale = -1;  // -1: none
};

size_t put_mss(uint8_t* o, uint32_t mss) {
    o[0] = kOptMss;
    o[1] = 4;
    store16(o + 2, static_cast<uint16_t>(mss));
    return 4;
}

// SACK-permitted + timestamps, or NOP NOP + timestamps.
size_t put_timestamps(uint8_t* o, bool sack, uint32_t tsval, uint32_t tsecr) {
    o[0] = sack ? kOptSackOk : kOptNop;
    o[1] = sack ? 2 : kOptNop;
    o[2] = kOptTimestamp;
    o[3] = 10;
    store32(o + 4, tsval);
    store32(o + 8, tsecr);
    return 12;
}

size_t put_option4(uint8_t* o, uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    o[0] = a;
    o[1] = b;
    o[2] = c;
    o[3] = d;
    return 4;
}

// tcp_options_write's order: MSS; SACK-permitted + timestamps (or NOP NOP
// + timestamps); NOP + window scale; NOP NOP + SACK-permitted alone.
size_t write_linux_options(uint8_t* o, const LinuxOptions& w) {
    size_t n = 0;
    if (w.mss) n += put_mss(o + n, w.mss);
    if (w.ts) n += put_timestamps(o + n, w.sack, w.tsval, w.tsecr);
    if (w.wscale >= 0) n += put_option4(o + n, kOptNop, kOptWscale, 3, static_cast<uint8_t>(w.wscale));
    if (w.sack && !w.ts) n += put_option4(o + n, kOptNop, kOptNop, kOptSackOk, 2);
    return n;
}

// The options of a linux_tcp SYN, SYN-ACK or later segment.
LinuxOptions linux_options(const Conn& c, uint8_t flags, const StackConfig& cfg, TimePoint now) {
    const LinuxState& lx = c.lx;
    LinuxOptions w;
    if (!(flags & kSyn)) {
        w.ts = lx.ts_ok;
        w.tsval = linux_tsval(c, now);
        w.tsecr = lx.ts_recent;
    } else if (flags & kAck) {
        w = LinuxOptions{linux_mss_option(cfg, c.local.addr.family), lx.sack_ok, lx.ts_ok,
                         linux_tsval(c, now), lx.ts_recent, lx.wscale_ok ? lx.rcv_wscale : -1};
    } else {
        w = LinuxOptions{lx.adv_mss, true, true, linux_tsval(c, now), 0, lx.rcv_wscale};
    }
    return w;
}

// The window field of a segment after the SYN: rcv_wnd in units of our
// shift, rounded up as __tcp_select_window does (64240 -> 63 << 10).
uint16_t linux_window_field(const LinuxState& lx) {
    const uint32_t unit = 1u << lx.rcv_wscale;
    return static_cast<uint16_t>(std::min<uint32_t>((lx.rcv_wnd + unit - 1) >> lx.rcv_wscale, 65535));
}

// Shape one segment of a linux_tcp connection: options, window, IP ID,
// flow label, PSH on data (the last segment of every write() carries it).
void linux_shape(Conn& c, SegmentSpec& s, uint8_t* options, const StackConfig& cfg, TimePoint now) {
    LinuxState& lx = c.lx;
    const bool syn = (s.flags & kSyn) != 0;
    const bool synack = syn && (s.flags & kAck) != 0;
    s.options = ByteView(options, write_linux_options(options, linux_options(c, s.flags, cfg, now)));
    s.window = syn ? static_cast<uint16_t>(std::min<uint32_t>(lx.rcv_wnd, 65535)) : linux_window_field(lx);
    // A SYN-ACK comes from the request socket (ID 0); everything else from
    // the socket's counter, one per packet.
    s.ip_id = synack ? 0 : lx.ip_id++;
    s.flow_label = lx.flow_label;
    if (s.payload.size) s.flags |= kPsh;
}

// Every acceptable segment: the peer's window and acknowledgement
// (tcp_ack_update_window), and its TSval to echo, taken only from a
// segment that starts at or before our last ACK (RFC 7323 §4.3). A
// keepalive probe (no payload, seq before RCV.NXT) fails the kernel's
// tcp_sequence check, so its TSval is never echoed: the answer carries
// the TSecr the last acceptable segment set, as the kernel's dupack does.
// TSvals compare with the same serial arithmetic as sequence numbers.
void linux_track_peer(Conn& c, const Segment& seg) {
    LinuxState& lx = c.lx;
    const bool probe = seg.payload.size == 0 && seq_before(seq_of(seg), c.rcv_nxt);
    if (lx.ts_ok && seg.opts.has_ts && !probe && !seq_after(seq_of(seg), c.last_ack_sent) &&
        !seq_before(SeqNum(seg.opts.tsval), SeqNum(lx.ts_recent)))
        lx.ts_recent = seg.opts.tsval;
    if (seg.has(kAck) && !seq_before(ack_of(seg), lx.snd_una) && !seq_after(ack_of(seg), c.snd_nxt)) {
        lx.snd_una = ack_of(seg);
        lx.snd_wnd = uint32_t{seg.window} << lx.snd_wscale;
    }
}

// The sender never puts data past the window the peer advertised.
bool linux_window_allows(const Conn& c, size_t len) {
    const SeqNum end = c.snd_nxt + static_cast<uint32_t>(len);
    return !seq_after(end, c.lx.snd_una + c.lx.snd_wnd);
}

// Handshake retransmissions: phantun's fixed interval, or the kernel's
// doubling from 1 s (TCP_TIMEOUT_INIT, tcp_retransmit_timer's backoff).
Duration handshake_interval(const Conn& c, const StackConfig& cfg) {
    if (c.profile != Profile::linux_tcp) return cfg.handshake_interval;
    return cfg.handshake_interval * (1 << std::min<int>(c.attempts > 0 ? c.attempts - 1 : 0, 16));
}

// --- 3c. Output: the segments a connection sends --------------------------------

// The segment `r` of `c` as the wire section encodes it: linux_tcp's
// shaping, or phantun's SYN option. `options` (kMaxTcpOptionsLen bytes) is
// storage the result points into.
SegmentSpec conn_segment(Conn& c, const Reply& r, const StackConfig& cfg, TimePoint now, uint8_t* options) {
    const uint32_t ack = (r.flags & kAck) ? c.rcv_nxt.v : 0;
    SegmentSpec spec{&c.local, &c.remote, r.seq.v, ack, r.flags, r.payload};
    if (c.profile == Profile::linux_tcp) {
        linux_shape(c, spec, options, cfg, now);
    } else if (r.flags & kSyn) {
        spec.options = ByteView(kPhantunSynOptions, sizeof kPhantunSynOptions);
    }
    return spec;
}

// Send `r`; a sent ACK acknowledges everything received so far.
bool transmit(Conn& c, const Reply& r, Context& cx) {
    if (!cx.out.transmit(c, r, cx.now)) return false;
    if (r.flags & kAck) {
        c.last_ack_sent = c.rcv_nxt;
        c.ack_due = kNever;  // this segment carried the acknowledgement
    }
    if (r.flags & kRst) ++cx.stats.rst_sent;
    return true;
}

bool send_pure_ack(Conn& c, Context& cx) { return transmit(c, Reply{c.snd_nxt, kAck, {}}, cx); }

// SYN from the client, SYN-ACK from the accepting side.
bool send_handshake(Conn& c, Context& cx) {
    const uint8_t flags = c.state == ConnState::syn_sent ? kSyn : (kSyn | kAck);
    return transmit(c, Reply{c.iss, flags, {}}, cx);
}

// The first SYN or SYN-ACK; retransmissions follow from the timer.
void start_handshake(Conn& c, Context& cx) {
    send_handshake(c, cx);
    c.attempts = 1;
    c.handshake_deadline = cx.now + cx.cfg.handshake_interval;
}

// A reply the stack makes unasked: within its budget, or dropped and counted.
bool may_reply(Context& cx) {
    if (cx.out.reply_allowed(cx.now)) return true;
    count_drop(cx.stats, DropReason::reply_rate_limited);
    return false;
}

// RFC 5961 challenge ACK, rate-limited with the other unsolicited replies.
void send_challenge_ack(Conn& c, Context& cx) {
    if (may_reply(cx) && send_pure_ack(c, cx)) ++cx.stats.challenge_acks_sent;
}

// close(): tcp_send_active_reset is RST|ACK with the connection's options.
void send_reset(Conn& c, Context& cx) {
    const bool linux_rst_ack = c.profile == Profile::linux_tcp && c.state != ConnState::syn_sent;
    transmit(c, Reply{c.snd_nxt, static_cast<uint8_t>(linux_rst_ack ? (kRst | kAck) : kRst), {}}, cx);
}

// --- 3d. Liveness (see "Liveness" in faketcp.h) -----------------------------------

// Probe answers per connection: at most one per this gap.
constexpr Duration kProbeAnswerGap = std::chrono::milliseconds(200);

bool keepalive_on(const StackConfig& cfg) { return cfg.keepalive_interval > Duration::zero(); }

// The accepting side lags a quarter interval, so that between two faketcp
// ends the client's probes (and the answers) usually keep both quiet.
Duration keepalive_lag(const Conn& c, const StackConfig& cfg) {
    return c.is_client ? Duration::zero() : cfg.keepalive_interval / 4;
}

// D: how long a path may stay silent before it is declared dead.
Duration dead_span(const StackConfig& cfg) {
    return cfg.keepalive_interval * static_cast<Duration::rep>(cfg.keepalive_probes + 1);
}

TimePoint next_idle_probe(const Conn& c, const StackConfig& cfg) {
    if (c.probes_since_rx == 0) return c.last_rx + keepalive_lag(c, cfg) + cfg.keepalive_interval;
    return c.last_probe + cfg.keepalive_interval;
}

// Rule (a): the peer answers probes and the last of `keepalive_probes`
// unanswered ones is one interval old. Counting probes actually sent
// (not time alone) keeps a process that was paused from killing its
// connections on waking up.
TimePoint dead_by_probes(const Conn& c, const StackConfig& cfg) {
    if (!c.peer_answers || c.probes_since_rx < cfg.keepalive_probes) return kNever;
    return c.last_probe + cfg.keepalive_interval;
}

// Rule (b): a peer that sends data, and a run of our datagrams D long with
// nothing back.
TimePoint dead_by_silence(const Conn& c, const StackConfig& cfg) {
    if (!c.peer_sent_data || c.send_run_start == kNever) return kNever;
    return c.send_run_start + dead_span(cfg);
}

void plan_keepalive(Conn& c, const StackConfig& cfg) {
    if (!keepalive_on(cfg) || c.state != ConnState::established) return;
    c.keepalive_due = std::min({next_idle_probe(c, cfg), c.discovery_probe, dead_by_probes(c, cfg),
                                dead_by_silence(c, cfg)});
}

void start_keepalive(Conn& c, Context& cx) {
    c.snd_una = c.iss + 1;  // the handshake acknowledged our SYN
    c.last_rx = cx.now;
    if (!keepalive_on(cx.cfg)) return;
    c.discovery_probe = cx.now + keepalive_lag(c, cx.cfg) + cx.cfg.keepalive_interval;
    plan_keepalive(c, cx.cfg);
}

// Any acceptable segment from the peer: it is alive.
void note_alive(Conn& c, const Segment& seg, Context& cx) {
    if (seq_after(ack_of(seg), c.snd_una) && !seq_after(ack_of(seg), c.snd_nxt)) c.snd_una = ack_of(seg);
    c.last_rx = cx.now;
    c.probes_since_rx = 0;
    c.send_run_start = kNever;
    plan_keepalive(c, cx.cfg);
}

// A datagram went out: a run of sends starts, or goes on (rule b).
void note_send(Conn& c, Context& cx) {
    if (!keepalive_on(cx.cfg)) return;
    const bool new_run = c.send_run_start == kNever || c.last_send == kNever ||
                         cx.now - c.last_send > cx.cfg.keepalive_interval;
    c.last_send = cx.now;
    if (!new_run) return;
    c.send_run_start = cx.now;
    if (c.peer_sent_data) plan_keepalive(c, cx.cfg);
}

// seq = SND.UNA - 1: already acknowledged by the peer, so a TCP receiver
// (this Stack included) answers with a pure ACK and delivers nothing.
void send_probe(Conn& c, Context& cx) {
    c.last_probe = cx.now;  // even if the queue is full: the schedule moves on
    c.awaiting_answer = true;
    if (transmit(c, Reply{c.snd_una - 1, kAck, {}}, cx)) ++cx.stats.keepalive_probes_sent;
}

void answer_probe(Conn& c, Context& cx) {
    if (cx.now < c.answer_allowed) {
        count_drop(cx.stats, DropReason::reply_rate_limited);
        return;
    }
    c.answer_allowed = cx.now + kProbeAnswerGap;
    if (send_pure_ack(c, cx)) ++cx.stats.keepalive_answers_sent;
}

// A payload-less segment on an established connection: a probe to answer,
// an answer to ours, or an ACK.
void on_payloadless(Conn& c, const Segment& seg, Context& cx) {
    if (seq_before(seq_of(seg), c.rcv_nxt)) {
        answer_probe(c, cx);
        return;
    }
    // A TCP answer acknowledges at least SND.UNA. phantun answers the
    // first probe after its own last segment by accident (the probe's seq
    // moves its ack back, which trips its 128 MiB rule) with ack = the
    // probe's seq, one before SND.UNA: proof of life, but no sign that it
    // answers probes.
    if (c.awaiting_answer && !seq_before(ack_of(seg), c.snd_una)) {
        c.awaiting_answer = false;
        c.peer_answers = true;
        ++cx.stats.keepalive_probes_answered;
        plan_keepalive(c, cx.cfg);
    }
}

// The peer went silent on a path it answers on: a best-effort RST (it
// frees the peer's side if only our direction of the path works), then
// the closed event.
void declare_dead(Conn& c, Context& cx) {
    transmit(c, Reply{c.snd_nxt, kRst, {}}, cx);
    ++cx.stats.peer_dead_closes;
    cx.out.ended(c, CloseReason::peer_dead);
}

// peer_dead by rule (a) or (b), or the probe that is due.
void on_keepalive(Conn& c, Context& cx) {
    const StackConfig& cfg = cx.cfg;
    c.keepalive_due = kNever;
    if (dead_by_probes(c, cfg) <= cx.now) {
        declare_dead(c, cx);
        return;
    }
    if (dead_by_silence(c, cfg) <= cx.now) {
        if (cx.now - c.last_send <= cfg.keepalive_interval) {
            declare_dead(c, cx);
            return;
        }
        c.send_run_start = kNever;  // we stopped sending before D was up: no verdict
    }
    const bool idle_due = next_idle_probe(c, cfg) <= cx.now;
    if (idle_due || c.discovery_probe <= cx.now) {
        send_probe(c, cx);
        c.discovery_probe = kNever;  // a probe went out: the peer can show it answers
        if (idle_due) ++c.probes_since_rx;
    }
    plan_keepalive(c, cfg);
}

// --- 3e. Input: one segment of a connection ---------------------------------------

void establish(Conn& c, Context& cx) {
    c.state = ConnState::established;
    c.handshake_deadline = kNever;
    --cx.stats.half_open_connections;
    ++cx.stats.open_connections;
    ++cx.stats.handshakes_completed;
    start_keepalive(c, cx);
}

// The handshake did not complete (the stack tells the client's application;
// a half-open accepted connection vanishes silently).
void fail_handshake(Conn& c, CloseReason why, Context& cx) {
    ++cx.stats.handshakes_failed;
    cx.out.ended(c, why);
}

// The highest sequence end received moves on; the payload becomes a datagram event.
void receive_payload(Conn& c, const Segment& seg, Context& cx) {
    c.peer_sent_data = true;
    if (seq_after(payload_end(seg), c.rcv_nxt)) c.rcv_nxt = payload_end(seg);
    cx.out.deliver(c, seg.payload);
}

// __tcp_ack_snd_check: ACK at once when more than one full-sized segment
// is unacknowledged, in quick-ACK mode (the first segments) or when data
// arrives out of order; otherwise after the delayed-ACK time. "At once"
// means at the next on_timer(now) call, i.e. once for every segment of an
// input batch, as the kernel ACKs once per GRO super-packet.
void linux_on_data(Conn& c, const Segment& seg, Context& cx) {
    LinuxState& lx = c.lx;
    const uint32_t len = static_cast<uint32_t>(seg.payload.size);
    const bool in_order = seq_of(seg) == c.rcv_nxt;
    lx.rcv_mss = std::max(lx.rcv_mss, len);
    if (len >= kGrowMinPayload && lx.rcv_wnd < lx.rcv_wnd_clamp)  // tcp_grow_window
        lx.rcv_wnd = std::min(lx.rcv_wnd_clamp, lx.rcv_wnd + 2 * lx.adv_mss);
    receive_payload(c, seg, cx);
    const bool ack_now = !in_order || lx.quickacks > 0 || c.rcv_nxt - c.last_ack_sent > lx.rcv_mss;
    if (lx.quickacks > 0) --lx.quickacks;
    const TimePoint due = ack_now ? cx.now : cx.now + kDelayedAck;
    if (due < c.ack_due) c.ack_due = due;
}

// phantun's rule: a pure ACK once data has advanced ack_every_bytes past the
// last ACK, otherwise one idle_ack_interval after it arrived.
void on_data(Conn& c, const Segment& seg, Context& cx) {
    if (c.profile == Profile::linux_tcp) {
        linux_on_data(c, seg, cx);
        return;
    }
    receive_payload(c, seg, cx);
    const uint32_t unacked = c.rcv_nxt - c.last_ack_sent;
    if (unacked > cx.cfg.ack_every_bytes) {
        send_pure_ack(c, cx);
        ++cx.stats.idle_acks_sent;
    } else if (unacked != 0 && c.ack_due == kNever) {
        c.ack_due = cx.now + cx.cfg.idle_ack_interval;
    }
}

// After the handshake's SYNs, a segment that is neither RST nor SYN
// carries ACK and never FIN (fake TCP closes with RST only).
bool ack_flags_ok(const Segment& seg, Context& cx) {
    if (seg.has(kAck) && !seg.has(kFin)) return true;
    count_drop(cx.stats, DropReason::bad_flags);
    return false;
}

void on_syn_sent(Conn& c, const Segment& seg, Context& cx) {
    if (seg.has(kRst)) {
        if (ack_of(seg) != c.iss + 1) {
            count_drop(cx.stats, DropReason::bad_ack);
            return;
        }
        ++cx.stats.rst_received;
        fail_handshake(c, CloseReason::peer_reset, cx);
        return;
    }
    if (!seg.has(kSyn) || !seg.has(kAck) || seg.has(kFin) || ack_of(seg) != c.iss + 1) {
        count_drop(cx.stats, DropReason::bad_ack);
        return;
    }
    c.irs = seq_of(seg);
    c.rcv_nxt = c.irs + 1;
    if (c.profile == Profile::linux_tcp) linux_negotiate(c, seg);
    establish(c, cx);
    send_pure_ack(c, cx);
    cx.out.notify(c, EventType::connected);
}

// A SYN again while we wait for the handshake's ACK: the peer did not hear
// our SYN-ACK, so it goes out again now (within the reply budget).
void on_syn_again(Conn& c, const Segment& seg, Context& cx) {
    if (seg.has(kAck) || seq_of(seg) != c.irs) {
        count_drop(cx.stats, DropReason::unexpected_syn);
        return;
    }
    if (!may_reply(cx)) return;
    send_handshake(c, cx);
    ++cx.stats.syn_retransmits;
}

// The kernel sends nothing when the handshake's ACK arrives: data on it
// takes the ordinary ACK cadence.
void linux_accept_ack(Conn& c, const Segment& seg, Context& cx) {
    linux_track_peer(c, seg);
    if (seg.payload.size) linux_on_data(c, seg, cx);
}

// The handshake's ACK (or the first data segment, that ACK lost).
void on_handshake_ack(Conn& c, const Segment& seg, Context& cx) {
    establish(c, cx);
    c.last_ack_sent = c.rcv_nxt;
    cx.out.notify(c, EventType::accepted);
    if (c.profile == Profile::linux_tcp) {
        linux_accept_ack(c, seg, cx);
        return;
    }
    // Data on the handshake's ACK is delivered, and acknowledged by the pure
    // ACK below: through on_data, a seq far ahead would also trip the
    // ack_every_bytes rule and send the same ACK twice for one segment.
    if (seg.payload.size) receive_payload(c, seg, cx);
    // The window in our SYN-ACK is unscaled (RFC 7323), so a stateful
    // firewall lets the client send only 64 KiB past our ACK until it
    // sees a scaled window from us. One pure ACK now advertises it.
    send_pure_ack(c, cx);
}

void on_syn_received(Conn& c, const Segment& seg, Context& cx) {
    if (seg.has(kRst)) {
        if (seq_of(seg) != c.rcv_nxt) {
            count_drop(cx.stats, DropReason::rst_not_exact);
            return;
        }
        ++cx.stats.rst_received;
        fail_handshake(c, CloseReason::peer_reset, cx);
        return;
    }
    if (seg.has(kSyn)) {
        on_syn_again(c, seg, cx);
        return;
    }
    if (!ack_flags_ok(seg, cx)) return;
    if (ack_of(seg) != c.snd_nxt) {
        count_drop(cx.stats, DropReason::bad_ack);
        return;
    }
    on_handshake_ack(c, seg, cx);
}

// Only the exact RST closes; one elsewhere in the window gets a challenge
// ACK (RFC 5961 §3), any other is dropped.
void on_rst_established(Conn& c, const Segment& seg, Context& cx) {
    if (seq_of(seg) == c.rcv_nxt) {
        ++cx.stats.rst_received;
        cx.out.ended(c, CloseReason::peer_reset);
        return;
    }
    count_drop(cx.stats, DropReason::rst_not_exact);
    if (seq_distance(seq_of(seg), c.rcv_nxt) <= cx.cfg.rst_window) send_challenge_ack(c, cx);
}

void on_syn_established(Conn& c, const Segment& seg, Context& cx) {
    if (c.is_client && seg.has(kAck) && seq_of(seg) == c.irs) {
        // A retransmitted SYN-ACK: our handshake ACK was lost.
        if (may_reply(cx)) send_pure_ack(c, cx);
        return;
    }
    count_drop(cx.stats, DropReason::unexpected_syn);
    send_challenge_ack(c, cx);
}

void on_established(Conn& c, const Segment& seg, Context& cx) {
    if (seg.has(kRst)) {
        on_rst_established(c, seg, cx);
        return;
    }
    if (seg.has(kSyn)) {
        on_syn_established(c, seg, cx);
        return;
    }
    if (!ack_flags_ok(seg, cx)) return;
    if (c.profile == Profile::linux_tcp) linux_track_peer(c, seg);
    note_alive(c, seg, cx);
    if (seg.payload.size == 0) {
        ++cx.stats.pure_acks_in;
        on_payloadless(c, seg, cx);
        return;
    }
    on_data(c, seg, cx);
}

// One segment the stack's demux found this connection for.
void conn_input(Conn& c, const Segment& seg, Context& cx) {
    switch (c.state) {
        case ConnState::syn_sent: on_syn_sent(c, seg, cx); return;
        case ConnState::syn_received: on_syn_received(c, seg, cx); return;
        case ConnState::established: on_established(c, seg, cx); return;
    }
}

// --- 3f. Time: a connection's timers are due -----------------------------------

void on_handshake_deadline(Conn& c, Context& cx) {
    if (c.attempts >= cx.cfg.handshake_attempts) {
        fail_handshake(c, CloseReason::handshake_timeout, cx);
        return;
    }
    send_handshake(c, cx);
    ++c.attempts;
    ++cx.stats.syn_retransmits;
    c.handshake_deadline = cx.now + handshake_interval(c, cx.cfg);
}

// Received data went unacknowledged for the idle-ACK time (or the linux
// profile's cadence asks for its ACK).
void on_ack_due(Conn& c, Context& cx) {
    c.ack_due = kNever;
    if (c.state == ConnState::established && c.rcv_nxt != c.last_ack_sent) {
        send_pure_ack(c, cx);
        ++cx.stats.idle_acks_sent;
    }
}

// Whatever of the connection's timers is due at cx.now; each may end it.
void conn_timers(Conn& c, Context& cx) {
    if (c.handshake_deadline <= cx.now) on_handshake_deadline(c, cx);
    if (c.slot == SlotState::live && c.keepalive_due <= cx.now) on_keepalive(c, cx);
    if (c.slot == SlotState::live && c.ack_due <= cx.now) on_ack_due(c, cx);
}

// --- 3g. The application's calls on one connection ----------------------------------

// Why send() cannot take `len` bytes on `c` now; ok if it can.
Errc check_sendable(const Conn& c, size_t len, const StackConfig& cfg) {
    if (c.slot != SlotState::live || c.state != ConnState::established) return Errc::not_established;
    if (len == 0) return Errc::empty_datagram;
    if (len > max_datagram_of(c, cfg)) return Errc::too_big;
    return Errc::ok;
}

// One datagram as one segment; the caller checked check_sendable() and
// room in the transmit queue.
Errc send_datagram(Conn& c, ByteView data, Context& cx) {
    if (c.profile == Profile::linux_tcp && !linux_window_allows(c, data.size)) {
        // Datagram semantics: what the window cannot take is lost, as a
        // full UDP socket buffer loses it; never queued, never sent.
        ++cx.stats.window_full_drops;
        return Errc::window_full;
    }
    transmit(c, Reply{c.snd_nxt, kAck, data}, cx);
    c.snd_nxt += static_cast<uint32_t>(data.size);
    ++cx.stats.datagrams_out;
    cx.stats.datagram_bytes_out += data.size;
    note_send(c, cx);
    return Errc::ok;
}

// ===========================================================================
// 4. Table: preallocated slots, an open-addressing 4-tuple index, the
//    connections' timers, and the keys and generators the stack draws on.
// ===========================================================================

uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t load64_ne(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

// Keyed hash of a 4-tuple. The key comes from the seed, so a remote party
// cannot aim its tuples at one bucket chain without knowing it.
uint64_t hash_tuple(uint64_t key, const Endpoint& local, const Endpoint& remote) {
    uint64_t h = key;
    h = mix64(h ^ load64_ne(local.addr.bytes.data()));
    h = mix64(h ^ load64_ne(local.addr.bytes.data() + 8));
    h = mix64(h ^ load64_ne(remote.addr.bytes.data()));
    h = mix64(h ^ load64_ne(remote.addr.bytes.data() + 8));
    uint64_t ports = (uint64_t{local.port} << 32) | (uint64_t{remote.port} << 8) |
                     static_cast<uint64_t>(local.addr.family);
    return mix64(h ^ ports);
}

// Deterministic PRNG (splitmix64): ports and ISNs come from the config seed.
struct Rng {
    uint64_t state;
    uint64_t next() {
        state += 0x9e3779b97f4a7c15ULL;
        return mix64(state);
    }
};

// SipHash-2-4 (Aumasson and Bernstein, 2012) over 8-byte words: the keyed
// PRF RFC 6528 asks for (the kernel's secure_tcp_seq uses SipHash too).
class SipHash {
public:
    SipHash(uint64_t k0, uint64_t k1)
        : v0_(k0 ^ 0x736f6d6570736575ULL), v1_(k1 ^ 0x646f72616e646f6dULL),
          v2_(k0 ^ 0x6c7967656e657261ULL), v3_(k1 ^ 0x7465646279746573ULL) {}
    SipHash& add(uint64_t m) {
        v3_ ^= m;
        round();
        round();
        v0_ ^= m;
        len_ += 8;
        return *this;
    }
    uint64_t finish() {
        add(static_cast<uint64_t>(len_) << 56);  // the length block of an empty tail
        v2_ ^= 0xff;
        for (int i = 0; i < 4; ++i) round();
        return v0_ ^ v1_ ^ v2_ ^ v3_;
    }

private:
    static uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }
    void round() {
        v0_ += v1_; v1_ = rotl(v1_, 13); v1_ ^= v0_; v0_ = rotl(v0_, 32);
        v2_ += v3_; v3_ = rotl(v3_, 16); v3_ ^= v2_;
        v0_ += v3_; v3_ = rotl(v3_, 21); v3_ ^= v0_;
        v2_ += v1_; v1_ = rotl(v1_, 17); v1_ ^= v2_; v2_ = rotl(v2_, 32);
    }
    uint64_t v0_, v1_, v2_, v3_;
    uint8_t len_ = 0;
};

uint64_t hash_addresses(SipHash h, const IpAddr& a, const IpAddr& b) {
    h.add(load64_ne(a.bytes.data())).add(load64_ne(a.bytes.data() + 8));
    h.add(load64_ne(b.bytes.data())).add(load64_ne(b.bytes.data() + 8));
    return h.add(static_cast<uint64_t>(a.family)).finish();
}

uint64_t hash_four_tuple(SipHash h, const Endpoint& local, const Endpoint& remote) {
    h.add(load64_ne(local.addr.bytes.data())).add(load64_ne(local.addr.bytes.data() + 8));
    h.add(load64_ne(remote.addr.bytes.data())).add(load64_ne(remote.addr.bytes.data() + 8));
    return h.add((uint64_t{local.port} << 16) | remote.port).finish();
}

// The keys linux_tcp derives per-connection values from: cfg.secret, or
// the seed when no secret is set.
struct LinuxKeys {
    std::array<uint64_t, 2> isn{}, ts{}, flow{};

    explicit LinuxKeys(const StackConfig& cfg) {
        std::array<uint64_t, 2> k = cfg.secret;
        if (k[0] == 0 && k[1] == 0)
            k = {mix64(cfg.seed ^ 0x6c696e7578697331ULL), mix64(cfg.seed + 0x9e3779b97f4a7c15ULL)};
        isn = k;
        ts = {mix64(k[0] ^ 0x7473), mix64(k[1] ^ 0x7473)};
        flow = {mix64(k[0] ^ 0x666c), mix64(k[1] ^ 0x666c)};
    }

    // RFC 6528: a keyed hash of the 4-tuple plus a clock ticking every 64 ns
    // (secure_tcp_seq + seq_scale), so a reused 4-tuple starts past its old
    // sequence space and no one without the key can predict another tuple's.
    SeqNum isn_for(const Endpoint& local, const Endpoint& remote, TimePoint now) const {
        const uint64_t ns = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count());
        const uint32_t f = static_cast<uint32_t>(hash_four_tuple(SipHash(isn[0], isn[1]), local, remote));
        return SeqNum(f) + static_cast<uint32_t>(ns >> 6);
    }
    // secure_tcp_ts_off: the timestamp clock's offset per address pair.
    uint32_t ts_offset(const Endpoint& local, const Endpoint& remote) const {
        return static_cast<uint32_t>(hash_addresses(SipHash(ts[0], ts[1]), local.addr, remote.addr));
    }
    uint32_t flow_label(const Endpoint& local, const Endpoint& remote) const {
        return static_cast<uint32_t>(hash_four_tuple(SipHash(flow[0], flow[1]), local, remote)) & 0xfffffu;
    }
};

constexpr uint32_t kNoSlot = UINT32_MAX;
constexpr uint16_t kEphemeralFirst = 32768;
constexpr uint16_t kEphemeralLast = 60999;

class ConnTable {
public:
    void init(uint32_t capacity, uint64_t hash_key) {
        key_ = hash_key;
        conns_.assign(capacity, Conn{});
        free_.clear();
        free_.reserve(capacity);
        for (uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
        size_t buckets = 16;
        while (buckets < size_t{capacity} * 2) buckets <<= 1;
        index_.assign(buckets, Bucket{});
        mask_ = buckets - 1;
    }

    uint32_t capacity() const { return static_cast<uint32_t>(conns_.size()); }
    bool full() const { return free_.empty(); }
    Conn& at(uint32_t i) { return conns_[i]; }
    const Conn& at(uint32_t i) const { return conns_[i]; }

    // The live or closing slot a handle names, or nullptr.
    Conn* resolve(ConnId id) {
        if (id.index >= conns_.size()) return nullptr;
        Conn& c = conns_[id.index];
        if (c.slot == SlotState::free || c.generation != id.generation) return nullptr;
        return &c;
    }
    const Conn* resolve(ConnId id) const { return const_cast<ConnTable*>(this)->resolve(id); }
    ConnId id_of(const Conn& c) const {
        return ConnId{static_cast<uint32_t>(&c - conns_.data()), c.generation};
    }

    uint32_t find(const Endpoint& local, const Endpoint& remote) const {
        uint64_t h = hash_tuple(key_, local, remote);
        for (size_t i = h & mask_;; i = (i + 1) & mask_) {
            const Bucket& b = index_[i];
            if (b.slot == kNoSlot) return kNoSlot;
            if (b.hash == static_cast<uint32_t>(h)) {
                const Conn& c = conns_[b.slot];
                if (c.local == local && c.remote == remote) return b.slot;
            }
        }
    }

    // Take a free slot and index it under its tuple. The caller checked
    // full() and that the tuple is not present.
    Conn* insert(const Endpoint& local, const Endpoint& remote) {
        if (free_.empty()) return nullptr;
        uint32_t slot = free_.back();
        free_.pop_back();
        Conn& c = conns_[slot];
        uint32_t gen = c.generation;
        c = Conn{};
        c.generation = gen;
        c.local = local;
        c.remote = remote;
        c.slot = SlotState::live;
        uint64_t h = hash_tuple(key_, local, remote);
        size_t i = h & mask_;
        while (index_[i].slot != kNoSlot) i = (i + 1) & mask_;
        index_[i] = Bucket{slot, static_cast<uint32_t>(h)};
        return &c;
    }

    // Remove from the index (packets no longer reach it) but keep the slot.
    void unindex(Conn& c) {
        uint32_t slot = static_cast<uint32_t>(&c - conns_.data());
        uint64_t h = hash_tuple(key_, c.local, c.remote);
        size_t i = h & mask_;
        while (index_[i].slot != slot) {
            if (index_[i].slot == kNoSlot) return;  // not indexed (already removed)
            i = (i + 1) & mask_;
        }
        erase_bucket(i);
    }

    // Return the slot to the free list; every handle to it goes stale.
    void release(Conn& c) {
        c.slot = SlotState::free;
        c.generation = c.generation + 1 == 0 ? 1 : c.generation + 1;
        c.handshake_deadline = c.ack_due = c.timer_queued = c.keepalive_due = kNever;
        free_.push_back(static_cast<uint32_t>(&c - conns_.data()));
    }

    size_t memory_footprint() const {
        return conns_.capacity() * sizeof(Conn) + index_.capacity() * sizeof(Bucket) +
               free_.capacity() * sizeof(uint32_t);
    }

private:
    struct Bucket {
        uint32_t slot = kNoSlot;
        uint32_t hash = 0;
    };

    // Backward-shift deletion keeps linear probing correct without tombstones.
    void erase_bucket(size_t hole) {
        size_t i = hole;
        for (;;) {
            i = (i + 1) & mask_;
            if (index_[i].slot == kNoSlot) break;
            size_t home = index_[i].hash & mask_;
            // Move the entry into the hole unless its home lies cyclically in (hole, i].
            bool home_between = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
            if (!home_between) {
                index_[hole] = index_[i];
                hole = i;
            }
        }
        index_[hole] = Bucket{};
    }

    uint64_t key_ = 0;
    std::vector<Conn> conns_;
    std::vector<uint32_t> free_;
    std::vector<Bucket> index_;
    size_t mask_ = 0;
};

// The connections' timers: a TimerHeap whose entries name table slots. A
// live connection with a timer has an entry no later than it, at
// Conn::timer_queued; any other entry is stale and is dropped (or, if its
// connection's timer only moved later, requeued) when it surfaces.
class ConnTimers {
public:
    void init(ConnTable* table, uint32_t max_connections) {
        table_ = table;
        heap_.reserve(size_t{max_connections} * 2);
        // Stale entries pile up when connections churn faster than time
        // passes; past this size the heap is rebuilt from the live ones.
        rebuild_at_ = size_t{max_connections} * 4 + 1024;
    }

    // Make sure an entry exists no later than the connection's timer.
    void schedule(Conn& c) {
        const TimePoint t = c.timer();
        if (t == kNever || t >= c.timer_queued) return;
        c.timer_queued = t;
        heap_.push(t, table_->id_of(c));
        if (heap_.size() >= rebuild_at_) rebuild();
    }

    // Exact: stale entries are settled first, so the reactor never wakes
    // for nothing.
    std::optional<TimePoint> next_deadline() {
        settle_earliest();
        const std::optional<detail::TimerHeap::Entry> e = heap_.earliest();
        if (!e) return std::nullopt;
        return e->when;
    }

    // The next connection with a timer due at `now`, its entry taken off
    // (the caller reschedules it); nullptr when none is due.
    Conn* pop_due(TimePoint now) {
        while (std::optional<detail::TimerHeap::Entry> e = heap_.earliest()) {
            if (e->when > now) return nullptr;
            heap_.pop();
            Conn* c = owner(*e);
            if (!c) continue;
            c->timer_queued = kNever;
            return c;
        }
        return nullptr;
    }

    size_t memory_footprint() const { return heap_.memory_footprint(); }

private:
    // The live connection an entry still stands for, or nullptr if stale.
    Conn* owner(const detail::TimerHeap::Entry& e) {
        Conn* c = table_->resolve(e.conn);
        if (!c || c->slot != SlotState::live || c->timer_queued != e.when) return nullptr;
        return c;
    }

    void settle_earliest() {
        while (std::optional<detail::TimerHeap::Entry> e = heap_.earliest()) {
            Conn* c = owner(*e);
            if (c && c->timer() <= e->when) return;  // a real deadline
            heap_.pop();
            if (c) {  // its timer moved later (or away): requeue at the real time
                c->timer_queued = kNever;
                schedule(*c);
            }
        }
    }

    // One entry per live connection with a timer, at its timer.
    void rebuild() {
        heap_.rebuild([this](auto add) {
            for (uint32_t i = 0; i < table_->capacity(); ++i) {
                Conn& c = table_->at(i);
                c.timer_queued = c.slot == SlotState::live ? c.timer() : kNever;
                if (c.timer_queued != kNever) add(c.timer_queued, ConnId{i, c.generation});
            }
        });
    }

    ConnTable* table_ = nullptr;
    detail::TimerHeap heap_;
    size_t rebuild_at_ = 0;
};

// Token bucket for replies the stack makes on its own.
class RateLimiter {
public:
    void init(uint32_t per_sec) {
        rate_ = per_sec;
        tokens_ = per_sec;
    }
    bool allow(TimePoint now) {
        if (rate_ == 0) return false;
        if (last_ == TimePoint{}) last_ = now;
        if (now > last_) {
            double elapsed = std::chrono::duration<double>(now - last_).count();
            tokens_ = std::min<double>(rate_, tokens_ + elapsed * rate_);
            last_ = now;
        }
        if (tokens_ < 1.0) return false;
        tokens_ -= 1.0;
        return true;
    }

private:
    uint32_t rate_ = 0;
    double tokens_ = 0;
    TimePoint last_{};
};

// Debug logs about network input: at most a few per second.
class LogLimiter {
public:
    bool allow(TimePoint now) {
        if (now - window_ >= std::chrono::seconds(1)) {
            window_ = now;
            count_ = 0;
        }
        return ++count_ <= 10;
    }

private:
    TimePoint window_{};
    uint32_t count_ = 0;
};

// The listening ports: a bitmap of all 65536.
class PortSet {
public:
    PortSet() : bits_(65536 / 64, 0) {}
    bool has(uint16_t port) const { return (bits_[port >> 6] >> (port & 63)) & 1; }
    void add(uint16_t port) { bits_[port >> 6] |= uint64_t{1} << (port & 63); }
    void remove(uint16_t port) { bits_[port >> 6] &= ~(uint64_t{1} << (port & 63)); }
    size_t memory_footprint() const { return bits_.capacity() * sizeof(uint64_t); }

private:
    std::vector<uint64_t> bits_;
};

}  // namespace

// ===========================================================================
// 5. Stack: the queues, demux, and the application's calls. The state
//    machine (section 3) decides what a connection sends and reports; the
//    stack finds the connection, encodes into the transmit queue, queues
//    events, keeps the table and schedules timers.
// ===========================================================================

namespace detail {

void TxQueue::init(size_t capacity, size_t mtu) {
    mtu_ = mtu;
    stride_ = (kTxHeadroom + mtu + 63) & ~size_t{63};
    buf_.assign(stride_ * capacity, 0);
    meta_.assign(capacity, Meta{});
    n_ = 0;
}

uint8_t* TxQueue::next() {
    if (full()) return nullptr;
    return buf_.data() + n_ * stride_ + kTxHeadroom;
}

void TxQueue::commit(size_t len, bool checksum_partial) {
    if (full() || len > mtu_) return;
    meta_[n_++] = Meta{static_cast<uint32_t>(len), checksum_partial};
}

ByteView TxQueue::packet(size_t i) const {
    if (i >= n_) return {};
    return ByteView(buf_.data() + i * stride_ + kTxHeadroom, meta_[i].len);
}

uint8_t* TxQueue::packet_mutable(size_t i) {
    if (i >= n_) return nullptr;
    return buf_.data() + i * stride_ + kTxHeadroom;
}

bool TxQueue::checksum_partial(size_t i) const { return i < n_ && meta_[i].checksum_partial; }

size_t TxQueue::memory_footprint() const {
    return buf_.capacity() + meta_.capacity() * sizeof(Meta);
}

void EventQueue::init(size_t datagram_capacity) {
    datagram_capacity_ = datagram_capacity;
    events_.clear();
    events_.reserve(datagram_capacity + 64);
    head_ = datagrams_ = 0;
}

bool EventQueue::push(const Event& ev) {
    if (ev.type == EventType::datagram) {
        if (datagrams_ >= datagram_capacity_) return false;
        ++datagrams_;
    }
    events_.push_back(ev);
    return true;
}

bool EventQueue::pop(Event& out) {
    if (head_ < events_.size()) {
        out = events_[head_++];
        if (out.type == EventType::datagram) --datagrams_;
        return true;
    }
    events_.clear();
    head_ = datagrams_ = 0;
    return false;
}

namespace {
bool later(const TimerHeap::Entry& a, const TimerHeap::Entry& b) { return a.when > b.when; }
}  // namespace

std::optional<TimerHeap::Entry> TimerHeap::earliest() const {
    if (heap_.empty()) return std::nullopt;
    return heap_.front();
}

void TimerHeap::push(TimePoint when, ConnId conn) {
    heap_.push_back(Entry{when, conn});
    std::push_heap(heap_.begin(), heap_.end(), later);
}

void TimerHeap::pop() {
    if (heap_.empty()) return;
    std::pop_heap(heap_.begin(), heap_.end(), later);
    heap_.pop_back();
}

void TimerHeap::order() { std::make_heap(heap_.begin(), heap_.end(), later); }

}  // namespace detail

namespace {

// The limits a Stack cannot work outside of, applied to any config.
StackConfig clamped(StackConfig cfg) {
    if (cfg.max_connections == 0) cfg.max_connections = 1;
    if (cfg.tx_queue_capacity == 0) cfg.tx_queue_capacity = 1;
    if (cfg.mtu < 1280) cfg.mtu = 1280;  // IPv6 minimum; below that v6 cannot work
    if (cfg.mtu > 65535) cfg.mtu = 65535;
    if (cfg.handshake_attempts == 0) cfg.handshake_attempts = 1;
    if (cfg.handshake_attempts > 255) cfg.handshake_attempts = 255;
    // Bounded so that interval * (probes + 1) stays far from overflowing.
    if (cfg.keepalive_interval < Duration::zero()) cfg.keepalive_interval = Duration::zero();
    if (cfg.keepalive_interval > std::chrono::hours(24)) cfg.keepalive_interval = std::chrono::hours(24);
    if (cfg.keepalive_probes == 0) cfg.keepalive_probes = 1;
    if (cfg.keepalive_probes > 255) cfg.keepalive_probes = 255;
    return cfg;
}

// Rules that hold in every state; the drop reason, or nothing.
std::optional<DropReason> flags_insane(const Segment& seg) {
    if ((seg.flags & (kSyn | kAck | kRst | kFin)) == 0 || (seg.has(kSyn) && seg.has(kFin)) ||
        (seg.has(kSyn) && seg.has(kRst)))
        return DropReason::bad_flags;
    if (seg.has(kSyn) && seg.payload.size) return DropReason::syn_with_payload;
    return std::nullopt;
}

// RST|ACK for a segment no connection owns (RFC 793 "reset generation").
SegmentSpec rst_for(const Segment& seg, const Endpoint& local, const Endpoint& remote) {
    const uint32_t seq = seg.has(kAck) ? seg.ack : 0;
    const SeqNum ack = seq_of(seg) + seg.seq_len();
    return SegmentSpec{&local, &remote, seq, ack.v, kRst | kAck, {}};
}

// tcp_v4_send_reset: no options, window 0, IPv4 ID 0; for a segment with
// ACK, RST at its ack, otherwise RST|ACK acknowledging it.
SegmentSpec linux_rst_for(const Segment& seg, const Endpoint& local, const Endpoint& remote, uint32_t flow_label) {
    SegmentSpec s{&local, &remote, 0, 0, kRst, {}};
    if (seg.has(kAck)) {
        s.seq = seg.ack;
    } else {
        s.flags = kRst | kAck;
        s.ack = (seq_of(seg) + seg.seq_len()).v;
    }
    s.window = 0;
    s.flow_label = flow_label;
    return s;
}

void count_state_leave(Stats& stats, const Conn& c) {
    if (c.state == ConnState::established) {
        --stats.open_connections;
    } else {
        --stats.half_open_connections;
    }
}

bool is_terminal(EventType t) { return t == EventType::closed || t == EventType::connect_failed; }

// Where the state machine's output lands: segments are shaped and encoded
// into the transmit queue, reports become events, and a connection that
// ended is held until the application polls its terminal event (or, never
// seen by the application, released at once).
class StackOutput final : public ConnOutput {
public:
    StackOutput(const StackConfig& cfg, Stats& stats, ConnTable& table) : cfg_(cfg), stats_(stats), table_(table) {
        replies_.init(cfg.reply_rate_per_sec);
        tx.init(cfg.tx_queue_capacity, cfg.mtu);
        events.init(cfg.event_queue_capacity);
    }

    // Queue one encoded segment; false (counted) when the queue is full.
    bool emit(const SegmentSpec& s) {
        if (tx.full()) {
            count_drop(stats_, DropReason::tx_queue_full);
            return false;
        }
        if (segment_size(s) > cfg_.mtu) return false;  // callers check; this guards the buffer
        const size_t n = write_segment(tx.next(), s);
        tx.commit(n, s.checksum_partial);
        ++stats_.packets_out;
        stats_.bytes_out += n;
        return true;
    }

    bool transmit(Conn& c, const Reply& r, TimePoint now) override {
        uint8_t options[kMaxTcpOptionsLen];
        SegmentSpec spec = conn_segment(c, r, cfg_, now, options);
        // Only data is worth offloading: a control segment's sum is 20 bytes.
        spec.checksum_partial = checksum_offload && r.payload.size > 0;
        return emit(spec);
    }

    // False (counted) for a datagram the application has no room for.
    bool push_event(EventType type, const Conn& c, CloseReason reason, ByteView data = {}) {
        Event ev;
        ev.type = type;
        ev.conn = table_.id_of(c);
        ev.reason = reason;
        ev.user_data = c.user_data;
        ev.data = data;
        if (events.push(ev)) return true;
        count_drop(stats_, DropReason::event_queue_full);
        return false;
    }

    void notify(const Conn& c, EventType type) override { push_event(type, c, CloseReason::local_close); }

    void deliver(const Conn& c, ByteView payload) override {
        if (!push_event(EventType::datagram, c, CloseReason::local_close, payload)) return;
        ++stats_.datagrams_in;
        stats_.datagram_bytes_in += payload.size;
    }

    // Clients hear of a failed handshake and everyone of an established
    // connection's end; a half-open accepted one vanishes silently (the
    // application never saw it).
    void ended(Conn& c, CloseReason why) override {
        count_state_leave(stats_, c);
        if (c.state == ConnState::established) {
            hold_until_notified(c, EventType::closed, why);
        } else if (c.is_client) {
            hold_until_notified(c, EventType::connect_failed, why);
        } else {
            table_.unindex(c);
            table_.release(c);
        }
    }

    bool reply_allowed(TimePoint now) override { return replies_.allow(now); }

    detail::TxQueue tx;
    detail::EventQueue events;
    bool checksum_offload = false;  // see Stack::set_tx_checksum_offload

private:
    // Packets no longer reach the connection, but its slot (and handle)
    // stays until the terminal event is polled, so the events queued before
    // it are still delivered. If the app closes it first, the terminal
    // event is skipped: one terminal event each.
    void hold_until_notified(Conn& c, EventType terminal_type, CloseReason why) {
        table_.unindex(c);
        c.slot = SlotState::closing;
        c.handshake_deadline = c.ack_due = c.keepalive_due = kNever;
        push_event(terminal_type, c, why);
    }

    const StackConfig& cfg_;
    Stats& stats_;
    ConnTable& table_;
    RateLimiter replies_;  // replies the stack makes unasked
};

}  // namespace

struct Stack::Impl {
    StackConfig cfg;
    Stats stats;
    ConnTable table;
    ConnTimers timers;
    StackOutput out{cfg, stats, table};
    PortSet listening;
    Rng rng{0};
    LogLimiter input_logs;
    LinuxKeys linux_keys;

    explicit Impl(const StackConfig& c) : cfg(clamped(c)), linux_keys(cfg) {
        rng.state = cfg.seed;
        table.init(cfg.max_connections, rng.next());
        timers.init(&table, cfg.max_connections);
    }

    Context context(TimePoint now) { return Context{cfg, stats, out, now}; }
    void drop(DropReason r) { count_drop(stats, r); }

    // --- demux: a packet finds its connection --------------------------------------

    void on_packet(ByteView pkt, TimePoint now, RxChecksum checksum) {
        ++stats.packets_in;
        stats.bytes_in += pkt.size;
        if (checksum == RxChecksum::kernel_verified) ++stats.checksum_trusted;
        Segment seg;
        DropReason why;
        if (!parse_segment(pkt, seg, checksum, why)) {
            drop(why);
            return;
        }
        if (std::optional<DropReason> bad = flags_insane(seg)) {
            drop(*bad);
            return;
        }
        const uint32_t slot = table.find(Endpoint{seg.dst, seg.dport}, Endpoint{seg.src, seg.sport});
        if (slot == kNoSlot) {
            on_unknown(seg, now);
            return;
        }
        Context cx = context(now);
        conn_input(table.at(slot), seg, cx);
        reschedule(table.at(slot));
    }

    void on_unknown(const Segment& seg, TimePoint now) {
        if (seg.has(kRst)) {
            drop(DropReason::unknown_rst);
            return;
        }
        if (seg.has(kSyn) && !seg.has(kAck) && listening.has(seg.dport)) {
            accept_syn(seg, now);
            return;
        }
        drop(DropReason::no_listener);
        log_input("segment for unknown connection", seg, now);
        reply_rst(seg, now);
    }

    void log_input(const char* what, const Segment& seg, TimePoint now) {
        if (!cfg.log || !input_logs.allow(now)) return;
        cfg.log(LogLevel::debug, std::string(what) + " from " + to_string(Endpoint{seg.src, seg.sport}) +
                                     " to " + to_string(Endpoint{seg.dst, seg.dport}));
    }

    void reply_rst(const Segment& seg, TimePoint now) {
        if (!out.reply_allowed(now)) {
            drop(DropReason::reply_rate_limited);
            return;
        }
        const Endpoint local{seg.dst, seg.dport};
        const Endpoint remote{seg.src, seg.sport};
        const SegmentSpec s = cfg.profile == Profile::linux_tcp
                                  ? linux_rst_for(seg, local, remote, linux_keys.flow_label(local, remote))
                                  : rst_for(seg, local, remote);
        if (out.emit(s)) ++stats.rst_sent;
    }

    void accept_syn(const Segment& seg, TimePoint now) {
        if (stats.half_open_connections >= cfg.max_half_open) {
            drop(DropReason::half_open_limit);
            return;
        }
        // Answer in the client's style: only a SYN with an MSS option (a real
        // TCP or a linux_tcp faketcp) gets a linux_tcp SYN-ACK; phantun's SYN
        // carries NOP + window scale only.
        const Profile style = seg.opts.has_mss ? Profile::linux_tcp : Profile::phantun;
        Conn* c = table.full() ? nullptr
                               : new_conn(Endpoint{seg.dst, seg.dport}, Endpoint{seg.src, seg.sport},
                                          ConnState::syn_received, style, now);
        if (!c) {
            drop(DropReason::table_full);
            return;
        }
        c->irs = seq_of(seg);
        c->rcv_nxt = c->irs + 1;
        if (style == Profile::linux_tcp) {
            linux_negotiate(*c, seg);
            c->lx.rcv_wnd = linux_initial_window(c->lx.adv_mss);  // tcp_openreq_init_rwin: MSS less timestamps
        }
        Context cx = context(now);
        start_handshake(*c, cx);
        reschedule(*c);
    }

    Conn* new_conn(const Endpoint& local, const Endpoint& remote, ConnState state, Profile profile, TimePoint now) {
        Conn* c = table.insert(local, remote);
        if (!c) return nullptr;
        c->state = state;
        c->profile = profile;
        if (profile == Profile::linux_tcp) {
            linux_init(*c, cfg, LinuxIds{linux_keys.ts_offset(local, remote), linux_keys.flow_label(local, remote),
                                         static_cast<uint16_t>(rng.next())});
            c->iss = linux_keys.isn_for(local, remote, now);
        } else {
            c->iss = SeqNum(cfg.random_isn ? static_cast<uint32_t>(rng.next()) : 0);
        }
        c->snd_nxt = c->iss + 1;  // the SYN occupies one sequence number
        ++stats.half_open_connections;
        return c;
    }

    // --- timers ------------------------------------------------------------------------

    void reschedule(Conn& c) {
        if (c.slot == SlotState::live) timers.schedule(c);
    }

    void on_timer(TimePoint now) {
        Context cx = context(now);
        while (Conn* c = timers.pop_due(now)) {
            conn_timers(*c, cx);
            reschedule(*c);
        }
    }

    // --- the application's calls ------------------------------------------------------

    // Events of connections closed since they were queued are skipped; a
    // terminal event releases the slot its connection was held in.
    bool poll_event(Event& result) {
        Event ev;
        while (out.events.pop(ev)) {
            if (!deliverable(ev)) continue;
            result = ev;
            return true;
        }
        return false;
    }

    bool deliverable(const Event& ev) {
        if (!is_terminal(ev.type)) return table.resolve(ev.conn) != nullptr;
        // close() released the slot itself: its local_close event always goes
        // out. Any other ending held the slot until now, unless the app closed
        // it meanwhile (then the app already knows).
        if (ev.reason == CloseReason::local_close) return true;
        Conn* c = table.resolve(ev.conn);
        if (!c || c->slot != SlotState::closing) return false;
        table.release(*c);
        return true;
    }

    Result<ConnId> connect(const Endpoint& remote, TimePoint now) {
        if (Status s = connect_refusal(remote); !s) return s;
        Endpoint local{remote.addr.family == Family::v4 ? *cfg.local_v4 : *cfg.local_v6, 0};
        if (!pick_local_port(local, remote))
            return Status::error(Errc::ports_exhausted, "connect to " + to_string(remote) + ": every local port 32768-60999" +
                                                            shard_text(remote) + " is in use towards it");
        Conn* c = new_conn(local, remote, ConnState::syn_sent, cfg.profile, now);
        if (!c) return Status::error(Errc::table_full, "connect: connection table full");
        c->is_client = true;
        Context cx = context(now);
        start_handshake(*c, cx);
        reschedule(*c);
        return table.id_of(*c);
    }

    // Why connect() cannot start a handshake towards `remote`, or ok.
    Status connect_refusal(const Endpoint& remote) const {
        const std::string to = "connect to " + to_string(remote);
        if (Status s = validate(cfg); !s) return Status::error(Errc::invalid_argument, to + ": " + s.message());
        const std::optional<IpAddr>& local_ip = remote.addr.family == Family::v4 ? cfg.local_v4 : cfg.local_v6;
        if (!local_ip || local_ip->family != remote.addr.family)
            return Status::error(Errc::no_local_address,
                                 to + ": the stack has no local " + (remote.addr.family == Family::v4 ? "IPv4" : "IPv6") +
                                     " address (set StackConfig::local_v4 / local_v6)");
        if (remote.port == 0 || !is_unicast(remote.addr))
            return Status::error(Errc::invalid_argument, to + ": not a unicast address and port");
        if (stats.half_open_connections >= cfg.max_half_open)
            return Status::error(Errc::table_full, to + ": too many handshakes in progress (max_half_open)");
        if (table.full()) return Status::error(Errc::table_full, to + ": connection table full (max_connections)");
        if (out.tx.full()) return Status::error(Errc::tx_queue_full, "connect: transmit queue full; drain it and retry");
        return Status();
    }

    // A local port in 32768-60999, free towards `remote`, in this Stack's
    // shard: (port + remote.port) % shard_count == shard_index, the queue
    // Tun::steer_by_ports() sends the flow's packets to. The candidates are
    // first, first + n, first + 2n, ... (n = shard_count, validated by
    // connect()), walked from a random one; with n = 1 that is every port.
    bool pick_local_port(Endpoint& local, const Endpoint& remote) {
        const uint32_t n = cfg.shard_count;
        const uint32_t have = (uint32_t{kEphemeralFirst} + remote.port) % n;
        const uint32_t first = kEphemeralFirst + (cfg.shard_index + n - have) % n;
        if (first > kEphemeralLast) return false;
        const uint32_t count = (kEphemeralLast - first) / n + 1;
        const uint32_t start = static_cast<uint32_t>(rng.next() % count);
        for (uint32_t i = 0; i < count; ++i) {
            local.port = static_cast<uint16_t>(first + (start + i) % count * n);
            if (table.find(local, remote) == kNoSlot) return true;
        }
        return false;
    }

    // " with (port + 7000) % 4 == 1" for messages; empty without sharding.
    std::string shard_text(const Endpoint& remote) const {
        if (cfg.shard_count == 1) return {};
        return " with (port + " + std::to_string(remote.port) + ") % " + std::to_string(cfg.shard_count) +
               " == " + std::to_string(cfg.shard_index);
    }

    Errc send(ConnId id, ByteView data, TimePoint now) {
        Conn* c = table.resolve(id);
        if (!c) return Errc::stale_handle;
        if (Errc e = check_sendable(*c, data.size, cfg); e != Errc::ok) return e;
        if (out.tx.full()) return Errc::tx_queue_full;
        Context cx = context(now);
        const Errc e = send_datagram(*c, data, cx);
        reschedule(*c);
        return e;
    }

    Errc close(ConnId id, TimePoint now) {
        Conn* c = table.resolve(id);
        if (!c) return Errc::stale_handle;
        if (c->slot == SlotState::closing) {
            // Already ended by the peer or a timeout; the queued terminal event
            // is skipped and this local_close one replaces it.
            out.push_event(c->state == ConnState::established ? EventType::closed : EventType::connect_failed, *c,
                           CloseReason::local_close);
            table.release(*c);
            return Errc::ok;
        }
        Context cx = context(now);
        send_reset(*c, cx);
        count_state_leave(stats, *c);
        table.unindex(*c);
        if (c->state == ConnState::established) {
            out.push_event(EventType::closed, *c, CloseReason::local_close);
        } else if (c->is_client) {
            out.push_event(EventType::connect_failed, *c, CloseReason::local_close);
        }
        table.release(*c);
        return Errc::ok;
    }
};

static_assert(kMaxShards == kEphemeralLast - kEphemeralFirst + 1, "every shard has a port");

Status validate(const StackConfig& c) {
    if (c.shard_count < 1 || c.shard_count > kMaxShards)
        return Status::error(Errc::invalid_argument, "StackConfig::shard_count is " + std::to_string(c.shard_count) +
                                                         "; it must be 1 (no sharding) to " + std::to_string(kMaxShards) +
                                                         ", usually the TUN's queue count");
    if (c.shard_index >= c.shard_count)
        return Status::error(Errc::invalid_argument, "StackConfig::shard_index is " + std::to_string(c.shard_index) +
                                                         "; it must be below shard_count (" +
                                                         std::to_string(c.shard_count) + ")");
    return Status();
}

Stack::Stack(const StackConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Stack::~Stack() = default;
Stack::Stack(Stack&&) noexcept = default;
Stack& Stack::operator=(Stack&&) noexcept = default;

Status Stack::listen(uint16_t port) {
    if (port == 0) return Status::error(Errc::invalid_argument, "listen: port 0 is not a port");
    if (impl_->listening.has(port))
        return Status::error(Errc::already_listening,
                             "listen on port " + std::to_string(port) + ": already listening");
    impl_->listening.add(port);
    return Status();
}

Status Stack::unlisten(uint16_t port) {
    if (port == 0 || !impl_->listening.has(port))
        return Status::error(Errc::not_listening,
                             "unlisten port " + std::to_string(port) + ": not listening");
    impl_->listening.remove(port);
    return Status();
}

Result<ConnId> Stack::connect(const Endpoint& remote, TimePoint now) {
    return impl_->connect(remote, now);
}

Errc Stack::send(ConnId conn, ByteView datagram, TimePoint now) {
    return impl_->send(conn, datagram, now);
}

size_t Stack::max_datagram(ConnId conn) const {
    const Conn* c = impl_->table.resolve(conn);
    if (!c) return 0;
    return max_datagram_of(*c, impl_->cfg);
}

Errc Stack::close(ConnId conn, TimePoint now) { return impl_->close(conn, now); }

std::optional<ConnInfo> Stack::info(ConnId conn) const {
    const Conn* c = impl_->table.resolve(conn);
    if (!c) return std::nullopt;
    return ConnInfo{c->local, c->remote, c->state, c->user_data};
}

Errc Stack::set_user_data(ConnId conn, uint64_t value) {
    Conn* c = impl_->table.resolve(conn);
    if (!c) return Errc::stale_handle;
    c->user_data = value;
    return Errc::ok;
}

void Stack::on_packet(ByteView packet, TimePoint now) { impl_->on_packet(packet, now, RxChecksum::verify); }
void Stack::on_packet(ByteView packet, TimePoint now, RxChecksum checksum) {
    impl_->on_packet(packet, now, checksum);
}
void Stack::on_timer(TimePoint now) { impl_->on_timer(now); }
std::optional<TimePoint> Stack::next_deadline() const { return impl_->timers.next_deadline(); }

size_t Stack::tx_count() const { return impl_->out.tx.size(); }
ByteView Stack::tx_packet(size_t i) const { return impl_->out.tx.packet(i); }
uint8_t* Stack::tx_packet_mutable(size_t i) { return impl_->out.tx.packet_mutable(i); }
void Stack::set_tx_checksum_offload(bool on) { impl_->out.checksum_offload = on; }
bool Stack::tx_checksum_partial(size_t i) const { return impl_->out.tx.checksum_partial(i); }
bool Stack::tx_full() const { return impl_->out.tx.full(); }
void Stack::tx_clear() { impl_->out.tx.clear(); }
bool Stack::poll_event(Event& out) { return impl_->poll_event(out); }
const Stats& Stack::stats() const { return impl_->stats; }
const StackConfig& Stack::config() const { return impl_->cfg; }

size_t Stack::memory_footprint() const {
    const Impl& m = *impl_;
    return sizeof(Impl) + m.table.memory_footprint() + m.timers.memory_footprint() +
           m.listening.memory_footprint() + m.out.tx.memory_footprint() + m.out.events.memory_footprint();
}

// ===========================================================================
// 6. Reactor: epoll and deadlines. The only place that reads the clock.
// ===========================================================================

namespace {
// Watches are indexed by fd; the epoll cookie carries a generation so an
// event for a closed-and-reused fd number in the same batch is ignored.
uint64_t watch_cookie(int fd, uint32_t generation) {
    return (uint64_t{generation} << 32) | static_cast<uint32_t>(fd);
}
}  // namespace

Result<Reactor> Reactor::create() {
    Reactor r;
    r.epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (r.epfd_ < 0) return Status::from_errno("epoll_create1", errno);
    return r;
}

Reactor::~Reactor() {
    if (epfd_ >= 0) ::close(epfd_);
}

void AdaptivePoll::on_arrival(TimePoint now) {
    prev_close_ = last_close_;
    last_close_ = seen_ && now - last_ <= budget_;
    seen_ = true;
    last_ = now;
}

TimePoint AdaptivePoll::poll_until(TimePoint now) const {
    if (!(last_close_ || prev_close_) || budget_.count() <= 0) return now;
    return last_ + budget_;
}

Reactor::Reactor(Reactor&& o) noexcept
    : epfd_(std::exchange(o.epfd_, -1)),
      stopping_(o.stopping_),
      busy_poll_(o.busy_poll_),
      adaptive_(o.adaptive_),
      polled_wakeups_(o.polled_wakeups_),
      sleeps_(o.sleeps_),
      empty_polls_(o.empty_polls_),
      watches_(std::move(o.watches_)),
      handlers_(std::move(o.handlers_)) {}

Reactor& Reactor::operator=(Reactor&& o) noexcept {
    if (this != &o) {
        if (epfd_ >= 0) ::close(epfd_);
        epfd_ = std::exchange(o.epfd_, -1);
        stopping_ = o.stopping_;
        busy_poll_ = o.busy_poll_;
        adaptive_ = o.adaptive_;
        polled_wakeups_ = o.polled_wakeups_;
        sleeps_ = o.sleeps_;
        empty_polls_ = o.empty_polls_;
        watches_ = std::move(o.watches_);
        handlers_ = std::move(o.handlers_);
    }
    return *this;
}

Status Reactor::add_fd(int fd, Handler& handler) {
    if (fd < 0) return Status::error(Errc::invalid_argument, "add_fd: negative fd");
    if (static_cast<size_t>(fd) >= watches_.size()) watches_.resize(static_cast<size_t>(fd) + 1, Watch{});
    Watch& w = watches_[static_cast<size_t>(fd)];
    if (w.handler) return Status::error(Errc::invalid_argument, "add_fd: fd " + std::to_string(fd) + " is already watched");
    uint32_t gen = w.generation + 1;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = watch_cookie(fd, gen);
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0)
        return Status::from_errno("epoll_ctl(ADD, fd " + std::to_string(fd) + ")", errno);
    w.handler = &handler;
    w.generation = gen;
    add_handler(handler);
    return Status();
}

Status Reactor::remove_fd(int fd) {
    if (fd < 0 || static_cast<size_t>(fd) >= watches_.size() || !watches_[static_cast<size_t>(fd)].handler)
        return Status::error(Errc::invalid_argument, "remove_fd: fd " + std::to_string(fd) + " is not watched");
    Watch& w = watches_[static_cast<size_t>(fd)];
    w.handler = nullptr;
    ++w.generation;
    if (epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr) < 0)
        return Status::from_errno("epoll_ctl(DEL, fd " + std::to_string(fd) + ")", errno);
    return Status();
}

void Reactor::add_handler(Handler& handler) {
    for (Handler* h : handlers_)
        if (h == &handler) return;
    handlers_.push_back(&handler);
}

void Reactor::remove_handler(Handler& handler) {
    // Null it out rather than erase: we may be iterating handlers_ right now.
    for (Handler*& h : handlers_)
        if (h == &handler) h = nullptr;
    for (Watch& w : watches_)
        if (w.handler == &handler) w.handler = nullptr;
}

TimePoint Reactor::now() const { return Clock::now(); }

Status Reactor::run() {
    stopping_ = false;
    while (!stopping_) {
        Status s = run_once(std::chrono::hours(1));
        if (!s) return s;
    }
    return Status();
}

// epoll_wait until `wake`: polling first while busy polling (fixed spin) or
// the adaptive policy says so.
int Reactor::wait(epoll_event* events, int max_events, TimePoint start, TimePoint wake) {
    if (wake <= start) return epoll_wait(epfd_, events, max_events, 0);
    const bool fixed = busy_poll_.count() > 0;
    const TimePoint spin_end = std::min(wake, fixed ? start + busy_poll_ : adaptive_.poll_until(start));
    if (spin_end > start) {
        do {
            const int n = epoll_wait(epfd_, events, max_events, 0);
            if (n != 0) {
                if (n > 0) ++polled_wakeups_;
                return n;
            }
            ++empty_polls_;
            // Adaptive polling gives way to runnable threads between polls (the
            // fixed spin keeps its documented behaviour: it never yields).
            if (!fixed) sched_yield();
        } while (now() < spin_end);
        start = now();
        if (wake <= start) return 0;
    }
    ++sleeps_;
    // Round up so we never wake just before a deadline and spin.
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - start + std::chrono::microseconds(999));
    const int timeout_ms = static_cast<int>(std::min<int64_t>(ms.count(), 3600 * 1000));
    return epoll_wait(epfd_, events, max_events, timeout_ms);
}

Status Reactor::run_once(Duration max_wait) {
    handlers_.erase(std::remove(handlers_.begin(), handlers_.end(), nullptr), handlers_.end());
    TimePoint start = now();
    TimePoint wake = start + max_wait;
    for (Handler* h : handlers_) {
        auto d = h->next_deadline();
        if (d && *d < wake) wake = *d;
    }
    constexpr int kMaxEvents = 64;
    epoll_event evs[kMaxEvents];
    int n = wait(evs, kMaxEvents, start, wake);
    if (n < 0) {
        if (errno == EINTR) return Status();
        return Status::from_errno("epoll_wait", errno);
    }
    TimePoint t = now();
    if (n > 0) adaptive_.on_arrival(t);
    for (int i = 0; i < n; ++i) {
        int fd = static_cast<int>(evs[i].data.u64 & 0xffffffffu);
        uint32_t gen = static_cast<uint32_t>(evs[i].data.u64 >> 32);
        if (fd < 0 || static_cast<size_t>(fd) >= watches_.size()) continue;
        Watch& w = watches_[static_cast<size_t>(fd)];
        if (!w.handler || w.generation != gen) continue;  // removed during this batch
        w.handler->on_readable(fd, t);
    }
    t = now();
    // Index loop: a handler may add handlers while we iterate.
    for (size_t i = 0; i < handlers_.size(); ++i) {
        Handler* h = handlers_[i];
        if (!h) continue;
        auto d = h->next_deadline();
        if (d && *d <= t) h->on_deadline(t);
    }
    for (size_t i = 0; i < handlers_.size(); ++i)
        if (handlers_[i]) handlers_[i]->on_batch_end(t);
    return Status();
}

// ===========================================================================
// 7. StackDriver: TUN reads -> Stack -> events -> application; tx -> TUN.
// The glue: batches and offloads are the Tun's (tun.cpp, TunBatch), the
// protocol the Stack's; this only moves packets between them and events out.
// ===========================================================================

StackDriver::StackDriver(Stack& stack, Tun& tun, StackHandler& handler)
    : stack_(stack),
      tun_(tun),
      handler_(handler),
      io_(tun, stack.config().mtu, stack.config().tx_queue_capacity) {
    // An offload TUN completes TCP checksums itself (TUN_F_CSUM): the stack
    // need not sum the payload of data segments.
    stack.set_tx_checksum_offload(tun.offload());
}

Status StackDriver::attach(Reactor& reactor) {
    own_queue_ = kAllQueues;
    next_tx_queue_ = 0;
    for (size_t q = 0; q < tun_.queue_count(); ++q) {
        Status s = reactor.add_fd(tun_.fd(q), *this);
        if (!s) return s;
    }
    reactor.add_handler(*this);
    return Status();
}

// One queue, read and written by this driver alone: with the Tun's port
// steering the kernel delivers this Stack's flows here and nowhere else.
// Writing on the same queue keeps the thread off the other queues' locks
// and records the right rx queue for RPS/RFS.
Status StackDriver::attach_queue(Reactor& reactor, size_t queue) {
    if (queue >= tun_.queue_count())
        return Status::error(Errc::invalid_argument, "StackDriver::attach_queue: queue " + std::to_string(queue) +
                                                         " of " + tun_.name() + ", which has " +
                                                         std::to_string(tun_.queue_count()) + " queue(s)");
    Status s = reactor.add_fd(tun_.fd(queue), *this);
    if (!s) return s;
    own_queue_ = queue;
    next_tx_queue_ = queue;
    reactor.add_handler(*this);
    return Status();
}

void StackDriver::detach(Reactor& reactor) {
    for (size_t q = 0; q < tun_.queue_count(); ++q)
        if (own_queue_ == kAllQueues || own_queue_ == q) (void)reactor.remove_fd(tun_.fd(q));
    reactor.remove_handler(*this);
}

size_t StackDriver::queue_of(int fd) const {
    for (size_t q = 0; q < tun_.queue_count(); ++q)
        if (tun_.fd(q) == fd) return own_queue_ == kAllQueues || own_queue_ == q ? q : kNoQueue;
    return kNoQueue;
}

void StackDriver::on_readable(int fd, TimePoint now) {
    const size_t queue = queue_of(fd);
    if (queue == kNoQueue) return;  // not ours: another thread reads it
    // A few batches, then yield to the other fds (level-triggered epoll
    // brings us back if more is pending).
    size_t budget = kReadsPerWakeup;
    do {
        budget -= tun_.read(queue, io_, budget);
        for (size_t i = 0; i < io_.rx_count(); ++i) {
            stack_.on_packet(io_.rx_packet(i), now, io_.rx_checksum(i));
            if (stack_.tx_full()) flush();
        }
        dispatch_events();  // datagram events point into io_: deliver them before it is reused
    } while (io_.rx_more());
}

void StackDriver::dispatch_events() {
    Event ev;
    while (stack_.poll_event(ev)) {
        switch (ev.type) {
            case EventType::accepted:
            case EventType::connected: {
                auto info = stack_.info(ev.conn);
                if (!info) break;
                if (ev.type == EventType::accepted) {
                    handler_.on_accepted(ev.conn, *info);
                } else {
                    handler_.on_connected(ev.conn, *info);
                }
                break;
            }
            case EventType::connect_failed: handler_.on_connect_failed(ev.conn, ev.reason); break;
            case EventType::datagram: handler_.on_datagram(ev.conn, ev.data); break;
            case EventType::closed: handler_.on_closed(ev.conn, ev.reason); break;
        }
    }
}

Errc StackDriver::send(ConnId conn, ByteView datagram, TimePoint now) {
    if (stack_.tx_full()) flush();
    return stack_.send(conn, datagram, now);
}

Errc StackDriver::close(ConnId conn, TimePoint now) {
    if (stack_.tx_full()) flush();
    return stack_.close(conn, now);
}

Result<ConnId> StackDriver::connect(const Endpoint& remote, TimePoint now) {
    if (stack_.tx_full()) flush();
    return stack_.connect(remote, now);
}

void StackDriver::flush() {
    for (size_t i = 0; i < stack_.tx_count(); ++i) {
        const TxChecksum sum = stack_.tx_checksum_partial(i) ? TxChecksum::partial : TxChecksum::complete;
        io_.add_tx(stack_.tx_packet_mutable(i), stack_.tx_packet(i).size, sum);
    }
    tun_.write(next_tx_queue_, io_);
    stack_.tx_clear();
}

std::optional<TimePoint> StackDriver::next_deadline() const { return stack_.next_deadline(); }

void StackDriver::on_deadline(TimePoint now) {
    stack_.on_timer(now);
    dispatch_events();
}

// Timers that came due during the batch (a later handler's on_deadline may
// have sent or closed at `now`; an own loop may call this alone) run before
// the flush, so their packets leave with this batch.
void StackDriver::on_batch_end(TimePoint now) {
    const std::optional<TimePoint> due = stack_.next_deadline();
    if (due && *due <= now) stack_.on_timer(now);
    dispatch_events();
    flush();
}

}  // namespace faketcp
