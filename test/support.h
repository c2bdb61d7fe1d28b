// Test support: an independent packet builder/parser, a fake-clock harness around
// faketcp::Stack, a back-to-back link of two stacks, and doctest printers.
//
// Nothing here calls the Stack's wire code: checksums, encoding and decoding are
// written from the RFCs (791, 8200, 9293, 1071, 1624) so expected bytes never come
// from the emitter under test. Tests read as timelines:
//
//     Harness h(server_config());
//     h.listen(5555);
//     h.in(in.syn(1000));                          // peer > stack
//     CHECK(h.tx() == pkts(out.syn_ack(0, 1001)));  // stack > peer
//     h.advance(1s);
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "faketcp.h"

namespace tst {

namespace ft = faketcp;
using Bytes = std::vector<uint8_t>;
using ft::Duration;
using ft::TimePoint;

// All timelines start here, far from the clock's epoch.
inline const TimePoint kT0 = TimePoint{} + std::chrono::hours(1);

// TCP flag bits (RFC 9293 §3.1).
inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10,
                         kUrg = 0x20;

// Wire constants from the behaviour reference.
inline constexpr uint16_t kEphemeralLo = 32768, kEphemeralHi = 60999;
inline const Bytes kPhantunSynOptions = {0x01, 0x03, 0x03, 0x0e};  // NOP, window scale 14

// ---------------------------------------------------------------------------
// Checksums (RFC 1071, RFC 1624), independent of faketcp.cpp
// ---------------------------------------------------------------------------

// One's-complement sum of big-endian 16-bit words, odd byte padded with zero.
uint32_t ones_sum(const uint8_t* p, size_t n, uint32_t acc = 0);
// ~fold(sum): the value that goes into a checksum field.
uint16_t inet_checksum(const uint8_t* p, size_t n, uint32_t acc = 0);
// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from m to m2.
uint16_t checksum_adjust(uint16_t hc, uint16_t m, uint16_t m2);

uint16_t be16(const uint8_t* p);
uint32_t be32(const uint8_t* p);
void put16(uint8_t* p, uint16_t v);
void put32(uint8_t* p, uint32_t v);

// ---------------------------------------------------------------------------
// Addresses (built with inet_pton, not faketcp::parse_ip)
// ---------------------------------------------------------------------------

ft::IpAddr ip(const char* text);  // aborts the test on a typo
ft::Endpoint ep(const char* ip_text, uint16_t port);
std::string fmt(const ft::IpAddr& a);
std::string fmt(const ft::Endpoint& e);

// The Stack under test is 10.0.0.1 / fd00::1 (the TUN's peer addresses); the
// remote peer 10.0.0.2 / fd00::2. Same as test/gen_golden.py. Constant-initialized,
// so other translation units may use them in their own static initializers.
inline constexpr ft::IpAddr kStack4{ft::Family::v4, {10, 0, 0, 1}};
inline constexpr ft::IpAddr kPeer4{ft::Family::v4, {10, 0, 0, 2}};
inline constexpr ft::IpAddr kStack6{ft::Family::v6, {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}};
inline constexpr ft::IpAddr kPeer6{ft::Family::v6, {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}};

// ---------------------------------------------------------------------------
// Segments: every field the wire carries
// ---------------------------------------------------------------------------

struct Seg {
    ft::Endpoint src, dst;
    uint32_t seq = 0, ack = 0;
    uint8_t flags = 0;
    uint16_t window = 65535;
    uint16_t urgent = 0;
    Bytes options;  // raw TCP options; the data offset follows from their size
    Bytes payload;
    // IP fields, defaults = the README's wire table.
    uint8_t tos = 0;          // IPv4 TOS / IPv6 traffic class
    uint32_t flow = 0;        // IPv6 flow label
    uint16_t ip_id = 0;       // IPv4 identification
    uint16_t frag = 0x4000;   // IPv4 flags + fragment offset: DF
    uint8_t ttl = 64;         // IPv4 TTL / IPv6 hop limit
    // decode() only: why the bytes are not one clean TCP/IP packet (empty if they are).
    std::string error;

    bool v6() const { return src.addr.family == ft::Family::v6; }
    friend bool operator==(const Seg& a, const Seg& b);
    friend bool operator!=(const Seg& a, const Seg& b) { return !(a == b); }
};

// tcpdump-like: "10.0.0.1:5555 > 10.0.0.2:40000 S. seq 0 ack 1001 win 65535 len 0 <nop,wscale 14>"
std::string describe(const Seg& s);
std::string flag_string(uint8_t flags);  // "S.", "R.", ".", "none"
std::string hex(const uint8_t* p, size_t n);
inline std::string hex(const Bytes& b) { return hex(b.data(), b.size()); }

// A whole IP packet with correct checksums and lengths.
Bytes encode(const Seg& s);
// Strict parse of one packet: IP header without options/extensions, lengths that
// match, both checksums right, and re-encoding gives the same bytes. Anything
// else comes back with `error` set (and the fields decoded so far).
Seg decode(ft::ByteView packet);

// Low-level builders for malformed inputs: an IP packet around any L4 bytes.
Bytes ipv4_packet(const ft::IpAddr& src, const ft::IpAddr& dst, uint8_t proto, const Bytes& l4);
Bytes ipv6_packet(const ft::IpAddr& src, const ft::IpAddr& dst, uint8_t next_header,
                  const Bytes& l4);
// Recompute the checksums of a packet after a test patched it (fixed layout:
// IPv4 header length from IHL, IPv6 header 40 bytes, TCP right after).
void fix_ipv4_checksum(Bytes& packet);
void fix_tcp_checksum(Bytes& packet);
// Offset of the TCP header (IHL-based for v4, 40 for v6).
size_t tcp_offset(const Bytes& packet);

// A golden packet with the Stack's ephemeral port written in: the 16-bit port
// at `port_offset` (from the TCP header start) becomes `port` and the TCP
// checksum is adjusted incrementally (RFC 1624), not recomputed.
enum class PortField { src, dst };
Bytes with_port(const uint8_t* golden, size_t n, PortField which, uint16_t port);
template <size_t N>
Bytes with_port(const uint8_t (&golden)[N], PortField which, uint16_t port) {
    return with_port(golden, N, which, port);
}
template <size_t N>
Bytes bytes(const uint8_t (&a)[N]) {
    return Bytes(a, a + N);
}
Bytes bytes(std::string_view text);

// One direction of a 4-tuple, with packetdrill-style constructors.
struct Path {
    ft::Endpoint src, dst;
    Path reversed() const { return {dst, src}; }
    Seg seg(uint8_t flags, uint32_t seq, uint32_t ack, Bytes payload = {}) const;
    Seg syn(uint32_t seq) const;                    // S <nop,wscale 14>, as phantun sends
    Seg syn_ack(uint32_t seq, uint32_t ack) const;  // S. <nop,wscale 14>
    Seg ack(uint32_t seq, uint32_t ack) const;      // .
    Seg data(uint32_t seq, uint32_t ack, Bytes payload) const;  // . with payload
    Seg data(uint32_t seq, uint32_t ack, std::string_view payload) const {
        return data(seq, ack, bytes(payload));
    }
    Seg rst(uint32_t seq) const;                    // R, ack 0
    Seg rst_ack(uint32_t seq, uint32_t ack) const;  // R.
};

// A list of packets that prints one decoded segment per line.
struct Packets {
    std::vector<Seg> segs;
    size_t size() const { return segs.size(); }
    bool empty() const { return segs.empty(); }
    const Seg& operator[](size_t i) const { return segs[i]; }
    friend bool operator==(const Packets& a, const Packets& b) { return a.segs == b.segs; }
    friend bool operator!=(const Packets& a, const Packets& b) { return !(a == b); }
};
template <class... S>
Packets pkts(const S&... segs) {
    return Packets{std::vector<Seg>{segs...}};
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

// An Event with its datagram copied out.
struct Ev {
    ft::EventType type = ft::EventType::datagram;
    ft::ConnId conn;
    ft::CloseReason reason = ft::CloseReason::local_close;  // compared for connect_failed/closed
    uint64_t user_data = 0;
    Bytes data;
    friend bool operator==(const Ev& a, const Ev& b);
    friend bool operator!=(const Ev& a, const Ev& b) { return !(a == b); }
};
Ev ev_accepted(ft::ConnId c);
Ev ev_connected(ft::ConnId c);
Ev ev_connect_failed(ft::ConnId c, ft::CloseReason r);
Ev ev_datagram(ft::ConnId c, Bytes data);
inline Ev ev_datagram(ft::ConnId c, std::string_view data) { return ev_datagram(c, bytes(data)); }
Ev ev_closed(ft::ConnId c, ft::CloseReason r);

struct Evs {
    std::vector<Ev> list;
    size_t size() const { return list.size(); }
    bool empty() const { return list.empty(); }
    const Ev& operator[](size_t i) const { return list[i]; }
    friend bool operator==(const Evs& a, const Evs& b) { return a.list == b.list; }
    friend bool operator!=(const Evs& a, const Evs& b) { return !(a == b); }
};
template <class... E>
Evs evs(const E&... list) {
    return Evs{std::vector<Ev>{list...}};
}

// Names written here from the header's enumerators, not taken from the library,
// so a test can check the library's to_string against them.
const char* name(ft::Errc);
const char* name(ft::DropReason);
const char* name(ft::EventType);
const char* name(ft::CloseReason);
const char* name(ft::ConnState);

// The drop counters that changed, e.g. "bad_tcp_checksum+1", "" if none.
std::string drop_delta(const ft::Stats& before, const ft::Stats& after);

// ---------------------------------------------------------------------------
// Guard page: inputs end right before a PROT_NONE page, so reading one byte past
// the end of a packet faults (picohttpparser's trick).
// ---------------------------------------------------------------------------

class GuardedBuffer {
public:
    GuardedBuffer();
    ~GuardedBuffer();
    GuardedBuffer(const GuardedBuffer&) = delete;
    GuardedBuffer& operator=(const GuardedBuffer&) = delete;
    // Copy `n` bytes so the last one is the last readable byte before the guard.
    ft::ByteView place(const uint8_t* p, size_t n);
    ft::ByteView place(const Bytes& b) { return place(b.data(), b.size()); }

private:
    uint8_t* base_ = nullptr;
    size_t page_ = 0;
};

// ---------------------------------------------------------------------------
// Harness: one Stack, a fake clock, inputs kept alive until events are drained
// ---------------------------------------------------------------------------

// Stack at 10.0.0.1 / fd00::1, seeded; tests change fields as they need.
ft::StackConfig base_config();
// The same with keepalive off, for timelines that watch the handshake and
// idle-ACK timers alone (with it on, an established connection always has a
// probe ahead).
ft::StackConfig without_keepalive(ft::StackConfig c = base_config());

class Harness {
public:
    explicit Harness(const ft::StackConfig& config = base_config());

    ft::Stack stack;
    TimePoint now = kT0;

    void listen(uint16_t port);  // REQUIREs success
    // Input at `now`. The bytes stay alive until events() drains.
    void in(const Seg& s);
    void in_bytes(Bytes b);
    // Input placed right before a PROT_NONE page (no events may refer to it).
    void in_guarded(const Bytes& b);
    // Move the clock to `t` (or by `d`) and run the stack's timers.
    void at(TimePoint t);
    void advance(Duration d) { at(now + d); }

    Packets tx();             // decode and clear the transmit queue
    std::vector<Bytes> tx_raw();  // copy and clear the transmit queue
    Evs events();             // drain every event
    const ft::Stats& stats() const { return stack.stats(); }

private:
    std::deque<Bytes> inputs_;
    std::unique_ptr<GuardedBuffer> guard_;
};

// A server-side connection set up with raw segments: peer SYN(irs), stack
// SYN-ACK(0, irs+1), peer ACK(irs+1, 1), accepted. REQUIREs every step.
struct ServerConn {
    ft::ConnId id;
    Path in;   // peer > stack
    Path out;  // stack > peer
};
ServerConn establish_server(Harness& h, const Path& in, uint32_t irs);

// A client-side connection: connect(), the SYN read back (its port is the one
// info() reports), then optionally the peer's SYN-ACK(irs, 1) and our ACK.
struct ClientConn {
    ft::ConnId id;
    Path out;  // stack > peer
    Path in;   // peer > stack
};
ClientConn start_client(Harness& h, const ft::Endpoint& remote);
ClientConn establish_client(Harness& h, const ft::Endpoint& remote, uint32_t irs);

// Two stacks wired back to back: every packet one queues is handed to the other.
struct Link {
    Harness& a;
    Harness& b;
    // Move packets both ways until both queues are empty; returns how many moved.
    size_t pump(size_t max_rounds = 64);
    // Advance both clocks to `t`, running timers, then pump.
    void at(TimePoint t);
};


// ---------------------------------------------------------------------------
// Root-only tests: a private network namespace for the calling thread
// ---------------------------------------------------------------------------

// True when this process may create namespaces and TUN devices.
inline bool have_root_and_tun() { return ::geteuid() == 0 && ::access("/dev/net/tun", R_OK | W_OK) == 0; }

// Decorator for a test that needs root and /dev/net/tun: without them doctest
// reports the test as skipped (never as passed). The reason is in the name:
// every such test ends in "(root)".
inline doctest::skip unless_root() { return doctest::skip(!have_root_and_tun()); }

// Moves this thread into a fresh network namespace and back on destruction.
class PrivateNetns {
public:
    PrivateNetns() {
        orig_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (orig_ < 0) {
            why_ = std::string("open /proc/thread-self/ns/net: ") + std::strerror(errno);
            return;
        }
        if (::unshare(CLONE_NEWNET) != 0) {
            why_ = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
            ::close(orig_);
            orig_ = -1;
        }
    }
    ~PrivateNetns() {
        if (orig_ < 0) return;
        if (::setns(orig_, CLONE_NEWNET) != 0) std::abort();  // never run the rest of the tests in it
        ::close(orig_);
    }
    PrivateNetns(const PrivateNetns&) = delete;
    PrivateNetns& operator=(const PrivateNetns&) = delete;
    bool ok() const { return orig_ >= 0; }
    const std::string& why() const { return why_; }

private:
    int orig_ = -1;
    std::string why_;
};

}  // namespace tst

// ---------------------------------------------------------------------------
// doctest printers
// ---------------------------------------------------------------------------

namespace doctest {
template <>
struct StringMaker<tst::Seg> {
    static String convert(const tst::Seg& s);
};
template <>
struct StringMaker<tst::Packets> {
    static String convert(const tst::Packets& p);
};
template <>
struct StringMaker<tst::Ev> {
    static String convert(const tst::Ev& e);
};
template <>
struct StringMaker<tst::Evs> {
    static String convert(const tst::Evs& e);
};
template <>
struct StringMaker<faketcp::ConnId> {
    static String convert(const faketcp::ConnId& c);
};
template <>
struct StringMaker<faketcp::IpAddr> {
    static String convert(const faketcp::IpAddr& a);
};
template <>
struct StringMaker<faketcp::Endpoint> {
    static String convert(const faketcp::Endpoint& e);
};
template <>
struct StringMaker<faketcp::Status> {
    static String convert(const faketcp::Status& s);
};
template <>
struct StringMaker<faketcp::TimePoint> {
    static String convert(const faketcp::TimePoint& t);  // "t0+1.5s"
};
template <>
struct StringMaker<std::optional<faketcp::TimePoint>> {
    static String convert(const std::optional<faketcp::TimePoint>& t);
};
template <>
struct StringMaker<std::optional<faketcp::IpAddr>> {
    static String convert(const std::optional<faketcp::IpAddr>& a);
};
template <>
struct StringMaker<std::optional<faketcp::Endpoint>> {
    static String convert(const std::optional<faketcp::Endpoint>& e);
};
template <>
struct StringMaker<std::nullopt_t> {
    static String convert(const std::nullopt_t&) { return "nullopt"; }
};
template <>
struct StringMaker<tst::Bytes> {
    static String convert(const tst::Bytes& b);
};
}  // namespace doctest

// doctest prints enums through an ADL toString (its enum path skips StringMaker).
namespace faketcp {
inline doctest::String toString(Errc v) { return tst::name(v); }
inline doctest::String toString(DropReason v) { return tst::name(v); }
inline doctest::String toString(EventType v) { return tst::name(v); }
inline doctest::String toString(CloseReason v) { return tst::name(v); }
inline doctest::String toString(ConnState v) { return tst::name(v); }
}  // namespace faketcp
