// offload_probe: looks at TUN vnet-header offloads on a real kernel (a
// verification tool, not a test; root; run it inside a throw-away network
// namespace, see offload_verify.sh).
//
//   offload_probe tx TUN LOCAL PEER DST DPORT COUNT SIZE [plain]
//       open TUN (LOCAL/PEER, offload on) and write COUNT fake-TCP segments of
//       SIZE payload bytes from PEER:5555 to DST:DPORT as one GSO super-packet
//       (offload::coalesce), or one by one with "plain"; then keep the device
//       up for 2 s so the kernel can forward them.
//   offload_probe rx TUN LOCAL PEER SECONDS
//       open TUN (offload on) and print every read for SECONDS: its vnet header,
//       how parse_rx() classified it, and whether every split segment has valid
//       checksums; a summary line at the end.
//   offload_probe burst IFACE DSTMAC SRC DST COUNT SIZE fixed|inc
//       send COUNT fake-TCP segments (IPv4, DF) to DST:5555 out of IFACE as
//       Ethernet frames in one sendmmsg() on a packet socket: the fastest burst
//       a NIC's GRO could see. "fixed": every IPv4 ID 0 (phantun and this
//       stack); "inc": IDs 100, 101, ... (a Linux TCP sender).
//
// Build: g++ -std=c++17 -O2 -I. test/tools/offload_probe.cpp faketcp.cpp tun.cpp
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "faketcp.h"
#include "test/bytes.h"

using namespace faketcp;
namespace ofl = faketcp::offload;

namespace {


// A fake-TCP data segment, as the Stack builds it (ID 0, DF, TTL 64, ACK).
std::vector<uint8_t> segment(const IpAddr& src, const IpAddr& dst, uint16_t sport, uint16_t dport,
                             uint32_t seq, size_t len, uint8_t fill) {
    const bool v6 = src.family == Family::v6;
    const size_t ip_len = v6 ? 40 : 20;
    std::vector<uint8_t> p(ip_len + 20 + len, 0);
    uint8_t* b = p.data();
    uint32_t pseudo;
    if (!v6) {
        b[0] = 0x45;
        put16(b + 2, uint16_t(p.size()));
        put16(b + 6, 0x4000);
        b[8] = 64;
        b[9] = 6;
        std::memcpy(b + 12, src.bytes.data(), 4);
        std::memcpy(b + 16, dst.bytes.data(), 4);
        put16(b + 10, uint16_t(~fold(sum16(b, 20))));
        pseudo = sum16(b + 12, 8) + 6 + uint32_t(20 + len);
    } else {
        b[0] = 0x60;
        put16(b + 4, uint16_t(20 + len));
        b[6] = 6;
        b[7] = 64;
        std::memcpy(b + 8, src.bytes.data(), 16);
        std::memcpy(b + 24, dst.bytes.data(), 16);
        pseudo = sum16(b + 8, 32) + 6 + uint32_t(20 + len);
    }
    uint8_t* t = b + ip_len;
    put16(t, sport);
    put16(t + 2, dport);
    put32(t + 4, seq);
    put32(t + 8, 1);
    t[12] = 0x50;
    t[13] = 0x10;
    put16(t + 14, 65535);
    for (size_t k = 0; k < len; ++k) t[20 + k] = uint8_t(fill + k);
    put16(t + 16, uint16_t(~fold(sum16(t, 20 + len, pseudo))));
    return p;
}

bool valid(const uint8_t* b, size_t n) {
    if (n < 40) return false;
    size_t ip_len;
    uint32_t pseudo;
    if (b[0] == 0x45) {
        if (fold(sum16(b, 20)) != 0xffff || size_t(b[2] << 8 | b[3]) != n) return false;
        ip_len = 20;
        pseudo = sum16(b + 12, 8) + 6 + uint32_t(n - 20);
    } else {
        ip_len = 40;
        pseudo = sum16(b + 8, 32) + 6 + uint32_t(n - 40);
    }
    return fold(sum16(b + ip_len, n - ip_len, pseudo)) == 0xffff;
}

Result<Tun> open_tun(const char* name, const char* local, const char* peer) {
    TunConfig c;
    c.name = name;
    auto l = parse_ip(local), p = parse_ip(peer);
    if (!l || !p) return Status::error(Errc::invalid_argument, "bad address");
    if (l->family == Family::v4) {
        c.local_v4 = l;
        c.peer_v4 = p;
    } else {
        c.local_v6 = l;
        c.peer_v6 = p;
    }
    return Tun::open(c);
}

int tx(char** argv, bool plain) {
    auto tun = open_tun(argv[2], argv[3], argv[4]);
    if (!tun) {
        std::fprintf(stderr, "%s\n", tun.status().message().c_str());
        return 1;
    }
    std::printf("tun %s offload=%d %s\n", tun->name().c_str(), int(tun->offload()), tun->offload_note().c_str());
    const IpAddr src = *parse_ip(argv[4]);
    const IpAddr dst = *parse_ip(argv[5]);
    const uint16_t dport = uint16_t(std::atoi(argv[6]));
    const size_t count = size_t(std::atoi(argv[7]));
    const size_t size = size_t(std::atoi(argv[8]));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // routes settle
    std::vector<std::vector<uint8_t>> pkts;
    for (size_t i = 0; i < count; ++i)
        pkts.push_back(segment(src, dst, 5555, dport, uint32_t(1000 + i * size), size, uint8_t(i)));
    std::vector<ByteView> views;
    for (auto& p : pkts) views.emplace_back(p.data(), p.size());
    if (plain) {
        for (auto& p : pkts) {
            std::vector<uint8_t> w(ofl::kVnetHdrLen, 0);
            w.insert(w.end(), p.begin(), p.end());
            const long r = tun->write(0, w.data(), tun->offload() ? w.size() : p.size());
            if (r < 0) std::printf("write: %s\n", std::strerror(int(-r)));
        }
        std::printf("wrote %zu plain segments\n", count);
    } else {
        size_t i = 0;
        std::vector<uint8_t> super(ofl::kVnetHdrLen + 65535);
        while (i < views.size()) {
            const size_t run = ofl::gso_run(&views[i], views.size() - i);
            const size_t n = ofl::coalesce(&views[i], run, super.data(), super.size());
            const long r = tun->write(0, super.data(), n);
            std::printf("super-packet: %zu segments, %zu bytes with vnet header: write -> %ld%s%s\n", run, n, r,
                        r < 0 ? " " : "", r < 0 ? std::strerror(int(-r)) : "");
            i += run;
        }
    }
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    return 0;
}

int rx(char** argv) {
    auto tun = open_tun(argv[2], argv[3], argv[4]);
    if (!tun) {
        std::fprintf(stderr, "%s\n", tun.status().message().c_str());
        return 1;
    }
    std::printf("tun %s offload=%d %s\n", tun->name().c_str(), int(tun->offload()), tun->offload_note().c_str());
    std::fflush(stdout);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(std::atoi(argv[5]));
    std::vector<uint8_t> buf(ofl::kVnetHdrLen + 65536 + 64), seg(65536 + 128);
    size_t reads = 0, gso_reads = 0, segments = 0, bad = 0, tcp_plain = 0;
    while (std::chrono::steady_clock::now() < until) {
        pollfd pfd{tun->fd(0), POLLIN, 0};
        if (::poll(&pfd, 1, 100) <= 0) continue;
        const long n = tun->read(0, buf.data(), buf.size());
        if (n < 0) continue;
        ++reads;
        const ofl::VnetHdr v = ofl::decode(buf.data());
        const ofl::RxPacket p = ofl::parse_rx(buf.data(), size_t(n));
        const uint8_t* ip = buf.data() + ofl::kVnetHdrLen;
        const bool is_tcp = (ip[0] >> 4 == 4 && ip[9] == 6) || (ip[0] >> 4 == 6 && ip[6] == 6);
        if (!is_tcp) continue;  // IPv6 chatter
        std::printf("read %ld bytes: vnet flags=%u gso_type=%u hdr_len=%u gso_size=%u csum_start=%u csum_offset=%u",
                    n, v.flags, v.gso_type, v.hdr_len, v.gso_size, v.csum_start, v.csum_offset);
        switch (p.kind) {
            case ofl::RxPacket::Kind::drop:
                std::printf(" -> drop %s\n", ofl::to_string(p.drop));
                ++bad;
                break;
            case ofl::RxPacket::Kind::plain:
                ++tcp_plain;
                std::printf(" -> plain%s, checksums %s\n", p.checksummed ? " (checksum completed)" : "",
                            valid(p.packet.data, p.packet.size) ? "valid" : "INVALID");
                if (!valid(p.packet.data, p.packet.size)) ++bad;
                break;
            case ofl::RxPacket::Kind::segments: {
                ++gso_reads;
                size_t ok = 0;
                for (size_t i = 0; i < p.count; ++i) {
                    const size_t sz = ofl::rx_segment(p, i, seg.data());
                    ok += valid(seg.data(), sz);
                }
                segments += p.count;
                bad += p.count - ok;
                std::printf(" -> %zu segments of %zu, %zu with valid checksums\n", p.count, p.gso_size, ok);
                break;
            }
        }
        std::fflush(stdout);
    }
    std::printf("summary: %zu reads, %zu TCP plain, %zu GSO super-packets carrying %zu segments, %zu bad\n",
                reads, tcp_plain, gso_reads, segments, bad);
    return bad ? 1 : 0;
}

int burst(char** argv) {
    const unsigned ifindex = if_nametoindex(argv[2]);
    uint8_t dmac[6];
    if (ifindex == 0 || std::sscanf(argv[3], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &dmac[0], &dmac[1], &dmac[2],
                                    &dmac[3], &dmac[4], &dmac[5]) != 6) {
        std::fprintf(stderr, "bad interface or MAC\n");
        return 1;
    }
    const IpAddr src = *parse_ip(argv[4]), dst = *parse_ip(argv[5]);
    const size_t count = size_t(std::atoi(argv[6])), size = size_t(std::atoi(argv[7]));
    const bool fixed = std::string(argv[8]) == "fixed";
    const int fd = ::socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) {
        std::perror("socket(AF_PACKET)");
        return 1;
    }
    std::vector<std::vector<uint8_t>> frames;
    for (size_t i = 0; i < count; ++i) {
        std::vector<uint8_t> p = segment(src, dst, 5555, 5555, uint32_t(1000 + i * size), size, uint8_t(i));
        if (!fixed) {  // IPv4 ID 100 + i, header checksum redone
            put16(p.data() + 4, uint16_t(100 + i));
            put16(p.data() + 10, 0);
            put16(p.data() + 10, uint16_t(~fold(sum16(p.data(), 20))));
        }
        std::vector<uint8_t> f(14);
        std::memcpy(f.data(), dmac, 6);
        f[6] = 0x02;  // a locally administered source MAC; the receiver does not care
        f[12] = 0x08;
        f[13] = 0x00;
        f.insert(f.end(), p.begin(), p.end());
        frames.push_back(std::move(f));
    }
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = int(ifindex);
    to.sll_halen = 6;
    std::memcpy(to.sll_addr, dmac, 6);
    std::vector<mmsghdr> msgs(count);
    std::vector<iovec> iov(count);
    for (size_t i = 0; i < count; ++i) {
        iov[i] = {frames[i].data(), frames[i].size()};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof to;
    }
    const int sent = ::sendmmsg(fd, msgs.data(), unsigned(count), 0);
    std::printf("burst: sent %d of %zu frames (%s IPv4 IDs)\n", sent, count, fixed ? "fixed" : "incrementing");
    ::close(fd);
    return sent == int(count) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 9 && std::string(argv[1]) == "burst") return burst(argv);
    if (argc >= 9 && std::string(argv[1]) == "tx") return tx(argv, argc >= 10 && std::string(argv[9]) == "plain");
    if (argc >= 6 && std::string(argv[1]) == "rx") return rx(argv);
    std::fprintf(stderr,
                 "usage: offload_probe tx TUN LOCAL PEER DST DPORT COUNT SIZE [plain]\n"
                 "       offload_probe rx TUN LOCAL PEER SECONDS\n"
                 "       offload_probe burst IFACE DSTMAC SRC DST COUNT SIZE fixed|inc\n");
    return 2;
}
