// Test support: see support.h. Written from the RFCs, sharing no code with faketcp.cpp.
#include "support.h"

#include <arpa/inet.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <sstream>

namespace tst {

// ---------------------------------------------------------------------------
// Checksums and byte order
// ---------------------------------------------------------------------------

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) {
    return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
void put16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}
void put32(uint8_t* p, uint32_t v) {
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}

uint32_t ones_sum(const uint8_t* p, size_t n, uint32_t acc) {
    uint64_t sum = acc;
    for (size_t i = 0; i + 1 < n; i += 2) sum += be16(p + i);
    if (n % 2) sum += uint32_t{p[n - 1]} << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint32_t>(sum);
}

uint16_t inet_checksum(const uint8_t* p, size_t n, uint32_t acc) {
    return static_cast<uint16_t>(~ones_sum(p, n, acc) & 0xffff);
}

uint16_t checksum_adjust(uint16_t hc, uint16_t m, uint16_t m2) {
    // HC' = ~(~HC + ~m + m')
    uint32_t sum = uint32_t{static_cast<uint16_t>(~hc)} + static_cast<uint16_t>(~m) + m2;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

ft::IpAddr ip(const char* text) {
    ft::IpAddr a;
    if (inet_pton(AF_INET, text, a.bytes.data()) == 1) {
        a.family = ft::Family::v4;
        return a;
    }
    if (inet_pton(AF_INET6, text, a.bytes.data()) == 1) {
        a.family = ft::Family::v6;
        return a;
    }
    FAIL("test bug: bad address literal " << text);
    return a;
}

ft::Endpoint ep(const char* ip_text, uint16_t port) { return ft::Endpoint{ip(ip_text), port}; }

std::string fmt(const ft::IpAddr& a) {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(a.family == ft::Family::v4 ? AF_INET : AF_INET6, a.bytes.data(), buf, sizeof buf);
    return buf;
}

std::string fmt(const ft::Endpoint& e) {
    if (e.addr.family == ft::Family::v6) return "[" + fmt(e.addr) + "]:" + std::to_string(e.port);
    return fmt(e.addr) + ":" + std::to_string(e.port);
}


// ---------------------------------------------------------------------------
// Segments
// ---------------------------------------------------------------------------

bool operator==(const Seg& a, const Seg& b) {
    return a.src == b.src && a.dst == b.dst && a.seq == b.seq && a.ack == b.ack &&
           a.flags == b.flags && a.window == b.window && a.urgent == b.urgent &&
           a.options == b.options && a.payload == b.payload && a.tos == b.tos &&
           a.flow == b.flow && a.ip_id == b.ip_id && a.frag == b.frag && a.ttl == b.ttl &&
           a.error == b.error;
}

std::string flag_string(uint8_t f) {
    std::string s;
    if (f & kFin) s += 'F';
    if (f & kSyn) s += 'S';
    if (f & kRst) s += 'R';
    if (f & kPsh) s += 'P';
    if (f & kUrg) s += 'U';
    if (f & 0xc0) s += 'E';  // ECE/CWR: never expected
    if (f & kAck) s += '.';
    return s.empty() ? "none" : s;
}

std::string hex(const uint8_t* p, size_t n) {
    std::string s;
    char b[4];
    for (size_t i = 0; i < n; ++i) {
        std::snprintf(b, sizeof b, "%02x", p[i]);
        if (i) s += ' ';
        s += b;
    }
    return s;
}

namespace {

std::string describe_options(const Bytes& o) {
    std::ostringstream out;
    size_t i = 0;
    bool first = true;
    auto sep = [&] {
        if (!first) out << ',';
        first = false;
    };
    while (i < o.size()) {
        uint8_t kind = o[i];
        sep();
        if (kind == 0) {
            out << "eol";
            ++i;
            continue;
        }
        if (kind == 1) {
            out << "nop";
            ++i;
            continue;
        }
        if (i + 1 >= o.size() || o[i + 1] < 2 || i + o[i + 1] > o.size()) {
            out << "bad[" << hex(o.data() + i, o.size() - i) << "]";
            break;
        }
        uint8_t len = o[i + 1];
        if (kind == 3 && len == 3) out << "wscale " << int{o[i + 2]};
        else if (kind == 2 && len == 4) out << "mss " << be16(&o[i + 2]);
        else if (kind == 4 && len == 2) out << "sackOK";
        else if (kind == 8 && len == 10) out << "TS val " << be32(&o[i + 2]) << " ecr " << be32(&o[i + 6]);
        else out << "opt" << int{kind} << "[" << hex(o.data() + i, len) << "]";
        i += len;
    }
    return out.str();
}

}  // namespace

std::string describe(const Seg& s) {
    std::ostringstream out;
    out << fmt(s.src) << " > " << fmt(s.dst) << " " << flag_string(s.flags) << " seq " << s.seq
        << " ack " << s.ack << " win " << s.window << " len " << s.payload.size();
    if (!s.options.empty()) out << " <" << describe_options(s.options) << ">";
    if (s.urgent) out << " urg " << s.urgent;
    if (s.tos) out << " tos " << int{s.tos};
    if (s.flow) out << " flow " << s.flow;
    if (s.ip_id) out << " id " << s.ip_id;
    if (!s.v6() && s.frag != 0x4000) {
        char b[16];
        std::snprintf(b, sizeof b, "0x%04x", s.frag);
        out << " frag " << b << (s.frag & 0x4000 ? "" : " (no DF)");
    }
    if (s.ttl != 64) out << (s.v6() ? " hlim " : " ttl ") << int{s.ttl};
    if (!s.payload.empty()) {
        size_t n = s.payload.size() < 16 ? s.payload.size() : 16;
        out << " data[" << hex(s.payload.data(), n) << (s.payload.size() > 16 ? " ..." : "") << "]";
    }
    if (!s.error.empty()) out << " !! " << s.error;
    return out.str();
}

namespace {

// The pseudo-header sum (RFC 9293 §3.1, RFC 8200 §8.1).
uint32_t pseudo_sum(const ft::IpAddr& src, const ft::IpAddr& dst, uint8_t proto, size_t l4_len) {
    uint8_t ph[40] = {};
    size_t n;
    if (src.family == ft::Family::v4) {
        std::memcpy(ph, src.bytes.data(), 4);
        std::memcpy(ph + 4, dst.bytes.data(), 4);
        ph[9] = proto;
        put16(ph + 10, static_cast<uint16_t>(l4_len));
        n = 12;
    } else {
        std::memcpy(ph, src.bytes.data(), 16);
        std::memcpy(ph + 16, dst.bytes.data(), 16);
        put32(ph + 32, static_cast<uint32_t>(l4_len));
        ph[39] = proto;
        n = 40;
    }
    return ones_sum(ph, n);
}

Bytes tcp_segment(const Seg& s) {
    size_t hlen = 20 + s.options.size();
    Bytes t(hlen + s.payload.size());
    put16(&t[0], s.src.port);
    put16(&t[2], s.dst.port);
    put32(&t[4], s.seq);
    put32(&t[8], s.ack);
    t[12] = static_cast<uint8_t>((hlen / 4) << 4);
    t[13] = s.flags;
    put16(&t[14], s.window);
    put16(&t[18], s.urgent);
    std::copy(s.options.begin(), s.options.end(), t.begin() + 20);
    std::copy(s.payload.begin(), s.payload.end(), t.begin() + static_cast<long>(hlen));
    put16(&t[16], inet_checksum(t.data(), t.size(), pseudo_sum(s.src.addr, s.dst.addr, 6, t.size())));
    return t;
}

Bytes ipv4_with(const ft::IpAddr& src, const ft::IpAddr& dst, uint8_t proto, const Bytes& l4,
                uint8_t tos, uint16_t id, uint16_t frag, uint8_t ttl) {
    Bytes p(20 + l4.size());
    p[0] = 0x45;
    p[1] = tos;
    put16(&p[2], static_cast<uint16_t>(p.size()));
    put16(&p[4], id);
    put16(&p[6], frag);
    p[8] = ttl;
    p[9] = proto;
    std::memcpy(&p[12], src.bytes.data(), 4);
    std::memcpy(&p[16], dst.bytes.data(), 4);
    put16(&p[10], inet_checksum(p.data(), 20));
    std::copy(l4.begin(), l4.end(), p.begin() + 20);
    return p;
}

Bytes ipv6_with(const ft::IpAddr& src, const ft::IpAddr& dst, uint8_t nh, const Bytes& l4,
                uint8_t tc, uint32_t flow, uint8_t hlim) {
    Bytes p(40 + l4.size());
    put32(&p[0], 6u << 28 | uint32_t{tc} << 20 | (flow & 0xfffff));
    put16(&p[4], static_cast<uint16_t>(l4.size()));
    p[6] = nh;
    p[7] = hlim;
    std::memcpy(&p[8], src.bytes.data(), 16);
    std::memcpy(&p[24], dst.bytes.data(), 16);
    std::copy(l4.begin(), l4.end(), p.begin() + 40);
    return p;
}

}  // namespace

Bytes encode(const Seg& s) {
    Bytes t = tcp_segment(s);
    if (s.v6()) return ipv6_with(s.src.addr, s.dst.addr, 6, t, s.tos, s.flow, s.ttl);
    return ipv4_with(s.src.addr, s.dst.addr, 6, t, s.tos, s.ip_id, s.frag, s.ttl);
}

Bytes ipv4_packet(const ft::IpAddr& src, const ft::IpAddr& dst, uint8_t proto, const Bytes& l4) {
    return ipv4_with(src, dst, proto, l4, 0, 0, 0x4000, 64);
}

Bytes ipv6_packet(const ft::IpAddr& src, const ft::IpAddr& dst, uint8_t nh, const Bytes& l4) {
    return ipv6_with(src, dst, nh, l4, 0, 0, 64);
}

Seg decode(ft::ByteView pkt) {
    Seg s;
    const uint8_t* p = pkt.data;
    size_t n = pkt.size;
    auto fail = [&](const std::string& why) {
        s.error = why + " [" + hex(p, n) + "]";
        return s;
    };
    if (n < 1) return fail("empty");
    size_t l4;
    uint8_t proto;
    if (p[0] >> 4 == 4) {
        if (n < 20) return fail("short IPv4 header");
        if ((p[0] & 0xf) != 5) return fail("IPv4 IHL != 5");
        if (be16(p + 2) != n) return fail("IPv4 total length " + std::to_string(be16(p + 2)) + " != size");
        if (inet_checksum(p, 20) != 0) return fail("bad IPv4 header checksum");
        s.tos = p[1];
        s.ip_id = be16(p + 4);
        s.frag = be16(p + 6);
        s.ttl = p[8];
        proto = p[9];
        s.src.addr.family = s.dst.addr.family = ft::Family::v4;
        std::memcpy(s.src.addr.bytes.data(), p + 12, 4);
        std::memcpy(s.dst.addr.bytes.data(), p + 16, 4);
        l4 = 20;
    } else if (p[0] >> 4 == 6) {
        if (n < 40) return fail("short IPv6 header");
        if (be16(p + 4) + 40u != n) return fail("IPv6 payload length != size - 40");
        uint32_t w = be32(p);
        s.tos = static_cast<uint8_t>(w >> 20);
        s.flow = w & 0xfffff;
        proto = p[6];
        s.ttl = p[7];
        s.src.addr.family = s.dst.addr.family = ft::Family::v6;
        std::memcpy(s.src.addr.bytes.data(), p + 8, 16);
        std::memcpy(s.dst.addr.bytes.data(), p + 24, 16);
        s.frag = 0x4000;
        l4 = 40;
    } else {
        return fail("IP version " + std::to_string(p[0] >> 4));
    }
    if (proto != 6) return fail("protocol " + std::to_string(proto) + " is not TCP");
    const uint8_t* t = p + l4;
    size_t tn = n - l4;
    if (tn < 20) return fail("short TCP header");
    s.src.port = be16(t);
    s.dst.port = be16(t + 2);
    s.seq = be32(t + 4);
    s.ack = be32(t + 8);
    s.flags = t[13];
    s.window = be16(t + 14);
    s.urgent = be16(t + 18);
    size_t doff = static_cast<size_t>(t[12] >> 4) * 4;
    if ((t[12] & 0x0f) != 0) return fail("TCP reserved bits set");
    if (doff < 20 || doff > tn) return fail("TCP data offset " + std::to_string(doff));
    s.options.assign(t + 20, t + doff);
    s.payload.assign(t + doff, t + tn);
    if (inet_checksum(t, tn, pseudo_sum(s.src.addr, s.dst.addr, 6, tn)) != 0)
        return fail("bad TCP checksum");
    Bytes again = encode(s);
    if (again.size() != n || std::memcmp(again.data(), p, n) != 0)
        return fail("re-encoding differs: " + hex(again));
    return s;
}

void fix_ipv4_checksum(Bytes& p) {
    size_t ihl = size_t{p[0] & 0xfu} * 4;
    put16(&p[10], 0);
    put16(&p[10], inet_checksum(p.data(), ihl));
}

size_t tcp_offset(const Bytes& p) { return (p[0] >> 4) == 4 ? size_t{p[0] & 0xfu} * 4 : 40; }

void fix_tcp_checksum(Bytes& p) {
    size_t off = tcp_offset(p);
    ft::IpAddr src, dst;
    if ((p[0] >> 4) == 4) {
        src.family = dst.family = ft::Family::v4;
        std::memcpy(src.bytes.data(), &p[12], 4);
        std::memcpy(dst.bytes.data(), &p[16], 4);
    } else {
        src.family = dst.family = ft::Family::v6;
        std::memcpy(src.bytes.data(), &p[8], 16);
        std::memcpy(dst.bytes.data(), &p[24], 16);
    }
    size_t tn = p.size() - off;
    put16(&p[off + 16], 0);
    put16(&p[off + 16], inet_checksum(&p[off], tn, pseudo_sum(src, dst, 6, tn)));
}

Bytes with_port(const uint8_t* golden, size_t n, PortField which, uint16_t port) {
    Bytes p(golden, golden + n);
    size_t off = tcp_offset(p);
    size_t at = off + (which == PortField::src ? 0 : 2);
    uint16_t old_port = be16(&p[at]);
    put16(&p[at], port);
    put16(&p[off + 16], checksum_adjust(be16(&p[off + 16]), old_port, port));
    return p;
}

Bytes bytes(std::string_view text) { return Bytes(text.begin(), text.end()); }

Seg Path::seg(uint8_t flags, uint32_t seq, uint32_t ack, Bytes payload) const {
    Seg s;
    s.src = src;
    s.dst = dst;
    s.flags = flags;
    s.seq = seq;
    s.ack = ack;
    s.payload = std::move(payload);
    return s;
}
Seg Path::syn(uint32_t seq) const {
    Seg s = seg(kSyn, seq, 0);
    s.options = kPhantunSynOptions;
    return s;
}
Seg Path::syn_ack(uint32_t seq, uint32_t ack) const {
    Seg s = seg(kSyn | kAck, seq, ack);
    s.options = kPhantunSynOptions;
    return s;
}
Seg Path::ack(uint32_t seq, uint32_t ack) const { return seg(kAck, seq, ack); }
Seg Path::data(uint32_t seq, uint32_t ack, Bytes payload) const {
    return seg(kAck, seq, ack, std::move(payload));
}
Seg Path::rst(uint32_t seq) const { return seg(kRst, seq, 0); }
Seg Path::rst_ack(uint32_t seq, uint32_t ack) const { return seg(kRst | kAck, seq, ack); }


// ---------------------------------------------------------------------------
// Events and names
// ---------------------------------------------------------------------------

bool operator==(const Ev& a, const Ev& b) {
    bool has_reason =
        a.type == ft::EventType::connect_failed || a.type == ft::EventType::closed;
    return a.type == b.type && a.conn == b.conn && (!has_reason || a.reason == b.reason) &&
           a.user_data == b.user_data && a.data == b.data;
}

Ev ev_accepted(ft::ConnId c) { return Ev{ft::EventType::accepted, c, {}, 0, {}}; }
Ev ev_connected(ft::ConnId c) { return Ev{ft::EventType::connected, c, {}, 0, {}}; }
Ev ev_connect_failed(ft::ConnId c, ft::CloseReason r) {
    return Ev{ft::EventType::connect_failed, c, r, 0, {}};
}
Ev ev_datagram(ft::ConnId c, Bytes data) {
    return Ev{ft::EventType::datagram, c, {}, 0, std::move(data)};
}
Ev ev_closed(ft::ConnId c, ft::CloseReason r) { return Ev{ft::EventType::closed, c, r, 0, {}}; }

const char* name(ft::Errc v) {
    switch (v) {
        case ft::Errc::ok: return "ok";
        case ft::Errc::invalid_argument: return "invalid_argument";
        case ft::Errc::not_established: return "not_established";
        case ft::Errc::too_big: return "too_big";
        case ft::Errc::empty_datagram: return "empty_datagram";
        case ft::Errc::stale_handle: return "stale_handle";
        case ft::Errc::already_listening: return "already_listening";
        case ft::Errc::not_listening: return "not_listening";
        case ft::Errc::no_local_address: return "no_local_address";
        case ft::Errc::ports_exhausted: return "ports_exhausted";
        case ft::Errc::table_full: return "table_full";
        case ft::Errc::tx_queue_full: return "tx_queue_full";
        case ft::Errc::window_full: return "window_full";
        case ft::Errc::system: return "system";
    }
    return "Errc(?)";
}

const char* name(ft::DropReason v) {
    switch (v) {
        case ft::DropReason::truncated: return "truncated";
        case ft::DropReason::bad_ip_version: return "bad_ip_version";
        case ft::DropReason::ipv4_options: return "ipv4_options";
        case ft::DropReason::ipv4_bad_checksum: return "ipv4_bad_checksum";
        case ft::DropReason::ipv4_fragment: return "ipv4_fragment";
        case ft::DropReason::ipv6_extension_headers: return "ipv6_extension_headers";
        case ft::DropReason::length_mismatch: return "length_mismatch";
        case ft::DropReason::not_tcp: return "not_tcp";
        case ft::DropReason::bad_data_offset: return "bad_data_offset";
        case ft::DropReason::bad_tcp_checksum: return "bad_tcp_checksum";
        case ft::DropReason::bad_address: return "bad_address";
        case ft::DropReason::bad_port: return "bad_port";
        case ft::DropReason::bad_flags: return "bad_flags";
        case ft::DropReason::syn_with_payload: return "syn_with_payload";
        case ft::DropReason::no_listener: return "no_listener";
        case ft::DropReason::unknown_rst: return "unknown_rst";
        case ft::DropReason::rst_not_exact: return "rst_not_exact";
        case ft::DropReason::bad_ack: return "bad_ack";
        case ft::DropReason::unexpected_syn: return "unexpected_syn";
        case ft::DropReason::half_open_limit: return "half_open_limit";
        case ft::DropReason::table_full: return "table_full";
        case ft::DropReason::reply_rate_limited: return "reply_rate_limited";
        case ft::DropReason::tx_queue_full: return "tx_queue_full";
        case ft::DropReason::event_queue_full: return "event_queue_full";
        case ft::DropReason::count_: return "count_";
    }
    return "DropReason(?)";
}

const char* name(ft::EventType v) {
    switch (v) {
        case ft::EventType::accepted: return "accepted";
        case ft::EventType::connected: return "connected";
        case ft::EventType::connect_failed: return "connect_failed";
        case ft::EventType::datagram: return "datagram";
        case ft::EventType::closed: return "closed";
    }
    return "EventType(?)";
}

const char* name(ft::CloseReason v) {
    switch (v) {
        case ft::CloseReason::peer_reset: return "peer_reset";
        case ft::CloseReason::local_close: return "local_close";
        case ft::CloseReason::handshake_timeout: return "handshake_timeout";
        case ft::CloseReason::peer_dead: return "peer_dead";
    }
    return "CloseReason(?)";
}

const char* name(ft::ConnState v) {
    switch (v) {
        case ft::ConnState::syn_sent: return "syn_sent";
        case ft::ConnState::syn_received: return "syn_received";
        case ft::ConnState::established: return "established";
    }
    return "ConnState(?)";
}

std::string drop_delta(const ft::Stats& before, const ft::Stats& after) {
    std::string out;
    for (size_t i = 0; i < ft::kDropReasonCount; ++i) {
        if (after.drops[i] == before.drops[i]) continue;
        if (!out.empty()) out += ' ';
        long long d = static_cast<long long>(after.drops[i] - before.drops[i]);
        out += name(static_cast<ft::DropReason>(i));
        out += (d > 0 ? "+" : "") + std::to_string(d);
    }
    return out;
}

// ---------------------------------------------------------------------------
// Guard page
// ---------------------------------------------------------------------------

GuardedBuffer::GuardedBuffer() {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* m = mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE_MESSAGE(m != MAP_FAILED, "mmap of the guard pages failed");
    base_ = static_cast<uint8_t*>(m);
    REQUIRE_MESSAGE(mprotect(base_ + page_, page_, PROT_NONE) == 0, "mprotect failed");
}

GuardedBuffer::~GuardedBuffer() {
    if (base_) munmap(base_, 2 * page_);
}

ft::ByteView GuardedBuffer::place(const uint8_t* p, size_t n) {
    REQUIRE(n <= page_);
    uint8_t* at = base_ + page_ - n;
    if (n) std::memcpy(at, p, n);
    return ft::ByteView(at, n);
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

ft::StackConfig base_config() {
    ft::StackConfig c;
    c.local_v4 = kStack4;
    c.local_v6 = kStack6;
    c.seed = 0x5eed;
    return c;
}

ft::StackConfig without_keepalive(ft::StackConfig c) {
    c.keepalive_interval = Duration::zero();
    return c;
}

Harness::Harness(const ft::StackConfig& config) : stack(config) {}

void Harness::listen(uint16_t port) {
    ft::Status st = stack.listen(port);
    REQUIRE_MESSAGE(st.ok(), "listen(" << port << "): " << st.message());
}

void Harness::in(const Seg& s) { in_bytes(encode(s)); }

void Harness::in_bytes(Bytes b) {
    inputs_.push_back(std::move(b));
    const Bytes& kept = inputs_.back();
    stack.on_packet(ft::ByteView(kept.data(), kept.size()), now);
}

void Harness::in_guarded(const Bytes& b) {
    if (!guard_) guard_ = std::make_unique<GuardedBuffer>();
    stack.on_packet(guard_->place(b), now);
}

void Harness::at(TimePoint t) {
    REQUIRE_MESSAGE(t >= now, "test bug: time goes backwards");
    now = t;
    stack.on_timer(now);
}

std::vector<Bytes> Harness::tx_raw() {
    std::vector<Bytes> out;
    for (size_t i = 0; i < stack.tx_count(); ++i) {
        ft::ByteView v = stack.tx_packet(i);
        out.emplace_back(v.begin(), v.end());
    }
    stack.tx_clear();
    return out;
}

Packets Harness::tx() {
    Packets p;
    for (const Bytes& b : tx_raw()) p.segs.push_back(decode(ft::ByteView(b.data(), b.size())));
    return p;
}

Evs Harness::events() {
    Evs out;
    ft::Event e;
    while (stack.poll_event(e)) {
        Ev v;
        v.type = e.type;
        v.conn = e.conn;
        v.reason = e.reason;
        v.user_data = e.user_data;
        if (e.type == ft::EventType::datagram) v.data.assign(e.data.begin(), e.data.end());
        out.list.push_back(std::move(v));
    }
    inputs_.clear();  // no event refers to them any more
    return out;
}

ServerConn establish_server(Harness& h, const Path& in, uint32_t irs) {
    Path out = in.reversed();
    h.in(in.syn(irs));
    Packets synack = h.tx();
    REQUIRE(synack == pkts(out.syn_ack(0, irs + 1)));
    h.in(in.ack(irs + 1, 1));
    // One pure ACK at once: it carries the scaled window conntrack needs.
    REQUIRE(h.tx() == pkts(out.ack(1, irs + 1)));
    Evs e = h.events();
    REQUIRE(e.size() == 1);
    REQUIRE(e[0].type == ft::EventType::accepted);
    return ServerConn{e[0].conn, in, out};
}

ClientConn start_client(Harness& h, const ft::Endpoint& remote) {
    ft::Result<ft::ConnId> r = h.stack.connect(remote, h.now);
    REQUIRE_MESSAGE(r.ok(), "connect: " << r.status().message());
    ft::ConnId id = r.value();
    std::optional<ft::ConnInfo> info = h.stack.info(id);
    REQUIRE(info.has_value());
    Path out{info->local, remote};
    REQUIRE(h.tx() == pkts(out.syn(0)));
    return ClientConn{id, out, out.reversed()};
}

ClientConn establish_client(Harness& h, const ft::Endpoint& remote, uint32_t irs) {
    ClientConn c = start_client(h, remote);
    h.in(c.in.syn_ack(irs, 1));
    REQUIRE(h.tx() == pkts(c.out.ack(1, irs + 1)));
    REQUIRE(h.events() == evs(ev_connected(c.id)));
    return c;
}

size_t Link::pump(size_t max_rounds) {
    size_t moved = 0;
    for (size_t round = 0; round < max_rounds; ++round) {
        std::vector<Bytes> from_a = a.tx_raw();
        std::vector<Bytes> from_b = b.tx_raw();
        if (from_a.empty() && from_b.empty()) return moved;
        for (Bytes& p : from_a) b.in_bytes(std::move(p));
        for (Bytes& p : from_b) a.in_bytes(std::move(p));
        moved += from_a.size() + from_b.size();
    }
    FAIL("Link::pump: still packets in flight after " << max_rounds << " rounds");
    return moved;
}

void Link::at(TimePoint t) {
    a.at(t);
    b.at(t);
    pump();
}

}  // namespace tst

// ---------------------------------------------------------------------------
// doctest printers
// ---------------------------------------------------------------------------

namespace doctest {

String StringMaker<tst::Seg>::convert(const tst::Seg& s) { return tst::describe(s).c_str(); }

String StringMaker<tst::Packets>::convert(const tst::Packets& p) {
    std::string out = "[" + std::to_string(p.size()) + " packet" + (p.size() == 1 ? "" : "s");
    for (const tst::Seg& s : p.segs) out += "\n    " + tst::describe(s);
    return (out + "]").c_str();
}

namespace {
std::string ev_string(const tst::Ev& e) {
    std::string s = std::string(tst::name(e.type)) + " conn " + std::to_string(e.conn.index) +
                    "/" + std::to_string(e.conn.generation);
    if (e.type == faketcp::EventType::connect_failed || e.type == faketcp::EventType::closed)
        s += std::string(" reason ") + tst::name(e.reason);
    if (e.user_data) s += " user_data " + std::to_string(e.user_data);
    if (e.type == faketcp::EventType::datagram)
        s += " len " + std::to_string(e.data.size()) + " [" +
             tst::hex(e.data.data(), e.data.size() < 24 ? e.data.size() : 24) +
             (e.data.size() > 24 ? " ..." : "") + "]";
    return s;
}
}  // namespace

String StringMaker<tst::Ev>::convert(const tst::Ev& e) { return ev_string(e).c_str(); }

String StringMaker<tst::Evs>::convert(const tst::Evs& e) {
    std::string out = "[" + std::to_string(e.size()) + " event" + (e.size() == 1 ? "" : "s");
    for (const tst::Ev& v : e.list) out += "\n    " + ev_string(v);
    return (out + "]").c_str();
}

String StringMaker<faketcp::ConnId>::convert(const faketcp::ConnId& c) {
    return ("ConnId{" + std::to_string(c.index) + "/" + std::to_string(c.generation) + "}").c_str();
}

String StringMaker<faketcp::IpAddr>::convert(const faketcp::IpAddr& a) {
    return tst::fmt(a).c_str();
}

String StringMaker<faketcp::Endpoint>::convert(const faketcp::Endpoint& e) {
    return tst::fmt(e).c_str();
}

String StringMaker<faketcp::Status>::convert(const faketcp::Status& s) {
    return (std::string(tst::name(s.code())) + (s.message().empty() ? "" : ": " + s.message())).c_str();
}

String StringMaker<faketcp::TimePoint>::convert(const faketcp::TimePoint& t) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t - tst::kT0).count();
    char b[48];
    std::snprintf(b, sizeof b, "t0%+.9fs", static_cast<double>(ns) / 1e9);
    return b;
}

String StringMaker<std::optional<faketcp::TimePoint>>::convert(
    const std::optional<faketcp::TimePoint>& t) {
    return t ? StringMaker<faketcp::TimePoint>::convert(*t) : String("nullopt");
}

String StringMaker<std::optional<faketcp::IpAddr>>::convert(const std::optional<faketcp::IpAddr>& a) {
    return a ? String(tst::fmt(*a).c_str()) : String("nullopt");
}

String StringMaker<std::optional<faketcp::Endpoint>>::convert(
    const std::optional<faketcp::Endpoint>& e) {
    return e ? String(tst::fmt(*e).c_str()) : String("nullopt");
}

String StringMaker<tst::Bytes>::convert(const tst::Bytes& b) {
    return ("[" + std::to_string(b.size()) + " bytes: " + tst::hex(b) + "]").c_str();
}

}  // namespace doctest
